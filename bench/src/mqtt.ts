// Packet encoding for the load generator. CONNECT and SUBSCRIBE (once per client) go
// through mqtt-packet; PUBLISH is a precomputed template per publisher into which the send
// time (and packet id) are written; acks are 4 fixed bytes.
import mqttPacket from 'mqtt-packet';

export interface ConnectParams {
  V: 3 | 4 | 5;
  clientId: string;
  clean: boolean;
  keepalive: number;
  username: string | null;
  password: string | null;
  sessionExpiry: number;
}

export function encodeConnect(p: ConnectParams): Buffer {
  return mqttPacket.generate(
    {
      cmd: 'connect',
      protocolId: p.V === 3 ? 'MQIsdp' : 'MQTT',
      protocolVersion: p.V,
      clean: p.clean,
      clientId: p.clientId,
      keepalive: p.keepalive,
      ...(p.username !== null ? { username: p.username } : {}),
      ...(p.password !== null ? { password: Buffer.from(p.password) } : {}),
      ...(p.V === 5 && p.sessionExpiry > 0 ? { properties: { sessionExpiryInterval: p.sessionExpiry } } : {}),
    },
    { protocolVersion: p.V },
  );
}

export function encodeSubscribe(V: 3 | 4 | 5, messageId: number, filter: string, qos: 0 | 1 | 2): Buffer {
  return mqttPacket.generate({ cmd: 'subscribe', messageId, subscriptions: [{ topic: filter, qos }] }, { protocolVersion: V });
}

/** One SUBSCRIBE carrying several filters, all at `qos`. */
export function encodeSubscribeMany(V: 3 | 4 | 5, messageId: number, filters: readonly string[], qos: 0 | 1 | 2): Buffer {
  return mqttPacket.generate({ cmd: 'subscribe', messageId, subscriptions: filters.map((topic) => ({ topic, qos })) }, { protocolVersion: V });
}

export const PINGREQ = Buffer.from([0xc0, 0x00]);
export const DISCONNECT = Buffer.from([0xe0, 0x00]);

/** Byte length of a variable byte integer. */
function varintLen(n: number): number {
  return n < 128 ? 1 : n < 16384 ? 2 : n < 2097152 ? 3 : 4;
}

function writeVarint(buf: Buffer, off: number, n: number): number {
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    buf[off++] = b;
  } while (n > 0);
  return off;
}

export interface PublishTemplate {
  buf: Buffer;
  /** Offset of the packet id (QoS 1/2), else -1. */
  pidOff: number;
  /** Offset of the payload (the 8-byte timestamp goes here with timestamps on). */
  payOff: number;
}

/**
 * A whole PUBLISH packet for one publisher. With `ts`, the payload starts with 8 bytes of
 * send time (written per message) and the publisher index (u32 BE); the rest is 'a'.
 */
export function publishTemplate(V: 3 | 4 | 5, topic: string, qos: 0 | 1 | 2, size: number, ts: boolean, pubIndex: number): PublishTemplate {
  const t = Buffer.from(topic, 'utf8');
  const rl = 2 + t.length + (qos > 0 ? 2 : 0) + (V === 5 ? 1 : 0) + size;
  const buf = Buffer.alloc(1 + varintLen(rl) + rl);
  buf[0] = 0x30 | (qos << 1);
  let off = writeVarint(buf, 1, rl);
  off = buf.writeUInt16BE(t.length, off);
  off += t.copy(buf, off);
  let pidOff = -1;
  if (qos > 0) {
    pidOff = off;
    off += 2;
  }
  if (V === 5) buf[off++] = 0; // no properties
  const payOff = off;
  buf.fill(0x61, payOff);
  if (ts) {
    buf.fill(0, payOff, payOff + 8);
    buf.writeUInt32BE(pubIndex >>> 0, payOff + 8);
  }
  return { buf, pidOff, payOff };
}

/** Skips MQTT 5 properties at `off`; returns the offset after them (or -1 if malformed). */
export function skipProps(b: Buffer, off: number, end: number): number {
  let len = 0;
  let mul = 1;
  for (let k = 0; k < 4; k++) {
    if (off >= end) return -1;
    const x = b[off++]!;
    len += (x & 0x7f) * mul;
    mul *= 128;
    if ((x & 0x80) === 0) return off + len <= end ? off + len : -1;
  }
  return -1;
}

export interface ConnackProps {
  receiveMaximum?: number;
  maximumQoS?: number;
}

/** Reads the CONNACK properties the generator cares about (MQTT 5). */
export function readConnackProps(b: Buffer, off: number, end: number): ConnackProps {
  const out: ConnackProps = {};
  const stop = skipProps(b, off, end);
  if (stop < 0) return out;
  // Property block starts after its length.
  let p = off;
  while (b[p]! & 0x80) p++;
  p++;
  while (p < stop) {
    const id = b[p++]!;
    switch (id) {
      case 0x21: // receive maximum
        out.receiveMaximum = b.readUInt16BE(p);
        p += 2;
        break;
      case 0x24: // maximum QoS
        out.maximumQoS = b[p]!;
        p += 1;
        break;
      case 0x25: case 0x28: case 0x29: case 0x2a: case 0x17: case 0x19: // one-byte properties
        p += 1;
        break;
      case 0x13: case 0x22: // server keep alive, topic alias maximum
        p += 2;
        break;
      case 0x11: case 0x27: // session expiry, maximum packet size
        p += 4;
        break;
      case 0x12: case 0x1a: case 0x1c: case 0x1f: case 0x15: case 0x16: // strings / binary
        p += 2 + b.readUInt16BE(p);
        break;
      case 0x26: // user property: two strings
        p += 2 + b.readUInt16BE(p);
        p += 2 + b.readUInt16BE(p);
        break;
      default:
        return out; // unknown: stop reading
    }
  }
  return out;
}

const CONNACK_V4 = ['accepted', 'unacceptable protocol version', 'identifier rejected', 'server unavailable', 'bad user name or password', 'not authorized'];

export function connackReason(V: number, rc: number): string {
  if (V < 5) return CONNACK_V4[rc] ?? `0x${rc.toString(16)}`;
  const m: Record<number, string> = {
    0x80: 'unspecified error', 0x81: 'malformed packet', 0x82: 'protocol error', 0x83: 'implementation specific error',
    0x84: 'unsupported protocol version', 0x85: 'client identifier not valid', 0x86: 'bad user name or password',
    0x87: 'not authorized', 0x88: 'server unavailable', 0x89: 'server busy', 0x8a: 'banned', 0x8c: 'bad authentication method',
    0x90: 'topic name invalid', 0x95: 'packet too large', 0x97: 'quota exceeded', 0x99: 'payload format invalid',
    0x9a: 'retain not supported', 0x9b: 'QoS not supported', 0x9c: 'use another server', 0x9d: 'server moved',
    0x9f: 'connection rate exceeded',
  };
  return m[rc] ?? `0x${rc.toString(16)}`;
}
