// A session moving between worker threads (takeover on another worker): plain data that
// survives structured clone (postMessage turns a Buffer into a Uint8Array; revive fixes it).
import type { QoS } from '../protocol/codec.js';
import type { Message, MessageProps } from './message.js';
import { deliveryBytes, Session, type Delivery } from './session.js';
import type { Subscription } from './subscription-index.js';

export interface SessionTransfer {
  readonly expiryInterval: number;
  readonly subscriptions: Subscription[];
  readonly queue: Delivery[];
  readonly inflight: [number, Delivery, 'publish' | 'pubrel'][];
  readonly inboundQos2: number[];
  readonly nextId: number;
  /** Durable node: the session is in the store, and the next number of its stored messages. */
  readonly stored?: boolean;
  readonly msgSeq?: number;
}

export function exportSession(s: Session): SessionTransfer {
  return {
    expiryInterval: s.expiryInterval,
    subscriptions: [...s.subscriptions.values()],
    queue: s.queue,
    inflight: [...s.inflight].map(([id, e]) => [id, e.d, e.state]),
    inboundQos2: [...s.inboundQos2],
    nextId: s.peekNextId(),
    stored: s.stored,
    msgSeq: s.msgSeq,
  };
}

function buf(x: Uint8Array): Buffer {
  return Buffer.isBuffer(x) ? x : Buffer.from(x.buffer, x.byteOffset, x.byteLength);
}

export function reviveMessage(m: Message): Message {
  let props: MessageProps | undefined = m.props;
  if (props?.correlationData !== undefined) props = { ...props, correlationData: buf(props.correlationData) };
  return { ...m, payload: buf(m.payload), props };
}

function reviveDelivery(d: Delivery): Delivery {
  return { ...d, msg: reviveMessage(d.msg), qos: d.qos as QoS };
}

/** A Session holding the transferred state (no connection yet). */
export function importSession(clientId: string, t: SessionTransfer): Session {
  const s = new Session(clientId);
  s.expiryInterval = t.expiryInterval;
  for (const sub of t.subscriptions) s.subscriptions.set(sub.key, { ...sub });
  s.queue = t.queue.map(reviveDelivery);
  for (const d of s.queue) s.queueBytes += deliveryBytes(d);
  for (const [id, d, state] of t.inflight) s.inflight.set(id, { d: reviveDelivery(d), state });
  for (const id of t.inboundQos2) s.inboundQos2.add(id);
  s.setNextId(t.nextId);
  s.stored = t.stored ?? false;
  s.msgSeq = t.msgSeq ?? 1;
  return s;
}
