// HDR histograms of latencies in microseconds: 1 µs .. 60 s, 3 significant digits.
import * as hdr from 'hdr-histogram-js';

export type Histogram = hdr.Histogram;

export const HIST_MAX_US = 60_000_000;

export function newHist(): Histogram {
  return hdr.build({
    bitBucketSize: 32,
    autoResize: false,
    lowestDiscernibleValue: 1,
    highestTrackableValue: HIST_MAX_US,
    numberOfSignificantValueDigits: 3,
    useWebAssembly: false,
  });
}

/** Records a latency in µs, clamped to the histogram's range. */
export function record(h: Histogram, us: number): void {
  h.recordValue(us < 0 ? 0 : us > HIST_MAX_US ? HIST_MAX_US : us);
}

export function encode(h: Histogram): string | null {
  return h.totalCount > 0 ? hdr.encodeIntoCompressedBase64(h) : null;
}

/** Adds an encoded histogram into `into`. */
export function addEncoded(into: Histogram, b64: string | null): void {
  if (!b64) return;
  const h = hdr.decodeFromCompressedBase64(b64, 32, false);
  into.add(h);
}

export interface LatencySummary {
  count: number;
  min: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

export function summary(h: Histogram): LatencySummary {
  if (h.totalCount === 0) return { count: 0, min: 0, mean: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0 };
  // minNonZeroValue misses recorded zeros; a 0 µs latency is below the clock's resolution anyway.
  const min = h.getValueAtPercentile(0);
  return {
    count: h.totalCount,
    min,
    mean: Math.round(h.mean * 10) / 10,
    p50: h.getValueAtPercentile(50),
    p90: h.getValueAtPercentile(90),
    p99: h.getValueAtPercentile(99),
    p999: h.getValueAtPercentile(99.9),
    max: h.maxValue,
  };
}
