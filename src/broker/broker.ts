// The broker engine of one node: sessions, routing, retained messages, wills, $SYS.
// Transport-agnostic: listeners hand it Transport objects.
import type { Config } from '../config/types.js';
import type { Logger } from '../log/logger.js';
import type { Authorizer } from '../auth/types.js';
import type { QoS } from '../protocol/codec.js';
import type { Journal } from '../store/journal.js';
import { Counters } from '../metrics/counters.js';
import type { Transport } from '../transport/types.js';
import { ClientConnection } from './connection.js';
import { isExpired, type Message } from './message.js';
import { RetainedStore } from './retained.js';
import { deliveryBytes, Session, type Delivery } from './session.js';
import { SharedDispatcher } from './shared.js';
import { SubscriptionIndex, type SharedMatch, type Subscription } from './subscription-index.js';
import { SysPublisher } from './sys.js';
import { routeId, type GroupRef, type RouteGroupMatch, type Router } from './router.js';
import { exportSession, importSession, type SessionTransfer } from './transfer.js';

/** Counts open connections against node.max_connections (node-wide when workers share one). */
export interface ConnectionGate {
  /** Takes a slot; returns the number of connections open before this one. */
  acquire(): number;
  release(): void;
}

function localGate(): ConnectionGate {
  let open = 0;
  return { acquire: () => open++, release: () => void open-- };
}

const NO_GROUPS: readonly GroupRef[] = [];
const NO_MATCH_GROUPS: readonly RouteGroupMatch[] = [];

/** 0xFFFFFFFF: the session does not expire [MQTT-3.1.2-? v5 3.1.2.11.2]. */
export const NEVER_EXPIRES = 0xffffffff;
/** Connections beyond max_connections still get a CONNACK 0x97 up to this margin; past it they are closed at once. */
const OVER_LIMIT_MARGIN = 64;

interface Target {
  qos: QoS;
  rap: boolean;
  subIds: number[] | undefined;
}

export class Broker {
  readonly counters: Counters;
  readonly index = new SubscriptionIndex();
  readonly retained = new RetainedStore();
  readonly sessions = new Map<string, Session>();
  readonly connections = new Set<ClientConnection>();
  readonly startedAt = Date.now();
  private readonly shared: SharedDispatcher;
  private readonly sys: SysPublisher;
  stopping = false;
  /** Set by a worker thread of a worker-threaded node; null inline. */
  router: Router | null = null;
  gate: ConnectionGate = localGate();
  /** Local subscriptions per trie key (filter, or `$share/<group>/<filter>`): the route exists while > 0. */
  private readonly routeRefs = new Map<string, number>();
  /** This engine publishes $SYS (inline, or worker 0). */
  sysEnabled = true;
  private readonly scratchSubs: Subscription[] = [];
  private readonly scratchGroups: SharedMatch[] = [];
  private readonly scratchMissed: GroupRef[] = [];
  private readonly scratchSeen = new Set<string>();
  private delivering = false;
  /** Worker-threaded: connections between their session claim and CONNACK, by client id. */
  readonly claiming = new Map<string, ClientConnection>();
  /** Worker-threaded: every worker's counters, for node-wide $SYS figures. */
  nodeCounters: Counters[] | null = null;
  /** Durable node (durability.sync not "none"): what this engine writes to the store. */
  journal: Journal | null = null;

  constructor(readonly cfg: Config, readonly log: Logger, readonly auth: Authorizer, counters?: Counters) {
    this.counters = counters ?? new Counters();
    this.shared = new SharedDispatcher(cfg.mqtt.shared_strategy);
    this.sys = new SysPublisher(this);
  }

  start(): void {
    if (this.sysEnabled) this.sys.start();
  }

  /** Number of connections past CONNACK. */
  get connectedCount(): number {
    return this.counters.connected;
  }

  accept(t: Transport): void {
    if (this.stopping) {
      t.destroy();
      return;
    }
    const max = this.cfg.node.max_connections;
    const open = this.gate.acquire();
    if (open >= max + OVER_LIMIT_MARGIN) {
      // Far past the limit: close at once so file descriptors never run out (no EMFILE).
      this.gate.release();
      this.counters.connectionsRefusedMax++;
      this.counters.connectionsRefused++;
      t.destroy();
      return;
    }
    this.counters.connectionsAccepted++;
    const c = new ClientConnection(this, t);
    c.overLimit = open >= max;
    this.connections.add(c);
    this.counters.connectionsOpen = this.connections.size;
  }

  // ---- sessions -------------------------------------------------------------------

  /**
   * Binds a connection to its session after a successful CONNECT. Takes the session
   * over from an existing connection [MQTT-3.1.4-3]; returns Session Present.
   */
  openSession(conn: ClientConnection, cleanStart: boolean, expiry: number): boolean {
    let s = this.sessions.get(conn.clientId);
    let present = false;
    if (s) {
      this.takeOver(s, cleanStart);
      if (cleanStart) {
        this.endSession(s);
        s = undefined;
      } else present = true;
    }
    if (!s) {
      s = new Session(conn.clientId);
      this.sessions.set(conn.clientId, s);
      this.counters.sessions = this.sessions.size;
    }
    s.conn = conn;
    s.offSince = 0;
    this.sharedOnline(s, 1);
    this.counters.connected++;
    s.expiryInterval = expiry;
    conn.session = s;
    const j = this.journal;
    if (j !== null) {
      // A persistent session is written as it is now; one that will not outlive this
      // connection (Session Expiry 0) leaves the store.
      if (expiry > 0) j.saveSession(s);
      else if (s.stored) j.dropSession(s);
      // The will, so that a crash of the node still publishes it [MQTT-3.1.2-8].
      if (conn.will && !conn.discardWill) j.saveWill(conn.clientId, { msg: conn.will, delay: Math.min(conn.willDelay, expiry), at: 0 });
    }
    return present;
  }

  /**
   * A new connection (here or on another worker) takes session `s`: the old connection goes
   * (DISCONNECT 0x8E), its will and a delayed will are published or cancelled by the rules,
   * and the expiry timer stops. The caller then continues or ends the session.
   */
  private takeOver(s: Session, cleanStart: boolean): void {
    const old = s.conn;
    if (old) {
      // The old connection's will: published now unless the session lives on and the
      // will was delayed, in which case the new connection cancels it [MQTT-3.1.3-9].
      if (old.will && !old.discardWill && (cleanStart || old.willDelay === 0)) this.publishWill(old.will);
      if (old.will) this.journal?.dropWill(s.clientId);
      old.will = null;
      s.conn = null;
      this.sharedOnline(s, -1);
      this.counters.connected--;
      old.takenOver();
    }
    if (s.willTimer) {
      // A delayed will: a continued session cancels it, a Clean Start ends the session
      // and so publishes it now [MQTT-3.1.3-9 v5].
      clearTimeout(s.willTimer);
      s.willTimer = null;
      if (cleanStart && s.pendingWill) this.publishWill(s.pendingWill);
      if (s.pendingWill) this.journal?.dropWill(s.clientId);
      s.pendingWill = null;
    }
    if (s.expiryTimer) {
      clearTimeout(s.expiryTimer);
      s.expiryTimer = null;
    }
  }

  connectionClosed(conn: ClientConnection, wasConnected: boolean): void {
    if (this.connections.delete(conn)) this.gate.release();
    this.counters.connectionsOpen = this.connections.size;
    const s = conn.session;
    if (!wasConnected || !s || s.conn !== conn) return;
    s.conn = null;
    this.sharedOnline(s, -1);
    this.counters.connected--;
    conn.session = null;
    this.redispatchShared(s, conn.clientId);
    const will = conn.will && !conn.discardWill && !this.stopping ? conn.will : null;
    // Capped by the session's expiry: 0 for a session that ends now [MQTT-3.1.3-9 v5].
    const delay = Math.min(conn.willDelay, s.expiryInterval);
    // Its will record goes unless the will is now delayed (delayWill writes it again with its
    // time); a node stopping keeps it, to be published when it starts again, as after a crash.
    if (conn.will && !this.stopping && !(will && delay > 0)) this.journal?.dropWill(s.clientId);
    s.offSince = Date.now();
    if (s.expiryInterval === 0) {
      if (will) this.publishWill(will);
      this.endSession(s);
      return;
    }
    if (will) {
      if (delay === 0) this.publishWill(will);
      else this.delayWill(s, will, Date.now() + delay * 1000);
    }
    if (s.stored) this.journal?.saveSession(s);
    if (s.expiryInterval !== NEVER_EXPIRES) this.armExpiry(s, s.offSince + s.expiryInterval * 1000);
  }

  /** A will published at `at` unless the session is taken up again first [MQTT-3.1.3-9 v5]. */
  delayWill(s: Session, will: Message, at: number): void {
    s.pendingWill = will;
    this.journal?.saveWill(s.clientId, { msg: will, delay: 0, at });
    s.willTimer = setTimeout(() => {
      s.willTimer = null;
      s.pendingWill = null;
      this.journal?.dropWill(s.clientId);
      this.publishWill(will);
    }, Math.max(0, at - Date.now()));
  }

  /** A session recovered from the store (offline since `off`), before any client connects. */
  restoreSession(clientId: string, t: SessionTransfer, off: number): void {
    this.adoptSession(clientId, t);
    const s = this.sessions.get(clientId)!;
    s.offSince = off;
    if (s.expiryInterval !== NEVER_EXPIRES) this.armExpiry(s, off + s.expiryInterval * 1000);
  }

  private armExpiry(s: Session, at: number): void {
    const ms = Math.min(at - Date.now(), 0x7fffffff);
    s.expiryTimer = setTimeout(() => {
      s.expiryTimer = null;
      if (s.conn) return;
      if (Date.now() >= at) this.endSession(s);
      else this.armExpiry(s, at);
    }, Math.max(0, ms));
  }

  /** Ends a session: its subscriptions go, a pending delayed will is published now. */
  endSession(s: Session): void {
    if (this.sessions.get(s.clientId) === s) {
      this.sessions.delete(s.clientId);
      this.router?.released(s.clientId);
    }
    this.counters.sessions = this.sessions.size;
    this.dropSubscriptions(s);
    if (s.willTimer) {
      clearTimeout(s.willTimer);
      s.willTimer = null;
      if (s.pendingWill && !this.stopping) {
        this.journal?.dropWill(s.clientId);
        this.publishWill(s.pendingWill);
      }
    }
    s.pendingWill = null;
    if (s.stored) this.journal?.dropSession(s);
    if (s.expiryTimer) clearTimeout(s.expiryTimer);
    s.expiryTimer = null;
    this.counters.addQueued(-s.queue.length, -s.queueBytes);
    s.queue = [];
    s.queueBytes = 0;
    s.inflight.clear();
  }

  /** The will's topic was authorized at CONNECT; its expiry is relative until now. */
  publishWill(m: Message): void {
    this.counters.willsPublished++;
    this.received(m.expiresAt === 0 ? m : { ...m, expiresAt: Date.now() + m.expiresAt });
  }

  private dropSubscriptions(s: Session): void {
    if (s.conn) this.sharedOnline(s, -1);
    for (const sub of s.subscriptions.values()) {
      this.index.remove(s.clientId, sub.filter, sub.group);
      this.routeRef(sub, -1);
    }
    s.subscriptions.clear();
    this.counters.subscriptions = this.index.size;
  }

  // ---- sessions across workers ------------------------------------------------------

  /**
   * Another worker took `clientId` over: end the connection here (its will by the usual
   * rules) and hand the session over, or end it (Clean Start). Returns the session's
   * state, or null when there is none to move.
   */
  handOver(clientId: string, cleanStart: boolean): SessionTransfer | null {
    const connecting = this.claiming.get(clientId);
    if (connecting) {
      connecting.superseded = true;
      this.claiming.delete(clientId);
    }
    const s = this.sessions.get(clientId);
    if (!s) return null;
    this.takeOver(s, cleanStart);
    // The registry already names the new owner: forget the session without releasing it.
    this.sessions.delete(clientId);
    this.counters.sessions = this.sessions.size;
    if (cleanStart) {
      this.endSession(s);
      return null;
    }
    const t = exportSession(s);
    this.dropSubscriptions(s);
    this.counters.addQueued(-s.queue.length, -s.queueBytes);
    return t;
  }

  /** Installs a session handed over by another worker (before openSession binds it). */
  adoptSession(clientId: string, t: SessionTransfer): void {
    const s = importSession(clientId, t);
    this.sessions.set(clientId, s);
    this.counters.sessions = this.sessions.size;
    for (const sub of s.subscriptions.values()) {
      this.index.add(sub);
      this.routeRef(sub, 1);
    }
    this.counters.subscriptions = this.index.size;
    this.counters.addQueued(s.queue.length, s.queueBytes);
  }

  /** An adopted session whose new connection went away before CONNACK: offline from now. */
  parkSession(clientId: string): void {
    const s = this.sessions.get(clientId);
    if (!s || s.conn) return;
    if (s.expiryInterval === 0) this.endSession(s);
    else if (s.expiryInterval !== NEVER_EXPIRES) this.armExpiry(s, Date.now() + s.expiryInterval * 1000);
  }

  // ---- subscriptions --------------------------------------------------------------

  /** Adds or replaces a subscription; returns true when it did not exist before. */
  subscribe(s: Session, sub: Subscription): boolean {
    const prev = s.subscriptions.get(sub.key);
    s.subscriptions.set(sub.key, sub);
    this.index.add(sub);
    if (prev === undefined) {
      this.routeRef(sub, 1);
      if (sub.group !== null && s.conn) this.router?.memberOnline(sub.filter, sub.group, 1);
    }
    this.counters.subscriptions = this.index.size;
    if (s.stored) this.journal?.saveSession(s);
    return prev === undefined;
  }

  unsubscribe(s: Session, key: string): boolean {
    const sub = s.subscriptions.get(key);
    if (!sub) return false;
    s.subscriptions.delete(key);
    this.index.remove(s.clientId, sub.filter, sub.group);
    if (sub.group !== null && s.conn) this.router?.memberOnline(sub.filter, sub.group, -1);
    this.routeRef(sub, -1);
    this.counters.subscriptions = this.index.size;
    if (s.stored) this.journal?.saveSession(s);
    return true;
  }

  /** Worker-threaded: the session's shared-group memberships count as online (+1) or not (-1) for other workers' choice. */
  private sharedOnline(s: Session, d: 1 | -1): void {
    const r = this.router;
    if (r === null) return;
    for (const sub of s.subscriptions.values()) if (sub.group !== null) r.memberOnline(sub.filter, sub.group, d);
  }

  /** Keeps the shared trie's route for (filter, group) while this worker has a subscription to it. */
  private routeRef(sub: Subscription, d: 1 | -1): void {
    const r = this.router;
    if (r === null) return;
    const key = sub.group === null ? sub.filter : `$share/${sub.group}/${sub.filter}`;
    const n = (this.routeRefs.get(key) ?? 0) + d;
    if (n > 0) this.routeRefs.set(key, n);
    else this.routeRefs.delete(key);
    if (d === 1 && n === 1) r.routeAdded(sub.filter, sub.group);
    else if (d === -1 && n === 0) r.routeRemoved(sub.filter, sub.group);
  }

  // ---- routing --------------------------------------------------------------------

  /** A message that came from a client (PUBLISH or will): counted, then routed. */
  received(m: Message): number {
    this.counters.messagesReceived++;
    const n = this.publish(m);
    if (n === 0) this.counters.droppedNoSubscribers++;
    return n;
  }

  /**
   * Routes a message: client messages and wills come through received(), $SYS calls it
   * directly. Returns the number of deliveries (a worker the message was forwarded to
   * counts as one).
   */
  publish(m: Message): number {
    const retain = m.retain && this.cfg.mqtt.retain_available;
    const r = this.router;
    // Inline, or the only worker of a single node: the local index alone decides (no trie
    // match, no rings).
    if (r === null || (r.allMask === 1 << r.workerId && !r.clustered)) {
      if (retain) {
        this.retained.set(m);
        this.counters.retainedStored = this.retained.size;
        if (!m.topic.startsWith('$SYS/')) this.journal?.setRetained(m);
      }
      return this.deliverLocal(m, true, null);
    }
    // Worker-threaded: the shared trie says which workers (and, in a cluster, which other
    // nodes) want the topic; each shared group goes to one node, then one worker holding
    // members (which then picks one of its members).
    const seq = retain ? r.nextRetainSeq() : 0;
    const match = r.match(m.topic);
    let remoteGroups: Map<number, GroupRef[]> | null = null;
    let localGroups: RouteGroupMatch[] | null = null;
    if (r.clustered) {
      for (const g of match.groups) {
        const slot = this.pickNode(g, m);
        if (slot === -2) continue; // no member anywhere
        if (slot === -1) (localGroups ??= []).push(g);
        else {
          remoteGroups ??= new Map();
          const l = remoteGroups.get(slot);
          const ref: GroupRef = { route: g.route, group: g.group };
          if (l) l.push(ref);
          else remoteGroups.set(slot, [ref]);
        }
      }
    }
    let n = this.routeToWorkers(m, match.mask, r.clustered ? localGroups ?? NO_MATCH_GROUPS : match.groups, seq, retain ? r.allMask : 0);
    if (r.clustered) {
      n += this.forwardToNodes(m, r.remoteSlots(match), remoteGroups);
      // $SYS topics are this node's own statistics: retained here only, not cluster-wide.
      if (retain && !m.topic.startsWith('$SYS/')) r.retainedSet(m, seq);
    }
    return n;
  }

  /**
   * The local part of routing: the workers in `mask` get the message for their non-shared
   * subscribers, each group in `groups` goes to one worker holding members; `retainMask`
   * workers store it as retained (seq > 0). Returns the deliveries (a worker counts as one).
   */
  private routeToWorkers(m: Message, mask: number, groups: readonly RouteGroupMatch[], seq: number, retainMask: number): number {
    const r = this.router!;
    const self = r.workerId;
    const bit = 1 << self;
    let localGroups: GroupRef[] | null = null;
    let far: Map<number, GroupRef[]> | null = null;
    // Retained messages reach every worker's replica, subscribers or not.
    let want = (seq > 0 ? retainMask | mask : mask) & ~bit;
    for (const g of groups) {
      const w = this.pickWorker(g, m);
      if (w < 0) continue;
      const ref: GroupRef = { route: g.route, group: g.group };
      if (w === self) (localGroups ??= []).push(ref);
      else {
        far ??= new Map();
        const l = far.get(w);
        if (l) l.push(ref);
        else far.set(w, [ref]);
        want |= 1 << w;
      }
    }
    let n = 0;
    while (want !== 0) {
      const low = want & -want; // lowest set bit
      want ^= low;
      const w = 31 - Math.clz32(low);
      const gs = far?.get(w) ?? null;
      const nonShared = (mask & low) !== 0;
      if (r.forward(w, m, nonShared, gs, seq) && (nonShared || gs !== null)) n++;
    }
    if (seq > 0 && this.retained.set(m, seq)) {
      this.counters.retainedStored = this.retained.size;
      // The publisher's worker writes it (the others hold replicas); a cluster keeps it in etcd.
      if (!r.clustered && !m.topic.startsWith('$SYS/')) this.journal?.setRetained(m);
    }
    const mine = (mask & bit) !== 0;
    if (mine || localGroups !== null) {
      const missed = localGroups !== null ? this.scratchMissed : null;
      n += this.deliverLocal(m, mine, localGroups ?? NO_GROUPS, missed);
      if (missed !== null && missed.length > 0) n += this.passOnShared(m, missed, 0);
    }
    return n;
  }

  /**
   * Shared groups named for this worker that it holds no member of any more (the member
   * counts it was picked on had not caught up with a member leaving): each goes to another
   * worker still holding members, never to one in `tried` — so the message moves at most
   * once round the workers. Empties `missed`; returns the groups passed on.
   */
  private passOnShared(m: Message, missed: GroupRef[], tried: number): number {
    const r = this.router!;
    const done = tried | (1 << r.workerId);
    const groups = r.match(m.topic).groups;
    let n = 0;
    for (const ref of missed) {
      const g = groups.find((x) => (ref.route !== 0 ? x.route === ref.route : x.group === ref.group));
      const mask = (g?.mask ?? 0) & ~done;
      if (g === undefined || mask === 0) continue;
      this.counters.sharedPassedOn++;
      if (r.forward(this.pickWorker({ ...g, mask }, m), m, false, [ref], 0, done)) n++;
    }
    missed.length = 0;
    return n;
  }

  /** Cluster: sends `m` once to each other node that wants it; QoS 1/2 acks are gathered for the publisher. */
  private forwardToNodes(m: Message, slots: readonly number[], groups: Map<number, GroupRef[]> | null): number {
    if (slots.length === 0 && groups === null) return 0;
    const r = this.router!;
    let n = 0;
    const send = (slot: number, nonShared: boolean, gs: readonly GroupRef[] | null): void => {
      const wait = r.forwardRemote(slot, m, nonShared, gs);
      n++;
      if (wait !== null) (this.remoteWaits ??= []).push(wait);
    };
    for (const slot of slots) send(slot, true, groups?.get(slot) ?? null);
    if (groups !== null) for (const [slot, gs] of groups) if (!slots.includes(slot)) send(slot, false, gs);
    return n;
  }

  /** Acks of other nodes that the last received() is waiting for (cluster), gathered. */
  private remoteWaits: Promise<void>[] | null = null;

  /** The wait for every other node that the last received message went to (null: none). */
  takeRemoteWait(): Promise<void> | null {
    const w = this.remoteWaits;
    this.remoteWaits = null;
    if (w === null) return null;
    return w.length === 1 ? w[0]! : Promise.all(w).then(() => undefined);
  }

  /**
   * Cluster: which node serves shared group `g` for this message: -1 this one, a slot
   * another, -2 none has members. Nodes are weighted by their online members (each node
   * writes its count into the routes shard), so that members, not nodes, share the load;
   * with none online anywhere, every holder counts alike (its persistent sessions queue
   * the message). Candidates are in node-name order, the same on every node, so that the
   * hash strategies pick the same node whichever node the publisher is on.
   */
  private pickNode(g: RouteGroupMatch, m: Message): number {
    const r = this.router!;
    const remote = r.groupRemoteSlots(g);
    if (remote.length === 0) return g.mask !== 0 ? -1 : -2;
    if (g.mask !== 0 && this.cfg.mqtt.shared_strategy === 'local') return -1;
    const candidates = g.mask !== 0 ? [-1, ...remote] : [...remote];
    if (candidates.length === 1) return candidates[0]!;
    const self = this.cfg.node.name;
    const name = (slot: number): string => (slot === -1 ? self : r.nodeName(slot));
    candidates.sort((a, b) => (name(a) < name(b) ? -1 : name(a) > name(b) ? 1 : a - b));
    const weights: number[] = [];
    let online = 0;
    for (const slot of candidates) {
      let n = 0;
      if (slot !== -1) n = r.groupRemoteOnline(g, slot);
      else if (g.route !== 0) for (let w = 0; w < 31; w++) if ((g.mask & (1 << w)) !== 0) n += r.onlineMembers(g.route, w);
      // A node that wrote no count (unknown) counts as one member.
      if (n < 0) n = 1;
      weights.push(n);
      online += n;
    }
    return this.shared.pickWorker(`node\u0000${g.group}\u0000${g.route}`, candidates, online > 0 ? weights : null, m.topic, m.from, 'node\u0000');
  }

  /**
   * Cluster: a message another node forwarded here (it matched there once; here it goes
   * to this node's workers only, never on to other nodes).
   */
  receiveRemote(m: Message, nonShared: boolean, groups: readonly GroupRef[]): void {
    this.counters.forwardedInRemote++;
    const r = this.router!;
    // The only worker: its own index decides (no trie match to pick workers).
    if (r.allMask === 1 << r.workerId) {
      if (this.deliverLocal(m, nonShared, groups) === 0) this.counters.droppedNoSubscribers++;
      return;
    }
    const match = r.match(m.topic);
    const gs = groups.length === 0 ? NO_MATCH_GROUPS : match.groups.filter((g) => named(groups, g.group, null, g.route));
    if (this.routeToWorkers(m, nonShared ? match.mask : 0, gs, 0, 0) === 0) this.counters.droppedNoSubscribers++;
  }

  /** A message another worker forwarded here (see publish()). */
  receiveForwarded(m: Message, nonShared: boolean, groups: readonly GroupRef[], seq: number, tried = 0): void {
    this.counters.forwardedIn++;
    if (seq > 0 && this.retained.set(m, seq)) this.counters.retainedStored = this.retained.size;
    if (!nonShared && groups.length === 0) return;
    const missed = groups.length > 0 ? this.scratchMissed : null;
    let n = this.deliverLocal(m, nonShared, groups, missed);
    if (missed !== null && missed.length > 0) n += this.passOnShared(m, missed, tried);
    if (n === 0) this.counters.droppedNoSubscribers++;
  }

  /** Worker (bit in g.mask) that serves one shared group for this message, or -1. */
  private pickWorker(g: RouteGroupMatch, m: Message): number {
    const mask = g.mask;
    if (mask === 0) return -1;
    if ((mask & (mask - 1)) === 0) return 31 - Math.clz32(mask);
    // Weighted by online members per worker (so members, not workers, share the load);
    // with none online anywhere, any holder (its persistent sessions queue the message).
    const ws: number[] = [];
    const weights: number[] = [];
    let online = 0;
    for (let w = 0; w < 31; w++) {
      if ((mask & (1 << w)) === 0) continue;
      const n = g.route === 0 ? 0 : this.router!.onlineMembers(g.route, w);
      ws.push(w);
      weights.push(n);
      online += n;
    }
    return this.shared.pickWorker(`${g.group}\u0000${g.route}`, ws, online > 0 ? weights : null, m.topic, m.from);
  }

  /**
   * Delivers to this engine's subscribers: the non-shared ones when `nonShared`, and one
   * member of each shared group — every matching group when `groups` is null (inline), else
   * only the groups named; those of `groups` it found no usable member of are added to
   * `missed` when given.
   */
  private deliverLocal(m: Message, nonShared: boolean, groups: readonly GroupRef[] | null, missed: GroupRef[] | null = null): number {
    // Scratch arrays, reused per message (a nested call, should one ever happen, gets its own).
    const nested = this.delivering;
    this.delivering = true;
    const subs = nested ? [] : this.scratchSubs;
    const matched = nested ? [] : this.scratchGroups;
    try {
      this.index.collect(m.topic, nonShared ? subs : null, matched);
      let n = 0;
      if (subs.length > 0) n += this.deliverSubs(m, subs);
      let hit = 0; // bit i: groups[i] delivered (past 31 named groups, none is passed on)
      for (const g of matched) {
        if (groups === null) {
          if (this.deliverShared(m, g.group, g.filter, g.members)) n++;
          continue;
        }
        const i = namedAt(groups, g.group, g.filter);
        if (i >= 0 && this.deliverShared(m, g.group, g.filter, g.members)) {
          n++;
          if (i < 31) hit |= 1 << i;
        }
      }
      if (missed !== null && groups !== null) {
        for (let i = 0; i < groups.length && i < 31; i++) if ((hit & (1 << i)) === 0) missed.push(groups[i]!);
      }
      return n;
    } finally {
      subs.length = 0;
      matched.length = 0;
      if (!nested) this.delivering = false;
    }
  }

  /** One delivery per client among `subs` (non-shared matches of one message). */
  private deliverSubs(m: Message, subs: Subscription[]): number {
    // Usually every match is a different client: deliver straight from the subscriptions.
    // Overlapping subscriptions of one client (rare) are merged first.
    let overlap = false;
    if (subs.length > 1) {
      const seen = this.scratchSeen;
      for (const sub of subs) {
        if (seen.has(sub.clientId)) {
          overlap = true;
          break;
        }
        seen.add(sub.clientId);
      }
      seen.clear();
    }
    let n = 0;
    if (!overlap) {
      for (const sub of subs) {
        // No Local: never back to the publisher [MQTT-3.8.3-3].
        if (sub.noLocal && sub.clientId === m.from) continue;
        const s = this.sessions.get(sub.clientId);
        if (!s) continue;
        const qos = (m.qos < sub.qos ? m.qos : sub.qos) as QoS;
        const subIds = sub.subscriptionId !== undefined ? [sub.subscriptionId] : undefined;
        // Retain is cleared on routed delivery unless Retain As Published [MQTT-3.3.1-12 v5, 3.3.1-9 v3].
        this.deliverTo(s, { msg: m, qos, retain: sub.retainAsPublished && m.retain, subIds, shared: undefined });
        n++;
      }
      return n;
    }
    const targets = new Map<string, Target>();
    for (const sub of subs) {
      if (sub.noLocal && sub.clientId === m.from) continue;
      const t = targets.get(sub.clientId);
      if (!t) {
        targets.set(sub.clientId, {
          qos: sub.qos, rap: sub.retainAsPublished,
          subIds: sub.subscriptionId !== undefined ? [sub.subscriptionId] : undefined,
        });
        continue;
      }
      // Overlapping subscriptions: one delivery at the highest granted QoS carrying
      // every matching Subscription Identifier [MQTT-3.3.4-3/5 v5].
      if (sub.qos > t.qos) t.qos = sub.qos;
      t.rap ||= sub.retainAsPublished;
      if (sub.subscriptionId !== undefined) (t.subIds ??= []).push(sub.subscriptionId);
    }
    for (const [clientId, t] of targets) {
      const s = this.sessions.get(clientId);
      if (!s) continue;
      const qos = (m.qos < t.qos ? m.qos : t.qos) as QoS;
      this.deliverTo(s, { msg: m, qos, retain: t.rap && m.retain, subIds: t.subIds, shared: undefined });
      n++;
    }
    return n;
  }

  private deliverShared(
    m: Message, group: string, filter: string, members: Map<string, Subscription>, exclude?: string,
  ): boolean {
    const key = group + '\u0000' + filter;
    const online = (sub: Subscription) => this.sessions.get(sub.clientId)?.conn != null;
    const sub = this.shared.pick(key, members, m.topic, m.from, online, exclude) ??
      this.shared.pick(key, members, m.topic, m.from, (x) => this.sessions.has(x.clientId), exclude);
    if (!sub) return false;
    const s = this.sessions.get(sub.clientId)!;
    const qos = (m.qos < sub.qos ? m.qos : sub.qos) as QoS;
    const subIds = sub.subscriptionId !== undefined ? [sub.subscriptionId] : undefined;
    this.deliverTo(s, { msg: m, qos, retain: false, subIds, shared: { group, filter } });
    return true;
  }

  /** QoS 1 messages in flight and QoS 1/2 messages queued to a shared member that left go to another member. */
  private redispatchShared(s: Session, clientId: string): void {
    const again: Delivery[] = [];
    for (const [id, e] of s.inflight) {
      // QoS 1 only: a QoS 2 message already sent stays with this member, to be completed
      // when it reconnects and never sent to another member [MQTT-4.8.2-4/5 v5].
      if (e.d.shared && e.state === 'publish' && e.d.qos === 1) {
        s.inflight.delete(id);
        again.push(e.d);
      }
    }
    if (s.queue.some((d) => d.shared)) {
      const keep: Delivery[] = [];
      for (const d of s.queue) {
        if (d.shared && d.qos > 0) {
          again.push(d);
          this.dequeued(s, d);
        } else keep.push(d);
      }
      s.queue = keep;
    }
    for (const d of again) {
      const { group, filter } = d.shared!;
      const members = this.index.groupMembers(filter, group);
      if ((members && this.deliverShared(d.msg, group, filter, members, clientId)) || this.forwardShared(d.msg, group, filter)) {
        this.counters.sharedRedispatched++;
        this.forget(s, d);
      } else if (s.expiryInterval > 0) this.enqueue(s, d); // nobody else: keep it for this member
    }
  }

  /** Worker-threaded: hands a shared message to another worker holding members of the group. */
  private forwardShared(m: Message, group: string, filter: string): boolean {
    const r = this.router;
    if (r === null) return false;
    const route = routeId(group, filter);
    const g = r.match(m.topic).groups.find((x) => x.route === route || (x.route === 0 && x.group === group));
    const mask = (g?.mask ?? 0) & ~(1 << r.workerId);
    if (g === undefined || mask === 0) return false;
    const w = this.pickWorker({ ...g, mask }, m);
    return r.forward(w, m, false, [{ route, group }], 0);
  }

  deliverTo(s: Session, d: Delivery): void {
    // A persistent session keeps its QoS 1/2 messages in the store until they are done
    // (QoS 0 to a connected client never touches the disk).
    if (s.stored && d.qos > 0 && d.seq === undefined && !isExpired(d.msg, Date.now())) this.journal?.addMessage(s, d);
    if (s.conn) s.conn.deliver(d);
    else this.enqueue(s, d);
  }

  /** A message of `s` that is done, dropped or expired leaves the store. */
  forget(s: Session, d: Delivery): void {
    if (d.seq !== undefined) this.journal?.dropMessage(s.clientId, d);
  }

  /** Adds to a session's queue under the configured bound and overflow policy (counted). */
  enqueue(s: Session, d: Delivery): void {
    const q = this.cfg.mqtt;
    if (isExpired(d.msg, Date.now())) {
      this.counters.droppedExpired++;
      this.forget(s, d);
      return;
    }
    if (d.qos === 0 && !s.conn && !q.queue_qos0) {
      this.counters.droppedQos0Offline++;
      return;
    }
    if (s.queue.length >= q.max_queued_messages) {
      this.counters.droppedQueueFull++;
      if (q.queue_overflow === 'drop_new' || s.queue.length === 0) {
        this.forget(s, d);
        return;
      }
      const old = s.queue.shift()!;
      this.dequeued(s, old);
      this.forget(s, old);
    }
    s.queue.push(d);
    const b = deliveryBytes(d);
    s.queueBytes += b;
    this.counters.addQueued(1, b);
  }

  dequeued(s: Session, d: Delivery): void {
    const b = deliveryBytes(d);
    s.queueBytes -= b;
    this.counters.addQueued(-1, -b);
  }

  /** Retained messages for a new subscription; always sent with RETAIN 1 [MQTT-3.3.1-8 v3 / 3.3.1-9 v5]. */
  retainedFor(filter: string): Message[] {
    return this.retained.match(filter, Date.now());
  }

  // ---- shutdown -------------------------------------------------------------------

  /** Tells every client the server is going away (5.0: DISCONNECT 0x8B) and waits for the streams to close. */
  async stop(timeoutMs: number): Promise<void> {
    this.stopping = true;
    this.sys.stop();
    for (const c of [...this.connections]) c.disconnect(0x8b, 'server shutting down');
    const deadline = Date.now() + timeoutMs;
    while (this.connections.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const c of [...this.connections]) c.transport.destroy();
    for (const s of this.sessions.values()) {
      if (s.willTimer) clearTimeout(s.willTimer);
      if (s.expiryTimer) clearTimeout(s.expiryTimer);
    }
  }

  stats(): Record<string, unknown> {
    return {
      connections: this.connectedCount,
      sessions: this.sessions.size,
      subscriptions: this.index.size,
      retained: this.retained.size,
      ...this.counters.snapshot(),
    };
  }
}

/**
 * Whether the shared group (group, filter) is among those a forwarded message names
 * (`route`: the group's route id when the caller has it instead of the filter).
 */
function named(groups: readonly GroupRef[], group: string, filter: string | null, route = 0): boolean {
  return namedAt(groups, group, filter, route) >= 0;
}

/** Index in `groups` of the shared group (group, filter), or -1 (see named()). */
function namedAt(groups: readonly GroupRef[], group: string, filter: string | null, route = 0): number {
  for (let i = 0; i < groups.length; i++) {
    const ref = groups[i]!;
    if (ref.group !== group) continue;
    if (ref.route === 0 || ref.route === (filter === null ? route : routeId(group, filter))) return i;
  }
  return -1;
}
