// The only place fleetmq touches mqtt-packet. decodeFrame() takes one complete frame
// (from Framer), runs the raw-byte checks, then lets mqtt-packet build the packet
// object; encode() turns a packet object back into bytes.
//
// mqtt-packet conventions worth knowing:
//  - protocol level 3 is MQTT 3.1 ("MQIsdp"): CONNECT carries protocolId 'MQIsdp' and
//    protocolVersion 3; otherwise 3 and 4 encode/decode identically.
//  - 5.0 properties live in `properties` (and `will.properties`) with camelCase names;
//    userProperties values are string | string[]; a decoded packet omits `properties`
//    when the block is empty.
//  - 3.x CONNACK uses `returnCode`, 5.0 uses `reasonCode`. SUBACK codes go in `granted`.
//  - Decoded PUBLISH payloads (and CONNECT will payload / password) are subarrays of the
//    frame, not copies.

import mqttPacket from 'mqtt-packet';
import type { Packet, Parser, QoS } from 'mqtt-packet';
import { checkFrame, type ProtocolLevel } from './validate.js';
import { readUserProperties, type UserPropertyPairs } from './publish.js';

export type {
  Packet,
  PacketCmd,
  QoS,
  UserProperties,
  IPacket,
  IConnectPacket,
  IConnackPacket,
  IPublishPacket,
  IPubackPacket,
  IPubrecPacket,
  IPubrelPacket,
  IPubcompPacket,
  ISubscription,
  ISubscribePacket,
  ISubackPacket,
  IUnsubscribePacket,
  IUnsubackPacket,
  IPingreqPacket,
  IPingrespPacket,
  IDisconnectPacket,
  IAuthPacket,
} from 'mqtt-packet';

/** A decoded 5.0 PUBLISH also carries its User Properties in wire order. */
export type DecodedPublish = import('mqtt-packet').IPublishPacket & { userPropertyPairs?: UserPropertyPairs };

export type DecodeResult =
  | { ok: true; packet: Packet }
  | { ok: false; reasonCode: number; message: string };

const MALFORMED = 0x81;

// Module-wide mqtt-packet setting: 2-byte numbers come from a precomputed cache
// (65536 tiny Buffers, built once on first encode) instead of a fresh allocation.
mqttPacket.writeToStream.cacheNumbers = true;

interface ParserSlot {
  parser: Parser;
  version: ProtocolLevel | 0;
  packet: Packet | null;
  error: Error | null;
}

/** One parser per protocol level (index 0 = before CONNECT), created lazily. */
const slots: (ParserSlot | undefined)[] = [];

function makeSlot(version: ProtocolLevel | 0): ParserSlot {
  const slot: ParserSlot = {
    parser: mqttPacket.parser({ protocolVersion: version === 0 ? 4 : version }),
    version,
    packet: null,
    error: null,
  };
  slot.parser.on('packet', (p: Packet) => {
    slot.packet = p;
  });
  slot.parser.on('error', (e: unknown) => {
    if (slot.error === null) slot.error = e instanceof Error ? e : new Error(String(e));
  });
  slots[version] = slot;
  return slot;
}

/**
 * Decodes one complete frame received on a connection at protocol level `version`
 * (0 before CONNECT: only CONNECT is accepted and its level comes from the bytes).
 * Failures carry the reason code to refuse/disconnect with (0x81 malformed, 0x82
 * protocol error, 0x84 unsupported protocol, 0x90 topic name invalid).
 */
export function decodeFrame(frame: Buffer, version: ProtocolLevel | 0): DecodeResult {
  const bad = checkFrame(frame, version);
  if (bad !== null) return { ok: false, reasonCode: bad.reasonCode, message: bad.message };

  // mqtt-packet refuses an AUTH with no reason code, which 5.0 allows (0x00 implied).
  if (frame.length === 2 && frame[0] === 0xf0) {
    return { ok: true, packet: { cmd: 'auth', reasonCode: 0 } };
  }
  // The hot packets, already checked byte by byte above, decoded without mqtt-packet (whose
  // parser allocates ~1.5 KiB per packet: debug() argument arrays, BufferList copies).
  const fast = decodeFast(frame, version);
  if (fast !== null) return { ok: true, packet: fast };

  const slot = slots[version] ?? makeSlot(version);
  slot.packet = null;
  slot.error = null;
  let thrown: unknown = null;
  try {
    slot.parser.parse(frame);
  } catch (e) {
    thrown = e;
  }
  // (The listeners assign these during parse(); TS cannot see that.)
  const packet = slot.packet as Packet | null;
  const error = slot.error as Error | null;
  slot.packet = null;
  slot.error = null;

  if (thrown !== null || error !== null || packet === null) {
    // Whatever state the parser is in now is suspect: start a fresh one.
    makeSlot(version);
    const why = thrown !== null ? errMessage(thrown) : error !== null ? error.message : 'incomplete packet';
    return { ok: false, reasonCode: MALFORMED, message: `malformed packet: ${why}` };
  }
  if (packet.cmd === 'connect') {
    // mqtt-packet adopts a parsed CONNECT as its settings; undo that so the slot keeps
    // parsing at its own level.
    (slot.parser as unknown as { settings: unknown }).settings = {
      protocolVersion: version === 0 ? 4 : version,
    };
  }
  if (packet.cmd === 'publish' && version === 5 && packet.properties?.userProperties) {
    (packet as DecodedPublish).userPropertyPairs = readUserProperties(frame);
  }
  return { ok: true, packet };
}

/**
 * Encodes a packet for a connection at protocol level `version`. Throws on a packet
 * mqtt-packet cannot encode (missing messageId, bad property value, ...).
 * 5.0 acks / DISCONNECT / AUTH without a reasonCode are sent as 0x00.
 */
export function encode(packet: Packet, version: ProtocolLevel): Buffer {
  if (version === 5) {
    switch (packet.cmd) {
      case 'puback':
      case 'pubrec':
      case 'pubrel':
      case 'pubcomp':
      case 'disconnect':
      case 'auth':
        if (packet.reasonCode === undefined) packet = { ...packet, reasonCode: 0 };
        break;
      default:
        break;
    }
  }
  return mqttPacket.generate(packet, { protocolVersion: version });
}

function errMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

const ACK_CMDS = ['', '', '', '', 'puback', 'pubrec', 'pubrel', 'pubcomp'] as const;

/**
 * PUBLISH without properties (every 3.1.1 one; 5.0 with a property length of 0) and
 * PUBACK / PUBREC / PUBREL / PUBCOMP / PINGREQ without reason code. Only for a frame that
 * passed checkFrame (so its lengths, flags, UTF-8 and packet identifier are valid); null
 * for anything else, which goes to mqtt-packet. The payload is a view into `frame`.
 */
function decodeFast(frame: Buffer, version: ProtocolLevel | 0): Packet | null {
  if (version === 0) return null;
  const b0 = frame[0]!;
  const type = b0 >> 4;
  if (type === 3) {
    let pos = 1;
    while ((frame[pos]! & 0x80) !== 0) pos++; // remaining length (checked)
    pos++;
    const tl = (frame[pos]! << 8) | frame[pos + 1]!;
    const topic = frame.toString('utf8', pos + 2, pos + 2 + tl);
    pos += 2 + tl;
    const qos = ((b0 >> 1) & 3) as QoS;
    let messageId: number | undefined;
    if (qos > 0) {
      messageId = (frame[pos]! << 8) | frame[pos + 1]!;
      pos += 2;
    }
    if (version === 5) {
      if (frame[pos] !== 0) return null; // properties: the full parser
      pos++;
    }
    const p: DecodedPublish = {
      cmd: 'publish', topic, payload: frame.subarray(pos), qos, retain: (b0 & 1) !== 0, dup: (b0 & 8) !== 0,
    };
    if (messageId !== undefined) p.messageId = messageId;
    return p;
  }
  if (frame.length === 4 && type >= 4 && type <= 7) {
    const ack = { cmd: ACK_CMDS[type]!, messageId: (frame[2]! << 8) | frame[3]! } as Packet & { reasonCode?: number };
    if (version === 5) ack.reasonCode = 0; // no reason code means 0x00 [MQTT-3.4.2.1 v5]
    return ack;
  }
  if (frame.length === 2 && b0 === 0xc0) return { cmd: 'pingreq' };
  return null;
}
