// Seeded fuzzing of the inbound path.
//
// 1. In-process: FUZZ_FRAMES inputs (random bytes, and valid 3.1.1 / 5.0 packets of
//    every type, encoded then mutated: bit flips, byte insert/delete, truncation,
//    remaining-length corruption, random property blocks, splices) go through a Framer
//    (whole, and split into random chunks: both must agree) and every frame through
//    decodeFrame at version 0 and at the packet's level; the raw input also goes to
//    decodeFrame directly. Nothing may throw; every result is a packet of the frame's
//    type or an error with a reason code from the documented set; an accepted
//    client-to-server packet survives encode + decode (the broker forwards what it took).
// 2. Over real sockets: SOCKET_CONNS connections to an in-process broker, each sending a
//    valid CONNECT and then a batch of mutated frames, while a 3.1.1 and a 5.0 subscriber
//    to '#' receive whatever is routed. Afterwards no uncaught exception was recorded, no
//    connection / session / subscription leaked, both subscribers are still connected,
//    and a normal MQTT.js client still connects, subscribes and receives.
//
// Each input is generated from (seed, index) alone: FUZZ_SEED=<n> reruns a seed, and a
// failure names the seed and index. FUZZ_FRAMES overrides the in-process count.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import mqtt from 'mqtt';
import { Framer, type FrameError } from '../src/protocol/framer.js';
import { decodeFrame, encode, type Packet, type QoS } from '../src/protocol/codec.js';
import { startBroker, waitFor, type TestBroker } from './helpers/broker.js';
import { frame, varintBuffer } from './helpers/packets.js';
import { RawClient } from './helpers/raw-client.js';
import { mulberry32 } from './helpers/prng.js';

const SEED = Number(process.env['FUZZ_SEED'] ?? 0x5eed_f00d) >>> 0;
const FUZZ_FRAMES = Number(process.env['FUZZ_FRAMES'] ?? 100_000);
const SOCKET_CONNS = 100;
const FRAMES_PER_CONN = 20;
const SOCKET_PARALLEL = 10;

// ---------------------------------------------------------------- PRNG

class Rng {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
}

// ---------------------------------------------------------------- valid packets

const PIECES = ['a', 'b', 'fuzz', 'x', 'sensor', '0', 'é', '中', '😀', '$SYS', ' ', 'long-topic-level'];

function text(r: Rng, max = 3): string {
  const n = r.range(0, max);
  let s = '';
  for (let i = 0; i < n; i++) s += r.pick(PIECES);
  return s;
}

function topic(r: Rng): string {
  const n = r.range(1, 4);
  const parts = ['fuzz'];
  for (let i = 1; i < n; i++) parts.push(text(r, 2));
  return parts.join('/');
}

function filter(r: Rng): string {
  const t = topic(r).split('/');
  if (r.chance(0.3)) t[r.int(t.length)] = '+';
  if (r.chance(0.3)) t.push('#');
  const f = t.join('/');
  return r.chance(0.1) ? `$share/g${r.int(3)}/${f}` : f;
}

function userProps(r: Rng): Record<string, string | string[]> | undefined {
  if (!r.chance(0.3)) return undefined;
  const o: Record<string, string | string[]> = {};
  const n = r.range(1, 3);
  for (let i = 0; i < n; i++) o[text(r) || 'k'] = r.chance(0.2) ? [text(r), text(r)] : text(r);
  return o;
}

/** Removes undefined values so that mqtt-packet does not try to encode them. */
function clean<T extends Record<string, unknown>>(o: T): T {
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
  return o;
}

function maybe<T>(r: Rng, p: number, f: () => T): T | undefined {
  return r.chance(p) ? f() : undefined;
}

const TYPES = [
  'connect', 'connack', 'publish', 'puback', 'pubrec', 'pubrel', 'pubcomp', 'subscribe', 'suback',
  'unsubscribe', 'unsuback', 'pingreq', 'pingresp', 'disconnect', 'auth',
] as const;

function validPacket(r: Rng, v: 4 | 5, type: (typeof TYPES)[number]): Packet {
  const v5 = v === 5;
  const id = r.range(1, 65535);
  const ackProps = () => (v5 ? maybe(r, 0.4, () => clean({ reasonString: maybe(r, 0.5, () => text(r)), userProperties: userProps(r) })) : undefined);
  switch (type) {
    case 'connect': {
      const will = maybe(r, 0.4, () => clean({
        topic: topic(r), payload: r.bytes(r.int(20)), qos: r.int(3) as QoS, retain: r.chance(0.5),
        properties: v5 ? maybe(r, 0.5, () => clean({
          willDelayInterval: maybe(r, 0.5, () => r.int(100)),
          payloadFormatIndicator: maybe(r, 0.3, () => r.chance(0.5)),
          messageExpiryInterval: maybe(r, 0.3, () => r.int(1000)),
          contentType: maybe(r, 0.3, () => text(r)),
          responseTopic: maybe(r, 0.3, () => topic(r)),
          correlationData: maybe(r, 0.3, () => r.bytes(r.int(8))),
          userProperties: userProps(r),
        })) : undefined,
      }));
      const username = maybe(r, 0.4, () => text(r));
      const cleanStart = r.chance(0.7);
      return clean({
        cmd: 'connect', protocolId: 'MQTT', protocolVersion: v, clean: cleanStart, clientId: text(r) || (cleanStart ? '' : 'c'),
        keepalive: r.int(600), username, password: username !== undefined ? maybe(r, 0.5, () => r.bytes(r.int(12))) : undefined,
        will,
        properties: v5 ? maybe(r, 0.6, () => clean({
          sessionExpiryInterval: maybe(r, 0.4, () => r.int(100000)),
          receiveMaximum: maybe(r, 0.3, () => r.range(1, 65535)),
          maximumPacketSize: maybe(r, 0.3, () => r.range(1, 1 << 20)),
          topicAliasMaximum: maybe(r, 0.3, () => r.int(100)),
          requestResponseInformation: maybe(r, 0.3, () => r.chance(0.5)),
          requestProblemInformation: maybe(r, 0.3, () => r.chance(0.5)),
          userProperties: userProps(r),
        })) : undefined,
      }) as Packet;
    }
    case 'connack':
      return v5
        ? clean({ cmd: 'connack', sessionPresent: r.chance(0.5), reasonCode: r.pick([0, 0x80, 0x85, 0x87, 0x97]),
          properties: maybe(r, 0.5, () => clean({ maximumPacketSize: maybe(r, 0.5, () => r.range(1, 1 << 20)), assignedClientIdentifier: maybe(r, 0.3, () => text(r)), reasonString: maybe(r, 0.3, () => text(r)) })) }) as Packet
        : { cmd: 'connack', sessionPresent: r.chance(0.5), returnCode: r.int(6) } as Packet;
    case 'publish': {
      const qos = r.int(3) as QoS;
      return clean({
        cmd: 'publish', topic: topic(r), payload: r.bytes(r.int(40)), qos, retain: r.chance(0.2), dup: qos > 0 && r.chance(0.2),
        messageId: qos > 0 ? id : undefined,
        properties: v5 ? maybe(r, 0.5, () => clean({
          payloadFormatIndicator: maybe(r, 0.3, () => r.chance(0.5)),
          messageExpiryInterval: maybe(r, 0.3, () => r.int(1000)),
          topicAlias: maybe(r, 0.2, () => r.range(1, 20)),
          responseTopic: maybe(r, 0.2, () => topic(r)),
          correlationData: maybe(r, 0.2, () => r.bytes(r.int(8))),
          contentType: maybe(r, 0.2, () => text(r)),
          subscriptionIdentifier: maybe(r, 0.2, () => r.range(1, 1 << 20)),
          userProperties: userProps(r),
        })) : undefined,
      }) as Packet;
    }
    case 'puback':
    case 'pubrec':
    case 'pubrel':
    case 'pubcomp':
      return clean({ cmd: type, messageId: id, reasonCode: v5 ? maybe(r, 0.5, () => r.pick([0, 0x10, 0x80, 0x92])) : undefined, properties: ackProps() }) as Packet;
    case 'subscribe':
      return clean({
        cmd: 'subscribe', messageId: id,
        subscriptions: Array.from({ length: r.range(1, 3) }, () => clean({
          topic: filter(r), qos: r.int(3) as QoS,
          nl: v5 ? maybe(r, 0.3, () => r.chance(0.5)) : undefined,
          rap: v5 ? maybe(r, 0.3, () => r.chance(0.5)) : undefined,
          rh: v5 ? maybe(r, 0.3, () => r.int(3)) : undefined,
        })),
        properties: v5 ? maybe(r, 0.4, () => clean({ subscriptionIdentifier: maybe(r, 0.6, () => r.range(1, 1 << 20)), userProperties: userProps(r) })) : undefined,
      }) as Packet;
    case 'suback':
      return clean({ cmd: 'suback', messageId: id, granted: Array.from({ length: r.range(1, 3) }, () => r.pick([0, 1, 2, 0x80])), properties: ackProps() }) as Packet;
    case 'unsubscribe':
      return clean({
        cmd: 'unsubscribe', messageId: id, unsubscriptions: Array.from({ length: r.range(1, 3) }, () => filter(r)),
        properties: v5 ? maybe(r, 0.3, () => clean({ userProperties: userProps(r) ?? { k: 'v' } })) : undefined,
      }) as Packet;
    case 'unsuback':
      return clean({ cmd: 'unsuback', messageId: id, granted: v5 ? [r.pick([0, 0x11])] : undefined, properties: ackProps() }) as Packet;
    case 'pingreq':
    case 'pingresp':
      return { cmd: type } as Packet;
    case 'disconnect':
      return clean({
        cmd: 'disconnect', reasonCode: v5 ? r.pick([0, 4, 0x80, 0x8b]) : undefined,
        properties: v5 ? maybe(r, 0.4, () => clean({ sessionExpiryInterval: maybe(r, 0.4, () => r.int(1000)), reasonString: maybe(r, 0.4, () => text(r)), serverReference: maybe(r, 0.2, () => text(r)) })) : undefined,
      }) as Packet;
    case 'auth':
      return clean({
        cmd: 'auth', reasonCode: r.pick([0, 0x18, 0x19]),
        properties: maybe(r, 0.7, () => clean({ authenticationMethod: maybe(r, 0.8, () => text(r) || 'm'), authenticationData: maybe(r, 0.5, () => r.bytes(r.int(8))), reasonString: maybe(r, 0.2, () => text(r)) })),
      }) as Packet;
  }
}

// ---------------------------------------------------------------- mutations

/** Header length of an encoded packet (type byte + remaining-length bytes), if sane. */
function headerLen(b: Buffer): number {
  let i = 1;
  while (i < b.length && i < 5 && (b[i]! & 0x80) !== 0) i++;
  return Math.min(i + 1, b.length);
}

/** A random 5.0 property block: known or random identifiers, values well- or ill-formed. */
function randomProps(r: Rng): Buffer {
  const parts: Buffer[] = [];
  const n = r.range(0, 4);
  for (let i = 0; i < n; i++) {
    const id = r.chance(0.85) ? r.pick([0x01, 0x02, 0x03, 0x08, 0x09, 0x0b, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1c, 0x1f, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a]) : r.int(256);
    parts.push(Buffer.from([id]));
    switch (r.int(6)) {
      case 0: parts.push(Buffer.from([r.chance(0.8) ? r.int(2) : r.int(256)])); break; // byte
      case 1: parts.push(r.bytes(2)); break; // two-byte integer
      case 2: parts.push(r.bytes(4)); break; // four-byte integer
      case 3: parts.push(r.chance(0.8) ? varintBuffer(r.int(1 << 21)) : r.bytes(r.range(1, 5))); break; // varint
      case 4: { // string / binary
        const body = r.chance(0.7) ? Buffer.from(text(r)) : r.bytes(r.int(6));
        parts.push(Buffer.from([0, r.chance(0.9) ? body.length : r.int(256)]), body);
        break;
      }
      default: { // pair
        const k = Buffer.from(text(r));
        const v = r.chance(0.8) ? Buffer.from(text(r)) : r.bytes(r.int(4));
        parts.push(Buffer.from([0, k.length]), k, Buffer.from([0, v.length]), v);
      }
    }
  }
  const block = Buffer.concat(parts);
  const len = r.chance(0.85) ? block.length : Math.max(0, block.length + r.range(-2, 2));
  return Buffer.concat([varintBuffer(len), block]);
}

/** Offset of the property block in a 5.0 packet, where easy to find; -1 otherwise. */
function propsOffset(b: Buffer): number {
  const h = headerLen(b);
  const type = b[0]! >> 4;
  switch (type) {
    case 3: { // PUBLISH: topic, [id], props
      if (h + 2 > b.length) return -1;
      const qos = (b[0]! >> 1) & 3;
      return h + 2 + ((b[h]! << 8) | b[h + 1]!) + (qos > 0 ? 2 : 0);
    }
    case 4: case 5: case 6: case 7: return h + 3; // id, reason code, props
    case 8: case 10: return h + 2; // id, props
    case 9: case 11: return h + 2;
    case 14: case 15: return h + 1; // reason code, props
    case 2: return h + 2; // flags, reason code
    default: return -1;
  }
}

function mutate(r: Rng, pkt: Buffer, v: 4 | 5, other: () => Buffer, maxRounds = 3): Buffer {
  let b: Buffer = Buffer.from(pkt);
  const rounds = r.range(1, maxRounds);
  for (let k = 0; k < rounds; k++) {
    switch (r.int(9)) {
      case 0: { // bit flips
        const n = r.range(1, 3);
        for (let i = 0; i < n && b.length > 0; i++) b[r.int(b.length)]! ^= 1 << r.int(8);
        break;
      }
      case 1: { // byte insert
        const at = r.int(b.length + 1);
        b = Buffer.concat([b.subarray(0, at), r.bytes(r.range(1, 4)), b.subarray(at)]);
        break;
      }
      case 2: { // byte delete
        if (b.length === 0) break;
        const at = r.int(b.length);
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + r.range(1, 4))]);
        break;
      }
      case 3: // truncation
        b = b.subarray(0, r.int(b.length + 1));
        break;
      case 4: { // remaining-length corruption
        const h = headerLen(b);
        const body = b.subarray(h);
        const rl = r.pick([
          () => varintBuffer(Math.max(0, body.length + r.range(-3, 3))),
          () => varintBuffer(r.int(1 << 28)),
          () => r.bytes(r.range(1, 5)),
          () => Buffer.from([0x80 | r.int(128), 0x00]), // not minimal
          () => Buffer.from([0xff, 0xff, 0xff, 0xff, 0x7f]), // 5 bytes
        ])();
        b = Buffer.concat([b.subarray(0, 1), rl, body]);
        break;
      }
      case 5: { // body edit keeping the remaining length right
        const h = headerLen(b);
        const body = Buffer.from(b.subarray(h));
        if (body.length > 0) body[r.int(body.length)] = r.pick([0x00, 0xff, 0xc0, 0xed, 0x23, 0x2b, r.int(256)]);
        b = frame(b[0] ?? 0x30, body);
        break;
      }
      case 6: { // random property block (5.0), or a random fixed-header flag nibble
        const at = v === 5 ? propsOffset(b) : -1;
        if (at >= 0 && at <= b.length) {
          const h = headerLen(b);
          // Replace the existing block when it parses as a varint length, else insert.
          let end = at;
          if (at < b.length) {
            let n = 0;
            let mul = 1;
            let i = at;
            while (i < b.length && i < at + 4) {
              const c = b[i++]!;
              n += (c & 0x7f) * mul;
              mul *= 128;
              if (c < 0x80) break;
            }
            end = Math.min(b.length, i + n);
          }
          const body = Buffer.concat([b.subarray(h, at), randomProps(r), b.subarray(end)]);
          b = frame(b[0]!, body);
        } else if (b.length > 0) {
          b[0] = (b[0]! & 0xf0) | r.int(16);
        }
        break;
      }
      case 7: { // splice with another packet
        const o = other();
        b = r.chance(0.5) ? Buffer.concat([b, o]) : Buffer.concat([b.subarray(0, r.int(b.length + 1)), o.subarray(r.int(o.length + 1))]);
        break;
      }
      default: { // type nibble swap (packet of one type with the body of another)
        if (b.length > 0) b[0] = (r.int(16) << 4) | (b[0]! & 0x0f);
      }
    }
  }
  return b;
}

interface Input {
  version: 4 | 5;
  kind: string;
  bytes: Buffer;
}

/** What a client sends on a live connection (no CONNECT, nothing server-only). */
const LIVE_TYPES = ['publish', 'publish', 'publish', 'puback', 'pubrec', 'pubrel', 'pubcomp', 'subscribe', 'unsubscribe', 'pingreq'] as const;

function encodeValid(r: Rng, v: 4 | 5, live = false): { type: string; bytes: Buffer } {
  const types = live ? LIVE_TYPES : v === 5 ? TYPES : TYPES.filter((t) => t !== 'auth');
  const type = r.pick(types);
  // mqtt-packet refuses a few field combinations the generator may produce: draw again.
  for (let i = 0; ; i++) {
    try {
      return { type, bytes: encode(validPacket(r, v, type), v) };
    } catch (e) {
      if (i === 10) throw e;
    }
  }
}

/**
 * The input number `index` of seed `seed` (deterministic). `live` (socket phase, after a
 * CONNECT): only packets a connected client sends, a third unmutated and the rest with a
 * single mutation, so that a connection lives long enough for mutated packets that pass
 * validation to be routed.
 */
function makeInput(seed: number, index: number, forceVersion?: 4 | 5, live = false): Input {
  const r = new Rng((seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0);
  const version: 4 | 5 = forceVersion ?? (r.chance(0.5) ? 5 : 4);
  if (live) {
    const { type, bytes } = encodeValid(r, version, true);
    if (r.chance(0.33)) return { version, kind: `valid ${type}`, bytes };
    return { version, kind: `mutated ${type}`, bytes: mutate(r, bytes, version, () => encodeValid(r, version, true).bytes, 1) };
  }
  const roll = r.int(100);
  if (roll < 8) {
    // Random bytes, with a plausible fixed header half of the time.
    const body = r.bytes(r.int(64));
    const bytes = r.chance(0.5) ? frame(r.int(256), body) : body;
    return { version, kind: 'random', bytes };
  }
  const { type, bytes } = encodeValid(r, version);
  if (roll < 15) return { version, kind: `valid ${type}`, bytes };
  return { version, kind: `mutated ${type}`, bytes: mutate(r, bytes, version, () => encodeValid(r, version).bytes) };
}

// ---------------------------------------------------------------- in-process oracle

const TYPE_CMD = [
  '', 'connect', 'connack', 'publish', 'puback', 'pubrec', 'pubrel', 'pubcomp',
  'subscribe', 'suback', 'unsubscribe', 'unsuback', 'pingreq', 'pingresp', 'disconnect', 'auth',
];
/** Packets a client may send (CONNACK / SUBACK / UNSUBACK / PINGRESP are refused by type). */
const CLIENT_TYPES = new Set(['connect', 'publish', 'puback', 'pubrec', 'pubrel', 'pubcomp', 'subscribe', 'unsubscribe', 'pingreq', 'disconnect', 'auth']);
const DECODE_CODES = new Set([0x81, 0x82, 0x84, 0x90]);
const FRAMER_CODES = new Set([0x81, 0x95]);

function feed(input: Buffer, maxSize: number, cuts: number[]): { frames: Buffer[]; err: FrameError | null } {
  const f = new Framer(maxSize);
  const frames: Buffer[] = [];
  let err: FrameError | null = null;
  let prev = 0;
  for (const c of [...cuts, input.length]) {
    // A fresh copy per chunk: the Framer may keep references to what it is given.
    err = f.push(Buffer.from(input.subarray(prev, c)), (fr) => {
      frames.push(Buffer.from(fr));
    });
    prev = c;
    if (err) break;
  }
  return { frames, err };
}

/** Runs one input through the in-process path; returns a failure description or null. */
function checkInput(seed: number, index: number, stats: Record<string, number>): string | null {
  let input: Input;
  try {
    input = makeInput(seed, index);
  } catch (e) {
    return `generator threw: ${String(e)}`;
  }
  const where = () => `seed=${seed} index=${index} (${input.kind}, v${input.version}) bytes=${input.bytes.subarray(0, 64).toString('hex')}`;
  const r = new Rng((seed ^ 0xabcdef ^ Math.imul(index + 7, 0x85ebca6b)) >>> 0);
  const maxSize = r.pick([0, 64, 2048, 1 << 20]);
  const cuts: number[] = [];
  const nCuts = r.int(4);
  for (let i = 0; i < nCuts; i++) cuts.push(r.int(input.bytes.length + 1));
  cuts.sort((a, b) => a - b);

  let whole: ReturnType<typeof feed>;
  let split: ReturnType<typeof feed>;
  try {
    whole = feed(input.bytes, maxSize, []);
    split = feed(input.bytes, maxSize, cuts);
  } catch (e) {
    return `Framer threw ${String(e)} at ${where()}`;
  }
  if (whole.err && !FRAMER_CODES.has(whole.err.reasonCode)) return `Framer reason 0x${whole.err.reasonCode.toString(16)} at ${where()}`;
  if (whole.frames.length !== split.frames.length || whole.frames.some((fr, i) => !fr.equals(split.frames[i]!)) ||
    (whole.err?.reasonCode ?? 0) !== (split.err?.reasonCode ?? 0)) {
    return `Framer disagrees with itself when the input is split at ${cuts.join(',')}: ${where()}`;
  }
  if (whole.err) stats['framerErrors'] = (stats['framerErrors'] ?? 0) + 1;

  const check = (frame: Buffer, level: 0 | 4 | 5, framed: boolean): string | null => {
    let res: ReturnType<typeof decodeFrame>;
    try {
      res = decodeFrame(frame, level);
    } catch (e) {
      return `decodeFrame(level ${level}) threw ${String(e)} on ${frame.subarray(0, 64).toString('hex')} at ${where()}`;
    }
    if (res.ok) {
      const want = level === 0 ? 'connect' : TYPE_CMD[frame[0]! >> 4];
      if (typeof res.packet !== 'object' || res.packet.cmd !== want) {
        return `decodeFrame(level ${level}) gave ${String(res.packet?.cmd)} for a type ${frame[0]! >> 4} frame at ${where()}`;
      }
      stats['ok'] = (stats['ok'] ?? 0) + 1;
      // What the broker accepts from a client it must be able to encode again (it forwards
      // PUBLISH and will properties): re-encode and decode to the same packet type.
      if (level !== 0 && CLIENT_TYPES.has(res.packet.cmd)) {
        let again: ReturnType<typeof decodeFrame>;
        try {
          again = decodeFrame(encode(res.packet, level), level);
        } catch (e) {
          return `accepted ${res.packet.cmd} cannot be encoded again (${String(e)}) at ${where()}`;
        }
        if (!again.ok || again.packet.cmd !== res.packet.cmd) {
          return `accepted ${res.packet.cmd} does not survive encode/decode (${again.ok ? again.packet.cmd : again.message}) at ${where()}`;
        }
      }
    } else {
      if (!DECODE_CODES.has(res.reasonCode) || typeof res.message !== 'string' || res.message === '') {
        return `decodeFrame(level ${level}) reason 0x${res.reasonCode.toString(16)} "${res.message}" at ${where()}`;
      }
      // A complete frame from the Framer never fails on the remaining length.
      if (framed && /remaining length (cut short|not minimally|longer than|\d+ does not match)/.test(res.message)) return `framed packet refused for its remaining length: ${res.message} at ${where()}`;
      const k = `rc 0x${res.reasonCode.toString(16)}`;
      stats[k] = (stats[k] ?? 0) + 1;
    }
    return null;
  };
  for (const fr of whole.frames) {
    const bad = check(fr, 0, true) ?? check(fr, input.version, true);
    if (bad) return bad;
  }
  return check(input.bytes, input.version, false);
}

// ---------------------------------------------------------------- tests

const uncaught: unknown[] = [];
const onUncaught = (e: unknown) => uncaught.push(e);

describe('fuzz: framer, validation and decoding never throw; the broker survives', { timeout: 120_000 }, () => {
  let b: TestBroker;
  before(async () => {
    process.on('uncaughtException', onUncaught);
    process.on('unhandledRejection', onUncaught);
    b = await startBroker({ mqtt: { max_packet_size: 16 * 1024, connect_timeout_ms: 2000 } });
  });
  after(async () => {
    await b.stop();
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
  });

  test(`[v3.1.1 MQTT-4.8.0-1, v5 MQTT-4.13.1-1] ${FUZZ_FRAMES} random / mutated frames through Framer + decodeFrame (seed ${SEED})`, { timeout: 60_000 }, (t) => {
    const stats: Record<string, number> = {};
    for (let i = 0; i < FUZZ_FRAMES; i++) {
      const bad = checkInput(SEED, i, stats);
      if (bad) assert.fail(bad);
    }
    t.diagnostic(`seed ${SEED}: ${JSON.stringify(stats)}`);
    // The mix must reach both outcomes and several reason codes, else the fuzzer is blind.
    assert.ok((stats['ok'] ?? 0) > FUZZ_FRAMES / 20, 'too few inputs decode');
    for (const k of ['rc 0x81', 'rc 0x82', 'rc 0x90', 'framerErrors']) assert.ok((stats[k] ?? 0) > 0, `never saw ${k}`);
  });

  test(`[v3.1.1 MQTT-4.8.0-1, v5 MQTT-4.13.1-1] ${SOCKET_CONNS} connections × ${FRAMES_PER_CONN} mutated frames over TCP: no crash, no leak, still serving`, { timeout: 60_000 }, async (t) => {
    const ctr = b.counters;
    const malformed0 = ctr.malformedPackets;
    // Well-behaved subscribers to everything: whatever fuzzed PUBLISH the broker accepts is
    // encoded again towards them (5.0 one with outbound topic aliases and a small Maximum
    // Packet Size). Neither may be disconnected by someone else's garbage.
    const subs = [
      (await RawClient.connected(b.port, 4, { clientId: 'fuzz-sub-4', keepalive: 0 } as Partial<Packet>)).c,
      (await RawClient.connected(b.port, 5, {
        clientId: 'fuzz-sub-5', keepalive: 0, properties: { topicAliasMaximum: 5, maximumPacketSize: 512 },
      } as Partial<Packet>)).c,
    ];
    t.after(() => subs.forEach((c) => c.destroy()));
    for (const [i, c] of subs.entries()) {
      c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '#', qos: 0 }] } as Packet);
      assert.equal((await c.next())?.cmd, 'suback', `subscriber ${i}`);
    }
    let closedByBroker = 0;
    const runConn = async (k: number): Promise<void> => {
      const v: 4 | 5 = k % 2 === 0 ? 4 : 5;
      const { c, connack } = await RawClient.connected(b.port, v, { clientId: `fuzz-${k}`, keepalive: 0 } as Partial<Packet>);
      try {
        assert.equal(connack.cmd, 'connack', `connection ${k}`);
        for (let j = 0; j < FRAMES_PER_CONN; j++) {
          if (c.closed) break;
          // Index space past the in-process inputs, so a failure can be replayed. Half the
          // connections get general inputs, half "live" ones (see makeInput).
          c.sendRaw(makeInput(SEED, FUZZ_FRAMES + k * FRAMES_PER_CONN + j, v, k % 4 >= 2).bytes);
        }
        await c.waitClose(300).then(() => closedByBroker++, () => undefined);
      } finally {
        c.destroy();
      }
    };
    let next = 0;
    const worker = async () => {
      while (next < SOCKET_CONNS) await runConn(next++);
    };
    await Promise.all(Array.from({ length: SOCKET_PARALLEL }, worker));
    t.diagnostic(`closed by the broker: ${closedByBroker}/${SOCKET_CONNS}; malformed: ${ctr.malformedPackets - malformed0}`);
    assert.ok(ctr.malformedPackets > malformed0, 'no malformed packet detected over the sockets');
    assert.ok(closedByBroker > SOCKET_CONNS / 2, 'the broker closed too few fuzzed connections');

    // Nothing leaked: every fuzz connection, its (clean) session and its subscriptions are
    // gone; only the two subscribers remain, still connected.
    await waitFor(() => b.connectionCount() === 2, 'all fuzz connections to be released', 5000);
    await waitFor(async () => (await b.sessionIds()).length === 2, 'all fuzz sessions to end', 5000);
    // The `subscriptions` gauge is the subscription index's size, set in the same step that
    // ends a session.
    assert.equal(ctr.subscriptions, 2, 'subscriptions left behind');
    let forwarded = 0;
    for (const c of subs) {
      assert.equal(c.closed, false, 'a well-behaved subscriber was disconnected');
      c.send({ cmd: 'pingreq' } as Packet);
      for (;;) {
        const p = await c.next();
        if (p?.cmd === 'pingresp') break;
        assert.equal(p?.cmd, 'publish');
        forwarded++;
      }
    }
    t.diagnostic(`fuzzed PUBLISH packets forwarded to the subscribers: ${forwarded}`);
    assert.ok(forwarded > 0, 'no fuzzed PUBLISH was ever routed: the socket fuzz is blind');
    subs.forEach((c) => c.end());
    await waitFor(async () => b.connectionCount() === 0 && (await b.sessionIds()).length === 0, 'subscribers to leave');
    assert.deepEqual(uncaught, [], 'uncaught exceptions / unhandled rejections in the broker process');

    // A normal client is still served.
    const m = await mqtt.connectAsync(b.url, { protocolVersion: 5, clientId: 'fuzz-after', reconnectPeriod: 0, connectTimeout: 3000 });
    try {
      await m.subscribeAsync('after/fuzz', { qos: 1 });
      const got = new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no message after the fuzzing')), 3000);
        m.on('message', (topic, payload) => {
          if (topic !== 'after/fuzz') return;
          clearTimeout(timer);
          resolve(payload.toString());
        });
      });
      await m.publishAsync('after/fuzz', 'still alive', { qos: 1 });
      assert.equal(await got, 'still alive');
    } finally {
      await m.endAsync();
    }
    assert.deepEqual(uncaught, []);
  });
});
