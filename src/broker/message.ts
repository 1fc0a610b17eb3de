import type { QoS } from '../protocol/codec.js';
import type { UserPropertyPairs } from '../protocol/publish.js';

/** 5.0 PUBLISH properties that travel with a message to its subscribers. */
export interface MessageProps {
  payloadFormatIndicator?: boolean;
  contentType?: string;
  responseTopic?: string;
  correlationData?: Buffer;
  /** In the order the publisher sent them [MQTT-3.3.2-18 v5]. */
  userProperties?: UserPropertyPairs;
}

/** A message as routed inside the broker (immutable once published). */
export interface Message {
  readonly topic: string;
  readonly payload: Buffer;
  readonly qos: QoS;
  readonly retain: boolean;
  readonly props: MessageProps | undefined;
  /** Absolute expiry time in ms since epoch (Message Expiry Interval), 0 = never. */
  readonly expiresAt: number;
  /** Client id of the publisher ('' for the broker itself: $SYS, wills keep the owner's id). */
  readonly from: string;
}

export function remainingExpiry(m: Message, now: number): number | undefined {
  if (m.expiresAt === 0) return undefined;
  return Math.max(1, Math.ceil((m.expiresAt - now) / 1000));
}

export function isExpired(m: Message, now: number): boolean {
  return m.expiresAt !== 0 && m.expiresAt <= now;
}
