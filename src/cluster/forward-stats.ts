// Per-peer statistics of the forwarding channel: each worker's senders (Forwarder.stats), summed
// per peer by the main thread for GET /api/v1/cluster (`forwarding`).

import type { SenderStats } from './wire/forward.js';

/** One worker's forward sender to one peer. */
export type PeerForwardStats = SenderStats & { peer: string };

export interface PeerForwardSummary {
  peer: string;
  /** Connections up, of all (one per worker). */
  connections_up: number;
  connections: number;
  sent: number;
  acked: number;
  resent: number;
  dropped_qos0: number;
  unacked: number;
  queued_bytes: number;
  reconnects: number;
  last_error: string | null;
}

/** The workers' senders summed per peer, in peer name order. */
export function summarizeForwarding(perWorker: readonly (readonly PeerForwardStats[])[]): PeerForwardSummary[] {
  const by = new Map<string, PeerForwardSummary>();
  for (const list of perWorker) {
    for (const s of list) {
      let t = by.get(s.peer);
      if (!t) {
        t = { peer: s.peer, connections_up: 0, connections: 0, sent: 0, acked: 0, resent: 0, dropped_qos0: 0, unacked: 0, queued_bytes: 0, reconnects: 0, last_error: null };
        by.set(s.peer, t);
      }
      t.connections++;
      if (s.state === 'up') t.connections_up++;
      t.sent += s.sent;
      t.acked += s.acked;
      t.resent += s.resent;
      t.dropped_qos0 += s.droppedQos0;
      t.unacked += s.unackedFrames;
      t.queued_bytes += s.queuedBytes;
      t.reconnects += s.reconnects;
      t.last_error ??= s.lastError;
    }
  }
  return [...by.values()].sort((a, b) => (a.peer < b.peer ? -1 : a.peer > b.peer ? 1 : 0));
}
