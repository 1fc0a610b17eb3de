// Inbound PUBLISH [MQTT-3.3]: topic alias, limits, authorization, exactly-once for QoS 2.
import { isUtf8 } from 'node:buffer';
import type { DecodedPublish, Packet } from '../../protocol/codec.js';
import { validateTopicName } from '../../protocol/topic.js';
import type { ClientConnection } from '../connection.js';
import type { Message } from '../message.js';
import { pickMessageProps } from './connect.js';
import { retainedFits } from '../../cluster/retained-codec.js';

export function handlePublish(c: ClientConnection, p: DecodedPublish): void {
  const b = c.broker;
  const cfg = b.cfg.mqtt;
  const s = c.session!;
  const v5 = c.isV5;
  const props = p.properties;
  let topic = p.topic;

  // Subscription Identifiers travel only from server to client [MQTT-3.3.4-6 v5].
  if (v5 && props?.subscriptionIdentifier !== undefined) return c.protocolClose(0x82, 'Subscription Identifier in a client PUBLISH');
  if (v5 && props?.topicAlias !== undefined) {
    const alias = props.topicAlias;
    // 0 or above our Topic Alias Maximum is an error [MQTT-3.3.2-8/9 v5].
    if (alias === 0 || alias > cfg.max_topic_alias) return c.protocolClose(0x94, `topic alias ${alias} out of range`);
    if (topic === '') {
      const known = c.inboundAliases.get(alias);
      if (known === undefined) return c.protocolClose(0x82, `unknown topic alias ${alias}`);
      topic = known;
    } else c.inboundAliases.set(alias, topic);
  }
  if (topic === '') return c.protocolClose(v5 ? 0x82 : 0x81, 'empty topic name');
  const bad = validateTopicName(topic, cfg.max_topic_levels, cfg.max_topic_length);
  if (bad) return c.protocolClose(0x90, bad);
  if (p.qos > cfg.max_qos) return c.protocolClose(0x9b, `QoS ${p.qos} above maximum ${cfg.max_qos}`); // [MQTT-3.2.2-11 v5]
  if (p.retain && !cfg.retain_available) return c.protocolClose(0x9a, 'retain not available'); // [MQTT-3.2.2-14 v5]

  const id = p.messageId ?? 0;
  if (p.qos === 2 && s.inboundQos2.has(id)) {
    // Duplicate of a QoS 2 message not yet released: acknowledge, do not route again [MQTT-4.3.3-2 v3, 4.3.3-10 v5].
    return c.send({ cmd: 'pubrec', messageId: id } as Packet);
  }
  if (p.qos === 2 && s.inboundQos2.size >= cfg.receive_maximum && v5) {
    return c.protocolClose(0x93, 'Receive Maximum exceeded'); // the client broke [MQTT-3.3.4-7 v5]
  }

  let code = 0;
  let remote: Promise<void> | null = null;
  if (!b.auth.canPublish({ clientId: c.clientId, username: c.username }, topic)) {
    b.counters.aclDeniedPublish++;
    code = 0x87;
  } else if (v5 && props?.payloadFormatIndicator && !isUtf8(p.payload as Buffer)) {
    code = 0x99; // Payload Format Indicator 1 promises UTF-8 [MQTT-3.3.2.3.2 v5]
  } else {
    const m: Message = {
      // The decoded payload is a view into the socket's read chunk: copy it so that a
      // queued or retained message does not pin the whole chunk.
      topic, payload: Buffer.from(p.payload as Buffer), qos: p.qos, retain: p.retain, from: c.clientId,
      props: v5 && props ? pickMessageProps(props, p.userPropertyPairs) : undefined,
      expiresAt: v5 && props?.messageExpiryInterval ? Date.now() + props.messageExpiryInterval * 1000 : 0,
    };
    if (m.retain && b.router?.clustered && !retainedFits(m)) {
      // Too large for the cluster's retained store (one etcd request): refused whole, never
      // acknowledged as accepted and then lost (v5: Quota exceeded; 3.1.1 has no code).
      b.counters.droppedTooLarge++;
      b.log.warn('mqtt.retained_too_large', { client: c.clientId, topic, bytes: m.payload.length, detail: 'a retained message must fit in one etcd request of the retained shard' });
      code = 0x97;
    } else {
      const n = b.received(m);
      if (n === 0 && v5) code = 0x10; // No matching subscribers
      // Cluster: the acknowledgement waits until every other node it went to holds it.
      remote = b.takeRemoteWait();
      // The message is ours now (queued behind a full ring if need be); read no more from
      // this publisher until the ring drains, so nothing of QoS 1/2 is ever dropped.
      if (b.router?.blocked) c.pauseForRing();
    }
  }
  if (p.qos === 0) return;
  // 3.1.1 has no reason codes: a refused QoS 1/2 message is acknowledged and dropped.
  const rc = v5 && code !== 0 ? code : undefined;
  if (p.qos === 2 && code < 0x80) {
    s.inboundQos2.add(id);
    if (s.stored) b.journal?.saveSession(s);
  }
  // Durable node: the acknowledgement also waits until what the message wrote (the
  // subscribers' stored copies, the retained message, this id) is on disk.
  const wait = durable(c, remote);
  c.ackInOrder({ cmd: p.qos === 1 ? 'puback' : 'pubrec', messageId: id, reasonCode: rc } as Packet, wait);
}

/**
 * `remote`, the store's barrier and (worker threads) the other workers that got the message
 * having it on disk; a failed store write closes the connection unacknowledged (the
 * client sends again).
 */
function durable(c: ClientConnection, remote: Promise<void> | null): Promise<void> | null {
  const j = c.broker.journal;
  if (j === null) return remote;
  const own = j.barrier();
  const others = c.broker.router?.takeDurableWait?.() ?? null;
  const stored = own === null ? others : others === null ? own : Promise.all([own, others]).then(([a, b]) => a && b);
  if (stored === null) return remote;
  const both = remote === null ? stored : Promise.all([stored, remote]).then(([ok]) => ok);
  return both.then((ok) => {
    if (!ok) {
      c.broker.counters.storeWriteFailed++;
      c.protocolClose(0x80, 'the store could not write the message');
      // Never resolves: no acknowledgement for it (the connection is closing).
      return new Promise<void>(() => undefined);
    }
  });
}
