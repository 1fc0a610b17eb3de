// A connection worker's part of the forwarding channel (docs/cluster.md, "Forwarding"):
//  - one ForwardSender per peer node, so that this worker writes its own connection and a
//    publisher (which lives on one worker) keeps its order;
//  - a forward server on the node's forward port (an SO_REUSEPORT member like the MQTT
//    listeners): what other nodes send lands on some worker, which matches the topic in
//    the trie and hands the message to its workers' rings;
//  - session takeover requests, both ways.
import type { Message } from '../broker/message.js';
import type { GroupRef } from '../broker/router.js';
import type { SessionTransfer } from '../broker/transfer.js';
import type { Config } from '../config/types.js';
import type { Logger } from '../log/logger.js';
import { decodeRecord, RecordEncoder } from '../workers/message-record.js';
import { DedupeTable } from './wire/dedupe.js';
import { createForwardServer, ForwardSender, FORWARD_HEAD_BYTES } from './wire/forward.js';
import { sentByReference } from './wire/link.js';
import type { Peer } from './membership.js';
import { clusterTls } from './transport.js';
import { decodeTransfer, encodeTransfer } from './transfer-codec.js';
import type { PeerForwardStats } from './forward-stats.js';

/** Request kinds on the forward channel. */
export const FWD_TAKEOVER = 1;

export interface ForwarderOptions {
  cfg: Config;
  worker: number;
  /** This run of the node (the receiver's de-duplication key). */
  incarnation: () => string;
  dedupe: SharedArrayBuffer;
  log: Logger;
  /** A message from another node: deliver it to this node's subscribers. */
  deliver: (m: Message, nonShared: boolean, groups: readonly GroupRef[]) => void;
  /** Another node takes `clientId` over: the session, if this node holds it. */
  release: (clientId: string, cleanStart: boolean) => Promise<SessionTransfer | null>;
  /** A full peer connection paused publishers / it drained again. */
  counters: { forwardedRemote: number; forwardDroppedRemote: number };
}

export class Forwarder {
  private readonly senders = new Map<number, { peer: Peer; sender: ForwardSender }>();
  private readonly encoder = new RecordEncoder();
  private server: { server: import('node:net').Server; close(): Promise<void> | void } | null = null;
  private blockedCount = 0;
  private unblockWaiters: (() => void)[] = [];
  private readonly blockedSlots = new Set<number>();

  constructor(private readonly o: ForwarderOptions) {}

  /** The forward server (not listening yet: the caller listens as it does for MQTT). */
  serverOf(): import('node:net').Server {
    const { cfg, log } = this.o;
    this.server = createForwardServer({
      cookie: cfg.cluster.cookie!, cluster: cfg.cluster.name, node: cfg.node.name, incarnation: this.o.incarnation(),
      tls: clusterTls(cfg), dedupe: new DedupeTable(this.o.dedupe), log, flushDelayMs: cfg.cluster.forward_flush_ms,
      onMessage: (_from, body) => {
        const f = decodeRecord(body, 0, body.length);
        this.o.deliver(f.msg, f.nonShared, f.groups);
      },
      onRequest: async (_from, kind, body) => {
        if (kind !== FWD_TAKEOVER) throw new Error(`unknown request kind ${kind}`);
        const req = JSON.parse(body.toString('utf8')) as { clientId: string; cleanStart: boolean };
        return encodeTransfer(await this.o.release(req.clientId, req.cleanStart));
      },
    });
    return this.server.server;
  }

  /** A peer's node name ('' when it has none here). */
  nameOf(slot: number): string {
    return this.senders.get(slot)?.peer.name ?? '';
  }

  /** The peers changed (nodes shard): senders to new ones, abandon those gone. */
  setPeers(peers: readonly Peer[]): void {
    const { cfg, log } = this.o;
    const keep = new Set<number>();
    for (const p of peers) {
      keep.add(p.slot);
      const cur = this.senders.get(p.slot);
      if (cur && cur.peer.incarnation === p.incarnation && cur.peer.forward === p.forward) continue;
      // A restarted peer (new incarnation): its old connection's unacked messages are
      // resent by a new sender only if they were acked nowhere: the old sender abandons.
      if (cur) this.drop(p.slot);
      const [host, port] = splitHostPort(p.forward);
      const sender = new ForwardSender({
        peerNode: p.name, host, port, tls: clusterTls(cfg), cookie: cfg.cluster.cookie!, cluster: cfg.cluster.name,
        node: cfg.node.name, worker: this.o.worker, incarnation: this.o.incarnation(), maxBytes: cfg.cluster.forward_max_bytes, log,
        flushDelayMs: cfg.cluster.forward_flush_ms,
      });
      this.senders.set(p.slot, { peer: p, sender });
    }
    for (const slot of [...this.senders.keys()]) if (!keep.has(slot)) this.drop(slot);
  }

  private drop(slot: number): void {
    const s = this.senders.get(slot);
    if (!s) return;
    this.senders.delete(slot);
    s.sender.abandon();
    if (this.blockedSlots.delete(slot)) this.unblocked();
  }

  /** Sends `m` to node `slot`; for QoS 1/2 a promise that settles once it holds it (or left). */
  send(slot: number, m: Message, nonShared: boolean, groups: readonly GroupRef[] | null): Promise<void> | null {
    const s = this.senders.get(slot);
    if (!s) {
      // Not (yet) a live peer: its routes are stale or not ours to serve.
      this.o.counters.forwardDroppedRemote++;
      return null;
    }
    const [head, payload] = this.encoder.encode(m, nonShared, groups, 0);
    // The head is the encoder's scratch buffer, reused by the next encode(): copied when the
    // link keeps this frame by reference until written (the payload never changes).
    const parts = [sentByReference(FORWARD_HEAD_BYTES + head.length + payload.length) ? Buffer.from(head) : head, payload];
    let wait: Promise<void> | null = null;
    let ok: boolean;
    if (m.qos === 0) ok = s.sender.send(parts, 0);
    else {
      let done!: () => void;
      wait = new Promise<void>((r) => (done = r));
      ok = s.sender.send(parts, m.qos, () => done());
    }
    if (ok) this.o.counters.forwardedRemote++;
    else this.o.counters.forwardDroppedRemote++;
    if (s.sender.blocked && !this.blockedSlots.has(slot)) {
      this.blockedSlots.add(slot);
      this.blockedCount++;
      s.sender.whenUnblocked(() => {
        if (this.blockedSlots.delete(slot)) this.unblocked();
      });
    }
    return wait;
  }

  private unblocked(): void {
    if (--this.blockedCount > 0) return;
    const w = this.unblockWaiters;
    this.unblockWaiters = [];
    for (const f of w) f();
  }

  get blocked(): boolean {
    return this.blockedCount > 0;
  }

  whenUnblocked(f: () => void): void {
    if (this.blockedCount === 0) f();
    else this.unblockWaiters.push(f);
  }

  /** Takes `clientId`'s session over from node `name` (null: it had none, or did not answer). */
  async takeover(name: string, clientId: string, cleanStart: boolean): Promise<SessionTransfer | null> {
    const s = [...this.senders.values()].find((x) => x.peer.name === name);
    if (!s) return null;
    try {
      const body = await s.sender.request(FWD_TAKEOVER, Buffer.from(JSON.stringify({ clientId, cleanStart })), 5_000);
      return decodeTransfer(body);
    } catch (e) {
      this.o.log.warn('cluster.takeover_failed', { client: clientId, from: name, error: (e as Error).message });
      return null;
    }
  }

  /** This worker's sender to each peer. */
  stats(): PeerForwardStats[] {
    return [...this.senders.values()].map(({ peer, sender }) => ({ peer: peer.name, ...sender.stats() }));
  }

  async close(): Promise<void> {
    for (const { sender } of this.senders.values()) sender.close();
    this.senders.clear();
    await this.server?.close();
  }
}

export function splitHostPort(s: string): [string, number] {
  const i = s.lastIndexOf(':');
  let host = s.slice(0, i);
  if (host.startsWith('[')) host = host.slice(1, -1);
  return [host, Number(s.slice(i + 1))];
}
