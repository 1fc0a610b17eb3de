// The cluster's etcd key layout and the shard keys built from it (docs/cluster.md,
// "What etcd holds"). Every key starts with /fleetmq/<cluster>/.
//
//   nodes/live/<node>                     lease   NodeInfo JSON: a live node
//   nodes/member/<node>                           MemberInfo JSON: membership (survives restarts)
//   routes/<node>/<inc>/alive             lease   the incarnation's routes exist while this does
//   routes/<node>/<inc>/l/<seq>           lease   one batch of route changes (kv-codec ops)
//   routes/<node>/<inc>/b/<seq>/<chunk>   lease   a base: every route of the incarnation after batch <seq>
//   routes/<node>/<inc>/b/<seq>/end       lease   the base is complete
//   sessions/<client id>                  lease*  SessionOwner JSON (*the owner's lease unless persistent)
//   retained/<topic>                              a retained message (retained-codec)
//   config/<key>, auth/<key>                      JSON values
//   <shard>/\0tick/<node>                 lease   a core's heartbeat in each shard (replication lag)
//
// Shard keys (what a replica holds): nodes "live/<node>" and "member/<node>"; routes
// "<node>\0<inc>\0<route key>" (route key = filter or $share/<group>/<filter>); sessions the
// client id; retained the topic; config and auth the key. U+0000 never occurs in MQTT
// strings [MQTT-1.5.4-2] nor in node names, so it separates safely.
import type { ShardName } from './shard.js';

export const TICK = '\u0000tick/';
const SEQ_DIGITS = 16;

/** etcd prefix of a shard. */
export function shardPrefix(cluster: string, shard: ShardName): string {
  return `/fleetmq/${cluster}/${shard}/`;
}

export const liveKey = (cluster: string, node: string): string => `/fleetmq/${cluster}/nodes/live/${node}`;
export const memberKey = (cluster: string, node: string): string => `/fleetmq/${cluster}/nodes/member/${node}`;

export function clusterPrefix(cluster: string): string {
  return `/fleetmq/${cluster}/`;
}

export const seqKey = (seq: number): string => seq.toString(16).padStart(SEQ_DIGITS, '0');

export function routeLogKey(cluster: string, node: string, inc: string, seq: number): string {
  return `/fleetmq/${cluster}/routes/${node}/${inc}/l/${seqKey(seq)}`;
}

export function routeAliveKey(cluster: string, node: string, inc: string): string {
  return `/fleetmq/${cluster}/routes/${node}/${inc}/alive`;
}

export function routeBaseKey(cluster: string, node: string, inc: string, seq: number, chunk: number | 'end'): string {
  return `/fleetmq/${cluster}/routes/${node}/${inc}/b/${seqKey(seq)}/${chunk === 'end' ? 'end' : chunk.toString(16).padStart(6, '0')}`;
}

export function incPrefix(cluster: string, node: string, inc: string): string {
  return `/fleetmq/${cluster}/routes/${node}/${inc}/`;
}

export function tickKey(cluster: string, shard: ShardName, node: string): string {
  return `${shardPrefix(cluster, shard)}${TICK}${node}`;
}

/** A routes-prefix key split up (null when it is not one of ours). */
export type RouteKeyParts =
  | { kind: 'alive'; node: string; inc: string }
  | { kind: 'log'; node: string; inc: string; seq: number }
  | { kind: 'base'; node: string; inc: string; seq: number; chunk: number | 'end' };

export function parseRouteKey(rest: string): RouteKeyParts | null {
  // rest = <node>/<inc>/alive | <node>/<inc>/l/<seq> | <node>/<inc>/b/<seq>/<chunk>
  const a = rest.indexOf('/');
  const b = a < 0 ? -1 : rest.indexOf('/', a + 1);
  if (a <= 0 || b <= a + 1) return null;
  const node = rest.slice(0, a);
  const inc = rest.slice(a + 1, b);
  const tail = rest.slice(b + 1);
  if (tail === 'alive') return { kind: 'alive', node, inc };
  if (tail.startsWith('l/')) {
    const seq = parseInt(tail.slice(2), 16);
    return Number.isSafeInteger(seq) ? { kind: 'log', node, inc, seq } : null;
  }
  if (tail.startsWith('b/')) {
    const [s, c] = tail.slice(2).split('/');
    const seq = parseInt(s ?? '', 16);
    if (!Number.isSafeInteger(seq) || c === undefined) return null;
    if (c === 'end') return { kind: 'base', node, inc, seq, chunk: 'end' };
    const chunk = parseInt(c, 16);
    return Number.isSafeInteger(chunk) ? { kind: 'base', node, inc, seq, chunk } : null;
  }
  return null;
}

/** Shard key of one route of one node incarnation. */
export const routeShardKey = (node: string, inc: string, routeKey: string): string => `${node}\u0000${inc}\u0000${routeKey}`;

export function splitRouteShardKey(k: string): { node: string; inc: string; route: string } | null {
  const a = k.indexOf('\u0000');
  const b = a < 0 ? -1 : k.indexOf('\u0000', a + 1);
  if (a < 0 || b < 0) return null;
  return { node: k.slice(0, a), inc: k.slice(a + 1, b), route: k.slice(b + 1) };
}

/** A live node, as it registers itself (or as its core registers a replicant). */
export interface NodeInfo {
  name: string;
  role: 'core' | 'replicant';
  incarnation: string;
  /** host:port of its cluster port. */
  cluster: string;
  /** host:port of its forward port. */
  forward: string;
  workers: number;
  started_at: number;
  /** Replicant: the core it streams from. */
  core?: string;
}

export interface MemberInfo {
  name: string;
  role: 'core' | 'replicant';
  joined_at: number;
  /** Set while the node leaves (ctl cluster leave). */
  leaving?: boolean;
}

/** Who owns a client id's session. */
export interface SessionOwner {
  node: string;
  inc: string;
  /** Persistent sessions outlive their owner's lease. */
  persistent: boolean;
}
