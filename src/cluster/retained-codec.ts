// A retained message as the retained shard holds it (the key is the topic):
//   u32 BE headerLen, header (JSON: qos, expiresAt, from, props, origin), payload
// `origin` names the node that set it and that node's retained sequence number, so that the
// node does not let its own older write, coming back from etcd, hide a newer one it
// already applied (docs/cluster.md, "Retained messages").
import type { QoS } from '../protocol/codec.js';
import type { Message, MessageProps } from '../broker/message.js';
import { MAX_PUT_BYTES, OP_OVERHEAD, RETAINED_KEY_SLACK } from './etcd/limits.js';

export interface RetainedOrigin {
  node: string;
  seq: number;
}

interface Header {
  q: number;
  x: number;
  f: string;
  o: RetainedOrigin;
  p?: { pfi?: boolean; ct?: string; rt?: string; cd?: string; up?: [string, string][] };
}

/**
 * Whether `m` fits in one put of the retained shard (etcd's request limit): checked at
 * PUBLISH, so that a retained message too large for the cluster is refused there rather
 * than acknowledged and then dropped by the writer.
 */
export function retainedFits(m: Message): boolean {
  // The common case without building the header: a header is a few hundred bytes plus the
  // publisher's id (JSON escaping at most sixfold), all well inside the slack below.
  if (!m.props && m.payload.length + 3 * m.topic.length + 6 * m.from.length + 512 <= MAX_PUT_BYTES - RETAINED_KEY_SLACK) return true;
  const head = Buffer.byteLength(retainedHeader(m, { node: '', seq: Number.MAX_SAFE_INTEGER }));
  return 4 + head + m.payload.length + Buffer.byteLength(m.topic) + OP_OVERHEAD <= MAX_PUT_BYTES - RETAINED_KEY_SLACK;
}

function retainedHeader(m: Message, origin: RetainedOrigin): string {
  const h: Header = { q: m.qos, x: m.expiresAt, f: m.from, o: origin };
  if (m.props) {
    const p = m.props;
    h.p = {};
    if (p.payloadFormatIndicator !== undefined) h.p.pfi = p.payloadFormatIndicator;
    if (p.contentType !== undefined) h.p.ct = p.contentType;
    if (p.responseTopic !== undefined) h.p.rt = p.responseTopic;
    if (p.correlationData !== undefined) h.p.cd = p.correlationData.toString('base64');
    if (p.userProperties !== undefined) h.p.up = p.userProperties;
  }
  return JSON.stringify(h);
}

export function encodeRetained(m: Message, origin: RetainedOrigin): Buffer {
  const head = Buffer.from(retainedHeader(m, origin));
  const out = Buffer.allocUnsafe(4 + head.length + m.payload.length);
  out.writeUInt32BE(head.length, 0);
  head.copy(out, 4);
  m.payload.copy(out, 4 + head.length);
  return out;
}

export function decodeRetained(topic: string, b: Buffer): { msg: Message; origin: RetainedOrigin } {
  const hl = b.readUInt32BE(0);
  const h = JSON.parse(b.toString('utf8', 4, 4 + hl)) as Header;
  let props: MessageProps | undefined;
  if (h.p) {
    props = {};
    if (h.p.pfi !== undefined) props.payloadFormatIndicator = h.p.pfi;
    if (h.p.ct !== undefined) props.contentType = h.p.ct;
    if (h.p.rt !== undefined) props.responseTopic = h.p.rt;
    if (h.p.cd !== undefined) props.correlationData = Buffer.from(h.p.cd, 'base64');
    if (h.p.up !== undefined) props.userProperties = h.p.up;
  }
  const msg: Message = {
    topic, payload: Buffer.from(b.subarray(4 + hl)), qos: h.q as QoS, retain: true, from: h.f, props, expiresAt: h.x,
  };
  return { msg, origin: h.o };
}
