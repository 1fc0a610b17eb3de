// One client network connection: framing, the packet dispatcher, keep alive, and the
// outbound path (inflight window, write buffer, topic aliases, maximum packet size).
import { Framer } from '../protocol/framer.js';
import { decodeFrame, encode, type Packet } from '../protocol/codec.js';
import { connackCodeV3 } from '../protocol/reason-codes.js';
import { encodePublish, type PublishFields, type PublishProps } from '../protocol/publish.js';
import type { Transport } from '../transport/types.js';
import type { Broker } from './broker.js';
import type { Message } from './message.js';
import { isExpired, remainingExpiry } from './message.js';
import { M_PUBLISH } from '../store/journal.js';
import type { Delivery, Session } from './session.js';
import { handleConnect } from './handlers/connect.js';
import { handlePublish } from './handlers/publish.js';
import { handlePuback, handlePubcomp, handlePubrec, handlePubrel } from './handlers/acks.js';
import { handleSubscribe, handleUnsubscribe } from './handlers/subscribe.js';
import { handleAuth, handleDisconnect } from './handlers/disconnect.js';

export type ProtocolVersion = 3 | 4 | 5;
type State = 'new' | 'connecting' | 'connected' | 'closed';

let nextConnId = 1;

export class ClientConnection {
  readonly id = nextConnId++;
  state: State = 'new';
  version: ProtocolVersion | 0 = 0;
  clientId = '';
  username: string | undefined = undefined;
  session: Session | null = null;
  /** Accepted past max_connections: CONNECT gets 0x97 (5.0) or a close. */
  overLimit = false;
  /** Seconds; 0 = off. */
  keepalive = 0;
  /** Client's limits (5.0 CONNECT properties). */
  clientReceiveMax = 65535;
  clientMaxPacket = 268435455;
  clientTopicAliasMax = 0;
  /** Whether reason strings / user properties may go in non-PUBLISH packets. */
  problemInfo = true;
  /** Session Expiry Interval from CONNECT (5.0), for the DISCONNECT rule [MQTT-3.14.2-2]. */
  connectExpiry = 0;
  will: Message | null = null;
  willDelay = 0;
  /** Set by DISCONNECT 0x00 (normal) so that the will is discarded [MQTT-3.1.2-10]. */
  discardWill = false;
  readonly inboundAliases = new Map<number, string>();
  private readonly outboundAliases = new Map<string, number>();
  private readonly framer: Framer;
  private lastSeen = Date.now();
  private timer: NodeJS.Timeout | null = null;
  /** close() was called: frames still buffered behind the last one are not processed. */
  private closing = false;
  readonly connectedAt = Date.now();
  /** transport.write() returned false: drain() will follow. */
  private drainPending = false;
  /** Inflight PUBLISHes still to be resent after a reconnect, held back by Receive Maximum. */
  private readonly resendLater: number[] = [];
  /** A packet is being completed asynchronously (SUBSCRIBE waiting for the route trie): later frames wait. */
  private busy = false;
  /** Worker-threaded: a newer connection took the client id while this one was connecting. */
  superseded = false;
  /** Waiting for a full ring to another worker to drain (worker-threaded node). */
  private ringPaused = false;
  /**
   * Reasons the socket is not read right now (CONNECT being authenticated, a held packet,
   * a full ring): reading resumes when the last one ends.
   */
  private readHolds = 0;

  constructor(readonly broker: Broker, readonly transport: Transport) {
    this.framer = new Framer(broker.cfg.mqtt.max_packet_size);
    transport.setHandlers({
      data: (chunk) => this.onData(chunk),
      drain: () => {
        this.drainPending = false;
        this.pump();
      },
      close: () => this.onClose(),
    });
    // First packet must be CONNECT within the connect timeout [MQTT-3.1.0-1].
    this.timer = setTimeout(() => {
      if (this.state === 'new' || this.state === 'connecting') {
        broker.log.debug('conn.connect_timeout', { remote: transport.remoteAddress });
        this.transport.destroy();
      }
    }, broker.cfg.mqtt.connect_timeout_ms);
  }

  get isV5(): boolean {
    return this.version === 5;
  }

  // ---- inbound --------------------------------------------------------------------

  private onData(chunk: Buffer): void {
    if (this.state === 'closed' || this.closing) return;
    this.broker.counters.bytesReceived += chunk.length;
    this.lastSeen = Date.now();
    const err = this.framer.push(chunk, (frame) => this.onFrame(frame));
    if (err) {
      this.broker.counters.malformedPackets++;
      this.protocolClose(err.reasonCode, err.message);
    }
  }

  private holdReading(): void {
    if (this.readHolds++ === 0) this.transport.pauseReading();
  }

  private releaseReading(): void {
    if (--this.readHolds === 0 && this.state !== 'closed') this.transport.resumeReading();
  }

  /** Resume frame delivery after an async step (authentication, a held packet). */
  resumeFrames(): void {
    if (this.state === 'closed') return;
    this.releaseReading();
    const err = this.framer.push(Buffer.alloc(0), (frame) => this.onFrame(frame));
    if (err) {
      this.broker.counters.malformedPackets++;
      this.protocolClose(err.reasonCode, err.message);
    }
  }

  /** Returns false to stop frame delivery (CONNECT is being authenticated). */
  private onFrame(frame: Buffer): boolean {
    // Nothing after a fatal error or a DISCONNECT is processed, not even frames that
    // arrived in the same chunk [MQTT-4.13.1-1 v5, MQTT-3.14.4-1 v5].
    if (this.state === 'closed' || this.closing) return false;
    if (this.state === 'connecting' || this.busy) return false;
    this.broker.counters.packetsReceived++;
    const r = decodeFrame(frame, this.version);
    if (!r.ok) {
      if (r.reasonCode === 0x84 && this.state === 'new') {
        // Unsupported protocol level: CONNACK 0x84 (5.0) / return code 1 (3.1.1) [MQTT-3.1.2-2].
        // A client asking for level 5 or above gets the 5.0 format, older levels the 3.1.1 one.
        this.version = connectLevelByte(frame) >= 5 ? 5 : 4;
        this.refuseConnect(0x84, r.message);
        return false;
      }
      this.broker.counters.malformedPackets++;
      this.protocolClose(r.reasonCode, r.message);
      return false;
    }
    this.dispatch(r.packet);
    return this.state === 'connected' && !this.busy;
  }

  private dispatch(p: Packet): void {
    if (this.state === 'new') {
      if (p.cmd !== 'connect') {
        this.broker.counters.protocolErrors++;
        this.transport.destroy(); // [MQTT-3.1.0-1]
        return;
      }
      this.state = 'connecting';
      this.holdReading(); // until CONNACK (resumeFrames)
      void handleConnect(this, p).catch((e: unknown) => {
        this.broker.log.error('conn.connect_failed', { error: e });
        this.transport.destroy();
      });
      return;
    }
    switch (p.cmd) {
      case 'publish': return handlePublish(this, p);
      case 'puback': return handlePuback(this, p);
      case 'pubrec': return handlePubrec(this, p);
      case 'pubrel': return handlePubrel(this, p);
      case 'pubcomp': return handlePubcomp(this, p);
      case 'subscribe': return handleSubscribe(this, p);
      case 'unsubscribe': return handleUnsubscribe(this, p);
      case 'pingreq': return this.send({ cmd: 'pingresp' });
      case 'disconnect': return handleDisconnect(this, p);
      case 'auth': return handleAuth(this, p);
      case 'connect':
        // A second CONNECT is a protocol error [MQTT-3.1.0-2].
        return this.protocolClose(0x82, 'second CONNECT');
      default:
        return this.protocolClose(0x82, `unexpected ${p.cmd} from a client`);
    }
  }

  /**
   * Completes the current packet asynchronously: no later frame of this client is processed
   * (and the socket is not read) until `work` settles, so replies keep the packets' order.
   */
  hold(work: Promise<void>, then: () => void): void {
    this.busy = true;
    this.holdReading();
    void work.then(
      () => {
        this.busy = false;
        if (this.state === 'closed') return;
        then();
        this.resumeFrames();
      },
      (e: unknown) => {
        this.busy = false;
        this.broker.log.error('conn.hold_failed', { client: this.clientId, error: e });
        this.transport.destroy();
      },
    );
  }

  /**
   * Sends a PUBACK / PUBREC once `wait` (other nodes holding the message) settles, in the
   * order the PUBLISHes came [MQTT-4.6.0-2/3]: one waiting ack holds back the later ones.
   */
  ackInOrder(p: Packet, wait: Promise<void> | null): void {
    if (wait === null && this.acks.length === 0) {
      this.send(p);
      return;
    }
    const e = { p, ready: wait === null };
    this.acks.push(e);
    if (wait !== null) {
      void wait.then(() => {
        e.ready = true;
        this.flushAcks();
      });
    }
  }

  private readonly acks: { p: Packet; ready: boolean }[] = [];

  private flushAcks(): void {
    let n = 0;
    while (n < this.acks.length && this.acks[n]!.ready) n++;
    if (n === 0) return;
    const out = this.acks.splice(0, n);
    if (this.state === 'closed') return;
    for (const e of out) this.send(e.p);
  }

  /** A ring to another worker is full: stop reading from this publisher until it drains. */
  pauseForRing(): void {
    const r = this.broker.router;
    if (this.ringPaused || r === null) return;
    this.ringPaused = true;
    this.broker.counters.forwardPaused++;
    this.holdReading();
    r.whenUnblocked(() => {
      this.ringPaused = false;
      this.releaseReading();
    });
  }

  // ---- connection lifecycle -----------------------------------------------------------

  /** Called by the CONNECT handler once CONNACK 0x00 is written. */
  started(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.keepalive > 0) {
      // Close after 1.5 × keep alive without a packet [MQTT-3.1.2-24 v3 / 3.1.2-22 v5].
      const limit = this.keepalive * 1500;
      this.timer = setInterval(() => {
        if (Date.now() - this.lastSeen > limit) {
          this.broker.counters.keepaliveTimeouts++;
          this.disconnect(0x8d, 'keep alive timeout');
        }
      }, Math.min(limit / 4, 5000));
    }
  }

  /** CONNACK refusal, then close. */
  refuseConnect(code: number, reason?: string): void {
    this.broker.counters.connectionsRefused++;
    if (this.version === 5) {
      const props: Record<string, unknown> = {};
      if (reason) props['reasonString'] = reason;
      this.send({ cmd: 'connack', sessionPresent: false, reasonCode: code, properties: props } as Packet);
    } else {
      this.send({ cmd: 'connack', sessionPresent: false, returnCode: connackCodeV3(code) } as Packet);
    }
    this.close();
  }

  /** Malformed packet or protocol error: DISCONNECT with the reason code (5.0), then close. */
  protocolClose(code: number, message: string): void {
    if (this.state === 'closed') return;
    this.broker.log.debug('conn.protocol_error', { client: this.clientId, code, error: message });
    if (code === 0x82) this.broker.counters.protocolErrors++;
    if (this.state === 'connected') this.disconnect(code, message);
    else this.close();
  }

  /** Server-initiated DISCONNECT (5.0 only has the packet), then close. */
  disconnect(code: number, reason?: string): void {
    if (this.state === 'closed') return;
    if (this.version === 5 && this.state === 'connected') {
      const props: Record<string, unknown> = {};
      if (reason && this.problemInfo) props['reasonString'] = reason;
      const p = { cmd: 'disconnect', reasonCode: code, properties: props } as Packet;
      // No Reason String if it would make the packet exceed the client's Maximum Packet Size [MQTT-3.14.2-3 v5].
      if (props['reasonString'] !== undefined && encode(p, 5).length > this.clientMaxPacket) delete props['reasonString'];
      this.send(p);
    }
    this.close();
  }

  /** Flush, then close the stream. onClose runs when it is gone. */
  close(): void {
    if (this.state === 'closed') return;
    this.closing = true;
    this.transport.end();
    // end() flushes; a peer that never reads must not hold the socket forever.
    setTimeout(() => this.transport.destroy(), 2000).unref();
  }

  takenOver(): void {
    this.broker.counters.takeovers++;
    this.disconnect(0x8e, 'session taken over');
    // The session now belongs to the new connection: detach before onClose.
    this.session = null;
  }

  private onClose(): void {
    if (this.state === 'closed') return;
    const wasConnected = this.state === 'connected';
    this.state = 'closed';
    if (this.timer) {
      clearTimeout(this.timer);
      clearInterval(this.timer);
    }
    this.timer = null;
    this.broker.connectionClosed(this, wasConnected);
  }

  // ---- outbound -------------------------------------------------------------------

  send(p: Packet): void {
    if (this.state === 'closed') return;
    const buf = encode(p, this.version === 0 ? 4 : this.version);
    this.writeBytes(buf);
  }

  private writeBytes(buf: Buffer): void {
    this.broker.counters.bytesSent += buf.length;
    this.broker.counters.packetsSent++;
    if (!this.transport.write(buf)) this.drainPending = true;
  }

  /**
   * Over max_write_buffer, and only while the transport owes a drain() (its write() returned
   * false): otherwise nothing would call pump() again, and a max_write_buffer below the
   * transport's high-water mark would strand the session queue.
   */
  private get writeBlocked(): boolean {
    return this.drainPending && this.transport.bufferedBytes() > this.broker.cfg.mqtt.max_write_buffer;
  }

  /** Entry point for every message routed to this connection's session. */
  deliver(d: Delivery): void {
    const s = this.session;
    if (!s || this.state !== 'connected') return;
    if (d.qos === 0) {
      // QoS 0 behind a full write buffer is dropped (counted), never buffered without
      // bound; behind queued messages it waits its turn to keep the order.
      if (this.writeBlocked) this.broker.counters.droppedWriteBuffer++;
      else if (s.queue.length > 0) this.broker.enqueue(s, d);
      else this.writePublish(d, 0, false);
      return;
    }
    if (s.queue.length > 0 || s.inflight.size >= this.clientReceiveMax || this.writeBlocked) {
      this.broker.enqueue(s, d);
      return;
    }
    this.sendInflight(s, d);
  }

  private sendInflight(s: Session, d: Delivery): void {
    const id = s.allocPacketId();
    if (id === 0) {
      this.broker.enqueue(s, d);
      return;
    }
    if (this.writePublish(d, id, false)) {
      s.inflight.set(id, { d, state: 'publish' });
      // QoS 2 keeps its packet id in the store, so that a restart resends it as the same
      // message, never as a new one [MQTT-4.3.3]. (QoS 1 resent with a new id is allowed.)
      if (d.qos === 2 && d.seq !== undefined) this.broker.journal?.markMessage(s.clientId, d, id, M_PUBLISH);
    } else this.broker.forget(s, d);
  }

  /** Moves queued deliveries out while the window and the write buffer allow. */
  pump(): void {
    const s = this.session;
    if (!s || this.state !== 'connected') return;
    const now = Date.now();
    while (s.queue.length > 0 && !this.writeBlocked) {
      const d = s.queue[0]!;
      if (d.qos > 0 && s.inflight.size >= this.clientReceiveMax) break;
      s.queue.shift();
      this.broker.dequeued(s, d);
      if (isExpired(d.msg, now)) {
        this.broker.counters.droppedExpired++;
        this.broker.forget(s, d);
        continue;
      }
      if (d.qos === 0) this.writePublish(d, 0, false);
      else this.sendInflight(s, d);
    }
  }

  /** Resends the session's inflight messages after a reconnect, DUP set [MQTT-4.4.0-1]. */
  resendInflight(): void {
    const s = this.session;
    if (!s) return;
    let sent = 0;
    for (const [id, e] of s.inflight) {
      if (e.state === 'pubrel') this.send({ cmd: 'pubrel', messageId: id } as Packet);
      // No more PUBLISHes than the client's Receive Maximum; the rest go as acks free the
      // window [MQTT-4.9.0-2 v5].
      else if (sent < this.clientReceiveMax) {
        this.writePublish(e.d, id, true);
        sent++;
      } else this.resendLater.push(id);
    }
  }

  /**
   * Encodes and writes one PUBLISH. Returns false when the message was dropped because
   * it exceeds the client's Maximum Packet Size [MQTT-3.1.2-25], which counts as done.
   */
  writePublish(d: Delivery, packetId: number, dup: boolean): boolean {
    const m = d.msg;
    let buf: Buffer;
    let newAlias = 0;
    if (!dup && (this.version !== 5 || (m.expiresAt === 0 && d.subIds === undefined && this.clientTopicAliasMax === 0))) {
      // Encode once per packet shape: deliveries of one message that differ in nothing but
      // the packet identifier share one encoding (fan-out; see sharedEncoding).
      buf = sharedEncoding(m, d.qos, d.retain, this.version as ProtocolVersion, packetId);
    } else {
      const f: PublishFields = { topic: m.topic, payload: m.payload, qos: d.qos, retain: d.retain, dup, packetId };
      if (this.version === 5) {
        const props: PublishProps = m.props ? { ...m.props } : {};
        const exp = remainingExpiry(m, Date.now());
        if (exp !== undefined) props.messageExpiryInterval = exp;
        if (d.subIds && d.subIds.length > 0) props.subscriptionIds = d.subIds;
        if (this.clientTopicAliasMax > 0) {
          const alias = this.outboundAliases.get(m.topic);
          if (alias !== undefined) {
            f.topic = '';
            props.topicAlias = alias;
          } else if (this.outboundAliases.size < this.clientTopicAliasMax) {
            newAlias = this.outboundAliases.size + 1;
            props.topicAlias = newAlias;
          }
        }
        f.props = props;
      }
      buf = encodePublish(f, this.version as ProtocolVersion);
    }
    if (buf.length > this.clientMaxPacket) {
      this.broker.counters.droppedTooLarge++;
      return false;
    }
    // The alias is the client's to know only once a packet carrying it went out.
    if (newAlias) this.outboundAliases.set(m.topic, newAlias);
    this.broker.counters.messagesSent++;
    this.writeBytes(buf);
    return true;
  }

  /** Frees a slot in the window; more queued messages may go. */
  ackReleased(): void {
    const s = this.session;
    while (s && this.resendLater.length > 0) {
      const id = this.resendLater.shift()!;
      const e = s.inflight.get(id);
      if (e && e.state === 'publish') {
        this.writePublish(e.d, id, true);
        return;
      }
    }
    this.pump();
  }

  describe(): Record<string, unknown> {
    return {
      clientId: this.clientId, username: this.username, protocol: this.version,
      transport: this.transport.kind, remote: this.transport.remoteAddress,
      keepalive: this.keepalive, connectedAt: this.connectedAt,
      inflight: this.session?.inflight.size ?? 0, queued: this.session?.queue.length ?? 0,
    };
  }
}

/** The raw protocol level byte of a CONNECT frame, or -1 when the frame is cut short before it. */
function connectLevelByte(frame: Buffer): number {
  let pos = 1;
  while (pos < frame.length && pos < 4 && (frame[pos]! & 0x80) !== 0) pos++; // remaining length
  pos++;
  if (pos + 2 > frame.length) return -1;
  const at = pos + 2 + ((frame[pos]! << 8) | frame[pos + 1]!); // after the protocol name
  return at < frame.length ? frame[at]! : -1;
}


// One message's encodings by shape (protocol family, QoS, RETAIN), for the message being
// fanned out right now: routing delivers one message to all its local subscribers in one
// synchronous loop, so remembering the last message is enough and keeps nothing alive.
let cachedMsg: Message | null = null;
const cachedBufs = new Map<number, { buf: Buffer; idAt: number }>();

function sharedEncoding(m: Message, qos: number, retain: boolean, version: ProtocolVersion, packetId: number): Buffer {
  if (cachedMsg !== m) {
    cachedMsg = m;
    cachedBufs.clear();
  }
  // 3.1 and 3.1.1 PUBLISH are byte-identical; 5.0 adds the message's own properties.
  const key = (version === 5 ? 1 : 0) | (qos << 1) | (retain ? 8 : 0);
  let e = cachedBufs.get(key);
  if (e === undefined) {
    const props: PublishProps | undefined = version === 5 ? (m.props ? { ...m.props } : {}) : undefined;
    const buf = encodePublish({ topic: m.topic, payload: m.payload, qos: qos as PublishFields['qos'], retain, dup: false, packetId: 0, props }, version);
    // The packet identifier follows the fixed header and the topic [MQTT-3.3.2].
    const remainingLenBytes = buf.length - 1 - remainingLength(buf);
    e = { buf, idAt: 1 + remainingLenBytes + 2 + Buffer.byteLength(m.topic) };
    cachedBufs.set(key, e);
  }
  if (qos === 0) return e.buf; // identical for every subscriber: one buffer, written N times
  const out = Buffer.allocUnsafe(e.buf.length);
  e.buf.copy(out);
  out.writeUInt16BE(packetId, e.idAt);
  return out;
}

/** The Remaining Length field's value of an encoded packet. */
function remainingLength(buf: Buffer): number {
  let n = 0;
  let mul = 1;
  for (let i = 1; i < 5; i++) {
    const b = buf[i]!;
    n += (b & 0x7f) * mul;
    if ((b & 0x80) === 0) break;
    mul *= 128;
  }
  return n;
}
