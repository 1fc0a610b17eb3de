// The result object and progress events of docs/bench-format.md as the bench smoke tests
// (bench-smoke: the TypeScript generator, native-bench-smoke: the C one) read them, and
// the checks both make. The generator's own type is bench/src/result.ts.
import assert from 'node:assert/strict';

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

/** The fields both generators write. */
export interface BenchResultBase {
  tool: string;
  version: number;
  scenario: string;
  params: Record<string, unknown>;
  started_at: string;
  measure_s: number;
  connections: { attempted: number; connected: number; refused: number; failed: number; dropped: number };
  messages: { sent: number; received: number; expected: number; lost: number; skipped: number };
  rates: { sent_per_s: number; received_per_s: number };
  latency_us: LatencySummary;
  generator_cpu: { user_s: number; system_s: number; us_per_msg: number };
  broker_rss_per_conn_bytes?: number;
  errors: string[];
}

/** One JSON line of --progress json on stderr. */
export interface BenchEvent {
  event: string;
  phase?: string;
  t?: number;
  message?: string;
  [k: string]: unknown;
}

export const PHASES = ['connect', 'subscribe', 'warmup', 'measure', 'drain', 'done'];

/** Every attempt is counted once: connected, refused or failed. */
export function assertAttemptsAddUp(c: BenchResultBase['connections']): void {
  assert.equal(c.connected + c.refused + c.failed, c.attempted, 'every attempt is connected, refused or failed');
}

/** min <= p50 <= p90 <= p99 <= p999 <= max. */
export function percentilesOrdered(l: LatencySummary): boolean {
  return l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max;
}

/** A progress event carries all its numeric fields. */
export function assertProgressFields(e: BenchEvent): void {
  for (const k of ['t', 'connected', 'sent', 'received', 'sent_rate', 'recv_rate', 'p50_us', 'p99_us']) {
    assert.equal(typeof e[k], 'number', `progress.${k}`);
  }
}
