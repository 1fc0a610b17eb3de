// A message forwarded from one connection worker to another over their SPSC ring
// (docs/workers.md). Little-endian; strings UTF-8; the payload last, so it is written
// straight from the publisher's buffer (tryWrite gathers the parts, no concatenation):
//    0 u8  kind          1 = publish
//    1 u8  flags         bit 0 nonShared (deliver to the worker's non-shared subscribers),
//                        bit 1 retain, bits 2-3 QoS, bit 4 props present, bit 5 tried
//    2 u16 groups        shared groups this worker serves (one member each)
//    4 u32 payloadLen
//    8 f64 retainSeq     > 0: store as retained under this node-wide sequence number
//   16 f64 expiresAt     ms since epoch, 0 = never
//   24 u16 topicLen
//   26 u16 fromLen
//   28 u32 propsLen      JSON of the 5.0 properties (rare; correlation data as base64)
//   32 topic, from, props, [u32 tried], groups (u32 route, u16 len, name)*, payload
//      tried (flag bit 5): workers that found none of the named groups' members and passed
//      the message on (their picks were made on member counts that had not caught up)
import type { QoS } from '../protocol/codec.js';
import type { Message, MessageProps } from '../broker/message.js';
import type { GroupRef } from '../broker/router.js';

const KIND_PUBLISH = 1;
const F_NON_SHARED = 1;
const F_RETAIN = 2;
const F_PROPS = 16;
const F_TRIED = 32;
export const RECORD_HEADER = 32;

interface PropsJson {
  pfi?: boolean;
  ct?: string;
  rt?: string;
  cd?: string;
  up?: [string, string][];
}

function propsToJson(p: MessageProps): string {
  const o: PropsJson = {};
  if (p.payloadFormatIndicator !== undefined) o.pfi = p.payloadFormatIndicator;
  if (p.contentType !== undefined) o.ct = p.contentType;
  if (p.responseTopic !== undefined) o.rt = p.responseTopic;
  if (p.correlationData !== undefined) o.cd = p.correlationData.toString('base64');
  if (p.userProperties !== undefined) o.up = p.userProperties;
  return JSON.stringify(o);
}

function propsFromJson(s: string): MessageProps {
  const o = JSON.parse(s) as PropsJson;
  const p: MessageProps = {};
  if (o.pfi !== undefined) p.payloadFormatIndicator = o.pfi;
  if (o.ct !== undefined) p.contentType = o.ct;
  if (o.rt !== undefined) p.responseTopic = o.rt;
  if (o.cd !== undefined) p.correlationData = Buffer.from(o.cd, 'base64');
  if (o.up !== undefined) p.userProperties = o.up;
  return p;
}

/** Encodes records into one reusable scratch buffer (one encoder per producing thread). */
export class RecordEncoder {
  private scratch = Buffer.allocUnsafe(4096);
  /** The head in the scratch buffer, when it holds `last` with no groups (see encode). */
  private last: Message | null = null;
  private lastSeq = 0;
  private lastLen = 0;

  /**
   * The record as [head, payload] (head is a view of the scratch buffer: write it before
   * the next encode()). One message going to several workers without shared groups is
   * encoded once: only the flags byte differs between them.
   */
  encode(m: Message, nonShared: boolean, groups: readonly GroupRef[] | null, retainSeq: number, tried = 0): [Buffer, Buffer] {
    if (groups === null && tried === 0 && m === this.last && retainSeq === this.lastSeq) {
      const b = this.scratch;
      b[1] = (b[1]! & ~F_NON_SHARED) | (nonShared ? F_NON_SHARED : 0);
      return [b.subarray(0, this.lastLen), m.payload];
    }
    this.last = null;
    const props = m.props ? propsToJson(m.props) : '';
    const topicLen = Buffer.byteLength(m.topic);
    const fromLen = Buffer.byteLength(m.from);
    const propsLen = props.length === 0 ? 0 : Buffer.byteLength(props);
    let need = RECORD_HEADER + topicLen + fromLen + propsLen + (tried !== 0 ? 4 : 0);
    if (groups) for (const g of groups) need += 6 + Buffer.byteLength(g.group);
    if (need > this.scratch.length) this.scratch = Buffer.allocUnsafe(Math.max(need, this.scratch.length * 2));
    const b = this.scratch;
    b[0] = KIND_PUBLISH;
    b[1] = (nonShared ? F_NON_SHARED : 0) | (m.retain ? F_RETAIN : 0) | (m.qos << 2) | (propsLen > 0 ? F_PROPS : 0) | (tried !== 0 ? F_TRIED : 0);
    b.writeUInt16LE(groups?.length ?? 0, 2);
    b.writeUInt32LE(m.payload.length, 4);
    b.writeDoubleLE(retainSeq, 8);
    b.writeDoubleLE(m.expiresAt, 16);
    b.writeUInt16LE(topicLen, 24);
    b.writeUInt16LE(fromLen, 26);
    b.writeUInt32LE(propsLen, 28);
    let at = RECORD_HEADER;
    at += b.write(m.topic, at);
    if (fromLen > 0) at += b.write(m.from, at);
    if (propsLen > 0) at += b.write(props, at);
    if (tried !== 0) at = b.writeUInt32LE(tried >>> 0, at);
    if (groups) {
      for (const g of groups) {
        b.writeUInt32LE(g.route >>> 0, at);
        const n = b.write(g.group, at + 6);
        b.writeUInt16LE(n, at + 4);
        at += 6 + n;
      }
    } else if (tried === 0) {
      this.last = m;
      this.lastSeq = retainSeq;
      this.lastLen = at;
    }
    return [b.subarray(0, at), m.payload];
  }
}

export interface ForwardedMessage {
  msg: Message;
  nonShared: boolean;
  groups: GroupRef[];
  retainSeq: number;
  /** Workers that already passed this message on for want of the groups' members (bit w = worker w). */
  tried: number;
}

const NO_GROUPS: GroupRef[] = [];

/** Decodes a record in place; the payload is copied (the ring space is reused after). */
export function decodeRecord(data: Buffer, start: number, length: number): ForwardedMessage {
  const end = start + length;
  if (length < RECORD_HEADER || data[start] !== KIND_PUBLISH) throw new Error(`bad forwarded record (kind ${data[start]}, ${length} bytes)`);
  const flags = data[start + 1]!;
  const groupCount = data.readUInt16LE(start + 2);
  const payloadLen = data.readUInt32LE(start + 4);
  const retainSeq = data.readDoubleLE(start + 8);
  const expiresAt = data.readDoubleLE(start + 16);
  const topicLen = data.readUInt16LE(start + 24);
  const fromLen = data.readUInt16LE(start + 26);
  const propsLen = data.readUInt32LE(start + 28);
  let at = start + RECORD_HEADER;
  const topic = data.toString('utf8', at, (at += topicLen));
  const from = fromLen > 0 ? data.toString('utf8', at, (at += fromLen)) : '';
  const props = propsLen > 0 ? propsFromJson(data.toString('utf8', at, (at += propsLen))) : undefined;
  let tried = 0;
  if ((flags & F_TRIED) !== 0) {
    tried = data.readUInt32LE(at);
    at += 4;
  }
  let groups = NO_GROUPS;
  if (groupCount > 0) {
    groups = [];
    for (let i = 0; i < groupCount; i++) {
      const route = data.readUInt32LE(at);
      const n = data.readUInt16LE(at + 4);
      groups.push({ route, group: data.toString('utf8', at + 6, at + 6 + n) });
      at += 6 + n;
    }
  }
  if (at + payloadLen !== end) throw new Error(`bad forwarded record (payload ${payloadLen} bytes, ${end - at} left)`);
  const payload = Buffer.allocUnsafe(payloadLen);
  data.copy(payload, 0, at, end);
  return {
    msg: { topic, payload, qos: ((flags >> 2) & 3) as QoS, retain: (flags & F_RETAIN) !== 0, props, expiresAt, from },
    nonShared: (flags & F_NON_SHARED) !== 0,
    groups,
    retainSeq,
    tried,
  };
}
