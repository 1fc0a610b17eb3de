// Binary encoding of key-value ops, used by the RLOG frames (snapshots and changes) and by
// the route log entries in etcd (docs/cluster.md, "Wire formats"). Big-endian:
//
//   u32 count, then per op:  u32 keyLen, key (UTF-8), i32 valueLen (-1 = delete), value
//
// Keys are strings (topic filters, client ids, topics: MQTT strings are UTF-8 without
// U+0000, which the shard keys use as a separator); values are opaque bytes.
import type { KvOp } from './shard.js';

export class KvCodecError extends Error {
  readonly code = 'CLUSTER_BAD_KV';
}

/** Bytes encodeOps() writes for `ops`. */
export function opsByteLength(ops: readonly KvOp[]): number {
  let n = 4;
  for (const op of ops) n += 8 + Buffer.byteLength(op.k, 'utf8') + (op.v?.length ?? 0);
  return n;
}

/** Writes `ops` at `at` of `out` (which must have room: opsByteLength); returns the end. */
export function writeOps(out: Buffer, at: number, ops: readonly KvOp[]): number {
  out.writeUInt32BE(ops.length, at);
  at += 4;
  for (const op of ops) {
    const kl = out.write(op.k, at + 4, 'utf8');
    out.writeUInt32BE(kl, at);
    at += 4 + kl;
    if (op.v === null) {
      out.writeInt32BE(-1, at);
      at += 4;
    } else {
      out.writeInt32BE(op.v.length, at);
      op.v.copy(out, at + 4);
      at += 4 + op.v.length;
    }
  }
  return at;
}

export function encodeOps(ops: readonly KvOp[]): Buffer {
  const out = Buffer.allocUnsafe(opsByteLength(ops));
  writeOps(out, 0, ops);
  return out;
}

/**
 * The value of every empty set (most route keys): one shared buffer instead of two objects
 * per op. A zero-length buffer has nothing to overwrite, so sharing it is safe.
 */
const EMPTY_VALUE = Buffer.alloc(0);

/**
 * Reads ops from `buf` at `at`; values are copied (the buffer may be reused). Returns the
 * ops and the offset after them. Throws KvCodecError on a truncated or malformed buffer.
 */
export function readOps(buf: Buffer, at = 0): { ops: KvOp[]; end: number } {
  const need = (n: number): void => {
    if (at + n > buf.length) throw new KvCodecError(`kv ops truncated at byte ${at} (need ${n} of ${buf.length - at})`);
  };
  need(4);
  const count = buf.readUInt32BE(at);
  at += 4;
  // Each op takes at least 8 bytes: a count beyond that is corrupt, not a big allocation.
  if (count > (buf.length - at) / 8) throw new KvCodecError(`kv ops: count ${count} does not fit in ${buf.length - at} bytes`);
  const ops: KvOp[] = new Array<KvOp>(count);
  for (let i = 0; i < count; i++) {
    need(4);
    const kl = buf.readUInt32BE(at);
    at += 4;
    need(kl + 4);
    const k = buf.toString('utf8', at, at + kl);
    at += kl;
    const vl = buf.readInt32BE(at);
    at += 4;
    let v: Buffer | null = null;
    if (vl === 0) v = EMPTY_VALUE;
    else if (vl > 0) {
      need(vl);
      v = Buffer.from(buf.subarray(at, at + vl));
      at += vl;
    } else if (vl !== -1) throw new KvCodecError(`kv ops: bad value length ${vl}`);
    ops[i] = { k, v };
  }
  return { ops, end: at };
}

export function decodeOps(buf: Buffer): KvOp[] {
  const { ops, end } = readOps(buf, 0);
  if (end !== buf.length) throw new KvCodecError(`kv ops: ${buf.length - end} bytes after the last op`);
  return ops;
}
