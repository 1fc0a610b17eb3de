// The replication thread: the only writer of the shared route trie. Drains every worker's
// route-op ring, applies the ops, and publishes "applied up to seq N" per worker so that a
// worker can hold its SUBACK until every worker routes by the new subscription
// (docs/workers.md). Later it also carries cluster replication.
import { parentPort, workerData } from 'node:worker_threads';
import { routeId } from '../broker/router.js';
import { RingConsumer, type RingLoop } from '../shm/ring.js';
import { decodeRouteOp, type RouteOpKind } from '../shm/route-op.js';
import { TrieWriter } from '../trie/index.js';
import { C_APPLIED, CONTROL_WORDS, findGroupEntry, type SharedPlan } from './plan.js';

export interface ReplicatorData {
  plan: SharedPlan;
}

export type ToReplicator = { type: 'purge'; worker: number; slot: number; reqId: number } | { type: 'stats'; reqId: number } | { type: 'stop' };
export type FromReplicator =
  | { type: 'ready'; trie: { heap: SharedArrayBuffer } }
  | { type: 'reply'; reqId: number; value: unknown }
  | { type: 'error'; error: string };

const port = parentPort!;
const { plan } = workerData as ReplicatorData;
const writer = new TrieWriter({ maxReaders: 64 });
const ctl = new Int32Array(plan.control, 0, CONTROL_WORDS);
/** Per worker: trie key → reference count (to purge a dead worker's routes). */
const held: Map<string, number>[] = Array.from({ length: plan.workers }, () => new Map());
/** Workers per shared-group key: the group's route id is cleared when none is left. */
const groupRefs = new Map<string, number>();
let opsApplied = 0;
const weights = new Int32Array(plan.groupWeights);
/** Per worker: group route id → online members counted there (to zero them on purge). */
const online: Map<number, number>[] = Array.from({ length: plan.workers }, () => new Map());
let weightsFull = false;

function onlineDelta(w: number, route: number, d: number): void {
  const mine = online[w]!;
  const n = (mine.get(route) ?? 0) + d;
  if (n < 0) return; // purged meanwhile
  if (n === 0) mine.delete(route);
  else mine.set(route, n);
  const e = findGroupEntry(weights, route, true);
  if (e < 0) {
    // Table full: workers fall back to an unweighted choice for this group.
    if (!weightsFull) port.postMessage({ type: 'error', error: 'shared-group weight table full' } satisfies FromReplicator);
    weightsFull = true;
    return;
  }
  Atomics.store(weights, e + 1 + w, n);
}

function apply(w: number, kind: RouteOpKind, filter: string, group: string | undefined): void {
  if (kind === 'online' || kind === 'offline') {
    if (group !== undefined) onlineDelta(w, routeId(group, filter), kind === 'online' ? 1 : -1);
    opsApplied++;
    return;
  }
  const key = group === undefined ? filter : `$share/${group}/${filter}`;
  const mine = held[w]!;
  if (kind === 'subscribe') {
    if (group !== undefined) {
      const n = groupRefs.get(key) ?? 0;
      // The route id first, then the worker bit: a reader that sees the bit sees the id.
      if (n === 0) writer.setRoute(key, routeId(group, filter));
      groupRefs.set(key, n + 1);
    }
    writer.insert(key, w);
    mine.set(key, (mine.get(key) ?? 0) + 1);
  } else {
    const n = mine.get(key) ?? 0;
    if (n === 0) return; // already purged
    if (n === 1) mine.delete(key);
    else mine.set(key, n - 1);
    writer.remove(key, w);
    if (group !== undefined) {
      const g = (groupRefs.get(key) ?? 1) - 1;
      if (g > 0) groupRefs.set(key, g);
      else {
        groupRefs.delete(key);
        writer.setRoute(key, 0);
      }
    }
  }
  opsApplied++;
}

function onRecord(data: Buffer, start: number, length: number): void {
  const op = decodeRouteOp(data, start, length);
  apply(op.worker, op.kind, op.filter, op.group);
  // Release: the trie writes above happen-before a worker's load of this word.
  Atomics.store(ctl, C_APPLIED + op.worker, op.seq | 0);
  Atomics.notify(ctl, C_APPLIED + op.worker);
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
  for (const [key, count] of [...held[w]!]) {
    const share = key.startsWith('$share/') ? key.slice(7) : null;
    const slash = share === null ? -1 : share.indexOf('/');
    const group = share === null ? undefined : share.slice(0, slash);
    const filter = share === null ? key : share.slice(slash + 1);
    for (let i = 0; i < count; i++) apply(w, 'unsubscribe', filter, group);
    n++;
  }
  for (const [route, count] of [...online[w]!]) onlineDelta(w, route, -count);
  return n;
}

port.on('message', (m: ToReplicator) => {
  if (m.type === 'purge') {
    const n = purge(m.worker);
    // The dead worker's reader slot would hold back reclamation for ever.
    if (m.slot >= 0) writer.releaseReader(m.slot);
    port.postMessage({ type: 'reply', reqId: m.reqId, value: n } satisfies FromReplicator);
  }
  else if (m.type === 'stats') {
    port.postMessage({ type: 'reply', reqId: m.reqId, value: { ...writer.stats(), opsApplied } } satisfies FromReplicator);
  } else if (m.type === 'stop') {
    void Promise.all(loops.map((l) => l.stop())).then(() => {
      clearInterval(reclaimTimer);
      port.close();
    });
  }
});
port.postMessage({ type: 'ready', trie: writer.buffers() } satisfies FromReplicator);
