// A retained message as the retained shard holds it (the key is the topic):
//   u32 BE headerLen, header (JSON: qos, expiresAt, from, props, origin), payload
// `origin` names the node that set it and that node's retained sequence number, so that the
// node does not let its own older write, coming back from etcd, hide a newer one it
// already applied (docs/cluster.md, "Retained messages").
import type { QoS } from '../protocol/codec.js';
import type { Message, MessageProps } from '../broker/message.js';

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

export function encodeRetained(m: Message, origin: RetainedOrigin): Buffer {
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
  const head = Buffer.from(JSON.stringify(h));
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
