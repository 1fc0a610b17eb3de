// Route operations carried from connection workers to the trie writer, one record each, over
// one SPSC ring per worker (docs/shm.md, "Route operations").
//
// A worker sends `subscribe` when its first local subscription to a filter (or to a filter in
// a share group) appears and `unsubscribe` when its last one goes: the shared trie maps a
// filter to the set of workers that want it, and the per-subscription options (QoS, No
// Local, ...) stay in the worker's sessions. `seq` numbers a worker's operations (1, 2, ...)
// so the writer can publish "applied up to seq N" for that worker.
//
// Record (little-endian, 12-byte header then the strings as UTF-8):
//   0  u8   kind        1 = subscribe, 2 = unsubscribe, 3 = online, 4 = offline
//   1  u8   flags       bit 0: shared (a share group follows the filter); other bits 0
//   2  u16  worker      worker id
//   4  u32  seq
//   8  u16  filterLen   >= 1 (a topic filter is 1..65535 bytes [MQTT-4.7.3-1] [MQTT-1.5.4-2])
//  10  u16  groupLen    0 unless shared, then >= 1
//  12  filter bytes, then group bytes
import { ShmError } from './errors.js';
import type { RingProducer } from './ring.js';

/**
 * `online` / `offline`: a member of a shared group on this worker got / lost its connection
 * (or subscribed / unsubscribed while connected); the writer keeps per-worker counts of
 * online members so that other workers can weight their choice (docs/workers.md).
 */
export type RouteOpKind = 'subscribe' | 'unsubscribe' | 'online' | 'offline';

export interface RouteOp {
  kind: RouteOpKind;
  /** Worker id, 0..65535. */
  worker: number;
  /** The worker's operation number, 0..2**32-1. */
  seq: number;
  /** The topic filter, without any `$share/<group>/` prefix. */
  filter: string;
  /** Share group of a shared subscription (`$share/<group>/<filter>`), else absent. */
  group?: string;
}

export const ROUTE_OP_HEADER = 12;
const KIND_SUBSCRIBE = 1;
const KINDS: readonly RouteOpKind[] = ['subscribe', 'unsubscribe', 'online', 'offline'];
const FLAG_SHARED = 1;
const U16 = 0xffff;

function fail(message: string): never {
  throw new ShmError('ERR_SHM_ROUTE_OP', message);
}

function checkString(name: string, s: unknown): number {
  if (typeof s !== 'string' || s.length === 0) fail(`route op: ${name} must be a non-empty string`);
  const n = Buffer.byteLength(s, 'utf8');
  if (n > U16) fail(`route op: ${name} is ${n} bytes of UTF-8, more than ${U16}`);
  return n;
}

/** Bytes of the encoded op (validates it). */
export function routeOpByteLength(op: RouteOp): number {
  if (!KINDS.includes(op.kind)) fail(`route op: unknown kind ${String(op.kind)}`);
  if ((op.kind === 'online' || op.kind === 'offline') && op.group === undefined) fail(`route op: ${op.kind} needs a group`);
  if (!Number.isInteger(op.worker) || op.worker < 0 || op.worker > U16) fail(`route op: worker must be an integer in 0..${U16}, got ${String(op.worker)}`);
  if (!Number.isInteger(op.seq) || op.seq < 0 || op.seq > 0xffffffff) fail(`route op: seq must be an integer in 0..2**32-1, got ${String(op.seq)}`);
  return ROUTE_OP_HEADER + checkString('filter', op.filter) + (op.group === undefined ? 0 : checkString('group', op.group));
}

/** Encodes `op` into a new Buffer (throws ShmError ERR_SHM_ROUTE_OP for an invalid field). */
export function encodeRouteOp(op: RouteOp): Buffer {
  const total = routeOpByteLength(op);
  const b = Buffer.allocUnsafe(total);
  b[0] = KINDS.indexOf(op.kind) + KIND_SUBSCRIBE;
  b[1] = op.group === undefined ? 0 : FLAG_SHARED;
  b.writeUInt16LE(op.worker, 2);
  b.writeUInt32LE(op.seq, 4);
  const f = b.write(op.filter, ROUTE_OP_HEADER, 'utf8');
  b.writeUInt16LE(f, 8);
  const g = op.group === undefined ? 0 : b.write(op.group, ROUTE_OP_HEADER + f, 'utf8');
  b.writeUInt16LE(g, 10);
  return b;
}

/**
 * Decodes a route op from `length` bytes at `start` of `data` (a drain callback's arguments
 * fit as they are). Throws ShmError ERR_SHM_ROUTE_OP for a malformed record.
 */
export function decodeRouteOp(data: Uint8Array, start = 0, length = data.length - start): RouteOp {
  if (length < ROUTE_OP_HEADER || start < 0 || start + length > data.length) {
    fail(`route op: ${length} bytes at ${start} is shorter than the ${ROUTE_OP_HEADER}-byte header or outside the buffer`);
  }
  // A Buffer view over the same memory (SharedArrayBuffer included): no copy.
  const b = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const k = b[start];
  const flags = b[start + 1] ?? 0;
  if (k === undefined || k < KIND_SUBSCRIBE || k > KIND_SUBSCRIBE + KINDS.length - 1) fail(`route op: unknown kind byte ${String(k)}`);
  if ((flags & ~FLAG_SHARED) !== 0) fail(`route op: unknown flags 0x${flags.toString(16)}`);
  const worker = b.readUInt16LE(start + 2);
  const seq = b.readUInt32LE(start + 4);
  const f = b.readUInt16LE(start + 8);
  const g = b.readUInt16LE(start + 10);
  const shared = (flags & FLAG_SHARED) !== 0;
  if (f === 0) fail('route op: empty filter');
  if (shared !== (g > 0)) fail(`route op: shared flag ${shared ? 'set' : 'clear'} but group length ${g}`);
  if (ROUTE_OP_HEADER + f + g !== length) fail(`route op: lengths ${ROUTE_OP_HEADER} + ${f} + ${g} do not add up to the record's ${length} bytes`);
  const at = start + ROUTE_OP_HEADER;
  const op: RouteOp = {
    kind: KINDS[k - KIND_SUBSCRIBE]!,
    worker,
    seq,
    filter: b.toString('utf8', at, at + f),
  };
  if (shared) op.group = b.toString('utf8', at + f, at + f + g);
  return op;
}

/** Encodes `op` and tries to append it to `ring`: false when the ring is full. */
export function tryWriteRouteOp(ring: RingProducer, op: RouteOp): boolean {
  return ring.tryWrite(encodeRouteOp(op));
}
