// Medians over rounds and fleetmq ÷ peer ratios.
import type { BrokerName } from './brokers.js';
import { FIGURE_KEYS, type BrokerSummary, type Direction, type Figures, type Ratio, type RunRecord } from './types.js';

export function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

function reduce(runs: RunRecord[], fn: (xs: number[]) => number | null): Figures {
  const out = {} as Figures;
  for (const k of FIGURE_KEYS) {
    const xs = runs.map((r) => r.figures[k]).filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
    out[k] = fn(xs);
  }
  return out;
}

export function summarize(broker: BrokerName, version: string, runs: RunRecord[]): BrokerSummary {
  const mine = runs.filter((r) => r.broker === broker);
  const ok = mine.filter((r) => r.status === 'ok');
  const count = (s: RunRecord['status']) => mine.filter((r) => r.status === s).length;
  return {
    broker, version,
    runs: mine.length,
    ok: ok.length,
    crashed: count('crashed'),
    stalled: count('stalled'),
    failed: count('failed'),
    unsupported: count('unsupported'),
    unsupported_reason: mine.find((r) => r.status === 'unsupported')?.reason ?? null,
    median: reduce(ok, median),
    min: reduce(ok, (xs) => (xs.length ? Math.min(...xs) : null)),
    max: reduce(ok, (xs) => (xs.length ? Math.max(...xs) : null)),
  };
}

/** The figures compared by ratio, and which direction is better. */
export const RATIO_FIGURES: ReadonlyArray<{ key: keyof Figures; better: Direction; label: string }> = [
  { key: 'msgs_per_s', better: 'higher', label: 'messages/s' },
  { key: 'p50_us', better: 'lower', label: 'p50 latency' },
  { key: 'p99_us', better: 'lower', label: 'p99 latency' },
  { key: 'p999_us', better: 'lower', label: 'p99.9 latency' },
  { key: 'cpu_us_per_msg', better: 'lower', label: 'broker CPU per message' },
  { key: 'peak_rss_bytes', better: 'lower', label: 'broker peak RSS' },
  { key: 'rss_per_conn_bytes', better: 'lower', label: 'broker RSS per connection' },
];

/** Ratios within ±2 % are called equal. */
const EQUAL_BAND = 0.02;

export function ratio(fleet: number | null, peer: number | null, better: Direction): Ratio {
  if (fleet === null || peer === null || peer === 0) return { value: null, better, verdict: 'n/a' };
  const value = fleet / peer;
  let verdict: Ratio['verdict'] = 'equal';
  if (Math.abs(value - 1) > EQUAL_BAND) verdict = (value > 1) === (better === 'higher') ? 'fleetmq better' : 'fleetmq worse';
  return { value, better, verdict };
}

/** fleetmq ÷ each peer, per figure; empty when fleetmq did not run or has no ok run. */
export function ratios(summary: BrokerSummary[]): Record<string, Record<string, Ratio>> {
  const out: Record<string, Record<string, Ratio>> = {};
  const fleet = summary.find((s) => s.broker === 'fleetmq');
  if (!fleet) return out;
  for (const peer of summary) {
    if (peer.broker === 'fleetmq') continue;
    const r: Record<string, Ratio> = {};
    for (const { key, better } of RATIO_FIGURES) r[key] = ratio(fleet.median[key], peer.median[key], better);
    out[peer.broker] = r;
  }
  return out;
}
