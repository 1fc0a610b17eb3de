// PUBACK / PUBREC / PUBREL / PUBCOMP [MQTT-3.4 .. 3.7, 4.3].
import type { IPubackPacket, IPubcompPacket, IPubrecPacket, IPubrelPacket, Packet } from '../../protocol/codec.js';
import type { ClientConnection } from '../connection.js';
import { M_PUBREL } from '../../store/journal.js';

/** Outbound QoS 1 done. An unknown identifier is ignored. */
export function handlePuback(c: ClientConnection, p: IPubackPacket): void {
  const s = c.session!;
  const e = s.inflight.get(p.messageId!);
  if (!e || e.d.qos !== 1) return;
  s.inflight.delete(p.messageId!);
  c.broker.forget(s, e.d);
  c.ackReleased();
}

/** Outbound QoS 2, step 2: answer with PUBREL; an error reason code ends the flow [MQTT-4.3.3-? v5]. */
export function handlePubrec(c: ClientConnection, p: IPubrecPacket): void {
  const s = c.session!;
  const id = p.messageId!;
  const e = s.inflight.get(id);
  if (!e || e.d.qos !== 2) {
    if (c.isV5) c.send({ cmd: 'pubrel', messageId: id, reasonCode: 0x92 } as Packet);
    return;
  }
  if ((p.reasonCode ?? 0) >= 0x80) {
    s.inflight.delete(id);
    c.broker.forget(s, e.d);
    c.ackReleased();
    return;
  }
  e.state = 'pubrel';
  if (e.d.seq !== undefined) c.broker.journal?.markMessage(s.clientId, e.d, id, M_PUBREL);
  c.send({ cmd: 'pubrel', messageId: id } as Packet);
}

/** Inbound QoS 2 released: the identifier may be reused [MQTT-4.3.3-? method B]. */
export function handlePubrel(c: ClientConnection, p: IPubrelPacket): void {
  const s = c.session!;
  const id = p.messageId!;
  const known = s.inboundQos2.delete(id);
  if (known && s.stored) c.broker.journal?.saveSession(s);
  const rc = !known && c.isV5 ? 0x92 : undefined;
  c.send({ cmd: 'pubcomp', messageId: id, reasonCode: rc } as Packet);
}

export function handlePubcomp(c: ClientConnection, p: IPubcompPacket): void {
  const s = c.session!;
  const e = s.inflight.get(p.messageId!);
  if (!e || e.state !== 'pubrel') return;
  s.inflight.delete(p.messageId!);
  c.broker.forget(s, e.d);
  c.ackReleased();
}
