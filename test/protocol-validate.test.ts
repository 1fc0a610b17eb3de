// Golden table (in the style of mochi-mqtt's packet tests): raw bytes → decoded fields
// or the reason code the broker must refuse/disconnect with, for MQTT 3.1 (level 3),
// 3.1.1 (level 4) and 5.0 (level 5). Good packets are also re-encoded and compared
// with the original bytes (or with the canonical encoding where mqtt-packet's differs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeFrame, encode, type Packet } from '../src/protocol/codec.js';
import {
  checkFrame, connectProtocolLevel, scanUtf8, isValidMqttUtf8, UTF8_BAD, UTF8_NUL, UTF8_WILDCARD,
} from '../src/protocol/validate.js';
import { connackCodeV3, RC, RC_V3, reasonCodeName } from '../src/protocol/reason-codes.js';
import { lenPrefixed, u16, u32, varint } from './helpers/packets.js';

// ---------------------------------------------------------------------------
// byte builders

/** Property block: Property Length + properties. */
const props = (...p: number[][]): number[] => {
  const body = p.flat();
  return [...varint(body.length), ...body];
};
/** Whole packet: first byte, remaining length, body parts. */
const pkt = (b0: number, ...parts: number[][]): number[] => {
  const body = parts.flat();
  return [b0, ...varint(body.length), ...body];
};
const userProp = (k: string, v: string): number[] => [0x26, ...lenPrefixed(k), ...lenPrefixed(v)];
const bytes = (s: string): number[] => [...Buffer.from(s, 'utf8')];

/** CONNECT variable header for a protocol name / level / flags / keep alive. */
const connectHead = (name: string, level: number, flags: number, keepalive = 60): number[] =>
  [...lenPrefixed(name), level, flags, ...u16(keepalive)];

// ---------------------------------------------------------------------------
// golden table

interface Golden {
  name: string;
  /** Connection state: 0 before CONNECT, else the negotiated level. */
  v: 0 | 3 | 4 | 5;
  bytes: number[];
  /** Expected failure reason code. */
  rc?: number;
  /** Expected decoded fields (subset of the packet). */
  fields?: Record<string, unknown>;
  /** Re-encode at this level (default: v, or the CONNECT's level); null skips. */
  enc?: 3 | 4 | 5 | null;
  /** Expected re-encoding when mqtt-packet's canonical form differs from `bytes`. */
  encoded?: number[];
}

const G: Golden[] = [
  // ----- CONNECT -------------------------------------------------------------
  {
    name: '[v4 MQTT-3.1.2-1] CONNECT MQTT/4 clean session, keep alive 60, client id "c1" (literal bytes)',
    v: 0,
    bytes: [0x10, 14, 0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 0x02, 0, 60, 0, 2, 0x63, 0x31],
    fields: { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 60, clientId: 'c1' },
  },
  {
    name: '[v3] CONNECT MQIsdp/3 with user name and password',
    v: 0,
    bytes: pkt(0x10, connectHead('MQIsdp', 3, 0xc2, 30), lenPrefixed('abc'), lenPrefixed('u'), lenPrefixed('p')),
    fields: { protocolId: 'MQIsdp', protocolVersion: 3, clean: true, keepalive: 30, clientId: 'abc', username: 'u', password: Buffer.from('p') },
  },
  {
    name: '[v4 MQTT-3.1.2-8] CONNECT with will (QoS 1, retain), user name and password',
    v: 0,
    bytes: pkt(0x10, connectHead('MQTT', 4, 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02), lenPrefixed('dev-1'), lenPrefixed('w/t'), lenPrefixed('bye'), lenPrefixed('user'), lenPrefixed('secret')),
    fields: {
      clientId: 'dev-1', clean: true, username: 'user', password: Buffer.from('secret'),
      will: { retain: true, qos: 1, topic: 'w/t', payload: Buffer.from('bye') },
    },
  },
  {
    name: '[v4 MQTT-3.1.3-6] CONNECT with an empty client id and clean session decodes',
    v: 0,
    bytes: pkt(0x10, connectHead('MQTT', 4, 0x02), lenPrefixed('')),
    fields: { clientId: '', clean: true },
  },
  {
    name: '[v4] CONNECT with an empty client id and clean session 0 decodes (broker refuses with return code 2)',
    v: 0,
    bytes: pkt(0x10, connectHead('MQTT', 4, 0x00), lenPrefixed('')),
    fields: { clientId: '', clean: false },
    enc: null, // mqtt-packet refuses to generate it
  },
  {
    name: '[v5 MQTT-3.1.2-1] CONNECT MQTT/5 with properties and will properties',
    v: 0,
    bytes: pkt(0x10, connectHead('MQTT', 5, 0x04 | 0x02 | 0x10 /* will qos 2 */),
      props([0x11, ...u32(3600)], [0x21, ...u16(10)], [0x27, ...u32(65536)], userProp('a', 'b')),
      lenPrefixed('c5'),
      props([0x18, ...u32(5)], [0x03, ...lenPrefixed('text/plain')]),
      lenPrefixed('will/5'), lenPrefixed('gone')),
    fields: {
      protocolVersion: 5, clientId: 'c5',
      properties: { sessionExpiryInterval: 3600, receiveMaximum: 10, maximumPacketSize: 65536, userProperties: { a: 'b' } },
      will: { retain: false, qos: 2, topic: 'will/5', payload: Buffer.from('gone'), properties: { willDelayInterval: 5, contentType: 'text/plain' } },
    },
  },
  {
    name: '[v5 MQTT-3.1.2-1] CONNECT MQTT/5 with an empty property block',
    v: 0,
    bytes: pkt(0x10, connectHead('MQTT', 5, 0x02, 0), props(), lenPrefixed('x')),
    fields: { protocolVersion: 5, clientId: 'x', keepalive: 0 },
  },
  {
    name: '[v5 3.1.2.9] CONNECT with a password but no user name is allowed in 5.0',
    v: 0,
    bytes: pkt(0x10, connectHead('MQTT', 5, 0x40 | 0x02), props(), lenPrefixed('x'), lenPrefixed('pw')),
    fields: { password: Buffer.from('pw') },
    enc: null, // mqtt-packet cannot generate a password without a user name
  },
  {
    name: '[v4 MQTT-3.1.2-22] CONNECT password flag without user name flag → 0x81',
    v: 0, rc: 0x81,
    bytes: pkt(0x10, connectHead('MQTT', 4, 0x40 | 0x02), lenPrefixed('x'), lenPrefixed('pw')),
  },
  {
    name: '[v3 MQTT-3.1.2-22] CONNECT password flag without user name flag → 0x81',
    v: 0, rc: 0x81,
    bytes: pkt(0x10, connectHead('MQIsdp', 3, 0x40 | 0x02), lenPrefixed('x'), lenPrefixed('pw')),
  },
  { name: '[v4 MQTT-3.1.2-2] CONNECT "MQTT" level 3 → 0x84', v: 0, rc: 0x84, bytes: pkt(0x10, connectHead('MQTT', 3, 0x02), lenPrefixed('x')) },
  { name: '[v3 MQTT-3.1.2-2] CONNECT "MQIsdp" level 4 → 0x84', v: 0, rc: 0x84, bytes: pkt(0x10, connectHead('MQIsdp', 4, 0x02), lenPrefixed('x')) },
  { name: '[v5 MQTT-3.1.2-2] CONNECT "MQTT" level 6 → 0x84', v: 0, rc: 0x84, bytes: pkt(0x10, connectHead('MQTT', 6, 0x02), lenPrefixed('x')) },
  { name: '[v4 MQTT-3.1.2-1] CONNECT protocol name "MQTX" → 0x84', v: 0, rc: 0x84, bytes: pkt(0x10, connectHead('MQTX', 4, 0x02), lenPrefixed('x')) },
  { name: '[v4 MQTT-3.1.2-2] CONNECT bridge level 0x84 → 0x84', v: 0, rc: 0x84, bytes: pkt(0x10, connectHead('MQTT', 0x84, 0x02), lenPrefixed('x')) },
  { name: '[v4 MQTT-3.1.2-3] CONNECT reserved flag bit 0 set → 0x81', v: 0, rc: 0x81, bytes: pkt(0x10, connectHead('MQTT', 4, 0x03), lenPrefixed('x')) },
  { name: '[v5 MQTT-3.1.2-3] CONNECT reserved flag bit 0 set → 0x81', v: 0, rc: 0x81, bytes: pkt(0x10, connectHead('MQTT', 5, 0x03), props(), lenPrefixed('x')) },
  { name: '[v4 MQTT-3.1.2-13] CONNECT Will QoS without Will Flag → 0x81', v: 0, rc: 0x81, bytes: pkt(0x10, connectHead('MQTT', 4, 0x08 | 0x02), lenPrefixed('x')) },
  { name: '[v4 MQTT-3.1.2-15] CONNECT Will Retain without Will Flag → 0x81', v: 0, rc: 0x81, bytes: pkt(0x10, connectHead('MQTT', 4, 0x20 | 0x02), lenPrefixed('x')) },
  { name: '[v5 MQTT-3.1.2-11] CONNECT Will QoS without Will Flag → 0x81', v: 0, rc: 0x81, bytes: pkt(0x10, connectHead('MQTT', 5, 0x10 | 0x02), props(), lenPrefixed('x')) },
  { name: '[v5 MQTT-3.1.2-13] CONNECT Will Retain without Will Flag → 0x81', v: 0, rc: 0x81, bytes: pkt(0x10, connectHead('MQTT', 5, 0x20 | 0x02), props(), lenPrefixed('x')) },
  {
    name: '[v4 MQTT-3.1.2-14] CONNECT Will QoS 3 → 0x81', v: 0, rc: 0x81,
    bytes: pkt(0x10, connectHead('MQTT', 4, 0x18 | 0x04 | 0x02), lenPrefixed('x'), lenPrefixed('t'), lenPrefixed('p')),
  },
  {
    name: '[v5 MQTT-3.1.2-12] CONNECT Will QoS 3 → 0x81', v: 0, rc: 0x81,
    bytes: pkt(0x10, connectHead('MQTT', 5, 0x18 | 0x04 | 0x02), props(), lenPrefixed('x'), props(), lenPrefixed('t'), lenPrefixed('p')),
  },
  { name: '[v4 MQTT-2.2.2-1] CONNECT fixed header flags 0001 → 0x81', v: 0, rc: 0x81, bytes: pkt(0x11, connectHead('MQTT', 4, 0x02), lenPrefixed('x')) },
  {
    name: '[v4 MQTT-1.5.3-1] CONNECT client id with overlong encoding C0 80 → 0x81', v: 0, rc: 0x81,
    bytes: pkt(0x10, connectHead('MQTT', 4, 0x02), lenPrefixed([0x61, 0xc0, 0x80])),
  },
  {
    name: '[v4 MQTT-1.5.3-2] CONNECT client id containing U+0000 → 0x81', v: 0, rc: 0x81,
    bytes: pkt(0x10, connectHead('MQTT', 4, 0x02), lenPrefixed([0x61, 0x00, 0x62])),
  },
  {
    name: '[v5 MQTT-1.5.4-1] CONNECT user name with a UTF-16 surrogate (ED A0 80) → 0x81', v: 0, rc: 0x81,
    bytes: pkt(0x10, connectHead('MQTT', 5, 0x80 | 0x02), props(), lenPrefixed('x'), lenPrefixed([0xed, 0xa0, 0x80])),
  },
  {
    name: '[v5 MQTT-1.5.4-1] CONNECT will topic above U+10FFFF (F4 90 80 80) → 0x81', v: 0, rc: 0x81,
    bytes: pkt(0x10, connectHead('MQTT', 5, 0x04 | 0x02), props(), lenPrefixed('x'), props(), lenPrefixed([0xf4, 0x90, 0x80, 0x80]), lenPrefixed('p')),
  },
  {
    name: '[v4 MQTT-1.5.3-2] CONNECT will topic containing U+0000 → 0x81', v: 0, rc: 0x81,
    bytes: pkt(0x10, connectHead('MQTT', 4, 0x04 | 0x02), lenPrefixed('x'), lenPrefixed([0x61, 0x00]), lenPrefixed('p')),
  },
  {
    name: '[v4] CONNECT cut short inside the client id → 0x81', v: 0, rc: 0x81,
    bytes: pkt(0x10, connectHead('MQTT', 4, 0x02), u16(10), bytes('abc')),
  },
  {
    name: '[v4] CONNECT cut short before the password → 0x81', v: 0, rc: 0x81,
    bytes: pkt(0x10, connectHead('MQTT', 4, 0xc2), lenPrefixed('x'), lenPrefixed('u')),
  },
  {
    name: '[v4] CONNECT cut short inside the keep alive → 0x81', v: 0, rc: 0x81,
    bytes: pkt(0x10, lenPrefixed('MQTT'), [4, 0x02, 0]),
  },
  {
    name: '[v4] CONNECT with trailing bytes after the payload → 0x81', v: 0, rc: 0x81,
    bytes: pkt(0x10, connectHead('MQTT', 4, 0x02), lenPrefixed('x'), [0xde, 0xad]),
  },
  {
    name: '[v4] CONNECT remaining length larger than the frame → 0x81', v: 0, rc: 0x81,
    bytes: [0x10, 20, ...connectHead('MQTT', 4, 0x02), ...lenPrefixed('x')],
  },
  {
    name: '[v5 MQTT-1.5.5-1] CONNECT remaining length not minimally encoded → 0x81', v: 0, rc: 0x81,
    bytes: [0x10, 0x8f, 0x00, ...connectHead('MQTT', 4, 0x02), ...lenPrefixed('x')],
  },
  {
    name: '[v5 2.2.2] CONNECT property length runs past the packet → 0x81', v: 0, rc: 0x81,
    bytes: pkt(0x10, connectHead('MQTT', 5, 0x02), [40, 0x11, 0, 0, 0, 1], lenPrefixed('x')),
  },
  {
    name: '[v5 2.2.2.2] CONNECT property value runs past the property block → 0x81', v: 0, rc: 0x81,
    bytes: pkt(0x10, connectHead('MQTT', 5, 0x02), [3, 0x11, 0, 0], [0, 1], lenPrefixed('x')),
  },
  {
    name: '[v5 2.2.2.2] CONNECT with a PUBLISH-only property (Topic Alias) → 0x81', v: 0, rc: 0x81,
    bytes: pkt(0x10, connectHead('MQTT', 5, 0x02), props([0x23, ...u16(1)]), lenPrefixed('x')),
  },
  {
    name: '[v5 2.2.2.2] CONNECT with an unknown property identifier 0x7F → 0x81', v: 0, rc: 0x81,
    bytes: pkt(0x10, connectHead('MQTT', 5, 0x02), props([0x7f, 0]), lenPrefixed('x')),
  },
  {
    name: '[v5 3.1.2.11.3] CONNECT Receive Maximum 0 → 0x82', v: 0, rc: 0x82,
    bytes: pkt(0x10, connectHead('MQTT', 5, 0x02), props([0x21, ...u16(0)]), lenPrefixed('x')),
  },
  {
    name: '[v5 3.1.2.11.4] CONNECT Maximum Packet Size 0 → 0x82', v: 0, rc: 0x82,
    bytes: pkt(0x10, connectHead('MQTT', 5, 0x02), props([0x27, ...u32(0)]), lenPrefixed('x')),
  },
  {
    name: '[v5 3.1.2.11.2] CONNECT Session Expiry Interval included twice → 0x82', v: 0, rc: 0x82,
    bytes: pkt(0x10, connectHead('MQTT', 5, 0x02), props([0x11, ...u32(1)], [0x11, ...u32(2)]), lenPrefixed('x')),
  },
  {
    name: '[v5 3.1.2.11.7] CONNECT Request Problem Information 2 → 0x82', v: 0, rc: 0x82,
    bytes: pkt(0x10, connectHead('MQTT', 5, 0x02), props([0x17, 2]), lenPrefixed('x')),
  },
  {
    name: '[v5 MQTT-1.5.4-1] CONNECT user property name with ill-formed UTF-8 → 0x81', v: 0, rc: 0x81,
    bytes: pkt(0x10, connectHead('MQTT', 5, 0x02), props([0x26, ...lenPrefixed([0xff]), ...lenPrefixed('v')]), lenPrefixed('x')),
  },
  {
    name: '[v5] CONNECT with repeated user properties decodes them as an array',
    v: 0,
    bytes: pkt(0x10, connectHead('MQTT', 5, 0x02), props(userProp('k', '1'), userProp('k', '2')), lenPrefixed('x')),
    fields: { properties: { userProperties: { k: ['1', '2'] } } },
  },
  {
    name: '[v5 2.2.2.2] CONNECT Will Properties with a CONNECT-only property → 0x81', v: 0, rc: 0x81,
    bytes: pkt(0x10, connectHead('MQTT', 5, 0x04 | 0x02), props(), lenPrefixed('x'), props([0x11, ...u32(1)]), lenPrefixed('t'), lenPrefixed('p')),
  },
  { name: '[v4 MQTT-3.1.0-1] first packet PUBLISH before CONNECT → 0x82', v: 0, rc: 0x82, bytes: pkt(0x30, lenPrefixed('a'), bytes('x')) },
  { name: '[v4 MQTT-3.1.0-1] first packet PINGREQ before CONNECT → 0x82', v: 0, rc: 0x82, bytes: [0xc0, 0x00] },
  { name: '[v4 MQTT-3.1.0-2] second CONNECT → 0x82', v: 4, rc: 0x82, bytes: pkt(0x10, connectHead('MQTT', 4, 0x02), lenPrefixed('x')) },
  { name: '[v5 MQTT-3.1.0-2] second CONNECT → 0x82', v: 5, rc: 0x82, bytes: pkt(0x10, connectHead('MQTT', 5, 0x02), props(), lenPrefixed('x')) },

  // ----- PUBLISH -------------------------------------------------------------
  {
    name: '[v4 3.3] PUBLISH QoS 0 "a/b" payload "hi" (literal bytes)',
    v: 4,
    bytes: [0x30, 7, 0, 3, 0x61, 0x2f, 0x62, 0x68, 0x69],
    fields: { cmd: 'publish', topic: 'a/b', payload: Buffer.from('hi'), qos: 0, retain: false, dup: false },
  },
  {
    name: '[v4 3.3.1] PUBLISH QoS 1 DUP RETAIN packet id 10',
    v: 4,
    bytes: pkt(0x3b, lenPrefixed('x/y'), u16(10), bytes('payload')),
    fields: { topic: 'x/y', qos: 1, dup: true, retain: true, messageId: 10, payload: Buffer.from('payload') },
  },
  {
    name: '[v3 3.3] PUBLISH QoS 2 packet id 65535, empty payload',
    v: 3,
    bytes: pkt(0x34, lenPrefixed('t'), u16(65535)),
    fields: { topic: 't', qos: 2, messageId: 65535, payload: Buffer.alloc(0) },
  },
  {
    name: '[v4 MQTT-1.5.3-1] PUBLISH multi-byte UTF-8 topic "añ/€/😀" is accepted',
    v: 4,
    bytes: pkt(0x30, lenPrefixed('añ/€/😀'), bytes('.')),
    fields: { topic: 'añ/€/😀' },
  },
  {
    name: '[v5 3.3.2.3] PUBLISH QoS 1 with all PUBLISH properties',
    v: 5,
    bytes: pkt(0x32, lenPrefixed('s/1'), u16(7), props(
      [0x01, 1], [0x02, ...u32(60)], [0x23, ...u16(3)], [0x08, ...lenPrefixed('resp')],
      [0x09, ...lenPrefixed([1, 2, 3])], userProp('k', 'v'), [0x03, ...lenPrefixed('json')],
    ), bytes('{}')),
    fields: {
      topic: 's/1', qos: 1, messageId: 7, payload: Buffer.from('{}'),
      properties: {
        payloadFormatIndicator: true, messageExpiryInterval: 60, topicAlias: 3, responseTopic: 'resp',
        correlationData: Buffer.from([1, 2, 3]), userProperties: { k: 'v' }, contentType: 'json',
      },
    },
  },
  {
    name: '[v5 3.3.2.3.8] PUBLISH with two Subscription Identifiers decodes an array',
    v: 5,
    bytes: pkt(0x30, lenPrefixed('s'), props([0x0b, 1], [0x0b, ...varint(300)])),
    fields: { properties: { subscriptionIdentifier: [1, 300] } },
  },
  {
    name: '[v5 3.3.2.3.4] PUBLISH with an empty topic name and a Topic Alias is accepted',
    v: 5,
    bytes: pkt(0x30, lenPrefixed(''), props([0x23, ...u16(1)]), bytes('x')),
    fields: { topic: '', properties: { topicAlias: 1 } },
  },
  { name: '[v4 MQTT-4.7.3-1] PUBLISH with an empty topic name → 0x90', v: 4, rc: 0x90, bytes: pkt(0x30, lenPrefixed(''), bytes('x')) },
  { name: '[v3 MQTT-4.7.3-1] PUBLISH with an empty topic name → 0x90', v: 3, rc: 0x90, bytes: pkt(0x30, lenPrefixed(''), bytes('x')) },
  { name: '[v4 MQTT-3.3.1-4] PUBLISH QoS 3 → 0x81', v: 4, rc: 0x81, bytes: pkt(0x36, lenPrefixed('a'), u16(1)) },
  { name: '[v5 MQTT-3.3.1-4] PUBLISH QoS 3 → 0x81', v: 5, rc: 0x81, bytes: pkt(0x36, lenPrefixed('a'), u16(1), props()) },
  { name: '[v4 MQTT-3.3.1-2] PUBLISH QoS 0 with DUP → 0x82', v: 4, rc: 0x82, bytes: pkt(0x38, lenPrefixed('a')) },
  { name: '[v5 MQTT-3.3.1-2] PUBLISH QoS 0 with DUP → 0x82', v: 5, rc: 0x82, bytes: pkt(0x38, lenPrefixed('a'), props()) },
  { name: '[v5 MQTT-3.3.2-2] wildcard + in PUBLISH topic → 0x90', v: 5, rc: 0x90, bytes: pkt(0x30, lenPrefixed('a/+/c'), props()) },
  { name: '[v5 MQTT-3.3.2-2] wildcard # in PUBLISH topic → 0x90', v: 5, rc: 0x90, bytes: pkt(0x30, lenPrefixed('a/#'), props()) },
  { name: '[v4 MQTT-3.3.2-2] wildcard # in PUBLISH topic → 0x90', v: 4, rc: 0x90, bytes: pkt(0x30, lenPrefixed('#')) },
  { name: '[v3 MQTT-3.3.2-2] wildcard + in PUBLISH topic → 0x90', v: 3, rc: 0x90, bytes: pkt(0x32, lenPrefixed('+'), u16(1)) },
  { name: '[v4 MQTT-1.5.3-1] PUBLISH topic with a stray continuation byte → 0x81', v: 4, rc: 0x81, bytes: pkt(0x30, lenPrefixed([0x61, 0x80])) },
  { name: '[v5 MQTT-1.5.4-1] PUBLISH topic with an overlong 3-byte sequence (E0 80 AF) → 0x81', v: 5, rc: 0x81, bytes: pkt(0x30, lenPrefixed([0xe0, 0x80, 0xaf]), props()) },
  { name: '[v5 MQTT-1.5.4-1] PUBLISH topic with a surrogate (ED BF BF) → 0x81', v: 5, rc: 0x81, bytes: pkt(0x30, lenPrefixed([0xed, 0xbf, 0xbf]), props()) },
  { name: '[v5 MQTT-1.5.4-1] PUBLISH topic with a truncated 4-byte sequence → 0x81', v: 5, rc: 0x81, bytes: pkt(0x30, lenPrefixed([0xf0, 0x9f, 0x98]), props()) },
  { name: '[v4 MQTT-1.5.3-1] PUBLISH topic with byte F8 → 0x81', v: 4, rc: 0x81, bytes: pkt(0x30, lenPrefixed([0xf8, 0x88, 0x80, 0x80, 0x80])) },
  { name: '[v4 MQTT-1.5.3-1] PUBLISH topic with overlong 4-byte sequence (F0 8F BF BF) → 0x81', v: 4, rc: 0x81, bytes: pkt(0x30, lenPrefixed([0xf0, 0x8f, 0xbf, 0xbf])) },
  { name: '[v4 MQTT-1.5.3-2] PUBLISH topic containing U+0000 → 0x81', v: 4, rc: 0x81, bytes: pkt(0x30, lenPrefixed([0x61, 0x00])) },
  { name: '[v5 MQTT-1.5.4-2] PUBLISH topic containing U+0000 → 0x81', v: 5, rc: 0x81, bytes: pkt(0x30, lenPrefixed([0x00]), props()) },
  { name: '[v4 MQTT-2.3.1-1] PUBLISH QoS 1 with packet id 0 → 0x82', v: 4, rc: 0x82, bytes: pkt(0x32, lenPrefixed('a'), u16(0)) },
  { name: '[v5 MQTT-2.2.1-3] PUBLISH QoS 2 with packet id 0 → 0x82', v: 5, rc: 0x82, bytes: pkt(0x34, lenPrefixed('a'), u16(0), props()) },
  { name: '[v4] PUBLISH topic length past the end → 0x81', v: 4, rc: 0x81, bytes: pkt(0x30, u16(50), bytes('abc')) },
  { name: '[v4] PUBLISH QoS 1 cut short before the packet id → 0x81', v: 4, rc: 0x81, bytes: pkt(0x32, lenPrefixed('a'), [0]) },
  { name: '[v5] PUBLISH without a property length → 0x81', v: 5, rc: 0x81, bytes: pkt(0x30, lenPrefixed('a')) },
  { name: '[v5 2.2.2] PUBLISH property length past the end → 0x81', v: 5, rc: 0x81, bytes: pkt(0x30, lenPrefixed('a'), [10, 0x01, 1]) },
  { name: '[v5 3.3.2.3.8] PUBLISH Subscription Identifier 0 → 0x82', v: 5, rc: 0x82, bytes: pkt(0x30, lenPrefixed('a'), props([0x0b, 0])) },
  { name: '[v5 3.3.2.3.4] PUBLISH Topic Alias included twice → 0x82', v: 5, rc: 0x82, bytes: pkt(0x30, lenPrefixed('a'), props([0x23, 0, 1], [0x23, 0, 2])) },
  { name: '[v5 3.3.2.3.2] PUBLISH Payload Format Indicator 2 → 0x82', v: 5, rc: 0x82, bytes: pkt(0x30, lenPrefixed('a'), props([0x01, 2])) },
  { name: '[v5 2.2.2.2] PUBLISH with a CONNECT-only property (Session Expiry) → 0x81', v: 5, rc: 0x81, bytes: pkt(0x30, lenPrefixed('a'), props([0x11, ...u32(1)])) },
  { name: '[v5 2.2.2.2] PUBLISH Response Topic with ill-formed UTF-8 → 0x81', v: 5, rc: 0x81, bytes: pkt(0x30, lenPrefixed('a'), props([0x08, ...lenPrefixed([0xc3])])) },

  // ----- PUBACK / PUBREC / PUBREL / PUBCOMP ---------------------------------
  { name: '[v4 3.4] PUBACK packet id 1 (literal bytes)', v: 4, bytes: [0x40, 0x02, 0x00, 0x01], fields: { cmd: 'puback', messageId: 1 } },
  { name: '[v4 3.5] PUBREC packet id 258', v: 4, bytes: [0x50, 0x02, 0x01, 0x02], fields: { cmd: 'pubrec', messageId: 258 } },
  { name: '[v4 3.6] PUBREL packet id 3', v: 4, bytes: [0x62, 0x02, 0x00, 0x03], fields: { cmd: 'pubrel', messageId: 3 } },
  { name: '[v3 3.7] PUBCOMP packet id 4', v: 3, bytes: [0x70, 0x02, 0x00, 0x04], fields: { cmd: 'pubcomp', messageId: 4 } },
  { name: '[v4 MQTT-2.3.1-1] PUBACK packet id 0 → 0x82', v: 4, rc: 0x82, bytes: [0x40, 0x02, 0x00, 0x00] },
  { name: '[v5 MQTT-2.2.1-3] PUBREL packet id 0 → 0x82', v: 5, rc: 0x82, bytes: [0x62, 0x02, 0x00, 0x00] },
  { name: '[v4 3.4.1] PUBACK remaining length 3 → 0x81', v: 4, rc: 0x81, bytes: [0x40, 0x03, 0x00, 0x01, 0x00] },
  { name: '[v5 3.4.2] PUBACK remaining length 1 → 0x81', v: 5, rc: 0x81, bytes: [0x40, 0x01, 0x00] },
  { name: '[v4 MQTT-2.2.2-1] PUBACK flags 0001 → 0x81', v: 4, rc: 0x81, bytes: [0x41, 0x02, 0x00, 0x01] },
  { name: '[v4 MQTT-2.2.2-1] PUBREL flags 0000 → 0x81', v: 4, rc: 0x81, bytes: [0x60, 0x02, 0x00, 0x01] },
  { name: '[v5 MQTT-2.1.3-1] PUBREL flags 0000 → 0x81', v: 5, rc: 0x81, bytes: [0x60, 0x02, 0x00, 0x01] },
  { name: '[v5 MQTT-2.1.3-1] PUBREC flags 0010 → 0x81', v: 5, rc: 0x81, bytes: [0x52, 0x02, 0x00, 0x01] },
  { name: '[v5 MQTT-2.1.3-1] PUBCOMP flags 1000 → 0x81', v: 5, rc: 0x81, bytes: [0x78, 0x02, 0x00, 0x01] },
  { name: '[v5 3.4.2.1] PUBACK without reason code means 0x00', v: 5, bytes: [0x40, 0x02, 0x00, 0x05], fields: { messageId: 5, reasonCode: 0 } },
  {
    name: '[v5 3.4.2.1] PUBACK reason 0x10 without properties',
    v: 5, bytes: [0x40, 0x03, 0x00, 0x05, 0x10], fields: { messageId: 5, reasonCode: 0x10 },
    encoded: [0x40, 0x04, 0x00, 0x05, 0x10, 0x00],
  },
  {
    name: '[v5 3.5.2.2] PUBREC reason 0x80 with a Reason String',
    v: 5, bytes: pkt(0x50, u16(9), [0x80], props([0x1f, ...lenPrefixed('nope')])),
    fields: { cmd: 'pubrec', messageId: 9, reasonCode: 0x80, properties: { reasonString: 'nope' } },
  },
  {
    name: '[v5 3.6.2.2] PUBREL reason 0x92 with a User Property',
    v: 5, bytes: pkt(0x62, u16(9), [0x92], props(userProp('a', 'b'))),
    fields: { cmd: 'pubrel', reasonCode: 0x92, properties: { userProperties: { a: 'b' } } },
  },
  { name: '[v5 2.2.2.2] PUBCOMP Reason String twice → 0x82', v: 5, rc: 0x82, bytes: pkt(0x70, u16(9), [0], props([0x1f, ...lenPrefixed('a')], [0x1f, ...lenPrefixed('b')])) },
  { name: '[v5 2.2.2.2] PUBACK with a Topic Alias property → 0x81', v: 5, rc: 0x81, bytes: pkt(0x40, u16(9), [0], props([0x23, 0, 1])) },
  { name: '[v5 3.4.2] PUBACK with bytes after the properties → 0x81', v: 5, rc: 0x81, bytes: pkt(0x40, u16(9), [0], props(), [1]) },
  { name: '[v5 3.4.2.1] PUBACK with an undefined reason code 0x05 → 0x81', v: 5, rc: 0x81, bytes: [0x40, 0x03, 0x00, 0x05, 0x05] },

  // ----- SUBSCRIBE -----------------------------------------------------------
  {
    name: '[v4 3.8] SUBSCRIBE id 1: "a/+" QoS 1, "b/#" QoS 2',
    v: 4, bytes: pkt(0x82, u16(1), lenPrefixed('a/+'), [1], lenPrefixed('b/#'), [2]),
    fields: { cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'a/+', qos: 1 }, { topic: 'b/#', qos: 2 }] },
  },
  {
    name: '[v3 3.8] SUBSCRIBE id 2: "t" QoS 0',
    v: 3, bytes: pkt(0x82, u16(2), lenPrefixed('t'), [0]),
    fields: { subscriptions: [{ topic: 't', qos: 0 }] },
  },
  {
    name: '[v5 3.8.3.1] SUBSCRIBE with Subscription Identifier and No Local / RAP / Retain Handling 2',
    v: 5, bytes: pkt(0x82, u16(3), props([0x0b, ...varint(200)]), lenPrefixed('$share/g/x'), [0x2e], lenPrefixed('y'), [0x00]),
    fields: {
      messageId: 3, properties: { subscriptionIdentifier: 200 },
      subscriptions: [{ topic: '$share/g/x', qos: 2, nl: true, rap: true, rh: 2 }, { topic: 'y', qos: 0, nl: false, rap: false, rh: 0 }],
    },
  },
  {
    name: '[v4 3.8.3] SUBSCRIBE with an empty filter string decodes (topic validation is the broker\'s)',
    v: 4, bytes: pkt(0x82, u16(1), lenPrefixed(''), [0]),
    fields: { subscriptions: [{ topic: '', qos: 0 }] },
  },
  { name: '[v4 MQTT-2.2.2-1] SUBSCRIBE flags 0000 → 0x81', v: 4, rc: 0x81, bytes: pkt(0x80, u16(1), lenPrefixed('a'), [0]) },
  { name: '[v5 MQTT-2.1.3-1] SUBSCRIBE flags 0011 → 0x81', v: 5, rc: 0x81, bytes: pkt(0x83, u16(1), props(), lenPrefixed('a'), [0]) },
  { name: '[v4 MQTT-3.8.3-3] SUBSCRIBE without a topic filter → 0x82', v: 4, rc: 0x82, bytes: pkt(0x82, u16(1)) },
  { name: '[v5 MQTT-3.8.3-2] SUBSCRIBE without a topic filter → 0x82', v: 5, rc: 0x82, bytes: pkt(0x82, u16(1), props()) },
  { name: '[v4 MQTT-3-8.3-4] SUBSCRIBE options reserved bit 2 set → 0x81', v: 4, rc: 0x81, bytes: pkt(0x82, u16(1), lenPrefixed('a'), [0x04]) },
  { name: '[v4 MQTT-3-8.3-4] SUBSCRIBE requested QoS 3 → 0x81', v: 4, rc: 0x81, bytes: pkt(0x82, u16(1), lenPrefixed('a'), [0x03]) },
  { name: '[v3 MQTT-3-8.3-4] SUBSCRIBE options 0x80 → 0x81', v: 3, rc: 0x81, bytes: pkt(0x82, u16(1), lenPrefixed('a'), [0x80]) },
  { name: '[v5 MQTT-3.8.3-5] SUBSCRIBE options reserved bit 6 set → 0x81', v: 5, rc: 0x81, bytes: pkt(0x82, u16(1), props(), lenPrefixed('a'), [0x40]) },
  { name: '[v5 3.8.3.1] SUBSCRIBE Retain Handling 3 → 0x82', v: 5, rc: 0x82, bytes: pkt(0x82, u16(1), props(), lenPrefixed('a'), [0x30]) },
  { name: '[v5 3.8.3.1] SUBSCRIBE Maximum QoS 3 → 0x82', v: 5, rc: 0x82, bytes: pkt(0x82, u16(1), props(), lenPrefixed('a'), [0x03]) },
  { name: '[v4 MQTT-2.3.1-1] SUBSCRIBE packet id 0 → 0x82', v: 4, rc: 0x82, bytes: pkt(0x82, u16(0), lenPrefixed('a'), [0]) },
  { name: '[v5 MQTT-2.2.1-3] SUBSCRIBE packet id 0 → 0x82', v: 5, rc: 0x82, bytes: pkt(0x82, u16(0), props(), lenPrefixed('a'), [0]) },
  { name: '[v4 MQTT-1.5.3-1] SUBSCRIBE filter with ill-formed UTF-8 → 0x81', v: 4, rc: 0x81, bytes: pkt(0x82, u16(1), lenPrefixed([0x61, 0xfe]), [0]) },
  { name: '[v5 MQTT-1.5.4-2] SUBSCRIBE filter containing U+0000 → 0x81', v: 5, rc: 0x81, bytes: pkt(0x82, u16(1), props(), lenPrefixed([0x61, 0x00]), [0]) },
  { name: '[v4] SUBSCRIBE second filter missing its options byte → 0x81', v: 4, rc: 0x81, bytes: pkt(0x82, u16(1), lenPrefixed('a'), [0], lenPrefixed('b')) },
  { name: '[v4] SUBSCRIBE filter length past the end → 0x81', v: 4, rc: 0x81, bytes: pkt(0x82, u16(1), u16(9), bytes('ab')) },
  { name: '[v5 3.8.2.1.2] SUBSCRIBE Subscription Identifier 0 → 0x82', v: 5, rc: 0x82, bytes: pkt(0x82, u16(1), props([0x0b, 0]), lenPrefixed('a'), [0]) },
  { name: '[v5 3.8.2.1.2] SUBSCRIBE Subscription Identifier twice → 0x82', v: 5, rc: 0x82, bytes: pkt(0x82, u16(1), props([0x0b, 1], [0x0b, 2]), lenPrefixed('a'), [0]) },
  { name: '[v5 MQTT-1.5.5-1] SUBSCRIBE Subscription Identifier non-minimal varint → 0x81', v: 5, rc: 0x81, bytes: pkt(0x82, u16(1), props([0x0b, 0x81, 0x00]), lenPrefixed('a'), [0]) },

  // ----- UNSUBSCRIBE ---------------------------------------------------------
  {
    name: '[v4 3.10] UNSUBSCRIBE id 7: "a/+", "b"',
    v: 4, bytes: pkt(0xa2, u16(7), lenPrefixed('a/+'), lenPrefixed('b')),
    fields: { cmd: 'unsubscribe', messageId: 7, unsubscriptions: ['a/+', 'b'] },
  },
  {
    name: '[v5 3.10.2.1] UNSUBSCRIBE with a User Property',
    v: 5, bytes: pkt(0xa2, u16(8), props(userProp('x', 'y')), lenPrefixed('c/#')),
    fields: { messageId: 8, unsubscriptions: ['c/#'], properties: { userProperties: { x: 'y' } } },
  },
  { name: '[v4 MQTT-3.10.3-2] UNSUBSCRIBE without a topic filter → 0x82', v: 4, rc: 0x82, bytes: pkt(0xa2, u16(1)) },
  { name: '[v5 MQTT-3.10.3-2] UNSUBSCRIBE without a topic filter → 0x82', v: 5, rc: 0x82, bytes: pkt(0xa2, u16(1), props()) },
  { name: '[v4 MQTT-2.2.2-1] UNSUBSCRIBE flags 0000 → 0x81', v: 4, rc: 0x81, bytes: pkt(0xa0, u16(1), lenPrefixed('a')) },
  { name: '[v4 MQTT-2.3.1-1] UNSUBSCRIBE packet id 0 → 0x82', v: 4, rc: 0x82, bytes: pkt(0xa2, u16(0), lenPrefixed('a')) },
  { name: '[v5 MQTT-1.5.4-1] UNSUBSCRIBE filter with ill-formed UTF-8 → 0x81', v: 5, rc: 0x81, bytes: pkt(0xa2, u16(1), props(), lenPrefixed([0xc0, 0xaf])) },
  { name: '[v5 2.2.2.2] UNSUBSCRIBE with a Subscription Identifier → 0x81', v: 5, rc: 0x81, bytes: pkt(0xa2, u16(1), props([0x0b, 1]), lenPrefixed('a')) },

  // ----- PINGREQ / DISCONNECT / AUTH / reserved ------------------------------
  { name: '[v4 3.12] PINGREQ', v: 4, bytes: [0xc0, 0x00], fields: { cmd: 'pingreq' } },
  { name: '[v5 3.12] PINGREQ', v: 5, bytes: [0xc0, 0x00], fields: { cmd: 'pingreq' } },
  { name: '[v4 MQTT-2.2.2-1] PINGREQ flags 0001 → 0x81', v: 4, rc: 0x81, bytes: [0xc1, 0x00] },
  { name: '[v4 3.12.1] PINGREQ with a body → 0x81', v: 4, rc: 0x81, bytes: [0xc0, 0x01, 0x00] },
  { name: '[v4 3.14] DISCONNECT', v: 4, bytes: [0xe0, 0x00], fields: { cmd: 'disconnect' } },
  { name: '[v4 3.14.1] DISCONNECT with a body → 0x81', v: 4, rc: 0x81, bytes: [0xe0, 0x01, 0x00] },
  { name: '[v4 MQTT-2.2.2-1] DISCONNECT flags 0010 → 0x81', v: 4, rc: 0x81, bytes: [0xe2, 0x00] },
  {
    name: '[v5 3.14.2.1] DISCONNECT with no reason code means 0x00',
    v: 5, bytes: [0xe0, 0x00], fields: { cmd: 'disconnect', reasonCode: 0 }, encoded: [0xe0, 0x02, 0x00, 0x00],
  },
  {
    name: '[v5 3.14.2.2] DISCONNECT 0x04 with Session Expiry Interval',
    v: 5, bytes: pkt(0xe0, [0x04], props([0x11, ...u32(120)])),
    fields: { reasonCode: 4, properties: { sessionExpiryInterval: 120 } },
  },
  { name: '[v5 2.2.2.2] DISCONNECT with a Topic Alias property → 0x81', v: 5, rc: 0x81, bytes: pkt(0xe0, [0x00], props([0x23, 0, 1])) },
  { name: '[v5 3.14.2.1] DISCONNECT with an undefined reason code 0x05 → 0x81', v: 5, rc: 0x81, bytes: [0xe0, 0x01, 0x05] },
  { name: '[v5 3.15] AUTH with no reason code means 0x00', v: 5, bytes: [0xf0, 0x00], fields: { cmd: 'auth', reasonCode: 0 }, enc: null },
  {
    name: '[v5 3.15.2.2] AUTH 0x18 with Authentication Method and Data',
    v: 5, bytes: pkt(0xf0, [0x18], props([0x15, ...lenPrefixed('SCRAM')], [0x16, ...lenPrefixed([9, 9])])),
    fields: { cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'SCRAM', authenticationData: Buffer.from([9, 9]) } },
  },
  { name: '[v5 MQTT-2.1.3-1] AUTH flags 0001 → 0x81', v: 5, rc: 0x81, bytes: [0xf1, 0x00] },
  { name: '[v5 2.2.2.2] AUTH with a Receive Maximum property → 0x81', v: 5, rc: 0x81, bytes: pkt(0xf0, [0x18], props([0x21, 0, 1])) },
  { name: '[v4 2.2.1] packet type 15 before 5.0 → 0x81', v: 4, rc: 0x81, bytes: [0xf0, 0x00] },
  { name: '[v4 2.2.1] packet type 0 → 0x81', v: 4, rc: 0x81, bytes: [0x00, 0x00] },
  { name: '[v5 2.1.2] packet type 0 → 0x81', v: 5, rc: 0x81, bytes: [0x00, 0x00] },
  { name: '[v4 2.2.3] remaining length smaller than the frame → 0x81', v: 4, rc: 0x81, bytes: [0xc0, 0x00, 0x00] },
  { name: '[v4 2.2.3] remaining length cut short → 0x81', v: 4, rc: 0x81, bytes: [0x30, 0x80] },
  { name: '[v4] one-byte frame → 0x81', v: 4, rc: 0x81, bytes: [0xc0] },
];

// ---------------------------------------------------------------------------

/** Null-prototype objects (mqtt-packet userProperties) → plain objects, for deepEqual. */
function plain(x: unknown): unknown {
  if (Buffer.isBuffer(x) || x === null || typeof x !== 'object') return x;
  if (Array.isArray(x)) return x.map(plain);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(x)) out[k] = plain(v);
  return out;
}

for (const g of G) {
  test(g.name, () => {
    const frame = Buffer.from(g.bytes);
    const r = decodeFrame(frame, g.v);
    if (g.rc !== undefined) {
      assert.equal(r.ok, false, `expected refusal 0x${g.rc.toString(16)}, got ${JSON.stringify(r)}`);
      if (r.ok) return;
      assert.equal(r.reasonCode, g.rc, `reason code (message: ${r.message})`);
      assert.ok(r.message.length > 0);
      return;
    }
    assert.equal(r.ok, true, r.ok ? '' : `unexpected refusal 0x${r.reasonCode.toString(16)}: ${r.message}`);
    if (!r.ok) return;
    const p = plain(r.packet) as Record<string, unknown>;
    for (const [k, want] of Object.entries(g.fields ?? {})) {
      assert.deepEqual(p[k], plain(want), `field ${k}`);
    }
    if (g.enc === null) return;
    const level = g.enc ?? (g.v === 0 ? ((r.packet as { protocolVersion?: 3 | 4 | 5 }).protocolVersion ?? 4) : g.v);
    const out = encode(r.packet, level);
    assert.deepEqual([...out], g.encoded ?? g.bytes, 're-encoded bytes');
  });
}

// ---------------------------------------------------------------------------
// codec behaviour beyond the table

test('[v5] the parser is reusable after mqtt-packet rejects a frame', () => {
  const badFrame = Buffer.from([0x40, 0x03, 0x00, 0x05, 0x05]); // PUBACK, undefined reason code
  const good = Buffer.from(pkt(0x30, lenPrefixed('ok'), props(), bytes('1')));
  for (let i = 0; i < 3; i++) {
    const b = decodeFrame(badFrame, 5);
    assert.equal(b.ok, false);
    const r = decodeFrame(good, 5);
    assert.ok(r.ok);
    assert.equal((r.packet as { topic: string }).topic, 'ok');
  }
});

test('[v0] consecutive CONNECTs of different levels decode with their own level', () => {
  const c5 = Buffer.from(pkt(0x10, connectHead('MQTT', 5, 0x02), props([0x11, ...u32(9)]), lenPrefixed('a')));
  const c4 = Buffer.from(pkt(0x10, connectHead('MQTT', 4, 0x02), lenPrefixed('b')));
  const c3 = Buffer.from(pkt(0x10, connectHead('MQIsdp', 3, 0x02), lenPrefixed('c')));
  for (const [f, lvl, id] of [[c5, 5, 'a'], [c4, 4, 'b'], [c3, 3, 'c'], [c5, 5, 'a']] as const) {
    const r = decodeFrame(f, 0);
    assert.ok(r.ok);
    const p = r.packet as { protocolVersion: number; clientId: string; properties?: unknown };
    assert.equal(p.protocolVersion, lvl);
    assert.equal(p.clientId, id);
    assert.equal(p.properties !== undefined, lvl === 5);
  }
  // Level-4 packets after a v5 CONNECT went through slot 0 still decode as 3.1.1.
  const pub = decodeFrame(Buffer.from(pkt(0x30, lenPrefixed('t'), bytes('x'))), 4);
  assert.ok(pub.ok);
  assert.deepEqual((pub.packet as { payload: Buffer }).payload, Buffer.from('x'));
});

test('decoded PUBLISH payload is a view of the frame (no copy)', () => {
  const frame = Buffer.from(pkt(0x30, lenPrefixed('t'), bytes('payload')));
  const r = decodeFrame(frame, 4);
  assert.ok(r.ok);
  const payload = (r.packet as { payload: Buffer }).payload;
  assert.equal(payload.buffer, frame.buffer);
  assert.equal(payload.byteOffset, frame.byteOffset + 5);
});

test('[v5 3.4.2.1] encode: acks / DISCONNECT without reasonCode are sent as success', () => {
  assert.deepEqual([...encode({ cmd: 'puback', messageId: 1 }, 5)], [0x40, 0x02, 0x00, 0x01]);
  assert.deepEqual([...encode({ cmd: 'pubrel', messageId: 1 }, 5)], [0x62, 0x02, 0x00, 0x01]);
  assert.deepEqual([...encode({ cmd: 'disconnect' }, 5)], [0xe0, 0x02, 0x00, 0x00]);
  assert.deepEqual([...encode({ cmd: 'puback', messageId: 1 }, 4)], [0x40, 0x02, 0x00, 0x01]);
});

test('[v4 3.2] encode CONNACK (3.1.1 return code) and [v5 3.2] CONNACK with properties', () => {
  assert.deepEqual([...encode({ cmd: 'connack', sessionPresent: true, returnCode: 0 }, 4)], [0x20, 0x02, 0x01, 0x00]);
  assert.deepEqual([...encode({ cmd: 'connack', sessionPresent: false, returnCode: RC_V3.NOT_AUTHORIZED }, 3)], [0x20, 0x02, 0x00, 0x05]);
  const c5 = encode({ cmd: 'connack', sessionPresent: false, reasonCode: RC.BAD_USER_OR_PASSWORD, properties: { reasonString: 'x' } }, 5);
  assert.deepEqual([...c5], [0x20, 0x07, 0x00, 0x86, 0x04, 0x1f, 0x00, 0x01, 0x78]);
});

test('[v5 3.9] encode SUBACK with reason codes; [v4 3.9] SUBACK with failure 0x80', () => {
  assert.deepEqual([...encode({ cmd: 'suback', messageId: 2, granted: [0, 1, 0x8f] }, 5)], [0x90, 0x06, 0x00, 0x02, 0x00, 0x00, 0x01, 0x8f]);
  assert.deepEqual([...encode({ cmd: 'suback', messageId: 2, granted: [2, 0x80] }, 4)], [0x90, 0x04, 0x00, 0x02, 0x02, 0x80]);
});

test('encode throws on a packet mqtt-packet cannot encode', () => {
  assert.throws(() => encode({ cmd: 'publish', topic: 't', payload: 'x', qos: 1, dup: false, retain: false } as Packet, 4));
});

test('[v4] a frame that reaches mqtt-packet is decoded identically to a direct parse of encode()', () => {
  const pkts: Packet[] = [
    { cmd: 'publish', topic: 'a/b/c', payload: Buffer.from('xyz'), qos: 2, messageId: 77, dup: false, retain: true },
    { cmd: 'subscribe', messageId: 5, subscriptions: [{ topic: '+/x/#', qos: 1 }] },
    { cmd: 'unsubscribe', messageId: 6, unsubscriptions: ['+/x/#'] },
  ];
  for (const p of pkts) {
    const r = decodeFrame(encode(p, 4), 4);
    assert.ok(r.ok, JSON.stringify(p));
    const d = r.packet as unknown as Record<string, unknown>;
    for (const [k, v] of Object.entries(p)) assert.deepEqual(plain(d[k]), plain(v), `${p.cmd}.${k}`);
  }
});

// ---------------------------------------------------------------------------
// helpers exported by validate.ts / reason-codes.ts

test('[MQTT-1.5.4-1] scanUtf8 accepts boundary code points and rejects ill-formed sequences', () => {
  const ok = ['', 'abc', '\u0080', '\u07ff', '\u0800', '\ud7ff', '\ue000', '\uffff', '\u{10000}', '\u{10ffff}', 'añ€😀'];
  for (const s of ok) {
    const b = Buffer.from(s, 'utf8');
    assert.equal(scanUtf8(b, 0, b.length), 0, JSON.stringify(s));
  }
  const bad: number[][] = [
    [0x80], [0xbf], [0xc0, 0x80], [0xc1, 0xbf], [0xc2], [0xc2, 0x41], [0xe0, 0x80, 0x80], [0xe0, 0x9f, 0xbf],
    [0xed, 0xa0, 0x80], [0xed, 0xbf, 0xbf], [0xe1, 0x80], [0xf0, 0x80, 0x80, 0x80], [0xf0, 0x8f, 0xbf, 0xbf],
    [0xf4, 0x90, 0x80, 0x80], [0xf5, 0x80, 0x80, 0x80], [0xff], [0xf0, 0x9f, 0x98], [0x61, 0xe2, 0x82],
  ];
  for (const b of bad) assert.equal(scanUtf8(Buffer.from(b), 0, b.length) & UTF8_BAD, UTF8_BAD, JSON.stringify(b));
  assert.equal(scanUtf8(Buffer.from([0x61, 0x00]), 0, 2), UTF8_NUL);
  assert.equal(scanUtf8(Buffer.from('a/+'), 0, 3), UTF8_WILDCARD);
  assert.equal(scanUtf8(Buffer.from('#\0'), 0, 2), UTF8_WILDCARD | UTF8_NUL);
  // range arguments are honoured
  assert.equal(scanUtf8(Buffer.from([0xff, 0x61, 0xff]), 1, 2), 0);
  assert.equal(isValidMqttUtf8(Buffer.from('héllo')), true);
  assert.equal(isValidMqttUtf8(Buffer.from([0x00])), false);
});

test('connectProtocolLevel reads the level of supported CONNECTs only', () => {
  assert.equal(connectProtocolLevel(Buffer.from(pkt(0x10, connectHead('MQTT', 5, 0x02), props(), lenPrefixed('x')))), 5);
  assert.equal(connectProtocolLevel(Buffer.from(pkt(0x10, connectHead('MQTT', 4, 0x03), lenPrefixed('x')))), 4);
  assert.equal(connectProtocolLevel(Buffer.from(pkt(0x10, connectHead('MQIsdp', 3, 0x02), lenPrefixed('x')))), 3);
  assert.equal(connectProtocolLevel(Buffer.from(pkt(0x10, connectHead('MQTT', 6, 0x02), lenPrefixed('x')))), null);
  assert.equal(connectProtocolLevel(Buffer.from(pkt(0x10, connectHead('MQIsdp', 4, 0x02), lenPrefixed('x')))), null);
  assert.equal(connectProtocolLevel(Buffer.from([0x10, 0x02, 0x00, 0x04])), null);
  assert.equal(connectProtocolLevel(Buffer.from([0xc0, 0x00])), null);
});

test('checkFrame returns null for a valid frame and refuses every truncation of it', () => {
  // [frame bytes, connection state, shortest valid body length]
  const frames: [number[], 0 | 5, number][] = [
    [pkt(0x10, connectHead('MQTT', 5, 0xe6), props([0x11, ...u32(1)], userProp('a', 'b')), lenPrefixed('id'), props([0x18, ...u32(1)]), lenPrefixed('w'), lenPrefixed('p'), lenPrefixed('u'), lenPrefixed('pw')), 0, Infinity],
    // PUBLISH: a body cut right after the properties is a valid empty payload.
    [pkt(0x32, lenPrefixed('t/1'), u16(1), props([0x23, 0, 1]), bytes('data')), 5, 5 + 2 + 4],
    [pkt(0x82, u16(1), props([0x0b, 5]), lenPrefixed('a/#'), [0x01]), 5, Infinity],
    [pkt(0xa2, u16(1), props(userProp('k', 'v')), lenPrefixed('a/#')), 5, Infinity],
  ];
  for (const [i, [f, v, minValid]] of frames.entries()) {
    assert.equal(checkFrame(Buffer.from(f), v), null, `frame ${i} is valid`);
    // Cut the body short but keep the remaining length consistent with the frame.
    for (let n = 0; n < f.length - 2; n++) {
      const body = f.slice(2, 2 + n);
      const cut = Buffer.from([f[0]!, ...varint(body.length), ...body]);
      const r = checkFrame(cut, v);
      if (n >= minValid) {
        assert.equal(r, null, `frame ${i} cut to ${n} body bytes is still valid`);
        continue;
      }
      assert.ok(r !== null, `frame ${i} cut to ${n} body bytes must be refused`);
      assert.ok(r.reasonCode === 0x81 || r.reasonCode === 0x82, `frame ${i} cut to ${n}: 0x${r.reasonCode.toString(16)} ${r.message}`);
    }
  }
});

test('connackCodeV3 maps 5.0 refusals to 3.1.1 return codes', () => {
  assert.equal(connackCodeV3(RC.SUCCESS), RC_V3.ACCEPTED);
  assert.equal(connackCodeV3(RC.UNSUPPORTED_PROTOCOL_VERSION), 1);
  assert.equal(connackCodeV3(RC.CLIENT_ID_NOT_VALID), 2);
  assert.equal(connackCodeV3(RC.BAD_USER_OR_PASSWORD), 4);
  assert.equal(connackCodeV3(RC.NOT_AUTHORIZED), 5);
  assert.equal(connackCodeV3(RC.SERVER_UNAVAILABLE), 3);
  assert.equal(connackCodeV3(RC.SERVER_BUSY), 3);
  assert.equal(connackCodeV3(RC.QUOTA_EXCEEDED), 3);
  assert.equal(connackCodeV3(RC.BANNED), 3);
  assert.equal(connackCodeV3(RC.UNSPECIFIED), 3);
});

test('reason code constants match the 5.0 table', () => {
  assert.equal(RC.MALFORMED, 0x81);
  assert.equal(RC.PROTOCOL_ERROR, 0x82);
  assert.equal(RC.TOPIC_NAME_INVALID, 0x90);
  assert.equal(RC.PACKET_TOO_LARGE, 0x95);
  assert.equal(RC.MAX_CONNECT_TIME, 0xa0);
  assert.equal(RC.WILDCARD_SUB_NOT_SUPPORTED, 0xa2);
  assert.equal(RC.DISCONNECT_WITH_WILL, 0x04);
  assert.equal(reasonCodeName(0x87), 'not authorized');
  assert.equal(reasonCodeName(0x7e), 'reason 0x7e');
});
