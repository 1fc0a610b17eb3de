// What the broker engine needs from the worker-threaded node (src/workers/fabric.ts): the
// shared route trie, the rings to the other workers, the session registry. An inline node
// (node.workers = 0) has no router and routes everything itself.
import type { Message } from './message.js';
import type { SessionTransfer } from './transfer.js';
import { hash32 } from './shared.js';

/** A shared-subscription group named in a forwarded message. */
export interface GroupRef {
  /** routeId(group, filter); 0 when the trie had none yet (then the name decides). */
  readonly route: number;
  readonly group: string;
}

export interface RouteGroupMatch {
  readonly group: string;
  readonly route: number;
  /** Workers holding members of the group. */
  readonly mask: number;
}

export interface RouteMatch {
  /** Workers with a non-shared subscription matching the topic (bit w = worker w). */
  readonly mask: number;
  /** Cluster: node set ids of matching filters that other nodes hold (src/cluster/node-sets.ts). */
  readonly routes: readonly number[];
  readonly groups: readonly RouteGroupMatch[];
}

export interface Router {
  readonly workerId: number;
  /** Every worker's bit. */
  readonly allMask: number;
  match(topic: string): RouteMatch;
  /** This worker's first subscription to `filter` (in `group`) appeared / its last one went. */
  routeAdded(filter: string, group: string | null): void;
  routeRemoved(filter: string, group: string | null): void;
  /** A member of shared group (filter, group) on this worker came online (+1) or went offline (-1). */
  memberOnline(filter: string, group: string, delta: 1 | -1): void;
  /** Online members of the group with route id `route` on worker `w` (0 when unknown). */
  onlineMembers(route: number, w: number): number;
  /**
   * Resolves once every route change sent so far is in the trie (so every worker routes by
   * it) and this worker has drained its inbound rings (in a cluster: committed to the
   * routes shard); null when there is nothing to wait for. Resolves false when the time for
   * that (cluster.route_commit_timeout_ms) ran out first.
   */
  sync(): Promise<boolean> | null;
  /**
   * Hands `m` to worker `w`: deliver to its non-shared subscribers (`nonShared`), to one
   * member of each group in `groups`, and store it as retained under `retainSeq` (> 0).
   * Returns false when it was dropped (QoS 0 behind a full ring, counted). `tried`: the
   * workers that already passed the message on for want of the groups' members.
   */
  forward(w: number, m: Message, nonShared: boolean, groups: readonly GroupRef[] | null, retainSeq: number, tried?: number): boolean;
  /** A ring is full and messages wait behind it: the publisher should stop reading. */
  readonly blocked: boolean;
  /** Calls `resume` once every waiting message is in its ring. */
  whenUnblocked(resume: () => void): void;
  /** Node-wide order of retained-message updates (last writer wins on every worker). */
  nextRetainSeq(): number;
  /**
   * Registers this worker as the owner of `clientId`'s session. When another worker held
   * it, that worker ends the old connection (takeover) and hands the session over (null
   * when it ends or there was none). Returns null without a round trip when no other
   * worker can hold it.
   */
  claim(clientId: string, cleanStart: boolean, persistent: boolean): Promise<SessionTransfer | null> | null;
  /** The session of `clientId` ended on this worker. */
  released(clientId: string): void;

  // ---- cluster (clustered false: none of these is called) -----------------------------
  /** The node is in a cluster: remote routes and the forward channel. */
  readonly clustered: boolean;
  /** Slots of the other nodes holding a non-shared route that `match` found (empty: none). */
  remoteSlots(match: RouteMatch): readonly number[];
  /** Slots of the other nodes holding members of shared group `g`. */
  groupRemoteSlots(g: RouteGroupMatch): readonly number[];
  /** Online members of shared group `g` on node `slot`, as that node wrote them to the routes shard (-1: unknown). */
  groupRemoteOnline(g: RouteGroupMatch, slot: number): number;
  /** Name of the node in `slot` ('' when unknown): orders a group's nodes the same on every node. */
  nodeName(slot: number): string;
  /**
   * Sends `m` to node `slot` (it delivers to its non-shared subscribers when `nonShared`,
   * and to one member of each group in `groups`). For QoS 1/2 returns a promise that
   * settles once that node holds the message (or left the cluster); null otherwise.
   */
  forwardRemote(slot: number, m: Message, nonShared: boolean, groups: readonly GroupRef[] | null): Promise<void> | null;
  /**
   * Durable node: a wait for the workers that QoS 1/2 messages were forwarded to since the
   * last call to have them (and what they wrote to the store) on disk; null when none.
   */
  takeDurableWait?(timeoutMs?: number): Promise<boolean> | null;
  /** A retained message set (or cleared) here: the cluster stores it. */
  retainedSet(m: Message, seq: number): void;
}

/** hash32 of `$share/<group>/<filter>`, 31 bits, never 0: the id a shared group's trie terminal carries. */
export function routeId(group: string, filter: string): number {
  return (hash32(`$share/${group}/${filter}`) >>> 1) | 1;
}
