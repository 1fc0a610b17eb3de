// What one broker engine writes to the store (docs/durability.md, "Layout"): the state of
// its persistent sessions, the wills of its connections, and (single node) retained
// messages. Keys are arrays (LMDB's ordered-binary encoding), so that one session's
// messages are one key range:
//   ['s', clientId]          session: expiry, subscriptions, inbound QoS 2 ids, next packet id, offline since
//   ['m', clientId, seq]     one QoS 1/2 message of that session: queued, or sent with its packet id
//   ['w', clientId]          the will of a connection (or of an offline session, with the time it is due)
//   ['r', topic]             a retained message (a node outside a cluster; in a cluster etcd holds them)
// Writes are asynchronous: with durability.sync "batch" they wait in a window of batch_ms
// and go as one LMDB transaction (group commit); with "always" each event-loop turn's
// writes commit at once. barrier() resolves once everything written so far is on disk:
// PUBACK, PUBREC and SUBACK wait for it when their packet wrote something.
import type { RootDatabase } from 'lmdb';
import type { Message } from '../broker/message.js';
import type { Delivery, Session } from '../broker/session.js';
import type { Subscription } from '../broker/subscription-index.js';

export interface StoredSession {
  expiry: number;
  subs: Subscription[];
  q2: number[];
  nextId: number;
  /** When its connection went (ms since the epoch); 0 while connected. */
  off: number;
}

/** Message states: waiting in the queue, or sent with packet id `pid` (QoS 2: PUBLISH or PUBREL stage). */
export const M_QUEUED = 0;
export const M_PUBLISH = 1;
export const M_PUBREL = 2;

export interface StoredMessage {
  d: Omit<Delivery, 'seq'>;
  pid: number;
  st: typeof M_QUEUED | typeof M_PUBLISH | typeof M_PUBREL;
}

export interface StoredWill {
  msg: Message;
  /** Will Delay Interval, seconds (already capped by the session expiry). */
  delay: number;
  /** When it is due (ms since the epoch), once its connection went; 0 while connected. */
  at: number;
}

export class Journal {
  /** The newest write not yet known to be on disk. */
  private last: Promise<boolean> | null = null;
  private onFailure: (e: unknown) => void = () => undefined;

  /** batch_ms > 0: writes wait here until the window closes, then go as one transaction. */
  private queued: (() => void)[] = [];
  /** Message puts in the open window, by key: a removal in the same window cancels both. */
  private queuedPuts = new Map<string, { at: number[]; added: boolean }>();
  private window: { timer: NodeJS.Timeout; done: Promise<boolean>; resolve: (ok: boolean) => void; reject: (e: unknown) => void } | null = null;

  constructor(
    private readonly db: RootDatabase,
    private readonly counters: { storeWrites: number; storeWriteFailed: number } | null = null,
    onFailure?: (e: unknown) => void,
    /** Group-commit window (durability.batch_ms of "batch"); 0: each event-loop turn's writes commit at once ("always"). */
    private readonly batchMs = 0,
  ) {
    if (onFailure) this.onFailure = onFailure;
  }

  /** One write: now ("always"), or in the open window, which then commits as one transaction. */
  private write(op: () => Promise<boolean>, putKey?: string, added = false): void {
    if (this.counters) this.counters.storeWrites++;
    if (this.batchMs === 0) {
      this.track(op());
      return;
    }
    if (putKey !== undefined) {
      const e = this.queuedPuts.get(putKey);
      if (e) e.at.push(this.queued.length);
      else this.queuedPuts.set(putKey, { at: [this.queued.length], added });
    }
    this.queued.push(() => void op());
    if (this.window === null) {
      let resolve!: (ok: boolean) => void;
      let reject!: (e: unknown) => void;
      const done = new Promise<boolean>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      const timer = setTimeout(() => this.closeWindow(), this.batchMs);
      this.window = { timer, done, resolve, reject };
      this.track(done);
    }
  }

  private closeWindow(): void {
    const w = this.window;
    if (w === null) return;
    this.window = null;
    clearTimeout(w.timer);
    const ops = this.queued;
    this.queued = [];
    this.queuedPuts.clear();
    this.db.batch(() => {
      for (const op of ops) op();
    }).then(w.resolve, w.reject);
  }

  /** Writes still in the window go now (a stop, a session handed to another worker). */
  flushNow(): void {
    this.closeWindow();
  }

  private track(p: Promise<boolean>): void {
    this.last = p;
    p.catch((e: unknown) => this.onFailure(e));
  }

  /**
   * Resolves true once every write so far is on disk (null: nothing written since the last
   * barrier that settled), false when a write failed (the caller must not acknowledge).
   */
  barrier(): Promise<boolean> | null {
    const p = this.last;
    if (p === null) return null;
    // Many packets of one turn ask after the same last write: one wait serves them all.
    if (this.lastBarrier !== null && this.lastBarrier.of === p) return this.lastBarrier.wait;
    const wait = p.then(
      () => this.db.flushed.then(() => {
        if (this.last === p) this.last = null;
        return true;
      }),
      () => false,
    );
    this.lastBarrier = { of: p, wait };
    return wait;
  }

  private lastBarrier: { of: Promise<boolean>; wait: Promise<boolean> } | null = null;

  // ---- sessions ---------------------------------------------------------------------

  /** The session's own record (not its messages), as it is now. */
  saveSession(s: Session): void {
    s.stored = true;
    const rec: StoredSession = {
      expiry: s.expiryInterval, subs: [...s.subscriptions.values()], q2: [...s.inboundQos2], nextId: s.peekNextId(),
      off: s.conn ? 0 : s.offSince || Date.now(),
    };
    this.write(() => this.db.put(['s', s.clientId], rec));
  }

  /** The session and its messages go (ended, expired, taken by a Clean Start). */
  dropSession(s: Session): void {
    s.stored = false;
    const id = s.clientId;
    this.write(() => this.db.remove(['s', id]));
    // What it holds in memory (written in this batch perhaps, not yet readable), then
    // anything else of it already committed.
    for (const d of s.queue) this.dropMessage(s.clientId, d);
    for (const e of s.inflight.values()) this.dropMessage(s.clientId, e.d);
    for (const key of this.db.getKeys({ start: ['m', s.clientId], end: ['m', s.clientId, Number.MAX_SAFE_INTEGER] })) {
      this.write(() => this.db.remove(key));
    }
  }

  /** A QoS 1/2 delivery enters a persistent session: numbered (per session) and written. */
  addMessage(s: Session, d: Delivery): void {
    const seq = s.msgSeq++;
    d.seq = seq;
    const key = ['m', s.clientId, seq];
    const rec = toStored(d, 0, M_QUEUED);
    this.write(() => this.db.put(key, rec), `${s.clientId}\u0000${seq}`, true);
  }

  /** QoS 2 sent with packet id `pid` (or released, PUBREL): written, so that a restart resends it with the same id. */
  markMessage(clientId: string, d: Delivery, pid: number, st: typeof M_PUBLISH | typeof M_PUBREL): void {
    if (d.seq === undefined) return;
    const key = ['m', clientId, d.seq];
    const rec = toStored(d, pid, st);
    this.write(() => this.db.put(key, rec), `${clientId}\u0000${d.seq}`);
  }

  /** Done (acknowledged), dropped or expired. */
  dropMessage(clientId: string, d: Delivery): void {
    if (d.seq === undefined) return;
    const key = ['m', clientId, d.seq];
    // Acknowledged within the window it was written in (a connected subscriber, usually):
    // neither the put nor the removal goes to disk.
    const k = `${clientId}\u0000${d.seq}`;
    d.seq = undefined;
    const e = this.queuedPuts.get(k);
    if (e !== undefined) {
      for (const i of e.at) this.queued[i] = noop;
      this.queuedPuts.delete(k);
      // Written first in this window: nothing of it is on disk, nothing to remove.
      if (e.added) return;
    }
    this.write(() => this.db.remove(key));
  }

  // ---- wills and retained --------------------------------------------------------

  saveWill(clientId: string, w: StoredWill): void {
    this.write(() => this.db.put(['w', clientId], w));
  }

  dropWill(clientId: string): void {
    this.write(() => this.db.remove(['w', clientId]));
  }

  setRetained(m: Message): void {
    if (m.payload.length === 0) this.write(() => this.db.remove(['r', m.topic]));
    else this.write(() => this.db.put(['r', m.topic], m));
  }
}

function noop(): void {}

function toStored(d: Delivery, pid: number, st: StoredMessage['st']): StoredMessage {
  return { d: { msg: d.msg, qos: d.qos, retain: d.retain, subIds: d.subIds, shared: d.shared }, pid, st };
}
