// Broker counters of one engine (one worker thread, or the whole node when it runs inline).
// Each counter is one float64 slot in a buffer that may be a SharedArrayBuffer: the
// worker writes its own slots with plain stores, the main thread sums every worker's slots
// for the API without a message. Reads are racy by design (statistics); an aligned 8-byte
// store does not tear on the platforms Node supports (x86-64, arm64).

/** Monotonic counters, then gauges (set, not only incremented). Order = slot index. */
export const COUNTER_NAMES = [
  'connectionsAccepted',
  'connectionsRefused', // max_connections, auth, bad CONNECT
  'connectionsRefusedMax',
  'authFailures',
  'aclDeniedPublish',
  'aclDeniedSubscribe',
  'malformedPackets',
  'protocolErrors',
  'keepaliveTimeouts',
  'takeovers',
  'messagesReceived',
  'messagesSent',
  'bytesReceived',
  'bytesSent',
  'packetsReceived',
  'packetsSent',
  'willsPublished',
  'droppedQueueFull',
  'droppedExpired',
  'droppedTooLarge',
  'droppedWriteBuffer',
  'droppedNoSubscribers',
  'droppedQos0Offline',
  'sharedRedispatched',
  'sharedPassedOn', // a shared message sent on to another worker: the picked one had no member left
  // Cross-worker traffic (worker-threaded node; zero inline).
  'forwardedOut', // messages written to another worker's ring
  'forwardedIn', // messages read from other workers' rings
  'forwardPaused', // a full ring paused a publisher's socket
  'droppedRingFull', // QoS 0 dropped because a ring to another worker was full
  'sessionsLostOnRestart', // sessions held by a worker that died (counted by the supervisor)
  // Cluster (zero on a single node).
  'forwardedRemote', // messages sent to other nodes (once per node)
  'forwardedInRemote', // messages other nodes sent here
  'forwardDroppedRemote', // QoS 0 to another node dropped (unreachable, full), or to a node not (yet) a peer
  // Durable node (zero with durability.sync "none").
  'storeWrites', // records written or removed in the store
  'storeWriteFailed', // a store write failed: the packet that caused it was not acknowledged
  'sessionsRecovered', // persistent sessions read back from the store at start-up
  // Gauges.
  'connectionsOpen', // accepted sockets not yet closed
  'connected', // past CONNACK
  'sessions',
  'subscriptions',
  'retainedStored',
  'queuedMessages',
  'queuedBytes',
  'queuedBytesPeak',
] as const;

export type CounterName = (typeof COUNTER_NAMES)[number];
export const COUNTER_SLOTS = COUNTER_NAMES.length;
export const COUNTERS_BYTES = COUNTER_SLOTS * 8;
/** Gauges are not summed over restarts: a dead worker's gauges are zeroed. */
export const FIRST_GAUGE = COUNTER_NAMES.indexOf('connectionsOpen');

const DROPPED: readonly CounterName[] = [
  'droppedQueueFull', 'droppedExpired', 'droppedTooLarge', 'droppedWriteBuffer', 'droppedQos0Offline', 'droppedRingFull', 'forwardDroppedRemote',
];

// Class + interface merge: one typed field per name, backed by the accessors below.
export interface Counters extends Record<CounterName, number> {}
export class Counters {
  readonly slots: Float64Array;

  /** `buffer`: COUNTERS_BYTES of (shared) memory; a private one when omitted. */
  constructor(buffer: ArrayBufferLike = new ArrayBuffer(COUNTERS_BYTES), byteOffset = 0) {
    this.slots = new Float64Array(buffer, byteOffset, COUNTER_SLOTS);
  }

  get dropped(): number {
    let n = 0;
    for (const k of DROPPED) n += this[k];
    return n;
  }

  addQueued(n: number, bytes: number): void {
    this.queuedMessages += n;
    this.queuedBytes += bytes;
    if (this.queuedBytes > this.queuedBytesPeak) this.queuedBytesPeak = this.queuedBytes;
  }

  snapshot(): Record<string, number> {
    return snapshotOf(this.slots, this.dropped);
  }
}
for (const [i, name] of COUNTER_NAMES.entries()) {
  Object.defineProperty(Counters.prototype, name, {
    get(this: Counters) { return this.slots[i]!; },
    set(this: Counters, v: number) { this.slots[i] = v; },
    enumerable: true,
  });
}

function snapshotOf(slots: Float64Array, dropped: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [i, k] of COUNTER_NAMES.entries()) out[k] = slots[i]!;
  out['dropped'] = dropped;
  return out;
}

/**
 * A live read-only sum over several engines' counters (the main thread's view of every
 * worker), plus `base`: counters kept by the supervisor itself (restarts, lost sessions).
 */
export class CountersSum {
  constructor(private readonly parts: () => readonly Counters[]) {}

  get(name: CounterName | 'dropped'): number {
    let n = 0;
    for (const c of this.parts()) n += c[name];
    return n;
  }

  snapshot(): Record<string, number> {
    const sum = new Float64Array(COUNTER_SLOTS);
    let dropped = 0;
    for (const c of this.parts()) {
      for (let i = 0; i < COUNTER_SLOTS; i++) sum[i]! += c.slots[i]!;
      dropped += c.dropped;
    }
    // The peak of a sum is not the sum of peaks; report the largest worker's peak.
    const peak = COUNTER_NAMES.indexOf('queuedBytesPeak');
    sum[peak] = Math.max(0, ...this.parts().map((c) => c.queuedBytesPeak));
    return snapshotOf(sum, dropped);
  }
}

/** A Counters-shaped live view over a CountersSum (what tests and $SYS read). */
export type CountersReader = Readonly<Record<CounterName | 'dropped', number>>;

export function readerOf(sum: CountersSum): CountersReader {
  const view = {} as Record<string, number>;
  for (const name of [...COUNTER_NAMES, 'dropped'] as const) {
    Object.defineProperty(view, name, { get: () => sum.get(name), enumerable: true });
  }
  return view as CountersReader;
}
