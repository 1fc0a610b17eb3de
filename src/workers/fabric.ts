// The worker side of the worker-threaded node: the broker engine's Router. Matches topics in
// the shared trie, forwards messages to other workers over SPSC rings, sends route changes to
// the trie writer, and asks the supervisor about session ownership (docs/workers.md).
import type { Broker } from '../broker/broker.js';
import type { Message } from '../broker/message.js';
import type { GroupRef, RouteMatch, Router } from '../broker/router.js';
import type { SessionTransfer } from '../broker/transfer.js';
import type { Counters } from '../metrics/counters.js';
import type { Logger } from '../log/logger.js';
import { RingConsumer, RingProducer, type RingLoop } from '../shm/ring.js';
import { encodeRouteOp, type RouteOp } from '../shm/route-op.js';
import { keepAliveTimer, waitAsync } from '../shm/wait.js';
import { TrieReader, type TrieBuffers } from '../trie/index.js';
import { decodeRecord, RecordEncoder } from './message-record.js';
import { C_APPLIED, C_CLUSTER, C_COMMITTED, C_OPEN_CONNECTIONS, CONTROL_WORDS, findGroupEntry, type SharedPlan } from './plan.js';
import type { ClaimReply } from './supervisor.js';
import type { Message as Msg } from '../broker/message.js';
import type { RouteGroupMatch } from '../broker/router.js';
import { forEachSlot, groupRemoteSet, orNodeSet, SET_WORDS } from '../cluster/node-sets.js';
import type { GroupOnline } from '../cluster/group-online.js';
import type { Forwarder } from '../cluster/forwarder.js';
import { durableNode } from '../store/engine-store.js';

const NO_SLOTS: readonly number[] = [];
const EMPTY_RECORD = Buffer.alloc(0);



/** How long a SUBACK / CONNACK waits for the trie writer before it goes anyway (single node). */
const APPLY_TIMEOUT_MS = 10_000;

export interface FabricOptions {
  id: number;
  plan: SharedPlan;
  trie: TrieBuffers;
  broker: Broker;
  log: Logger;
  /** Round trip to the supervisor (session registry). */
  ask: (msg: { type: 'claim'; clientId: string; cleanStart: boolean; persistent: boolean }) => Promise<ClaimReply>;
  tell: (msg: { type: 'unclaim'; clientId: string }) => void;
  /** Cluster: the forward channel of this worker, and the port to the replication thread. */
  cluster?: { forwarder: Forwarder; toAgent: (m: { type: 'retain'; msg: Msg; seq: number }) => void; groupOnline: GroupOnline };
}

/** Messages waiting for room in one ring (full ring): whole records, in order. */
interface Backlog {
  records: Buffer[];
  bytes: number;
  waiting: boolean;
}

export class Fabric implements Router {
  readonly workerId: number;
  readonly allMask: number;
  private readonly ctl: Int32Array;
  private readonly seq64: BigInt64Array;
  private readonly weights: Int32Array;
  private readonly reader: TrieReader;
  private readonly out: (RingProducer | null)[];
  private readonly inbound: RingConsumer[] = [];
  /** The worker each inbound ring comes from. */
  private readonly inboundFrom: number[] = [];
  // Durable node (plan.durable): records written to each worker's ring, records consumed
  // from each worker with their store writes on disk, and the destinations of QoS 1/2
  // messages forwarded since the publisher's acknowledgement last asked (durableWait).
  private readonly durable: Int32Array;
  private readonly sentTo: number[];
  private readonly consumedFrom: number[];
  private readonly shownFrom: number[];
  private durableShowing = false;
  private durableMask = 0;
  /** A durable node (the counts above are kept only then). */
  private readonly durableNode: boolean;
  private readonly loops: RingLoop[] = [];
  private readonly backlog: (Backlog | null)[];
  private readonly routes: RingProducer;
  /**
   * Route records the ring had no room for, oldest first from routeHead. A head index, not
   * shift(): a backlog of tens of thousands (a burst of SUBSCRIBEs) is a large array, which
   * V8 cannot trim from the front, so each shift() would copy all of it.
   */
  private readonly routeBacklog: Buffer[] = [];
  private routeHead = 0;
  private routeFlushing = false;
  private routeSeq: number;
  private readonly encoder = new RecordEncoder();
  private readonly counters: Counters;
  private blockedRings = 0;
  private unblockWaiters: (() => void)[] = [];
  private readonly onRecord: (data: Buffer, start: number, length: number) => void;
  readonly clustered: boolean;
  private readonly nodeSets: Int32Array;
  private readonly groupRemote: Int32Array;
  private readonly acc = new Int32Array(SET_WORDS);

  constructor(private readonly o: FabricOptions) {
    const { id, plan } = o;
    this.workerId = id;
    this.allMask = plan.workers >= 31 ? 0x7fffffff : (1 << plan.workers) - 1;
    this.ctl = new Int32Array(plan.control, 0, CONTROL_WORDS);
    this.seq64 = new BigInt64Array(plan.control, CONTROL_WORDS * 4, 1);
    this.weights = new Int32Array(plan.groupWeights);
    this.clustered = Atomics.load(this.ctl, C_CLUSTER) === 1 && o.cluster !== undefined;
    this.nodeSets = new Int32Array(plan.nodeSets);
    this.groupRemote = new Int32Array(plan.groupRemote);
    this.reader = new TrieReader(o.trie);
    this.counters = o.broker.counters;
    this.out = plan.rings[id]!.map((sab) => (sab ? new RingProducer(sab) : null));
    this.backlog = this.out.map(() => null);
    this.routes = new RingProducer(plan.routeRings[id]!);
    // A restarted worker continues the sequence its predecessor left in the applied word.
    this.routeSeq = Atomics.load(this.ctl, C_APPLIED + id) >>> 0;
    const b = o.broker;
    this.onRecord = (data, start, length) => {
      const f = decodeRecord(data, start, length);
      b.receiveForwarded(f.msg, f.nonShared, f.groups, f.retainSeq, f.tried);
    };
    for (let w = 0; w < plan.workers; w++) {
      const sab = plan.rings[w]![id];
      if (sab) {
        this.inbound.push(new RingConsumer(sab));
        this.inboundFrom.push(w);
      }
    }
    this.durableNode = durableNode(o.broker.cfg);
    this.durable = new Int32Array(plan.durable);
    this.sentTo = new Array<number>(plan.workers).fill(0);
    this.consumedFrom = new Array<number>(plan.workers).fill(0);
    this.shownFrom = new Array<number>(plan.workers).fill(0);
    // A restarted worker continues the counts its predecessor left.
    for (let w = 0; w < plan.workers; w++) {
      this.sentTo[w] = Atomics.load(this.durable, id * plan.workers + w);
      this.consumedFrom[w] = this.shownFrom[w] = Atomics.load(this.durable, w * plan.workers + id);
    }
  }

  get readerSlot(): number {
    return this.reader.slot;
  }

  /** Starts draining the inbound rings (after the broker is ready to deliver). */
  start(): void {
    for (let i = 0; i < this.inbound.length; i++) {
      const c = this.inbound[i]!;
      const loop = c.start(this.recordFrom(this.inboundFrom[i]!), { batch: 256, ref: false });
      loop.done.catch((e: unknown) => this.o.log.error('fabric.ring_loop_failed', { error: e }));
      this.loops.push(loop);
    }
  }

  async stop(): Promise<void> {
    await Promise.all(this.loops.splice(0).map((l) => l.stop()));
    this.reader.close();
  }

  /** The node-wide connection gate (node.max_connections over every worker). */
  gate(): { acquire(): number; release(): void } {
    const ctl = this.ctl;
    return {
      acquire: () => Atomics.add(ctl, C_OPEN_CONNECTIONS, 1),
      release: () => void Atomics.sub(ctl, C_OPEN_CONNECTIONS, 1),
    };
  }

  match(topic: string): RouteMatch {
    return this.reader.match(topic);
  }

  // ---- routes ------------------------------------------------------------------------

  routeAdded(filter: string, group: string | null): void {
    this.sendRoute('subscribe', filter, group);
  }

  routeRemoved(filter: string, group: string | null): void {
    this.sendRoute('unsubscribe', filter, group);
  }

  memberOnline(filter: string, group: string, delta: 1 | -1): void {
    this.sendRoute(delta === 1 ? 'online' : 'offline', filter, group);
  }

  onlineMembers(route: number, w: number): number {
    const e = findGroupEntry(this.weights, route, false);
    return e < 0 ? 0 : Atomics.load(this.weights, e + 1 + w);
  }

  private sendRoute(kind: RouteOp['kind'], filter: string, group: string | null): void {
    this.routeSeq = (this.routeSeq + 1) >>> 0;
    const op: RouteOp = { kind, worker: this.workerId, seq: this.routeSeq, filter };
    if (group !== null) op.group = group;
    const rec = encodeRouteOp(op);
    if (this.routeHead === this.routeBacklog.length && this.routes.tryWrite(rec)) return;
    this.routeBacklog.push(rec);
    void this.flushRoutes();
  }

  private async flushRoutes(): Promise<void> {
    if (this.routeFlushing) return;
    this.routeFlushing = true;
    try {
      const q = this.routeBacklog;
      while (this.routeHead < q.length) {
        const rec = q[this.routeHead]!;
        if (this.routes.tryWrite(rec)) {
          q[this.routeHead++] = EMPTY_RECORD;
          if (this.routeHead === q.length) {
            q.length = 0;
            this.routeHead = 0;
          } else if (this.routeHead >= 4096 && this.routeHead * 2 >= q.length) {
            q.splice(0, this.routeHead);
            this.routeHead = 0;
          }
        } else await this.routes.waitForSpace(rec.length + 8, { ref: false });
      }
    } finally {
      this.routeFlushing = false;
    }
  }

  sync(): Promise<boolean> | null {
    this.drainInbound();
    const target = this.routeSeq;
    if (this.appliedReached(target)) return null;
    return this.waitApplied(target).then((reached) => {
      this.drainInbound();
      return reached;
    });
  }

  /** The word to wait on: applied to the trie, or (cluster) committed in etcd, which comes after. */
  private get syncWord(): number {
    return (this.clustered ? C_COMMITTED : C_APPLIED) + this.workerId;
  }

  private appliedReached(target: number): boolean {
    // Sequence numbers wrap at 2^32: compare by signed distance.
    return ((Atomics.load(this.ctl, this.syncWord) - target) | 0) >= 0;
  }

  /**
   * SUBSCRIBEs (and CONNECTs) waiting for their route ops, oldest first. Their targets are
   * routeSeq values taken in order, so they are reached in order; their deadlines too.
   * One wait loop serves them all: a waitAsync per SUBSCRIBE would make every notify of
   * the trie writer wake each of them (hundreds, when clients subscribe in bursts).
   */
  private readonly syncWaiters: { target: number; giveUp: number; resolve: (reached: boolean) => void }[] = [];
  private syncLooping = false;

  private waitApplied(target: number): Promise<boolean> {
    const timeout = this.clustered ? this.o.broker.cfg.cluster.route_commit_timeout_ms : APPLY_TIMEOUT_MS;
    return new Promise<boolean>((resolve) => {
      this.syncWaiters.push({ target, giveUp: Date.now() + timeout, resolve });
      if (!this.syncLooping) void this.syncLoop();
    });
  }

  private async syncLoop(): Promise<void> {
    this.syncLooping = true;
    // A timer keeps the event loop alive while we wait (waitAsync alone does not).
    const keep = keepAliveTimer();
    try {
      for (;;) {
        this.releaseSynced();
        if (this.syncWaiters.length === 0) return;
        const i = this.syncWord;
        // If the word moves between this load and the wait, waitAsync answers 'not-equal' at once.
        const r = waitAsync(this.ctl, i, Atomics.load(this.ctl, i), 1000);
        if (r.async) await r.value;
      }
    } finally {
      clearInterval(keep);
      this.syncLooping = false;
    }
  }

  /** Resolves the waiters whose ops are applied (or whose time is up), in order. */
  private releaseSynced(): void {
    const q = this.syncWaiters;
    const now = Date.now();
    let n = 0;
    while (n < q.length) {
      const w = q[n]!;
      if (!this.appliedReached(w.target)) {
        if (now <= w.giveUp) break;
        // Single node: the trie writer is stuck; answer anyway (routing to this worker may
        // lag) rather than hold the client for ever. Cluster: not committed in time (etcd
        // lost); the caller tells the client (SUBACK failure).
        const fields = { target: w.target, reached: Atomics.load(this.ctl, this.syncWord) >>> 0 };
        if (this.clustered) this.o.log.warn('fabric.route_commit_timeout', fields);
        else this.o.log.error('fabric.route_apply_timeout', fields);
      }
      n++;
    }
    if (n === 0) return;
    for (const w of q.splice(0, n)) w.resolve(this.appliedReached(w.target));
  }

  /** Delivers whatever other workers have forwarded so far, synchronously. */
  private drainInbound(): void {
    for (let i = 0; i < this.inbound.length; i++) {
      try {
        this.inbound[i]!.drain(this.recordFrom(this.inboundFrom[i]!));
      } catch (e) {
        // Re-entered from inside a drain (cannot happen from a socket handler) or a bad record.
        this.o.log.error('fabric.drain_failed', { error: e });
      }
    }
  }

  private readonly fromHandlers: ((data: Buffer, start: number, length: number) => void)[] = [];
  private durableQueued = false;

  /**
   * The record handler of the ring from worker `from`: delivers, and (durable node) counts
   * it for durableWait; other nodes deliver with the plain handler.
   */
  private recordFrom(from: number): (data: Buffer, start: number, length: number) => void {
    if (!this.durableNode) return this.onRecord;
    let h = this.fromHandlers[from];
    if (h === undefined) {
      h = (data, start, length) => {
        this.consumedFrom[from] = (this.consumedFrom[from]! + 1) | 0;
        // Shown once per batch of records (after the drain that holds this one).
        if (!this.durableQueued) {
          this.durableQueued = true;
          queueMicrotask(() => {
            this.durableQueued = false;
            this.showDurable();
          });
        }
        this.onRecord(data, start, length);
      };
      this.fromHandlers[from] = h;
    }
    return h;
  }

  /**
   * Durable node: tells each publishing worker how far this one has consumed its records
   * with their store writes on disk (once the journal's barrier resolves), so that its
   * PUBACKs can follow (durableWait).
   */
  private showDurable(): void {
    if (this.durableShowing) return;
    const snap = this.consumedFrom.slice();
    const n = this.o.plan.workers;
    const show = (): void => {
      for (let w = 0; w < n; w++) {
        if (snap[w] === this.shownFrom[w]) continue;
        this.shownFrom[w] = snap[w]!;
        Atomics.store(this.durable, w * n + this.workerId, snap[w]!);
        Atomics.notify(this.durable, w * n + this.workerId);
      }
    };
    const bar = this.o.broker.journal?.barrier() ?? null;
    if (bar === null) return show();
    this.durableShowing = true;
    void bar.then((ok) => {
      this.durableShowing = false;
      // A failed write is not shown: the publisher's wait times out and it does not acknowledge.
      if (ok) show();
      if (this.consumedFrom.some((c, w) => c !== snap[w])) this.showDurable();
    });
  }

  /**
   * Durable node: resolves true once every worker that this worker forwarded QoS 1/2
   * messages to since the last call has consumed them with their store writes on disk;
   * false after `timeoutMs` (a worker that died, a store that fails). Null: none to wait for.
   */
  takeDurableWait(timeoutMs = 10_000): Promise<boolean> | null {
    let mask = this.durableMask;
    this.durableMask = 0;
    if (mask === 0) return null;
    const n = this.o.plan.workers;
    const targets: [number, number][] = [];
    while (mask !== 0) {
      const low = mask & -mask;
      mask ^= low;
      const w = 31 - Math.clz32(low);
      const idx = this.workerId * n + w;
      const target = this.sentTo[w]!;
      if (((Atomics.load(this.durable, idx) - target) | 0) < 0) targets.push([idx, target]);
    }
    if (targets.length === 0) return null;
    const giveUp = Date.now() + timeoutMs;
    const waits = targets.map(([idx, target]) => new Promise<boolean>((resolve) => {
      let q = this.durableWaiters.get(idx);
      if (q === undefined) this.durableWaiters.set(idx, (q = []));
      q.push({ target, giveUp, resolve });
      if (q.length === 1) void this.watchDurable(idx, q);
    }));
    return waits.length === 1 ? waits[0]! : Promise.all(waits).then((r) => r.every(Boolean));
  }

  /** Per watched word: publishers' waits in target order (the counts only grow). */
  private readonly durableWaiters = new Map<number, { target: number; giveUp: number; resolve: (ok: boolean) => void }[]>();

  /** One wait loop per watched word serves every publisher waiting on it (one waitAsync, not one each). */
  private async watchDurable(idx: number, q: { target: number; giveUp: number; resolve: (ok: boolean) => void }[]): Promise<void> {
    const keep = keepAliveTimer();
    try {
      while (q.length > 0) {
        const cur = Atomics.load(this.durable, idx);
        const now = Date.now();
        while (q.length > 0 && (((cur - q[0]!.target) | 0) >= 0 || q[0]!.giveUp <= now)) {
          const w = q.shift()!;
          const ok = ((cur - w.target) | 0) >= 0;
          if (!ok) this.o.log.warn('fabric.durable_wait_timeout', { worker: idx % this.o.plan.workers, target: w.target, reached: cur });
          w.resolve(ok);
        }
        if (q.length === 0) break;
        const r = waitAsync(this.durable, idx, cur, Math.max(1, q[0]!.giveUp - now));
        if (r.async) await r.value;
      }
    } finally {
      clearInterval(keep);
    }
  }

  // ---- messages ------------------------------------------------------------------------

  nextRetainSeq(): number {
    return Number(Atomics.add(this.seq64, 0, 1n)) + 1;
  }

  forward(w: number, m: Message, nonShared: boolean, groups: readonly GroupRef[] | null, retainSeq: number, tried = 0): boolean {
    const ring = this.out[w];
    if (!ring) return false;
    const parts = this.encoder.encode(m, nonShared, groups, retainSeq, tried);
    const q = this.backlog[w];
    if (!q || q.records.length === 0) {
      if (ring.tryWrite(parts)) {
        this.counters.forwardedOut++;
        this.sent(w, m);
        return true;
      }
    }
    if (m.qos === 0 && retainSeq === 0 && (q?.bytes ?? 0) >= ring.capacity) {
      // QoS 0 is dropped (counted) only when a ring's worth already waits behind the full
      // ring: publishers are paused long before that, so it takes a flood from many of them.
      this.counters.droppedRingFull++;
      ring.countDrop();
      return false;
    }
    const len = parts[0].length + parts[1].length;
    if (len > ring.maxRecordBytes) {
      this.counters.droppedTooLarge++;
      this.o.log.warn('fabric.record_too_large', { bytes: len, max: ring.maxRecordBytes });
      return false;
    }
    // Messages wait in order behind the full ring; the publisher stops reading
    // (Router.blocked) until they are in.
    const rec = Buffer.concat(parts, len);
    let b = q;
    if (!b) this.backlog[w] = b = { records: [], bytes: 0, waiting: false };
    if (b.records.length === 0) this.blockedRings++;
    b.records.push(rec);
    b.bytes += len;
    this.sent(w, m);
    if (!b.waiting) void this.flushBacklog(w, ring, b);
    return true;
  }

  /** A record for worker `w` is on its way (in its ring or in order behind it). */
  private sent(w: number, m: Message): void {
    if (!this.durableNode) return;
    this.sentTo[w] = (this.sentTo[w]! + 1) | 0;
    if (m.qos > 0) this.durableMask |= 1 << w;
  }

  private async flushBacklog(w: number, ring: RingProducer, b: Backlog): Promise<void> {
    b.waiting = true;
    try {
      while (b.records.length > 0) {
        const rec = b.records[0]!;
        if (ring.tryWrite(rec)) {
          b.records.shift();
          b.bytes -= rec.length;
          this.counters.forwardedOut++;
          continue;
        }
        await ring.waitForSpace(Math.max(rec.length + 8, ring.capacity / 4));
      }
    } catch (e) {
      this.o.log.error('fabric.backlog_failed', { worker: w, error: e });
    } finally {
      b.waiting = false;
    }
    if (b.records.length === 0 && --this.blockedRings === 0) {
      const waiters = this.unblockWaiters;
      this.unblockWaiters = [];
      for (const f of waiters) f();
    }
  }

  get blocked(): boolean {
    return this.blockedRings > 0 || (this.o.cluster?.forwarder.blocked ?? false);
  }

  whenUnblocked(resume: () => void): void {
    const f = this.o.cluster?.forwarder;
    const ringsThen = (): void => {
      if (this.blockedRings === 0) resume();
      else this.unblockWaiters.push(resume);
    };
    if (f) f.whenUnblocked(ringsThen);
    else ringsThen();
  }

  // ---- cluster -------------------------------------------------------------------------

  private slotsOf(): readonly number[] {
    const out: number[] = [];
    forEachSlot(this.acc, (s) => out.push(s));
    return out;
  }

  remoteSlots(match: RouteMatch): readonly number[] {
    if (match.routes.length === 0) return NO_SLOTS;
    this.acc.fill(0);
    for (const id of match.routes) orNodeSet(this.nodeSets, id, this.acc);
    return this.slotsOf();
  }

  groupRemoteSlots(g: RouteGroupMatch): readonly number[] {
    if (g.route === 0) return NO_SLOTS;
    const id = groupRemoteSet(this.groupRemote, g.route, g.group);
    if (id === 0) return NO_SLOTS;
    this.acc.fill(0);
    orNodeSet(this.nodeSets, id, this.acc);
    return this.slotsOf();
  }

  groupRemoteOnline(g: RouteGroupMatch, slot: number): number {
    return this.o.cluster?.groupOnline.online(g.route, g.group, slot) ?? -1;
  }

  nodeName(slot: number): string {
    return this.o.cluster?.forwarder.nameOf(slot) ?? '';
  }

  forwardRemote(slot: number, m: Msg, nonShared: boolean, groups: readonly GroupRef[] | null): Promise<void> | null {
    return this.o.cluster!.forwarder.send(slot, m, nonShared, groups);
  }

  retainedSet(m: Msg, seq: number): void {
    this.o.cluster?.toAgent({ type: 'retain', msg: m, seq });
  }

  // ---- sessions ------------------------------------------------------------------------

  claim(clientId: string, cleanStart: boolean, persistent: boolean): Promise<SessionTransfer | null> | null {
    if (this.o.plan.workers === 1 && !this.clustered) return null;
    return this.o.ask({ type: 'claim', clientId, cleanStart, persistent }).then((r) => {
      // Another node owned it: take it over from there (it ends its connection, 0x8E).
      if (r.remote !== null && this.o.cluster) return this.o.cluster.forwarder.takeover(r.remote, clientId, cleanStart);
      return r.transfer;
    });
  }

  released(clientId: string): void {
    if (this.o.plan.workers > 1 || this.clustered) this.o.tell({ type: 'unclaim', clientId });
  }
}

