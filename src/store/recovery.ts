// Reading the store back at start-up (docs/durability.md, "Recovery"), before the node
// accepts connections: persistent sessions with their subscriptions, queued and inflight
// messages and inbound QoS 2 ids; wills still to publish; retained messages. What has
// expired meanwhile is removed.
import type { RootDatabase } from 'lmdb';
import type { Message } from '../broker/message.js';
import { isExpired } from '../broker/message.js';
import type { Delivery } from '../broker/session.js';
import type { SessionTransfer } from '../broker/transfer.js';
import { M_PUBLISH, M_QUEUED, type StoredMessage, type StoredSession, type StoredWill } from './journal.js';

const NEVER_EXPIRES = 0xffffffff;

export interface RecoveredSession {
  clientId: string;
  t: SessionTransfer;
  /** Offline since (ms); a session that was connected when the node went counts from `now`. */
  off: number;
}

export interface RecoveredWill {
  clientId: string;
  msg: Message;
  /** When to publish it (ms); a reconnect of its session first cancels it. */
  at: number;
}

export interface Recovered {
  sessions: RecoveredSession[];
  wills: RecoveredWill[];
  retained: Message[];
  counts: { sessions: number; messages: number; expiredSessions: number; expiredRetained: number; wills: number; ms: number };
}

/**
 * Reads everything back; removes what has expired (awaited). `mine` limits it to the
 * client ids of one share (a worker reads its own share, the others theirs, in parallel);
 * retained messages are read whole either way.
 */
export async function recoverStore(db: RootDatabase, now = Date.now(), mine: (clientId: string) => boolean = () => true): Promise<Recovered> {
  const t0 = Date.now();
  const metas = new Map<string, StoredSession>();
  for (const key of db.getKeys({ start: ['s'], end: ['s', '\uffff'] })) {
    const clientId = (key as [string, string])[1];
    if (mine(clientId)) metas.set(clientId, db.get(key) as StoredSession);
  }
  const msgs = new Map<string, [number, StoredMessage][]>();
  const removals: (readonly unknown[])[] = [];
  // Each session's messages are one key range: read per session (a worker reads only its
  // share's). A message without its session cannot be left by the write path (a session's
  // record and its messages go in one transaction of the thread that holds it).
  for (const clientId of metas.keys()) {
    const l: [number, StoredMessage][] = [];
    for (const { key, value } of db.getRange({ start: ['m', clientId], end: ['m', clientId, Number.MAX_SAFE_INTEGER] })) {
      l.push([(key as [string, string, number])[2], value as StoredMessage]);
    }
    if (l.length > 0) msgs.set(clientId, l);
  }
  const counts = { sessions: 0, messages: 0, expiredSessions: 0, expiredRetained: 0, wills: 0, ms: 0 };
  const sessions: RecoveredSession[] = [];
  for (const [clientId, m] of metas) {
    const off = m.off > 0 ? m.off : now;
    if (m.expiry === 0 || (m.expiry !== NEVER_EXPIRES && now >= off + m.expiry * 1000)) {
      counts.expiredSessions++;
      removals.push(['s', clientId]);
      for (const [seq] of msgs.get(clientId) ?? []) removals.push(['m', clientId, seq]);
      continue;
    }
    const list = (msgs.get(clientId) ?? []).sort((a, b) => a[0] - b[0]);
    const queue: Delivery[] = [];
    const inflight: [number, Delivery, 'publish' | 'pubrel'][] = [];
    let maxSeq = 0;
    for (const [seq, rec] of list) {
      maxSeq = Math.max(maxSeq, seq);
      const d: Delivery = { ...rec.d, seq };
      if (rec.st === M_QUEUED || rec.pid === 0) queue.push(d);
      else inflight.push([rec.pid, d, rec.st === M_PUBLISH ? 'publish' : 'pubrel']);
    }
    counts.sessions++;
    counts.messages += list.length;
    sessions.push({
      clientId, off,
      t: {
        expiryInterval: m.expiry, subscriptions: m.subs, queue, inflight, inboundQos2: m.q2, nextId: m.nextId,
        stored: true, msgSeq: maxSeq + 1,
      },
    });
  }
  const live = new Set(sessions.map((s) => s.clientId));
  const wills: RecoveredWill[] = [];
  for (const { key, value } of db.getRange({ start: ['w'], end: ['w', '\uffff'] })) {
    const clientId = (key as [string, string])[1];
    if (!mine(clientId)) continue;
    const w = value as StoredWill;
    // A connection that was up when the node went: its will is due after its delay (the
    // session's expiry caps it); an offline session's delayed will keeps its time. With the
    // session gone (ended, expired), the will is published now [MQTT-3.1.3-9].
    const at = !live.has(clientId) ? now : w.at > 0 ? w.at : now + w.delay * 1000;
    wills.push({ clientId, msg: w.msg, at });
    if (!live.has(clientId) || at <= now) removals.push(key as unknown[]);
  }
  counts.wills = wills.length;
  const retained: Message[] = [];
  for (const { key, value } of db.getRange({ start: ['r'], end: ['r', '\uffff'] })) {
    const m = value as Message;
    if (isExpired(m, now)) {
      counts.expiredRetained++;
      removals.push(key as unknown[]);
    } else retained.push(m);
  }
  if (removals.length > 0) {
    await db.transaction(() => {
      for (const k of removals) void db.remove(k as never);
    });
    await db.flushed;
  }
  counts.ms = Date.now() - t0;
  return { sessions, wills, retained, counts };
}
