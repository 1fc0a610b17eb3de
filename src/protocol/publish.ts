// PUBLISH on the broker's hot path, without mqtt-packet: an encoder that writes the
// packet in one allocation, and a reader for the ordered User Property list of a
// received 5.0 PUBLISH (mqtt-packet folds repeated names into one array, which loses
// the order that [MQTT-3.3.2-18 v5] requires the server to keep).
import type { QoS } from 'mqtt-packet';

export type UserPropertyPairs = [string, string][];

export interface PublishProps {
  payloadFormatIndicator?: boolean;
  messageExpiryInterval?: number;
  contentType?: string;
  responseTopic?: string;
  correlationData?: Buffer;
  /** In the order received [MQTT-3.3.2-18 v5]. */
  userProperties?: UserPropertyPairs;
  subscriptionIds?: readonly number[];
  topicAlias?: number;
}

export interface PublishFields {
  topic: string;
  payload: Buffer;
  qos: QoS;
  retain: boolean;
  dup: boolean;
  /** 0 for QoS 0. */
  packetId: number;
  /** Only for 5.0. */
  props?: PublishProps | undefined;
}

const P_PAYLOAD_FORMAT = 0x01;
const P_MESSAGE_EXPIRY = 0x02;
const P_CONTENT_TYPE = 0x03;
const P_RESPONSE_TOPIC = 0x08;
const P_CORRELATION = 0x09;
const P_SUBSCRIPTION_ID = 0x0b;
const P_TOPIC_ALIAS = 0x23;
const P_USER_PROPERTY = 0x26;

function varintSize(n: number): number {
  return n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : 4;
}

function writeVarint(buf: Buffer, at: number, n: number): number {
  do {
    let d = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) d |= 0x80;
    buf[at++] = d;
  } while (n > 0);
  return at;
}

function writeString(buf: Buffer, at: number, s: string, len: number): number {
  buf.writeUInt16BE(len, at);
  buf.write(s, at + 2, len, 'utf8');
  return at + 2 + len;
}

/** Size of the 5.0 property block's contents (without its length prefix). */
function propsSize(p: PublishProps): number {
  let n = 0;
  if (p.payloadFormatIndicator !== undefined) n += 2;
  if (p.messageExpiryInterval !== undefined) n += 5;
  if (p.contentType !== undefined) n += 3 + Buffer.byteLength(p.contentType);
  if (p.responseTopic !== undefined) n += 3 + Buffer.byteLength(p.responseTopic);
  if (p.correlationData !== undefined) n += 3 + p.correlationData.length;
  if (p.topicAlias !== undefined) n += 3;
  if (p.subscriptionIds) for (const id of p.subscriptionIds) n += 1 + varintSize(id);
  if (p.userProperties) {
    for (const [k, v] of p.userProperties) n += 5 + Buffer.byteLength(k) + Buffer.byteLength(v);
  }
  return n;
}

/** Encodes one PUBLISH for protocol level `version` (3, 4 or 5). */
export function encodePublish(f: PublishFields, version: 3 | 4 | 5): Buffer {
  const topicLen = Buffer.byteLength(f.topic);
  let remaining = 2 + topicLen + (f.qos > 0 ? 2 : 0) + f.payload.length;
  let pSize = 0;
  if (version === 5) {
    pSize = f.props ? propsSize(f.props) : 0;
    remaining += varintSize(pSize) + pSize;
  }
  const buf = Buffer.allocUnsafe(1 + varintSize(remaining) + remaining);
  buf[0] = 0x30 | (f.dup ? 0x08 : 0) | (f.qos << 1) | (f.retain ? 0x01 : 0);
  let at = writeVarint(buf, 1, remaining);
  at = writeString(buf, at, f.topic, topicLen);
  if (f.qos > 0) {
    buf.writeUInt16BE(f.packetId, at);
    at += 2;
  }
  if (version === 5) {
    at = writeVarint(buf, at, pSize);
    const p = f.props;
    if (p) {
      if (p.payloadFormatIndicator !== undefined) {
        buf[at++] = P_PAYLOAD_FORMAT;
        buf[at++] = p.payloadFormatIndicator ? 1 : 0;
      }
      if (p.messageExpiryInterval !== undefined) {
        buf[at++] = P_MESSAGE_EXPIRY;
        buf.writeUInt32BE(p.messageExpiryInterval, at);
        at += 4;
      }
      if (p.topicAlias !== undefined) {
        buf[at++] = P_TOPIC_ALIAS;
        buf.writeUInt16BE(p.topicAlias, at);
        at += 2;
      }
      if (p.contentType !== undefined) {
        buf[at++] = P_CONTENT_TYPE;
        at = writeString(buf, at, p.contentType, Buffer.byteLength(p.contentType));
      }
      if (p.responseTopic !== undefined) {
        buf[at++] = P_RESPONSE_TOPIC;
        at = writeString(buf, at, p.responseTopic, Buffer.byteLength(p.responseTopic));
      }
      if (p.correlationData !== undefined) {
        buf[at++] = P_CORRELATION;
        buf.writeUInt16BE(p.correlationData.length, at);
        at += 2 + p.correlationData.copy(buf, at + 2);
      }
      if (p.subscriptionIds) {
        for (const id of p.subscriptionIds) {
          buf[at++] = P_SUBSCRIPTION_ID;
          at = writeVarint(buf, at, id);
        }
      }
      if (p.userProperties) {
        for (const [k, v] of p.userProperties) {
          buf[at++] = P_USER_PROPERTY;
          at = writeString(buf, at, k, Buffer.byteLength(k));
          at = writeString(buf, at, v, Buffer.byteLength(v));
        }
      }
    }
  }
  f.payload.copy(buf, at);
  return buf;
}

/**
 * The User Properties of a 5.0 PUBLISH frame, in order, or undefined when it has none.
 * The frame must already have passed checkFrame (lengths are trusted).
 */
export function readUserProperties(frame: Buffer): UserPropertyPairs | undefined {
  const qos = (frame[0]! >> 1) & 3;
  let at = 1;
  while (frame[at++]! & 0x80);
  at += 2 + frame.readUInt16BE(at);
  if (qos > 0) at += 2;
  let len = 0;
  for (let mul = 1; ; mul *= 128) {
    const b = frame[at++]!;
    len += (b & 0x7f) * mul;
    if (!(b & 0x80)) break;
  }
  const end = at + len;
  let out: UserPropertyPairs | undefined;
  while (at < end) {
    const id = frame[at++]!;
    switch (id) {
      case P_PAYLOAD_FORMAT: at += 1; break;
      case P_MESSAGE_EXPIRY: at += 4; break;
      case P_TOPIC_ALIAS: at += 2; break;
      case P_SUBSCRIPTION_ID: while (frame[at++]! & 0x80); break;
      case P_CONTENT_TYPE:
      case P_RESPONSE_TOPIC:
      case P_CORRELATION:
        at += 2 + frame.readUInt16BE(at);
        break;
      case P_USER_PROPERTY: {
        const kl = frame.readUInt16BE(at);
        const k = frame.toString('utf8', at + 2, at + 2 + kl);
        at += 2 + kl;
        const vl = frame.readUInt16BE(at);
        const v = frame.toString('utf8', at + 2, at + 2 + vl);
        at += 2 + vl;
        (out ??= []).push([k, v]);
        break;
      }
      default:
        return out; // checkFrame refuses unknown properties; stop rather than misread
    }
  }
  return out;
}

/** mqtt-packet's object form (repeated names as arrays) to ordered pairs. */
export function userPropertiesToPairs(o: Record<string, string | string[]>): UserPropertyPairs {
  const out: UserPropertyPairs = [];
  for (const [k, v] of Object.entries(o)) {
    if (Array.isArray(v)) for (const x of v) out.push([k, x]);
    else out.push([k, v]);
  }
  return out;
}
