// The store as a broker engine uses it (docs/durability.md): opened per engine thread when
// durability.sync is not "none", and the recovered state put back into an engine.
import { resolve } from 'node:path';
import type { RootDatabase } from 'lmdb';
import type { Broker } from '../broker/broker.js';
import type { Config } from '../config/types.js';
import { reviveMessage } from '../broker/transfer.js';
import { Journal } from './journal.js';
import { openStore } from './open.js';
import type { RecoveredSession, RecoveredWill } from './recovery.js';

export function storeDir(cfg: Config): string {
  return resolve(cfg.node.data_dir, 'store');
}

/**
 * Whether the node keeps a store: durability.sync is not "none" and the node is outside a
 * cluster (etcd holds session ownership and retained messages there; sessions that survive
 * a node's death are issue 12's next part).
 */
export function durableNode(cfg: Config): boolean {
  return cfg.durability.sync !== 'none' && cfg.cluster.role === 'none';
}

/** This thread's handle on the node's store, or null (not a durable node). */
export function openEngineStore(cfg: Config): RootDatabase | null {
  return durableNode(cfg) ? openStore(storeDir(cfg), { commitDelayMs: 0 }) : null;
}

/** Gives `broker` its journal on `db`; a failed write is logged (and counted by the caller's answer). */
export function attachJournal(broker: Broker, db: RootDatabase): Journal {
  const d = broker.cfg.durability;
  broker.journal = new Journal(db, broker.counters, (e) => broker.log.error('store.write_failed', { error: e }), d.sync === 'batch' ? d.batch_ms : 0);
  return broker.journal;
}

/** Recovered sessions into `broker` (before it accepts connections): they are offline, with their expiry running. */
export function restoreSessions(broker: Broker, sessions: readonly RecoveredSession[]): void {
  for (const r of sessions) {
    broker.restoreSession(r.clientId, r.t, r.off);
    broker.counters.sessionsRecovered++;
  }
}

/** Recovered wills: due ones published now, delayed ones of a live session pending on it. */
export function scheduleWills(broker: Broker, wills: readonly RecoveredWill[]): void {
  const now = Date.now();
  for (const w of wills) {
    const msg = reviveMessage(w.msg);
    const s = broker.sessions.get(w.clientId);
    if (s && w.at > now && !s.conn) broker.delayWill(s, msg, w.at);
    else {
      if (s) broker.journal?.dropWill(w.clientId);
      broker.publishWill(msg);
    }
  }
}
