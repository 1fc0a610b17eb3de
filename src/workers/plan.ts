// The shared memory of a worker-threaded node, made by the main thread before any worker
// starts and handed to every thread in workerData (SharedArrayBuffers are shared, not
// copied). Restarted workers attach to the same memory.
import { COUNTERS_BYTES } from '../metrics/counters.js';
import { createRing } from '../shm/layout.js';
import { groupRemoteBytes, nodeSetsBytes } from '../cluster/node-sets.js';
import { DedupeTable } from '../cluster/wire/dedupe.js';

/** Int32 words of the control block. */
export const C_OPEN_CONNECTIONS = 0; // node-wide, for node.max_connections
/** 1 when the node is in a cluster (core or replicant). */
export const C_CLUSTER = 1;
export const C_APPLIED = 16; // + worker: last route-op seq the writer applied for it
/** + worker: last route-op seq whose route is in the cluster (etcd, through a core). */
export const C_COMMITTED = 48;
export const CONTROL_WORDS = 48 + 32;
/** BigInt64 slot (byte offset CONTROL_WORDS * 4): node-wide retained-update sequence. */
export const CONTROL_BYTES = CONTROL_WORDS * 4 + 8;

export interface SharedPlan {
  readonly workers: number;
  /** Counters of worker w (src/metrics/counters.ts layout). */
  readonly counters: SharedArrayBuffer[];
  /** rings[from][to]: messages from worker `from` to worker `to` (null on the diagonal). */
  readonly rings: (SharedArrayBuffer | null)[][];
  /** routeRings[w]: route operations from worker w to the trie writer. */
  readonly routeRings: SharedArrayBuffer[];
  readonly control: SharedArrayBuffer;
  /** Online shared-group members per worker (see findGroupEntry). */
  readonly groupWeights: SharedArrayBuffer;
  /** Cluster: sets of remote nodes (src/cluster/node-sets.ts); empty when not clustered. */
  readonly nodeSets: SharedArrayBuffer;
  /** Cluster: remote node set of each shared group. */
  readonly groupRemote: SharedArrayBuffer;
  /** Cluster: forward senders' delivered sequence numbers (src/cluster/wire/dedupe.ts). */
  readonly dedupe: SharedArrayBuffer;
  /**
   * Durable node: Int32 [from * workers + to] = how many records from worker `from` worker
   * `to` has consumed with everything they wrote to the store on disk (fabric.ts, durableWait).
   */
  readonly durable: SharedArrayBuffer;
}

function pow2AtLeast(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/**
 * Ring capacity for messages: a record may be as large as a PUBLISH the node accepts
 * (max_packet_size) plus its header, and a ring holds records up to half its capacity.
 */
export function messageRingBytes(maxPacketSize: number): number {
  return Math.min(2 ** 30, pow2AtLeast(Math.max(1 << 20, 2 * (maxPacketSize + 64 * 1024))));
}

export function createPlan(workers: number, maxPacketSize: number, clustered = false): SharedPlan {
  const ringBytes = messageRingBytes(maxPacketSize);
  const rings: (SharedArrayBuffer | null)[][] = [];
  for (let a = 0; a < workers; a++) {
    const row: (SharedArrayBuffer | null)[] = [];
    for (let b = 0; b < workers; b++) row.push(a === b ? null : createRing(ringBytes));
    rings.push(row);
  }
  return {
    workers,
    counters: Array.from({ length: workers }, () => new SharedArrayBuffer(COUNTERS_BYTES)),
    rings,
    routeRings: Array.from({ length: workers }, () => createRing(256 * 1024)),
    control: new SharedArrayBuffer(CONTROL_BYTES),
    groupWeights: new SharedArrayBuffer(groupWeightsBytes()),
    nodeSets: new SharedArrayBuffer(clustered ? nodeSetsBytes() : 4),
    groupRemote: new SharedArrayBuffer(clustered ? groupRemoteBytes() : 4),
    dedupe: new SharedArrayBuffer(clustered ? DedupeTable.bytes(4096) : 16),
    durable: new SharedArrayBuffer(Math.max(4, workers * workers * 4)),
  };
}

/**
 * Online members of shared groups per worker, written by the trie writer, read by every
 * worker when it picks which worker serves a group (weighted by these counts). Open
 * addressing on the group's route id: entry = [route id, count of worker 0 .. 30].
 * Racy reads only skew the balance for a moment; the worker set itself comes from the trie.
 */
export const GW_ENTRIES = 8192;
export const GW_STRIDE = 32;
export const GW_PROBES = 64;

export function groupWeightsBytes(): number {
  return GW_ENTRIES * GW_STRIDE * 4;
}

/** Index of the entry for `route` (or of the empty slot where it would go), or -1. */
export function findGroupEntry(t: Int32Array, route: number, create: boolean): number {
  for (let i = 0; i < GW_PROBES; i++) {
    const e = ((route + i) & (GW_ENTRIES - 1)) * GW_STRIDE;
    const r = Atomics.load(t, e);
    if (r === route) return e;
    if (r === 0) {
      if (!create) return -1;
      Atomics.store(t, e, route);
      return e;
    }
  }
  return -1;
}
