// Raw-byte checks on one complete control packet, run before mqtt-packet parses it.
// mqtt-packet replaces ill-formed UTF-8, accepts U+0000, wildcards in PUBLISH topic
// names, packet identifier 0, unknown-to-the-packet or duplicated properties and
// trailing garbage; these checks close those gaps. They are direction-agnostic
// except for the CONNECT ordering rules (version 0 = nothing received yet).
//
// Reason codes: 0x81 (malformed) for encoding errors, 0x82 (protocol error) where the
// 5.0 spec says "Protocol Error", 0x84 for an unsupported protocol name/level, 0x90
// for a PUBLISH topic name with wildcards. 3.x connections only use them for logs.
// Spec tags: 3.1.1 numbering for levels 3/4, 5.0 numbering for level 5.

export interface CheckError {
  reasonCode: number;
  message: string;
}

export type ProtocolLevel = 3 | 4 | 5;

const MALFORMED = 0x81;
const PROTOCOL_ERROR = 0x82;
const UNSUPPORTED_PROTOCOL_VERSION = 0x84;
const TOPIC_NAME_INVALID = 0x90;

// ---------------------------------------------------------------------------
// UTF-8

/** scanUtf8 result bit: ill-formed UTF-8 (overlong, surrogate, > U+10FFFF, truncated, stray byte). */
export const UTF8_BAD = 1;
/** scanUtf8 result bit: contains U+0000. */
export const UTF8_NUL = 2;
/** scanUtf8 result bit: contains '+' or '#'. */
export const UTF8_WILDCARD = 4;

/**
 * One pass over buf[start..end): returns 0 for clean well-formed UTF-8, else a mask of
 * UTF8_BAD / UTF8_NUL / UTF8_WILDCARD (scanning stops at the first UTF8_BAD).
 */
export function scanUtf8(buf: Uint8Array, start: number, end: number): number {
  let flags = 0;
  let i = start;
  while (i < end) {
    const c = buf[i]!;
    if (c < 0x80) {
      if (c === 0x00) flags |= UTF8_NUL;
      else if (c === 0x2b || c === 0x23) flags |= UTF8_WILDCARD;
      i++;
      continue;
    }
    // 0x80..0xC1: continuation byte without a lead, or overlong 2-byte lead.
    if (c < 0xc2) return flags | UTF8_BAD;
    if (c < 0xe0) {
      if (i + 1 >= end || (buf[i + 1]! & 0xc0) !== 0x80) return flags | UTF8_BAD;
      i += 2;
      continue;
    }
    if (c < 0xf0) {
      if (i + 2 >= end) return flags | UTF8_BAD;
      const c1 = buf[i + 1]!;
      if ((c1 & 0xc0) !== 0x80 || (buf[i + 2]! & 0xc0) !== 0x80) return flags | UTF8_BAD;
      if (c === 0xe0 && c1 < 0xa0) return flags | UTF8_BAD; // overlong
      if (c === 0xed && c1 >= 0xa0) return flags | UTF8_BAD; // U+D800..U+DFFF
      i += 3;
      continue;
    }
    if (c < 0xf5) {
      if (i + 3 >= end) return flags | UTF8_BAD;
      const c1 = buf[i + 1]!;
      if ((c1 & 0xc0) !== 0x80 || (buf[i + 2]! & 0xc0) !== 0x80 || (buf[i + 3]! & 0xc0) !== 0x80) {
        return flags | UTF8_BAD;
      }
      if (c === 0xf0 && c1 < 0x90) return flags | UTF8_BAD; // overlong
      if (c === 0xf4 && c1 >= 0x90) return flags | UTF8_BAD; // > U+10FFFF
      i += 4;
      continue;
    }
    return flags | UTF8_BAD; // 0xF5..0xFF
  }
  return flags;
}

/** Well-formed UTF-8 without U+0000 (an MQTT "UTF-8 Encoded String" body). */
export function isValidMqttUtf8(buf: Uint8Array, start = 0, end = buf.length): boolean {
  return (scanUtf8(buf, start, end) & (UTF8_BAD | UTF8_NUL)) === 0;
}

// ---------------------------------------------------------------------------
// Error plumbing: helpers return the next position, or -1 after setting lastErr.

let lastErr: CheckError = { reasonCode: MALFORMED, message: '' };

function bad(reasonCode: number, message: string): number {
  lastErr = { reasonCode, message };
  return -1;
}

function fail(reasonCode: number, message: string): CheckError {
  return { reasonCode, message };
}

function tag(v5: boolean, t311: string, t5: string): string {
  return `[MQTT-${v5 ? t5 : t311}]`;
}

/** Packet Identifier at pos, which must be there and non-zero; `name` is the packet's. */
function packetId(f: Buffer, pos: number, end: number, name: string, v5: boolean): number {
  if (pos + 2 > end) return bad(MALFORMED, `${name} packet identifier cut short`);
  if (f[pos] === 0 && f[pos + 1] === 0) {
    return bad(PROTOCOL_ERROR, `${name} with packet identifier 0 ${tag(v5, '2.3.1-1', '2.2.1-3')}`);
  }
  return pos + 2;
}

/** UTF-8 Encoded String at pos (2-byte length prefix). */
function utf8Field(f: Buffer, pos: number, end: number, what: string, v5: boolean): number {
  if (pos + 2 > end) return bad(MALFORMED, `${what}: packet cut short`);
  const n = (f[pos]! << 8) | f[pos + 1]!;
  const s = pos + 2;
  const e = s + n;
  if (e > end) return bad(MALFORMED, `${what}: length ${n} runs past the end of the packet`);
  const r = scanUtf8(f, s, e);
  if ((r & UTF8_BAD) !== 0) return bad(MALFORMED, `${what}: ill-formed UTF-8 ${tag(v5, '1.5.3-1', '1.5.4-1')}`);
  if ((r & UTF8_NUL) !== 0) return bad(MALFORMED, `${what}: contains U+0000 ${tag(v5, '1.5.3-2', '1.5.4-2')}`);
  return e;
}

/** Binary Data at pos (2-byte length prefix). */
function binField(f: Buffer, pos: number, end: number, what: string): number {
  if (pos + 2 > end) return bad(MALFORMED, `${what}: packet cut short`);
  const e = pos + 2 + ((f[pos]! << 8) | f[pos + 1]!);
  if (e > end) return bad(MALFORMED, `${what}: length runs past the end of the packet`);
  return e;
}

/** Variable Byte Integer at pos; value in varValue. */
let varValue = 0;
function varInt(f: Buffer, pos: number, end: number, what: string): number {
  let v = 0;
  let mul = 1;
  for (let k = 0; k < 4; k++) {
    if (pos >= end) return bad(MALFORMED, `${what}: packet cut short`);
    const b = f[pos++]!;
    v += (b & 0x7f) * mul;
    if (b < 0x80) {
      if (b === 0 && k > 0) return bad(MALFORMED, `${what}: not minimally encoded [MQTT-1.5.5-1]`);
      varValue = v;
      return pos;
    }
    mul *= 128;
  }
  return bad(MALFORMED, `${what}: variable byte integer longer than 4 bytes`);
}

// ---------------------------------------------------------------------------
// MQTT 5 properties (2.2.2.2, table 2-4)

const CTX_CONNECT = 1;
const CTX_CONNACK = 2;
const CTX_PUBLISH = 4;
const CTX_WILL = 8;
const CTX_PUBACK = 16; // PUBACK, PUBREC, PUBREL, PUBCOMP
const CTX_SUBSCRIBE = 32;
const CTX_SUBACK = 64;
const CTX_UNSUBSCRIBE = 128;
const CTX_UNSUBACK = 256;
const CTX_DISCONNECT = 512;
const CTX_AUTH = 1024;
const CTX_ALL = 2047;

const CTX_NAMES: Record<number, string> = {
  [CTX_CONNECT]: 'CONNECT', [CTX_CONNACK]: 'CONNACK', [CTX_PUBLISH]: 'PUBLISH',
  [CTX_WILL]: 'Will Properties', [CTX_PUBACK]: 'PUBACK/PUBREC/PUBREL/PUBCOMP',
  [CTX_SUBSCRIBE]: 'SUBSCRIBE', [CTX_SUBACK]: 'SUBACK', [CTX_UNSUBSCRIBE]: 'UNSUBSCRIBE',
  [CTX_UNSUBACK]: 'UNSUBACK', [CTX_DISCONNECT]: 'DISCONNECT', [CTX_AUTH]: 'AUTH',
};

const T_BYTE = 1;
const T_INT16 = 2;
const T_INT32 = 3;
const T_VARINT = 4;
const T_STRING = 5;
const T_BINARY = 6;
const T_PAIR = 7;

const P_TYPE = new Uint8Array(0x2b);
const P_CTX = new Uint16Array(0x2b);
function defProp(id: number, type: number, ctx: number): void {
  P_TYPE[id] = type;
  P_CTX[id] = ctx;
}
defProp(0x01, T_BYTE, CTX_PUBLISH | CTX_WILL); // Payload Format Indicator
defProp(0x02, T_INT32, CTX_PUBLISH | CTX_WILL); // Message Expiry Interval
defProp(0x03, T_STRING, CTX_PUBLISH | CTX_WILL); // Content Type
defProp(0x08, T_STRING, CTX_PUBLISH | CTX_WILL); // Response Topic
defProp(0x09, T_BINARY, CTX_PUBLISH | CTX_WILL); // Correlation Data
defProp(0x0b, T_VARINT, CTX_PUBLISH | CTX_SUBSCRIBE); // Subscription Identifier
defProp(0x11, T_INT32, CTX_CONNECT | CTX_CONNACK | CTX_DISCONNECT); // Session Expiry Interval
defProp(0x12, T_STRING, CTX_CONNACK); // Assigned Client Identifier
defProp(0x13, T_INT16, CTX_CONNACK); // Server Keep Alive
defProp(0x15, T_STRING, CTX_CONNECT | CTX_CONNACK | CTX_AUTH); // Authentication Method
defProp(0x16, T_BINARY, CTX_CONNECT | CTX_CONNACK | CTX_AUTH); // Authentication Data
defProp(0x17, T_BYTE, CTX_CONNECT); // Request Problem Information
defProp(0x18, T_INT32, CTX_WILL); // Will Delay Interval
defProp(0x19, T_BYTE, CTX_CONNECT); // Request Response Information
defProp(0x1a, T_STRING, CTX_CONNACK); // Response Information
defProp(0x1c, T_STRING, CTX_CONNACK | CTX_DISCONNECT); // Server Reference
defProp(0x1f, T_STRING, CTX_CONNACK | CTX_PUBACK | CTX_SUBACK | CTX_UNSUBACK | CTX_DISCONNECT | CTX_AUTH); // Reason String
defProp(0x21, T_INT16, CTX_CONNECT | CTX_CONNACK); // Receive Maximum
defProp(0x22, T_INT16, CTX_CONNECT | CTX_CONNACK); // Topic Alias Maximum
defProp(0x23, T_INT16, CTX_PUBLISH); // Topic Alias
defProp(0x24, T_BYTE, CTX_CONNACK); // Maximum QoS
defProp(0x25, T_BYTE, CTX_CONNACK); // Retain Available
defProp(0x26, T_PAIR, CTX_ALL); // User Property
defProp(0x27, T_INT32, CTX_CONNECT | CTX_CONNACK); // Maximum Packet Size
defProp(0x28, T_BYTE, CTX_CONNACK); // Wildcard Subscription Available
defProp(0x29, T_BYTE, CTX_CONNACK); // Subscription Identifiers Available
defProp(0x2a, T_BYTE, CTX_CONNACK); // Shared Subscription Available

function hex(n: number): string {
  return '0x' + n.toString(16).padStart(2, '0');
}

/**
 * Walks a property block (Property Length + properties) at pos. Checks: the length
 * fits the packet, every identifier is defined and allowed for the packet, values fit
 * the block, strings are valid, single-valued properties appear once (0x82), byte
 * flags are 0/1 (0x82), Receive Maximum / Maximum Packet Size / Subscription
 * Identifier are not 0 (0x82). Returns the position after the block.
 */
function props(f: Buffer, pos: number, end: number, ctx: number): number {
  pos = varInt(f, pos, end, 'property length');
  if (pos < 0) return pos;
  const pend = pos + varValue;
  if (pend > end) return bad(MALFORMED, `property length ${varValue} runs past the end of the packet`);
  let seenLo = 0;
  let seenHi = 0;
  while (pos < pend) {
    const id = f[pos++]!;
    const type = id < 0x2b ? P_TYPE[id]! : 0;
    if (type === 0) return bad(MALFORMED, `unknown property identifier ${hex(id)}`);
    if ((P_CTX[id]! & ctx) === 0) {
      return bad(MALFORMED, `property ${hex(id)} is not valid in ${CTX_NAMES[ctx] ?? 'this packet'}`);
    }
    if (id !== 0x26 && !(id === 0x0b && ctx === CTX_PUBLISH)) {
      const bit = 1 << (id & 31);
      if (id < 32) {
        if ((seenLo & bit) !== 0) return bad(PROTOCOL_ERROR, `property ${hex(id)} included more than once`);
        seenLo |= bit;
      } else {
        if ((seenHi & bit) !== 0) return bad(PROTOCOL_ERROR, `property ${hex(id)} included more than once`);
        seenHi |= bit;
      }
    }
    switch (type) {
      case T_BYTE: {
        if (pos >= pend) return bad(MALFORMED, `property ${hex(id)} runs past the property block`);
        if (f[pos]! > 1) return bad(PROTOCOL_ERROR, `property ${hex(id)} must be 0 or 1`);
        pos += 1;
        break;
      }
      case T_INT16: {
        if (pos + 2 > pend) return bad(MALFORMED, `property ${hex(id)} runs past the property block`);
        if (id === 0x21 && f[pos] === 0 && f[pos + 1] === 0) return bad(PROTOCOL_ERROR, 'Receive Maximum is 0');
        pos += 2;
        break;
      }
      case T_INT32: {
        if (pos + 4 > pend) return bad(MALFORMED, `property ${hex(id)} runs past the property block`);
        if (id === 0x27 && f[pos] === 0 && f[pos + 1] === 0 && f[pos + 2] === 0 && f[pos + 3] === 0) {
          return bad(PROTOCOL_ERROR, 'Maximum Packet Size is 0');
        }
        pos += 4;
        break;
      }
      case T_VARINT: {
        pos = varInt(f, pos, pend, `property ${hex(id)}`);
        if (pos < 0) return pos;
        if (id === 0x0b && varValue === 0) return bad(PROTOCOL_ERROR, 'Subscription Identifier is 0');
        break;
      }
      case T_STRING: {
        pos = utf8Field(f, pos, pend, `property ${hex(id)}`, true);
        if (pos < 0) return pos;
        break;
      }
      case T_BINARY: {
        pos = binField(f, pos, pend, `property ${hex(id)}`);
        if (pos < 0) return pos;
        break;
      }
      default: { // T_PAIR
        pos = utf8Field(f, pos, pend, 'user property name', true);
        if (pos < 0) return pos;
        pos = utf8Field(f, pos, pend, 'user property value', true);
        if (pos < 0) return pos;
      }
    }
  }
  return pend;
}

// ---------------------------------------------------------------------------
// Per-packet checks. pos = first byte after the fixed header; end = frame length.

const MQTT_NAME = [0x4d, 0x51, 0x54, 0x54]; // "MQTT"
const MQISDP_NAME = [0x4d, 0x51, 0x49, 0x73, 0x64, 0x70]; // "MQIsdp"

function nameIs(f: Buffer, s: number, n: number, name: number[]): boolean {
  if (n !== name.length) return false;
  for (let i = 0; i < n; i++) if (f[s + i] !== name[i]) return false;
  return true;
}

/** Position after the fixed header, or -1 (lastErr set) if the header is broken. */
function fixedHeader(f: Buffer): number {
  const end = f.length;
  if (end < 2) return bad(MALFORMED, 'packet shorter than a fixed header');
  let pos = 1;
  let rl = 0;
  let mul = 1;
  for (;;) {
    if (pos >= end) return bad(MALFORMED, 'remaining length cut short');
    const b = f[pos++]!;
    rl += (b & 0x7f) * mul;
    if (b < 0x80) {
      if (b === 0 && pos > 2) return bad(MALFORMED, 'remaining length not minimally encoded [MQTT-1.5.5-1]');
      break;
    }
    if (pos >= 5) return bad(MALFORMED, 'remaining length longer than 4 bytes');
    mul *= 128;
  }
  if (pos + rl !== end) {
    return bad(MALFORMED, `remaining length ${rl} does not match the ${end - pos} bytes after the fixed header`);
  }
  return pos;
}

/**
 * The protocol level a CONNECT frame asks for, if it is a supported name/level pair
 * (MQIsdp/3, MQTT/4, MQTT/5), else null. Lets the caller pick the CONNACK format when
 * checkFrame refuses the CONNECT.
 */
export function connectProtocolLevel(frame: Buffer): ProtocolLevel | null {
  if (frame.length < 2 || frame[0]! >> 4 !== 1) return null;
  let pos = 1;
  while (pos < frame.length && pos < 5 && (frame[pos]! & 0x80) !== 0) pos++;
  pos++;
  if (pos + 2 > frame.length) return null;
  const n = (frame[pos]! << 8) | frame[pos + 1]!;
  const s = pos + 2;
  if (s + n >= frame.length) return null;
  const level = frame[s + n]!;
  if (nameIs(frame, s, n, MQTT_NAME)) return level === 4 || level === 5 ? level : null;
  if (nameIs(frame, s, n, MQISDP_NAME)) return level === 3 ? 3 : null;
  return null;
}

function checkConnect(f: Buffer, pos: number, end: number, flags: number): CheckError | null {
  if (flags !== 0) return fail(MALFORMED, 'CONNECT fixed header flags must be 0 [MQTT-2.2.2-1]');
  if (pos + 2 > end) return fail(MALFORMED, 'CONNECT protocol name cut short');
  const n = (f[pos]! << 8) | f[pos + 1]!;
  const s = pos + 2;
  if (s + n >= end) return fail(MALFORMED, 'CONNECT cut short before the protocol level');
  const level = f[s + n]!;
  const isMqtt = nameIs(f, s, n, MQTT_NAME);
  const isMqisdp = !isMqtt && nameIs(f, s, n, MQISDP_NAME);
  if (!((isMqtt && (level === 4 || level === 5)) || (isMqisdp && level === 3))) {
    const name = (isMqtt || isMqisdp) ? (isMqtt ? 'MQTT' : 'MQIsdp') : 'unknown protocol name';
    return fail(UNSUPPORTED_PROTOCOL_VERSION, `unsupported protocol: ${name} level ${level} [MQTT-3.1.2-2]`);
  }
  const v5 = level === 5;
  pos = s + n + 1;
  if (pos + 3 > end) return fail(MALFORMED, 'CONNECT cut short in connect flags / keep alive');
  const cf = f[pos]!;
  pos += 3; // flags + keep alive
  if ((cf & 0x01) !== 0) return fail(MALFORMED, 'CONNECT reserved flag must be 0 [MQTT-3.1.2-3]');
  const will = (cf & 0x04) !== 0;
  const willQos = (cf >> 3) & 3;
  const willRetain = (cf & 0x20) !== 0;
  const password = (cf & 0x40) !== 0;
  const username = (cf & 0x80) !== 0;
  if (!will) {
    if (willQos !== 0) return fail(MALFORMED, `Will QoS set without the Will Flag ${tag(v5, '3.1.2-13', '3.1.2-11')}`);
    if (willRetain) return fail(MALFORMED, `Will Retain set without the Will Flag ${tag(v5, '3.1.2-15', '3.1.2-13')}`);
  } else if (willQos === 3) {
    return fail(MALFORMED, `Will QoS 3 ${tag(v5, '3.1.2-14', '3.1.2-12')}`);
  }
  if (password && !username && !v5) {
    return fail(MALFORMED, 'Password Flag set without the User Name Flag [MQTT-3.1.2-22]');
  }
  if (v5) {
    pos = props(f, pos, end, CTX_CONNECT);
    if (pos < 0) return lastErr;
  }
  pos = utf8Field(f, pos, end, 'client identifier', v5);
  if (pos < 0) return lastErr;
  if (will) {
    if (v5) {
      pos = props(f, pos, end, CTX_WILL);
      if (pos < 0) return lastErr;
    }
    pos = utf8Field(f, pos, end, 'will topic', v5);
    if (pos < 0) return lastErr;
    pos = binField(f, pos, end, 'will payload');
    if (pos < 0) return lastErr;
  }
  if (username) {
    pos = utf8Field(f, pos, end, 'user name', v5);
    if (pos < 0) return lastErr;
  }
  if (password) {
    pos = binField(f, pos, end, 'password');
    if (pos < 0) return lastErr;
  }
  if (pos !== end) return fail(MALFORMED, `CONNECT has ${end - pos} unexpected trailing bytes`);
  return null;
}

function checkPublish(f: Buffer, pos: number, end: number, flags: number, v5: boolean): CheckError | null {
  const qos = (flags >> 1) & 3;
  if (qos === 3) return fail(MALFORMED, 'PUBLISH QoS 3 [MQTT-3.3.1-4]');
  if (qos === 0 && (flags & 0x08) !== 0) return fail(PROTOCOL_ERROR, 'PUBLISH QoS 0 with DUP set [MQTT-3.3.1-2]');
  if (pos + 2 > end) return fail(MALFORMED, 'PUBLISH topic name cut short');
  const tl = (f[pos]! << 8) | f[pos + 1]!;
  const ts = pos + 2;
  const te = ts + tl;
  if (te > end) return fail(MALFORMED, `PUBLISH topic length ${tl} runs past the end of the packet`);
  const r = scanUtf8(f, ts, te);
  if (r !== 0) {
    if ((r & UTF8_BAD) !== 0) return fail(MALFORMED, `PUBLISH topic: ill-formed UTF-8 ${tag(v5, '1.5.3-1', '1.5.4-1')}`);
    if ((r & UTF8_NUL) !== 0) return fail(MALFORMED, `PUBLISH topic: contains U+0000 ${tag(v5, '1.5.3-2', '1.5.4-2')}`);
    return fail(TOPIC_NAME_INVALID, 'PUBLISH topic name contains a wildcard [MQTT-3.3.2-2]');
  }
  // 5.0 allows an empty topic name together with a Topic Alias (checked by the broker).
  if (tl === 0 && !v5) return fail(TOPIC_NAME_INVALID, 'PUBLISH topic name is empty [MQTT-4.7.3-1]');
  pos = te;
  if (qos > 0) {
    if (pos + 2 > end) return fail(MALFORMED, 'PUBLISH packet identifier cut short');
    if (f[pos] === 0 && f[pos + 1] === 0) {
      return fail(PROTOCOL_ERROR, `PUBLISH QoS ${qos} with packet identifier 0 ${tag(v5, '2.3.1-1', '2.2.1-3')}`);
    }
    pos += 2;
  }
  if (v5 && props(f, pos, end, CTX_PUBLISH) < 0) return lastErr;
  return null;
}

const ACK_NAMES = ['', '', '', '', 'PUBACK', 'PUBREC', 'PUBREL', 'PUBCOMP'];

function checkAck(f: Buffer, pos: number, end: number, type: number, v5: boolean): CheckError | null {
  const name = ACK_NAMES[type] ?? 'ack';
  const n = end - pos;
  if (!v5 && n !== 2) return fail(MALFORMED, `${name} remaining length must be 2, got ${n}`);
  if (packetId(f, pos, end, name, v5) < 0) return lastErr;
  if (n > 3) {
    const r = props(f, pos + 3, end, CTX_PUBACK);
    if (r < 0) return lastErr;
    if (r !== end) return fail(MALFORMED, `${name} has unexpected trailing bytes`);
  }
  return null;
}

function checkSubscribe(f: Buffer, pos: number, end: number, version: ProtocolLevel): CheckError | null {
  const v5 = version === 5;
  pos = packetId(f, pos, end, 'SUBSCRIBE', v5);
  if (pos < 0) return lastErr;
  if (v5) {
    pos = props(f, pos, end, CTX_SUBSCRIBE);
    if (pos < 0) return lastErr;
  }
  if (pos >= end) return fail(PROTOCOL_ERROR, `SUBSCRIBE without a topic filter ${tag(v5, '3.8.3-3', '3.8.3-2')}`);
  while (pos < end) {
    pos = utf8Field(f, pos, end, 'SUBSCRIBE topic filter', v5);
    if (pos < 0) return lastErr;
    if (pos >= end) return fail(MALFORMED, 'SUBSCRIBE subscription options missing');
    const o = f[pos++]!;
    if (v5) {
      if ((o & 0xc0) !== 0) return fail(MALFORMED, 'SUBSCRIBE options reserved bits 6-7 set [MQTT-3.8.3-5]');
      if ((o & 0x03) === 3) return fail(PROTOCOL_ERROR, 'SUBSCRIBE Maximum QoS 3 (5.0 3.8.3.1)');
      if ((o & 0x30) === 0x30) return fail(PROTOCOL_ERROR, 'SUBSCRIBE Retain Handling 3 (5.0 3.8.3.1)');
    } else {
      if ((o & 0xfc) !== 0) return fail(MALFORMED, 'SUBSCRIBE requested QoS reserved bits set [MQTT-3-8.3-4]');
      if (o === 3) return fail(MALFORMED, 'SUBSCRIBE requested QoS 3 [MQTT-3-8.3-4]');
    }
  }
  return null;
}

function checkUnsubscribe(f: Buffer, pos: number, end: number, v5: boolean): CheckError | null {
  pos = packetId(f, pos, end, 'UNSUBSCRIBE', v5);
  if (pos < 0) return lastErr;
  if (v5) {
    pos = props(f, pos, end, CTX_UNSUBSCRIBE);
    if (pos < 0) return lastErr;
  }
  if (pos >= end) return fail(PROTOCOL_ERROR, 'UNSUBSCRIBE without a topic filter [MQTT-3.10.3-2]');
  while (pos < end) {
    pos = utf8Field(f, pos, end, 'UNSUBSCRIBE topic filter', v5);
    if (pos < 0) return lastErr;
  }
  return null;
}

/** DISCONNECT / AUTH in 5.0: [reason code [property block]]. */
function checkReasonAndProps(f: Buffer, pos: number, end: number, ctx: number, name: string): CheckError | null {
  if (end - pos < 2) return null;
  const r = props(f, pos + 1, end, ctx);
  if (r < 0) return lastErr;
  if (r !== end) return fail(MALFORMED, `${name} has unexpected trailing bytes`);
  return null;
}

const FLAGS_MSG = (name: string, want: number, v5: boolean): string =>
  `${name} fixed header flags must be ${want.toString(2).padStart(4, '0')} ${tag(v5, '2.2.2-1', '2.1.3-1')}`;

/**
 * Checks one complete frame (as produced by Framer) received on a connection whose
 * negotiated protocol level is `version`, or 0 before CONNECT (then only CONNECT is
 * allowed and its level is read from the bytes). Returns null when mqtt-packet may
 * parse it, else the reason code to refuse/disconnect with.
 */
export function checkFrame(frame: Buffer, version: ProtocolLevel | 0): CheckError | null {
  const pos = fixedHeader(frame);
  if (pos < 0) return lastErr;
  const end = frame.length;
  const b0 = frame[0]!;
  const type = b0 >> 4;
  const flags = b0 & 0x0f;
  if (version === 0) {
    if (type !== 1) return fail(PROTOCOL_ERROR, 'first packet must be CONNECT [MQTT-3.1.0-1]');
    return checkConnect(frame, pos, end, flags);
  }
  const v5 = version === 5;
  switch (type) {
    case 1:
      return fail(PROTOCOL_ERROR, 'second CONNECT [MQTT-3.1.0-2]');
    case 3:
      return checkPublish(frame, pos, end, flags, v5);
    case 4:
    case 5:
    case 7:
      if (flags !== 0) return fail(MALFORMED, FLAGS_MSG(ACK_NAMES[type]!, 0, v5));
      return checkAck(frame, pos, end, type, v5);
    case 6:
      if (flags !== 2) return fail(MALFORMED, FLAGS_MSG('PUBREL', 2, v5));
      return checkAck(frame, pos, end, type, v5);
    case 8:
      if (flags !== 2) return fail(MALFORMED, FLAGS_MSG('SUBSCRIBE', 2, v5));
      return checkSubscribe(frame, pos, end, version);
    case 10:
      if (flags !== 2) return fail(MALFORMED, FLAGS_MSG('UNSUBSCRIBE', 2, v5));
      return checkUnsubscribe(frame, pos, end, v5);
    case 12:
    case 13: {
      const name = type === 12 ? 'PINGREQ' : 'PINGRESP';
      if (flags !== 0) return fail(MALFORMED, FLAGS_MSG(name, 0, v5));
      if (end !== pos) return fail(MALFORMED, `${name} remaining length must be 0`);
      return null;
    }
    case 14:
      if (flags !== 0) return fail(MALFORMED, FLAGS_MSG('DISCONNECT', 0, v5));
      if (!v5) return end === pos ? null : fail(MALFORMED, 'DISCONNECT remaining length must be 0');
      return checkReasonAndProps(frame, pos, end, CTX_DISCONNECT, 'DISCONNECT');
    case 15:
      if (!v5) return fail(MALFORMED, 'packet type 15 (AUTH) is reserved before MQTT 5');
      if (flags !== 0) return fail(MALFORMED, FLAGS_MSG('AUTH', 0, v5));
      return checkReasonAndProps(frame, pos, end, CTX_AUTH, 'AUTH');
    case 2:
    case 9:
    case 11:
      // CONNACK / SUBACK / UNSUBACK: server-to-client; the broker refuses them by type.
      if (flags !== 0) return fail(MALFORMED, FLAGS_MSG(type === 2 ? 'CONNACK' : type === 9 ? 'SUBACK' : 'UNSUBACK', 0, v5));
      return null;
    default:
      return fail(MALFORMED, 'packet type 0 is reserved');
  }
}
