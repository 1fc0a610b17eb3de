// The replication thread: the only writer of the shared route trie. Drains every worker's
// route-op ring, applies the ops, and publishes "applied up to seq N" per worker so that a
// worker can hold its SUBACK until every worker routes by the new subscription
// (docs/workers.md). In a cluster it also runs the ClusterAgent (src/cluster/agent.ts):
// this node's routes go to the cluster, and other nodes' routes come into the trie as sets
// of remote nodes; "committed up to seq N" then holds a SUBACK until etcd has the route.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { MessagePort, parentPort, workerData } from 'node:worker_threads';
import { etcdTlsOf, useEtcdTls } from '../cluster/etcd/tls.js';
import type { Message } from '../broker/message.js';
import { routeId } from '../broker/router.js';
import { ClusterAgent, type AgentToWorker } from '../cluster/agent.js';
import type { GroupOnlineEntry } from '../cluster/group-online.js';
import { forEachSlot, groupRemoteSet, GroupRemoteWriter, NodeSetWriter, orNodeSet, SET_WORDS } from '../cluster/node-sets.js';
import { createClusterTransport } from '../cluster/transport.js';
import type { Config } from '../config/types.js';
import { Logger } from '../log/logger.js';
import { parseShare } from '../protocol/topic.js';
import { RingConsumer, type RingLoop } from '../shm/ring.js';
import { decodeRouteOp, type RouteOpKind } from '../shm/route-op.js';
import { TrieReader, TrieWriter } from '../trie/index.js';
import { C_APPLIED, C_CLUSTER, C_COMMITTED, CONTROL_WORDS, findGroupEntry, type SharedPlan } from './plan.js';

export interface ReplicatorData {
  plan: SharedPlan;
  /** Set for a clustered node. */
  cluster: { cfg: Config; etcdEndpoints: string[] } | null;
}

export type ToReplicator =
  | { type: 'purge'; worker: number; slot: number; reqId: number }
  | { type: 'stats'; reqId: number }
  | { type: 'stop' }
  /** The node stops: sent before the workers end their clients (and so their routes). */
  | { type: 'stopping' }
  /** The port that worker `worker` listens to (a new one after a restart). */
  | { type: 'workerPort'; worker: number; port: MessagePort }
  | { type: 'claim'; reqId: number; clientId: string; persistent: boolean; keep?: boolean }
  | { type: 'release'; clientId: string; epoch: number }
  | { type: 'clusterStatus'; reqId: number }
  | { type: 'clusterView'; reqId: number }
  | { type: 'clusterStats'; reqId: number }
  | { type: 'join'; reqId: number; target: string }
  | { type: 'leave'; reqId: number }
  | { type: 'forceLeave'; reqId: number; node: string }
  /** Which workers and which other nodes a topic goes to now (GET /api/v1/routes). */
  | { type: 'routesOf'; reqId: number; topic: string }
  /** Tests (FLEETMQ_FAULT_INJECTION=1, checked by the supervisor): the thread exits. */
  | { type: 'fault' };
export type FromReplicator =
  | { type: 'ready'; trie: { heap: SharedArrayBuffer } }
  | { type: 'reply'; reqId: number; value: unknown }
  | { type: 'error'; error: string; code?: string }
  | { type: 'log'; line: string }
  /** Everything is closed: the thread may be terminated (the supervisor does so). */
  | { type: 'stopped' }
  /** The node's lease was replaced: the supervisor claims its sessions again. */
  | { type: 'leaseRenewed' };

/** What a worker sends the replication thread on its port. */
export type WorkerToAgent = { type: 'retain'; msg: Message; seq: number };

const port = parentPort!;
const { plan, cluster } = workerData as ReplicatorData;
// etcd over TLS with the node's certificate (cluster.tls), as on the main thread.
if (cluster) useEtcdTls(etcdTlsOf(cluster.cfg));
const writer = new TrieWriter({ maxReaders: 64 });
const ctl = new Int32Array(plan.control, 0, CONTROL_WORDS);
const seq64 = new BigInt64Array(plan.control, CONTROL_WORDS * 4, 1);
/** Per worker: trie key → reference count (to purge a dead worker's routes). */
const held: Map<string, number>[] = Array.from({ length: plan.workers }, () => new Map());
/** Workers per shared-group key: the group's route id is cleared when none is left. */
const groupRefs = new Map<string, number>();
let opsApplied = 0;
const weights = new Int32Array(plan.groupWeights);
/** Per worker: shared-group key ($share/<g>/<f>) → online members counted there (to zero them on purge). */
const online: Map<string, number>[] = Array.from({ length: plan.workers }, () => new Map());
/** Shared-group key → online members on this node (every worker): the cluster weights nodes by it. */
const nodeOnline = new Map<string, number>();
let weightsFull = false;

function onlineDelta(w: number, key: string, route: number, d: number): void {
  const mine = online[w]!;
  const n = (mine.get(key) ?? 0) + d;
  if (n < 0) return; // purged meanwhile
  if (n === 0) mine.delete(key);
  else mine.set(key, n);
  const total = (nodeOnline.get(key) ?? 0) + d;
  if (total > 0) nodeOnline.set(key, total);
  else nodeOnline.delete(key);
  agent?.nodeRoutes.setOnline(key, Math.max(0, total));
  const e = findGroupEntry(weights, route, true);
  if (e < 0) {
    // Table full: workers fall back to an unweighted choice for this group.
    if (!weightsFull) port.postMessage({ type: 'error', error: 'shared-group weight table full' } satisfies FromReplicator);
    weightsFull = true;
    return;
  }
  Atomics.store(weights, e + 1 + w, n);
}

/**
 * Applies one route op to the trie. Returns the trie key and the change of this worker's
 * hold on it (+1 / -1) for the cluster, or a null key for ops that do not change a route.
 */
function apply(w: number, kind: RouteOpKind, filter: string, group: string | undefined): { key: string | null; d: 1 | -1 | 0 } {
  opsApplied++;
  if (kind === 'online' || kind === 'offline') {
    if (group !== undefined) onlineDelta(w, `$share/${group}/${filter}`, routeId(group, filter), kind === 'online' ? 1 : -1);
    return { key: null, d: 0 };
  }
  const key = group === undefined ? filter : `$share/${group}/${filter}`;
  const mine = held[w]!;
  if (kind === 'subscribe') {
    if (group !== undefined) {
      const n = groupRefs.get(key) ?? 0;
      // The route id first, then the worker bit: a reader that sees the bit sees the id.
      if (n === 0 && !remoteGroupSets.has(key)) writer.setRoute(key, routeId(group, filter));
      groupRefs.set(key, n + 1);
    }
    writer.insert(key, w);
    mine.set(key, (mine.get(key) ?? 0) + 1);
    return { key, d: 1 };
  }
  const n = mine.get(key) ?? 0;
  if (n === 0) return { key: null, d: 0 }; // already purged
  if (n === 1) mine.delete(key);
  else mine.set(key, n - 1);
  writer.remove(key, w);
  if (group !== undefined) {
    const g = (groupRefs.get(key) ?? 1) - 1;
    if (g > 0) groupRefs.set(key, g);
    else {
      groupRefs.delete(key);
      // Members elsewhere keep the group's terminal (and its route id) in the trie.
      if (!remoteGroupSets.has(key)) writer.setRoute(key, 0);
    }
  }
  return { key, d: -1 };
}

function onRecord(data: Buffer, start: number, length: number): void {
  const op = decodeRouteOp(data, start, length);
  const { key, d } = apply(op.worker, op.kind, op.filter, op.group);
  // Release: the trie writes above happen-before a worker's load of this word.
  Atomics.store(ctl, C_APPLIED + op.worker, op.seq | 0);
  Atomics.notify(ctl, C_APPLIED + op.worker);
  if (agent) agent.localRoute(op.worker, op.seq, key, d);
}

// ---- the cluster: remote routes in the trie ---------------------------------------------

const nodeSets = cluster ? new NodeSetWriter(plan.nodeSets) : null;
const groupRemote = cluster ? new GroupRemoteWriter(plan.groupRemote) : null;
/** Shared group key ($share/<g>/<f>) → the node set id of its members on other nodes. */
const remoteGroupSets = new Map<string, number>();

/** Shared-group key → slot → online members there, as the routes shard says (for workers that start). */
const remoteOnline = new Map<string, Map<number, number>>();
let onlineOut: GroupOnlineEntry[] = [];

/** Node `slot`'s online members of shared group `key` (-1: unknown or gone): to the workers, batched per turn. */
function setOnline(key: string, slot: number, n: number): void {
  const share = parseShare(key);
  if ('error' in share || share.group === null) return;
  let m = remoteOnline.get(key);
  if (n < 0) {
    if (m?.delete(slot) && m.size === 0) remoteOnline.delete(key);
  } else {
    if (!m) remoteOnline.set(key, (m = new Map()));
    m.set(slot, n);
  }
  if (onlineOut.length === 0) {
    setImmediate(() => {
      const entries = onlineOut;
      onlineOut = [];
      toWorkers({ type: 'groupOnline', entries });
    });
  }
  onlineOut.push([routeId(share.group, share.filter), share.group, slot, n]);
}

function allOnline(): GroupOnlineEntry[] {
  const out: GroupOnlineEntry[] = [];
  for (const [key, m] of remoteOnline) {
    const share = parseShare(key);
    if ('error' in share || share.group === null) continue;
    for (const [slot, n] of m) out.push([routeId(share.group, share.filter), share.group, slot, n]);
  }
  return out;
}

/** The nodes (slots) other than this one holding `key` now: into the trie. */
function setRemote(key: string, slots: readonly number[]): void {
  const id = slots.length === 0 ? 0 : nodeSets!.acquire(slots);
  const share = key.charCodeAt(0) === 36 /* $ */ && (key.startsWith('$share/') || key.startsWith('$queue/')) ? parseShare(key) : null;
  if (share && !('error' in share) && share.group !== null) {
    const old = remoteGroupSets.get(key) ?? 0;
    const route = routeId(share.group, share.filter);
    if (!groupRemote!.set(route, share.group, id)) port.postMessage({ type: 'error', error: 'cluster shared-group table full' } satisfies FromReplicator);
    if (id !== 0) {
      // The group's terminal must exist for a topic to match it, local members or not.
      if (old === 0 && !groupRefs.has(key)) writer.setRoute(key, route);
      remoteGroupSets.set(key, id);
    } else {
      remoteGroupSets.delete(key);
      if (!groupRefs.has(key)) writer.setRoute(key, 0);
    }
    nodeSets!.release(old);
    return;
  }
  // The set's words were written by acquire() before this store publishes its id. A plain
  // filter's route id is its node set's id (the trie is the only record of it).
  nodeSets!.release(writer.setRoute(key, id));
}

const consumers = plan.routeRings.map((sab) => new RingConsumer(sab));
const loops: RingLoop[] = consumers.map((c) => c.start(onRecord, { batch: 512, ref: false }));
for (const l of loops) l.done.catch((e: unknown) => port.postMessage({ type: 'error', error: String(e) } satisfies FromReplicator));
// Memory retired by removals is freed once no reader can still be inside it.
const reclaimTimer = setInterval(() => writer.reclaim(), 200);
reclaimTimer.unref();

/** Removes every route a dead worker held (its ring is drained first). */
function purge(w: number): number {
  consumers[w]!.drain(onRecord);
  let n = 0;
  const committed = agent?.nodeRoutes.committed(w) ?? 0;
  for (const [key, count] of [...held[w]!]) {
    const share = key.startsWith('$share/') ? key.slice(7) : null;
    const slash = share === null ? -1 : share.indexOf('/');
    const group = share === null ? undefined : share.slice(0, slash);
    const filter = share === null ? key : share.slice(slash + 1);
    for (let i = 0; i < count; i++) {
      const r = apply(w, 'unsubscribe', filter, group);
      if (agent && r.key !== null) agent.localRoute(w, committed, r.key, -1);
    }
    n++;
  }
  agent?.nodeRoutes.dropWorker(w);
  for (const [key, count] of [...online[w]!]) {
    const share = parseShare(key);
    if ('error' in share || share.group === null) continue;
    onlineDelta(w, key, routeId(share.group, share.filter), -count);
  }
  return n;
}

/** Online members of a group per node as this node knows them (itself, when it holds members, included), for the API. */
function groupOnlineOf(group: string, route: number, local: boolean): Record<string, number> {
  const out: Record<string, number> = {};
  if (!agent) return out;
  const mine = (key: string): boolean => {
    const share = parseShare(key);
    return !('error' in share) && share.group === group && routeId(group, share.filter) === route;
  };
  for (const [key, m] of remoteOnline) {
    if (mine(key)) for (const [slot, n] of m) out[agent.membership.nameOf(slot) ?? `slot ${slot}`] = n;
  }
  if (local) {
    out[cluster!.cfg.node.name] = 0;
    for (const [key, n] of nodeOnline) if (mine(key)) out[cluster!.cfg.node.name] = n;
  }
  return out;
}

/** A reader of our own trie, for route queries of the API (made on first use). */
let ownReader: TrieReader | null = null;

function routesOf(topic: string): {
  topic: string; workers: number[]; nodes: string[];
  groups: { group: string; workers: number[]; nodes: string[]; online: Record<string, number> }[];
} {
  ownReader ??= new TrieReader(writer.buffers(), { cacheSize: 0 });
  const m = ownReader.match(topic);
  const bits = (mask: number): number[] => [...Array(31).keys()].filter((w) => (mask & (1 << w)) !== 0);
  const names = (ids: readonly number[]): string[] => {
    if (!agent || !nodeSets) return [];
    const acc = new Int32Array(SET_WORDS);
    for (const id of ids) orNodeSet(new Int32Array(plan.nodeSets), id, acc);
    const out: string[] = [];
    forEachSlot(acc, (s) => out.push(agent!.membership.nameOf(s) ?? `slot ${s}`));
    return out.sort();
  };
  return {
    topic, workers: bits(m.mask), nodes: names(m.routes),
    groups: m.groups.map((g) => ({
      group: g.group, workers: bits(g.mask),
      nodes: names(cluster ? [groupRemoteSet(new Int32Array(plan.groupRemote), g.route, g.group)].filter((x) => x !== 0) : []),
      online: groupOnlineOf(g.group, g.route, g.mask !== 0),
    })),
  };
}

// ---- the cluster agent --------------------------------------------------------------------

const workerPorts: (MessagePort | null)[] = Array.from({ length: plan.workers }, () => null);
let agent: ClusterAgent | null = null;

function toWorkers(m: AgentToWorker): void {
  for (const p of workerPorts) p?.postMessage(m);
}

async function startAgent(): Promise<void> {
  if (!cluster) return;
  const log = new Logger(cluster.cfg.log.level, { node: cluster.cfg.node.name, thread: 'replicator' }, (line) => port.postMessage({ type: 'log', line } satisfies FromReplicator));
  Atomics.store(ctl, C_CLUSTER, 1);
  // A replicant keeps the cores it knows in <data-dir>/cluster.json: its membership
  // survives a restart without --seeds.
  const stateFile = join(resolve(cluster.cfg.node.data_dir), 'cluster.json');
  let knownCores: string[] = [];
  try {
    const st = JSON.parse(readFileSync(stateFile, 'utf8')) as { cluster?: string; cores?: string[]; left?: boolean };
    if (st.cluster === cluster.cfg.cluster.name && !st.left && Array.isArray(st.cores)) knownCores = st.cores;
  } catch {
    /* first start */
  }
  if (cluster.cfg.cluster.role === 'replicant' && cluster.cfg.cluster.seeds.length === 0 && knownCores.length === 0 && cluster.cfg.cluster.discovery !== 'dns') {
    throw Object.assign(new Error(`a replicant needs cores to stream from: no --seeds, and ${stateFile} names none`), { code: 'CLUSTER_NO_SEEDS' });
  }
  let lastPersisted = '';
  const persist = (s: { cores: string[]; left?: boolean }): void => {
    const text = JSON.stringify({ cluster: cluster.cfg.cluster.name, node: cluster.cfg.node.name, cores: [...new Set(s.cores)], left: s.left ?? false }) + '\n';
    if (text === lastPersisted) return;
    lastPersisted = text;
    try {
      mkdirSync(dirname(stateFile), { recursive: true });
      writeFileSync(stateFile + '.tmp', text);
      renameSync(stateFile + '.tmp', stateFile);
    } catch (e) {
      log.warn('cluster.state_not_saved', { file: stateFile, error: (e as Error).message });
    }
  };
  agent = new ClusterAgent({
    cfg: cluster.cfg, etcdEndpoints: cluster.etcdEndpoints, workers: plan.workers, log, knownCores, persist,
    transport: createClusterTransport(cluster.cfg, log),
    trie: { setRemote, setOnline },
    onLeaseRenewed: () => port.postMessage({ type: 'leaseRenewed' } satisfies FromReplicator),
    committed: (w, seq) => {
      Atomics.store(ctl, C_COMMITTED + w, seq | 0);
      Atomics.notify(ctl, C_COMMITTED + w);
    },
    nextRetainSeq: () => Number(Atomics.add(seq64, 0, 1n)) + 1,
    toWorkers,
  });
  await agent.start();
}

function attachWorkerPort(w: number, p: MessagePort): void {
  workerPorts[w]?.close();
  workerPorts[w] = p;
  p.on('message', (m: WorkerToAgent) => {
    if (m.type === 'retain') agent?.retain(reviveMsg(m.msg), m.seq);
  });
  if (agent) {
    p.postMessage({ type: 'peers', peers: agent.membership.peers() } satisfies AgentToWorker);
    p.postMessage({ type: 'groupOnline', entries: allOnline() } satisfies AgentToWorker);
    // The cluster's retained messages, for a worker that (re)started.
    for (const msg of agent.retainedAll()) p.postMessage({ type: 'retained', msg, seq: Number(Atomics.add(seq64, 0, 1n)) + 1 } satisfies AgentToWorker);
  }
}

/** postMessage turns a Buffer into a Uint8Array. */
function reviveMsg(m: Message): Message {
  const b = (x: Uint8Array): Buffer => (Buffer.isBuffer(x) ? x : Buffer.from(x.buffer, x.byteOffset, x.byteLength));
  const props = m.props?.correlationData ? { ...m.props, correlationData: b(m.props.correlationData) } : m.props;
  return { ...m, payload: b(m.payload), props };
}

function reply(reqId: number, p: Promise<unknown> | unknown): void {
  Promise.resolve(p).then(
    (value) => port.postMessage({ type: 'reply', reqId, value } satisfies FromReplicator),
    (e: Error) => port.postMessage({ type: 'reply', reqId, value: { error: e.message } } satisfies FromReplicator),
  );
}

port.on('message', (m: ToReplicator) => {
  if (m.type === 'workerPort') attachWorkerPort(m.worker, m.port);
  else if (m.type === 'fault') process.exit(3);
  else if (m.type === 'claim') reply(m.reqId, agent ? agent.claim(m.clientId, m.persistent, m.keep === true) : null);
  else if (m.type === 'release') void agent?.release(m.clientId, m.epoch).catch(() => undefined);
  else if (m.type === 'clusterStatus') reply(m.reqId, agent?.nodeStatus() ?? null);
  else if (m.type === 'clusterView') reply(m.reqId, agent ? agent.clusterView() : null);
  else if (m.type === 'clusterStats') reply(m.reqId, agent?.stats() ?? null);
  else if (m.type === 'join') reply(m.reqId, agent ? agent.join(m.target) : null);
  else if (m.type === 'stopping') agent?.beginStop();
  else if (m.type === 'leave') reply(m.reqId, agent ? agent.leave() : null);
  else if (m.type === 'forceLeave') reply(m.reqId, agent ? agent.forceLeave(m.node) : null);
  else if (m.type === 'routesOf') reply(m.reqId, routesOf(m.topic));
  else if (m.type === 'purge') {
    const n = purge(m.worker);
    // The dead worker's reader slot would hold back reclamation for ever.
    if (m.slot >= 0) writer.releaseReader(m.slot);
    port.postMessage({ type: 'reply', reqId: m.reqId, value: n } satisfies FromReplicator);
  }
  else if (m.type === 'stats') {
    port.postMessage({ type: 'reply', reqId: m.reqId, value: { ...writer.stats(), opsApplied } } satisfies FromReplicator);
  } else if (m.type === 'stop') {
    void Promise.all(loops.map((l) => l.stop()))
      .then(() => agent?.stop())
      .catch(() => undefined)
      .then(() => {
        clearInterval(reclaimTimer);
        for (const p of workerPorts) p?.close();
        port.postMessage({ type: 'stopped' } satisfies FromReplicator);
        port.close();
      });
  }
});
startAgent().then(
  () => port.postMessage({ type: 'ready', trie: writer.buffers() } satisfies FromReplicator),
  (e: Error & { code?: string }) => port.postMessage({ type: 'error', error: e.message, code: e.code ?? 'CLUSTER_START_FAILED' } satisfies FromReplicator),
);
