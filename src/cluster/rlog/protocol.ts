// The RLOG protocol between a replicant and its core, on the cluster port (docs/cluster.md,
// "Wire formats"). It runs on an authenticated link (src/cluster/link): frames of
// `u32 length, u8 type, body`, and request/response pairs. All numbers big-endian;
// revisions and sequence numbers as f64 (exact below 2^53).
//
// Frames core → replicant:
//   SNAP_BEGIN  u8 shard, f64 rev, u32 keys          a snapshot of the shard at rev follows
//   SNAP_DATA   u8 shard, kv ops                       part of it (kv-codec)
//   SNAP_END    u8 shard, f64 rev                      the replica is the shard at rev
//   CHANGE      u8 shard, f64 rev, f64 ts, kv ops      one revision's changes
//   PROGRESS    u8 shard, f64 rev, f64 sourceRev       current up to rev; the core is at sourceRev
// Requests replicant → core (kind, body → answer):
//   SUBSCRIBE   JSON { node: NodeInfo, lease, shards: { name: rev | null } } → JSON { lease, core }
//   ROUTES      f64 seq, u16 incLen, inc, kv ops       → f64 rev (the entry is in etcd)
//   CLAIM       JSON { id, owner }                     → JSON { epoch, prev }
//   RELEASE     JSON { id, epoch }                     → JSON { released }
//   KV          u8 shard, kv ops                       → f64 rev (retained / config / auth writes)
//   STOPPING    JSON { node }                          → JSON { ok } (the replicant stops: its lease is revoked)
// Any node, on its cluster port:
//   STATUS      (empty)                                → JSON NodeStatus
import type { Link } from '../wire/link.js';

export const F_SNAP_BEGIN = 40;
export const F_SNAP_DATA = 41;
export const F_SNAP_END = 42;
export const F_CHANGE = 43;
export const F_PROGRESS = 44;

export const R_SUBSCRIBE = 1;
export const R_ROUTES = 2;
export const R_CLAIM = 3;
export const R_RELEASE = 4;
export const R_KV = 5;
export const R_STATUS = 6;
export const R_JOIN_ETCD = 7;
export const R_FORCE_LEAVE = 8;
export const R_LEAVE = 9;
export const R_STOPPING = 10;

/** Ops per SNAP_DATA frame. */
export const SNAP_BATCH = 8_192;

export type { Link };

export function json(x: unknown): Buffer {
  return Buffer.from(JSON.stringify(x));
}

export function parseJson<T>(b: Buffer): T {
  return JSON.parse(b.toString('utf8')) as T;
}

export function f64(n: number): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeDoubleBE(n, 0);
  return b;
}

/** Shard status in /api/v1/cluster. */
export interface ShardStatus {
  name: string;
  revision: number;
  /** Revisions behind the source (etcd for a core, via its core for a replicant). */
  lag: number;
  lag_ms: number;
  keys: number;
}

/** What a node says of itself (STATUS request, /api/v1/cluster). */
export interface NodeStatus {
  name: string;
  role: 'core' | 'replicant';
  status: 'running' | 'stopped' | 'joining' | 'leaving' | 'left';
  uptime_s: number;
  /** A replicant's core (null while it has none). */
  core: string | null;
  shards: ShardStatus[];
  etcd?: { state: string; endpoints: readonly string[]; unreachable_ms: number; last_error: string | null };
  connections?: number;
  incarnation: string;
  version: string;
}
