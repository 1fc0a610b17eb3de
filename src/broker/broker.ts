// The broker engine of one node: sessions, routing, retained messages, wills, $SYS.
// Transport-agnostic: listeners hand it Transport objects.
import type { Config } from '../config/types.js';
import type { Logger } from '../log/logger.js';
import type { Authorizer } from '../auth/types.js';
import type { QoS } from '../protocol/codec.js';
import { Counters } from '../metrics/counters.js';
import type { Transport } from '../transport/types.js';
import { ClientConnection } from './connection.js';
import { isExpired, type Message } from './message.js';
import { RetainedStore } from './retained.js';
import { deliveryBytes, Session, type Delivery } from './session.js';
import { SharedDispatcher } from './shared.js';
import { SubscriptionIndex, type SharedMatch, type Subscription } from './subscription-index.js';
import { SysPublisher } from './sys.js';

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
  readonly counters = new Counters();
  readonly index = new SubscriptionIndex();
  readonly retained = new RetainedStore();
  readonly sessions = new Map<string, Session>();
  readonly connections = new Set<ClientConnection>();
  readonly startedAt = Date.now();
  private readonly shared: SharedDispatcher;
  private readonly sys: SysPublisher;
  stopping = false;

  constructor(readonly cfg: Config, readonly log: Logger, readonly auth: Authorizer) {
    this.shared = new SharedDispatcher(cfg.mqtt.shared_strategy);
    this.sys = new SysPublisher(this);
  }

  start(): void {
    this.sys.start();
  }

  /** Number of connections past CONNACK. */
  get connectedCount(): number {
    let n = 0;
    for (const s of this.sessions.values()) if (s.conn) n++;
    return n;
  }

  accept(t: Transport): void {
    if (this.stopping) {
      t.destroy();
      return;
    }
    const max = this.cfg.node.max_connections;
    const open = this.connections.size;
    if (open >= max + OVER_LIMIT_MARGIN) {
      // Far past the limit: close at once so file descriptors never run out (no EMFILE).
      this.counters.connectionsRefusedMax++;
      this.counters.connectionsRefused++;
      t.destroy();
      return;
    }
    this.counters.connectionsAccepted++;
    const c = new ClientConnection(this, t);
    c.overLimit = open >= max;
    this.connections.add(c);
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
      const old = s.conn;
      if (old) {
        // The old connection's will: published now unless the session lives on and the
        // will was delayed, in which case the new connection cancels it [MQTT-3.1.3-9].
        if (old.will && !old.discardWill && (cleanStart || old.willDelay === 0)) this.publishWill(old.will);
        old.will = null;
        s.conn = null;
        old.takenOver();
      }
      if (s.willTimer) {
        // A delayed will: a continued session cancels it, a Clean Start ends the session
        // and so publishes it now [MQTT-3.1.3-9 v5].
        clearTimeout(s.willTimer);
        s.willTimer = null;
        if (cleanStart && s.pendingWill) this.publishWill(s.pendingWill);
        s.pendingWill = null;
      }
      if (s.expiryTimer) {
        clearTimeout(s.expiryTimer);
        s.expiryTimer = null;
      }
      if (cleanStart) {
        this.endSession(s);
        s = undefined;
      } else present = true;
    }
    if (!s) {
      s = new Session(conn.clientId);
      this.sessions.set(conn.clientId, s);
    }
    s.conn = conn;
    s.expiryInterval = expiry;
    conn.session = s;
    return present;
  }

  connectionClosed(conn: ClientConnection, wasConnected: boolean): void {
    this.connections.delete(conn);
    const s = conn.session;
    if (!wasConnected || !s || s.conn !== conn) return;
    s.conn = null;
    conn.session = null;
    this.redispatchShared(s, conn.clientId);
    const will = conn.will && !conn.discardWill && !this.stopping ? conn.will : null;
    if (s.expiryInterval === 0) {
      if (will) this.publishWill(will);
      this.endSession(s);
      return;
    }
    if (will) {
      const delay = Math.min(conn.willDelay, s.expiryInterval);
      if (delay === 0) this.publishWill(will);
      else {
        s.willTimer = setTimeout(() => {
          s.willTimer = null;
          s.pendingWill = null;
          this.publishWill(will);
        }, delay * 1000);
        s.pendingWill = will;
      }
    }
    if (s.expiryInterval !== NEVER_EXPIRES) this.armExpiry(s, Date.now() + s.expiryInterval * 1000);
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
    if (this.sessions.get(s.clientId) === s) this.sessions.delete(s.clientId);
    for (const sub of s.subscriptions.values()) this.index.remove(s.clientId, sub.filter, sub.group);
    s.subscriptions.clear();
    if (s.willTimer) {
      clearTimeout(s.willTimer);
      s.willTimer = null;
      if (s.pendingWill && !this.stopping) this.publishWill(s.pendingWill);
    }
    s.pendingWill = null;
    if (s.expiryTimer) clearTimeout(s.expiryTimer);
    s.expiryTimer = null;
    this.counters.addQueued(-s.queue.length, -s.queueBytes);
    s.queue = [];
    s.queueBytes = 0;
    s.inflight.clear();
  }

  /** The will's topic was authorized at CONNECT; its expiry is relative until now. */
  private publishWill(m: Message): void {
    this.counters.willsPublished++;
    this.received(m.expiresAt === 0 ? m : { ...m, expiresAt: Date.now() + m.expiresAt });
  }

  // ---- subscriptions --------------------------------------------------------------

  /** Adds or replaces a subscription; returns true when it did not exist before. */
  subscribe(s: Session, sub: Subscription): boolean {
    const prev = s.subscriptions.get(sub.key);
    s.subscriptions.set(sub.key, sub);
    this.index.add(sub);
    return prev === undefined;
  }

  unsubscribe(s: Session, key: string): boolean {
    const sub = s.subscriptions.get(key);
    if (!sub) return false;
    s.subscriptions.delete(key);
    this.index.remove(s.clientId, sub.filter, sub.group);
    return true;
  }

  // ---- routing --------------------------------------------------------------------

  /** A message that came from a client (PUBLISH or will): counted, then routed. */
  received(m: Message): number {
    this.counters.messagesReceived++;
    const n = this.publish(m);
    if (n === 0) this.counters.droppedNoSubscribers++;
    return n;
  }

  /** Routes a message: client messages and wills come through received(), $SYS calls it directly. Returns the number of deliveries. */
  publish(m: Message): number {
    if (m.retain && this.cfg.mqtt.retain_available) {
      this.retained.set(m);
      this.counters.retainedStored = this.retained.size;
    }
    let targets: Map<string, Target> | null = null;
    let groups: SharedMatch[] | null = null;
    this.index.match(
      m.topic,
      (sub) => {
        // No Local: never back to the publisher [MQTT-3.8.3-3].
        if (sub.noLocal && sub.clientId === m.from) return;
        targets ??= new Map();
        const t = targets.get(sub.clientId);
        if (!t) {
          targets.set(sub.clientId, {
            qos: sub.qos, rap: sub.retainAsPublished,
            subIds: sub.subscriptionId !== undefined ? [sub.subscriptionId] : undefined,
          });
          return;
        }
        // Overlapping subscriptions: one delivery at the highest granted QoS carrying
        // every matching Subscription Identifier [MQTT-3.3.4-3/5 v5].
        if (sub.qos > t.qos) t.qos = sub.qos;
        t.rap ||= sub.retainAsPublished;
        if (sub.subscriptionId !== undefined) (t.subIds ??= []).push(sub.subscriptionId);
      },
      (g) => (groups ??= []).push(g),
    );
    let n = 0;
    if (targets !== null) {
      for (const [clientId, t] of targets as Map<string, Target>) {
        const s = this.sessions.get(clientId);
        if (!s) continue;
        const qos = (m.qos < t.qos ? m.qos : t.qos) as QoS;
        // Retain is cleared on routed delivery unless Retain As Published [MQTT-3.3.1-12 v5, 3.3.1-9 v3].
        this.deliverTo(s, { msg: m, qos, retain: t.rap && m.retain, subIds: t.subIds, shared: undefined });
        n++;
      }
    }
    if (groups !== null) {
      for (const g of groups as SharedMatch[]) if (this.deliverShared(m, g.group, g.filter, g.members)) n++;
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
      const members = this.index.groupMembers(d.shared!.filter, d.shared!.group);
      if (members && this.deliverShared(d.msg, d.shared!.group, d.shared!.filter, members, clientId)) {
        this.counters.sharedRedispatched++;
      } else if (s.expiryInterval > 0) this.enqueue(s, d); // nobody else: keep it for this member
    }
  }

  deliverTo(s: Session, d: Delivery): void {
    if (s.conn) s.conn.deliver(d);
    else this.enqueue(s, d);
  }

  /** Adds to a session's queue under the configured bound and overflow policy (counted). */
  enqueue(s: Session, d: Delivery): void {
    const q = this.cfg.mqtt;
    if (isExpired(d.msg, Date.now())) {
      this.counters.droppedExpired++;
      return;
    }
    if (d.qos === 0 && !s.conn && !q.queue_qos0) {
      this.counters.droppedQos0Offline++;
      return;
    }
    if (s.queue.length >= q.max_queued_messages) {
      this.counters.droppedQueueFull++;
      if (q.queue_overflow === 'drop_new' || s.queue.length === 0) return;
      this.dequeued(s, s.queue.shift()!);
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
