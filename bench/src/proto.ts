// Messages between the controller (main thread of the driver or of a child process) and
// its units (worker threads over a MessagePort, child processes over IPC). Times are
// nanoseconds relative to the run's hrtime base, as numbers (exact below 2^53 ns = 104 days).

export interface Counters {
  attempted: number;
  connected: number;
  refused: number;
  failed: number;
  dropped: number;
  /** Connections open now. */
  open: number;
  subscribed: number;
  subFailed: number;
  /** All messages sent / received (warm-up and drain included): progress only. */
  sentAll: number;
  recvAll: number;
  /** Messages whose send timestamp lies in the measured window. */
  sentM: number;
  recvM: number;
  /** Publish slots (-I) missed in the measured window because the publisher was blocked. */
  skippedM: number;
  /** Publishers stopped for good (window over, limit reached, or none here). */
  pubDone: number;
}

export function zeroCounters(): Counters {
  return {
    attempted: 0, connected: 0, refused: 0, failed: 0, dropped: 0, open: 0, subscribed: 0, subFailed: 0,
    sentAll: 0, recvAll: 0, sentM: 0, recvM: 0, skippedM: 0, pubDone: 1,
  };
}

export function addCounters(a: Counters, b: Counters): Counters {
  const r = zeroCounters();
  for (const k of Object.keys(r) as Array<keyof Counters>) r[k] = a[k] + b[k];
  r.pubDone = a.pubDone && b.pubDone ? 1 : 0;
  return r;
}

/** The sum of each unit's latest counters; a unit not heard from yet counts as a publisher not done. */
export function sumLatest<U>(units: Iterable<U>, latest: ReadonlyMap<U, Counters>): Counters {
  let c = zeroCounters();
  for (const u of units) c = addCounters(c, latest.get(u) ?? { ...zeroCounters(), pubDone: 0 });
  return c;
}

export type Down =
  | { t: 'connect'; t0: number }
  | { t: 'subscribe' }
  | { t: 'publish'; start: number; ms: number; me: number; match: number }
  | { t: 'end'; me: number }
  | { t: 'stop' }
  | { t: 'rcpt'; d: number[] };

export type Up =
  | { t: 'hello' }
  | { t: 'ready'; stage: 'connect' | 'subscribe' }
  | { t: 'stats'; c: Counters; ih: string | null; err: Array<[string, number]> }
  | { t: 'limit' }
  | { t: 'rcpt'; d: number[] }
  | { t: 'cpu'; user: number; system: number };

/** What a unit returns when it finishes. */
export interface UnitResult {
  c: Counters;
  /** Latency histogram of the measured window (µs), hdr-histogram-js compressed base64. */
  hist: string | null;
  /** CONNECT → CONNACK histogram (µs). */
  chist: string | null;
  errors: Array<[string, number]>;
  /** Generator CPU over the measured window (child processes only), µs. */
  cpu?: { user: number; system: number };
}
