// Reliable forwarding of messages to one peer node over the forward port (docs/cluster.md,
// "Forwarding"), on an authenticated Link:
//
//   MSG  (type 32)  u8 flags (bit 0: reliable), f64 seq (0 for QoS 0), then the record
//   ACK  (type 33)  f64 seq: every reliable MSG up to seq is held by the receiver
//
// A sender numbers its QoS 1/2 messages 1, 2, 3, … and keeps each until it is acknowledged;
// after a lost connection it reconnects and sends the unacknowledged ones again, in order,
// with their numbers, ahead of anything new. The receiver delivers a reliable message only
// if its number is above the highest it delivered for that sender (DedupeTable, shared by
// the node's workers), and acknowledges cumulatively once per event-loop turn. QoS 0 is
// best effort: dropped (counted) while the peer is unreachable or the sender is full.
import type net from 'node:net';
import type { Logger } from '../../log/logger.js';
import type { DedupeTable } from './dedupe.js';
import { connectLink, createLinkServer, type Link, type LinkIdentity, type PeerInfo } from './link.js';

export const F_MSG = 32;
export const F_ACK = 33;
/** Bytes before the record in a MSG body (flags, seq). */
export const FORWARD_HEAD_BYTES = 9;
/** The MSG head of every QoS 0 message (flags 0, seq 0); never written to. */
const QOS0_HEAD = Buffer.alloc(FORWARD_HEAD_BYTES);

export type SendStatus = 'acked' | 'abandoned';

interface Unacked {
  seq: number;
  /** The whole frame body (flags, seq, record), kept for a resend. */
  body: Buffer;
  done: ((s: SendStatus) => void) | undefined;
}

export interface SenderOptions extends LinkIdentity {
  peerNode: string;
  host: string;
  port: number;
  worker: number;
  /** Unsent + unacknowledged bytes before `blocked` (default 8 MiB). */
  maxBytes?: number;
}

export interface SenderStats {
  state: 'connecting' | 'up' | 'down' | 'closed';
  /** Messages sent (QoS 0 and reliable), acknowledged (reliable), sent again after a reconnect. */
  sent: number;
  acked: number;
  resent: number;
  droppedQos0: number;
  /** Reliable messages sent and not yet acknowledged. */
  unackedFrames: number;
  /** Bytes unacknowledged plus not yet written. */
  queuedBytes: number;
  reconnects: number;
  lastError: string | null;
}

export class ForwardSender {
  private link: Link | null = null;
  private state: SenderStats['state'] = 'connecting';
  private closed = false;
  private nextSeq = 1;
  private readonly unacked: Unacked[] = [];
  private head = 0;
  private unackedBytes = 0;
  private readonly maxBytes: number;
  private unblockWaiters: (() => void)[] = [];
  private upWaiters: (() => void)[] = [];
  private delay = 50;
  private readonly st = { sent: 0, acked: 0, resent: 0, droppedQos0: 0, reconnects: 0 };
  private lastError: string | null = null;

  constructor(private readonly o: SenderOptions) {
    this.maxBytes = o.maxBytes ?? 8 * 1024 * 1024;
    void this.connect();
  }

  private async connect(): Promise<void> {
    while (!this.closed) {
      try {
        const link = await connectLink({ ...this.o, channel: 'forward' });
        if (this.closed) {
          link.close('sender closed');
          return;
        }
        this.up(link);
        return;
      } catch (e) {
        this.lastError = (e as Error).message;
        if (this.state !== 'down') this.o.log.debug('cluster.forward_connect_failed', { peer: this.o.peerNode, error: this.lastError });
        this.state = 'down';
        await new Promise((r) => setTimeout(r, this.delay * (0.75 + Math.random() / 2)));
        this.delay = Math.min(this.delay * 2, 2000);
      }
    }
  }

  private up(link: Link): void {
    this.link = link;
    this.state = 'up';
    this.delay = 50;
    link.onFrame = (type, body) => {
      if (type === F_ACK) this.onAck(body.readDoubleBE(0));
    };
    link.onClose = (reason) => {
      if (this.link !== link) return;
      this.link = null;
      if (this.closed) return;
      this.state = 'down';
      this.lastError = reason;
      this.st.reconnects++;
      this.o.log.debug('cluster.forward_link_lost', { peer: this.o.peerNode, reason, unacked: this.unacked.length - this.head });
      void this.connect();
    };
    link.onDrain = () => this.checkUnblocked();
    // Everything not acknowledged goes again, in order, before anything new.
    for (let i = this.head; i < this.unacked.length; i++) {
      link.send(F_MSG, this.unacked[i]!.body);
      this.st.resent++;
    }
    for (const f of this.upWaiters.splice(0)) f();
  }

  private onAck(seq: number): void {
    while (this.head < this.unacked.length && this.unacked[this.head]!.seq <= seq) {
      const u = this.unacked[this.head]!;
      this.unacked[this.head++] = undefined as unknown as Unacked;
      this.unackedBytes -= u.body.length;
      this.st.acked++;
      u.done?.('acked');
    }
    if (this.head > 1024 && this.head * 2 > this.unacked.length) {
      this.unacked.splice(0, this.head);
      this.head = 0;
    }
    this.checkUnblocked();
  }

  private queued(): number {
    return this.unackedBytes + (this.link?.bufferedBytes ?? 0);
  }

  get blocked(): boolean {
    return this.queued() > this.maxBytes;
  }

  whenUnblocked(f: () => void): void {
    if (!this.blocked) f();
    else this.unblockWaiters.push(f);
  }

  private checkUnblocked(): void {
    if (this.unblockWaiters.length === 0 || this.queued() > this.maxBytes / 2) return;
    for (const f of this.unblockWaiters.splice(0)) f();
  }

  /**
   * Sends a record (its parts are written as they are for QoS 0; copied once for QoS 1/2,
   * which must be kept for a resend). Returns false when a QoS 0 message was dropped.
   */
  send(parts: readonly Buffer[], qos: 0 | 1 | 2, onDone?: (s: SendStatus) => void): boolean {
    if (this.closed) {
      onDone?.('abandoned');
      if (qos === 0) this.st.droppedQos0++;
      return false;
    }
    if (qos === 0) {
      const link = this.link;
      if (link === null || link.bufferedBytes > this.maxBytes) {
        this.st.droppedQos0++;
        return false;
      }
      link.send(F_MSG, [QOS0_HEAD, ...parts]);
      this.st.sent++;
      return true;
    }
    let len = FORWARD_HEAD_BYTES;
    for (const p of parts) len += p.length;
    const body = Buffer.allocUnsafe(len);
    const seq = this.nextSeq++;
    body[0] = 1;
    body.writeDoubleBE(seq, 1);
    let at = FORWARD_HEAD_BYTES;
    for (const p of parts) at += p.copy(body, at);
    this.unacked.push({ seq, body, done: onDone });
    this.unackedBytes += len;
    this.link?.send(F_MSG, body);
    this.st.sent++;
    return true;
  }

  /** A request on this sender's connection (waits, within the timeout, for it to be up). */
  async request(kind: number, body: Buffer, timeoutMs: number): Promise<Buffer> {
    const t0 = Date.now();
    if (this.link === null) {
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`forward link to ${this.o.peerNode} is down (${this.lastError ?? 'connecting'})`)), timeoutMs);
        this.upWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.link!.request(kind, body, Math.max(1, timeoutMs - (Date.now() - t0)));
  }

  /** The peer left the cluster: every waiting message completes as abandoned; no more sends. */
  abandon(): void {
    this.close();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.state = 'closed';
    this.link?.close('sender closed');
    this.link = null;
    for (let i = this.head; i < this.unacked.length; i++) this.unacked[i]!.done?.('abandoned');
    this.unacked.length = 0;
    this.head = 0;
    this.unackedBytes = 0;
    for (const f of this.unblockWaiters.splice(0)) f();
  }

  stats(): SenderStats {
    return {
      state: this.state, ...this.st, unackedFrames: this.unacked.length - this.head, queuedBytes: this.queued(), lastError: this.lastError,
    };
  }
}

export interface ForwardServerOptions extends LinkIdentity {
  dedupe: DedupeTable;
  /** A message for this node (body valid only during the call). */
  onMessage: (from: PeerInfo, record: Buffer, reliable: boolean) => void;
  onRequest?: (from: PeerInfo, kind: number, body: Buffer) => Buffer | Promise<Buffer>;
}

/** The receiving side (a server not yet listening). */
export function createForwardServer(o: ForwardServerOptions): { server: net.Server; links: Set<Link>; close(): void } {
  const links = new Set<Link>();
  const server = createLinkServer({
    ...o,
    channel: 'forward',
    onLink: (link) => {
      links.add(link);
      const p = link.peer;
      const key = `${p.node}|${p.incarnation}|${p.worker}`;
      let ackPending = 0;
      let ackScheduled = false;
      let unrecorded = false;
      const ack = (): void => {
        ackScheduled = false;
        // Recorded before the ack leaves: a resend after it, on any worker, is recognised.
        if (!o.dedupe.set(key, last) && !unrecorded) {
          // Still delivered once on this link; a resend after a reconnect may be delivered twice.
          unrecorded = true;
          o.log.warn('cluster.dedupe_full', { peer: p.node, sender: key, ...o.dedupe.stats() });
        }
        const b = Buffer.allocUnsafe(8);
        b.writeDoubleBE(ackPending, 0);
        link.send(F_ACK, b);
      };
      let last = o.dedupe.get(key);
      link.onFrame = (type, body) => {
        if (type !== 32) return;
        const reliable = (body[0]! & 1) !== 0;
        const record = body.subarray(9);
        if (!reliable) {
          o.onMessage(p, record, false);
          return;
        }
        const seq = body.readDoubleBE(1);
        // One link per sender at a time: `last` came from the shared table when this link
        // opened (the previous one may have been on another worker).
        if (seq > last) {
          o.onMessage(p, record, true);
          last = seq;
        }
        ackPending = Math.max(ackPending, seq);
        if (!ackScheduled) {
          ackScheduled = true;
          process.nextTick(ack);
        }
      };
      if (o.onRequest) link.onRequest = (kind, body) => o.onRequest!(p, kind, body);
      link.onClose = () => links.delete(link);
    },
  });
  return {
    server, links,
    close: () => {
      for (const l of links) l.close('server closing');
      server.close();
    },
  };
}
