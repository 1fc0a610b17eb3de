// Per-client session state that outlives a network connection when the session is
// persistent (3.1.1 clean session 0; 5.0 Session Expiry Interval > 0).
import type { QoS } from '../protocol/codec.js';
import type { Message } from './message.js';
import type { Subscription } from './subscription-index.js';
import type { ClientConnection } from './connection.js';

/** One message on its way to this session's client. */
export interface Delivery {
  readonly msg: Message;
  readonly qos: QoS;
  readonly retain: boolean;
  readonly subIds: number[] | undefined;
  /** Set when the message came through a shared subscription (for redispatch). */
  readonly shared: { group: string; filter: string } | undefined;
  /** Its number in the store, while a persistent session holds it (src/store/journal.ts). */
  seq?: number | undefined;
}

export interface InflightEntry {
  readonly d: Delivery;
  /** 'publish': waiting for PUBACK / PUBREC; 'pubrel': PUBREL sent, waiting for PUBCOMP. */
  state: 'publish' | 'pubrel';
}

export class Session {
  readonly subscriptions = new Map<string, Subscription>();
  /** Outbound QoS 1/2 by packet identifier, in send order. */
  readonly inflight = new Map<number, InflightEntry>();
  /** Deliveries waiting for the inflight window, the write buffer, or a connection. */
  queue: Delivery[] = [];
  queueBytes = 0;
  /** Inbound QoS 2 packet identifiers between PUBREC and PUBREL (exactly once). */
  readonly inboundQos2 = new Set<number>();
  /** Seconds; 0xFFFFFFFF never expires. 3.1.1 persistent sessions use the configured maximum. */
  expiryInterval = 0;
  expiryTimer: NodeJS.Timeout | null = null;
  willTimer: NodeJS.Timeout | null = null;
  /** The will waiting for willTimer (published early if the session ends first). */
  pendingWill: Message | null = null;
  /** The connection that owns the session right now, or null while offline. */
  conn: ClientConnection | null = null;
  /** Durable node: the session is in the store (it is persistent). */
  stored = false;
  /** When its last connection went (ms since the epoch; 0 while connected). */
  offSince = 0;
  /** Next number of a message kept in the store for it. */
  msgSeq = 1;
  private nextId = 1;

  constructor(readonly clientId: string) {}

  peekNextId(): number {
    return this.nextId;
  }

  setNextId(id: number): void {
    this.nextId = id >= 1 && id <= 65535 ? id : 1;
  }

  /** Next free outbound packet identifier, 1..65535 [MQTT-2.3.1-2]; 0 when all are in use. */
  allocPacketId(): number {
    if (this.inflight.size >= 65535) return 0;
    for (;;) {
      const id = this.nextId;
      this.nextId = id === 65535 ? 1 : id + 1;
      if (!this.inflight.has(id)) return id;
    }
  }
}

export function deliveryBytes(d: Delivery): number {
  return d.msg.payload.length + d.msg.topic.length;
}
