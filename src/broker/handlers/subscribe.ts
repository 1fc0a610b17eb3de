// SUBSCRIBE → SUBACK, UNSUBSCRIBE → UNSUBACK [MQTT-3.8 .. 3.11].
import type { ISubscribePacket, IUnsubscribePacket, Packet, QoS } from '../../protocol/codec.js';
import { parseShare, validateTopicFilter } from '../../protocol/topic.js';
import type { ClientConnection } from '../connection.js';
import type { Subscription } from '../subscription-index.js';

export function handleSubscribe(c: ClientConnection, p: ISubscribePacket): void {
  const b = c.broker;
  const cfg = b.cfg.mqtt;
  const s = c.session!;
  const v5 = c.isV5;
  const subId = v5 ? p.properties?.subscriptionIdentifier : undefined;
  if (subId === 0) return c.protocolClose(0x82, 'Subscription Identifier 0'); // [MQTT-3.8.2-? v5 3.8.2.1.2]
  const who = { clientId: c.clientId, username: c.username };
  const granted: number[] = [];
  const retained: { sub: Subscription; isNew: boolean }[] = [];
  /** New subscriptions of this packet (index in `granted`), undone if the cluster did not commit their routes. */
  const added: { at: number; key: string }[] = [];

  for (const req of p.subscriptions) {
    const key = req.topic;
    // 3.1.1 has one failure code, 0x80; 5.0 says why.
    const refuse = (code: number) => granted.push(v5 ? code : 0x80);
    const share = parseShare(key);
    if ('error' in share) { refuse(0x8f); continue; }
    if (share.group !== null && !cfg.shared_subscription_available) { refuse(0x9e); continue; }
    if (share.group !== null && req.nl) return c.protocolClose(0x82, 'No Local on a shared subscription'); // [MQTT-3.8.3-4 v5]
    const bad = validateTopicFilter(share.filter, cfg.max_topic_levels, cfg.max_topic_length);
    if (bad) { refuse(0x8f); continue; }
    if (!cfg.wildcard_subscription_available && /[+#]/.test(share.filter)) { refuse(0xa2); continue; }
    if (cfg.deny_subscribe.includes(key) || cfg.deny_subscribe.includes(share.filter)) { refuse(0x80); continue; }
    if (!b.auth.canSubscribe(who, share.filter)) {
      b.counters.aclDeniedSubscribe++;
      refuse(0x87);
      continue;
    }
    const exists = s.subscriptions.has(key);
    if (!exists && cfg.max_subscriptions > 0 && s.subscriptions.size >= cfg.max_subscriptions) { refuse(0x97); continue; }
    const qos = Math.min(req.qos, cfg.max_qos) as QoS;
    const sub: Subscription = {
      clientId: c.clientId, key, filter: share.filter, group: share.group, qos,
      noLocal: v5 && !!req.nl, retainAsPublished: v5 && !!req.rap,
      retainHandling: v5 ? ((req.rh ?? 0) as 0 | 1 | 2) : 0, subscriptionId: subId,
    };
    const isNew = b.subscribe(s, sub);
    if (isNew) added.push({ at: granted.length, key });
    granted.push(qos);
    if (share.group === null) retained.push({ sub, isNew });
  }
  const finish = (): void => {
    c.send({ cmd: 'suback', messageId: p.messageId, granted } as Packet);

    // Retained messages follow the SUBACK; Retain Handling 1 only for a new subscription,
    // 2 never [MQTT-3.3.1-9/10/11 v5]; shared subscriptions get none.
    if (!b.cfg.mqtt.retain_available) return;
    for (const { sub, isNew } of retained) {
      if (!s.subscriptions.has(sub.key)) continue; // undone (see below)
      if (sub.retainHandling === 2 || (sub.retainHandling === 1 && !isNew)) continue;
      for (const m of b.retainedFor(sub.filter)) {
        const subIds = sub.subscriptionId !== undefined ? [sub.subscriptionId] : undefined;
        const qos = (m.qos < sub.qos ? m.qos : sub.qos) as QoS;
        b.deliverTo(s, { msg: m, qos, retain: true, subIds, shared: undefined });
      }
    }
  };
  // Worker-threaded node: SUBACK goes once every worker routes by the new subscription, and
  // after this worker drained what other workers forwarded (so a retained message whose
  // PUBACK the client may have seen before it subscribed is in this worker's replica).
  // Cluster: once its route is in the routes shard, a message published on any node after
  // the SUBACK reaches the subscription. When that takes longer than
  // cluster.route_commit_timeout_ms (etcd lost), the new subscriptions are undone and
  // refused (0x80), so that the client does not count on a route that is not there.
  // Durable node: and once the session's new subscriptions are on disk.
  const stored = b.journal?.barrier() ?? null;
  const synced = b.router?.sync() ?? null;
  let storeOk = true;
  const routed = stored === null ? synced : Promise.all([synced ?? true, stored]).then(([r, ok]) => {
    storeOk = ok;
    if (!ok) b.counters.storeWriteFailed++;
    return r;
  });
  if (routed === null) finish();
  else {
    c.hold(routed.then((committed) => {
      const notInCluster = !committed && b.router?.clustered === true;
      if ((storeOk && !notInCluster) || added.length === 0 || c.session !== s) return;
      for (const { at, key } of added) {
        b.unsubscribe(s, key);
        granted[at] = 0x80;
      }
      b.log.warn('mqtt.subscribe_not_committed', {
        client: c.clientId, filters: added.map((a) => a.key),
        detail: storeOk ? 'the route was not committed to the cluster in time: SUBACK 0x80' : 'the store could not write the subscription: SUBACK 0x80',
      });
    }), finish);
  }
}

export function handleUnsubscribe(c: ClientConnection, p: IUnsubscribePacket): void {
  const s = c.session!;
  const granted: number[] = [];
  for (const key of p.unsubscriptions) {
    const existed = c.broker.unsubscribe(s, key);
    granted.push(existed ? 0 : 0x11); // 0x11: No subscription existed
  }
  if (c.isV5) c.send({ cmd: 'unsuback', messageId: p.messageId, granted } as Packet);
  else c.send({ cmd: 'unsuback', messageId: p.messageId } as Packet);
}
