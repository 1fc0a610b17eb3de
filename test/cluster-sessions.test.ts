// Sessions across nodes (docs/cluster.md, "Sessions"): ownership of a client id is an etcd
// transaction, so a client that reconnects to another node takes its session over from the
// old one (subscriptions, queued and inflight messages; the old connection gets 0x8E), and
// two clients with the same id connecting to two nodes at once never both keep it.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { IConnackPacket, IDisconnectPacket, IPublishPacket } from 'mqtt-packet';
import { useEtcdCluster } from './helpers/etcd.js';
import { eventually, useNodes, type ClusterNode } from './helpers/cluster.js';
import { Clients, uid } from './helpers/clients.js';
import { sleep } from './helpers/broker.js';
import { RawClient } from './helpers/raw-client.js';

const T = { timeout: 60_000 };

describe('cluster sessions: 2 cores and a replicant', () => {
  const etcd = useEtcdCluster(1);
  const nodes = useNodes();
  const clients = new Clients();
  after(() => clients.closeAll());
  let A: ClusterNode;
  let B: ClusterNode;
  let R: ClusterNode;

  before(async () => {
    const e = etcd.cluster.endpoints;
    [A, B] = await Promise.all([nodes.start({ role: 'core', name: 'sa', etcd: e }), nodes.start({ role: 'core', name: 'sb', etcd: e })]);
    R = await nodes.start({ role: 'replicant', name: 'sr', seeds: [A.clusterAddress] });
  });

  async function routed(on: ClusterNode, topic: string, to: ClusterNode): Promise<void> {
    await eventually(async () => ((await on.get(`/api/v1/routes?topic=${encodeURIComponent(topic)}`)).body as { nodes: string[] }).nodes.includes(to.name),
      `${on.name} routing ${topic} to ${to.name}`);
  }

  test('[v5 MQTT-3.1.2-4/5 MQTT-3.2.2-2] an offline persistent session moves to another node: session present, queued messages, its subscriptions', T, async () => {
    const id = uid('move');
    const topic = `move/${process.pid}`;
    const opts = { clientId: id, clean: false, protocolVersion: 5 as const, properties: { sessionExpiryInterval: 300 } };
    const first = await clients.mqtt(A.url, opts);
    await first.subscribeAsync(topic, { qos: 1 });
    await first.endAsync();
    await routed(B, topic, A);
    const pub = await clients.mqtt(B.url, { protocolVersion: 5, clientId: uid('p') });
    for (let i = 0; i < 5; i++) await pub.publishAsync(topic, `queued ${i}`, { qos: 1 });
    await sleep(200); // queued on A

    const { c, connack } = await clients.rawConnect(R.mqttPort, 5, { clientId: id, clean: false, properties: { sessionExpiryInterval: 300 } });
    assert.equal((connack as IConnackPacket).sessionPresent, true, 'the session came from A');
    const got: string[] = [];
    for (let i = 0; i < 5; i++) {
      const p = (await c.next(5000)) as IPublishPacket;
      assert.equal(p.cmd, 'publish');
      got.push(String(p.payload));
      c.send({ cmd: 'puback', messageId: p.messageId! } as never);
    }
    assert.deepEqual(got, [0, 1, 2, 3, 4].map((i) => `queued ${i}`));
    // Its subscription lives on R now: a new message from B reaches it there.
    await routed(B, topic, R);
    await pub.publishAsync(topic, 'after the move', { qos: 1 });
    const p = (await c.next(5000)) as IPublishPacket;
    assert.equal(String(p.payload), 'after the move');
  });

  test('[v5 MQTT-3.1.4-3 0x8E] a connected session taken over from another node: the old connection gets DISCONNECT 0x8E; inflight QoS 1 goes again', T, async () => {
    const id = uid('take');
    const topic = `take/${process.pid}`;
    const props = { sessionExpiryInterval: 300 };
    const { c: old } = await clients.rawConnect(A.mqttPort, 5, { clientId: id, clean: false, properties: props });
    old.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] } as never);
    assert.equal((await old.next())?.cmd, 'suback');
    await routed(B, topic, A);
    const pub = await clients.mqtt(B.url, { protocolVersion: 5, clientId: uid('p') });
    await pub.publishAsync(topic, 'inflight', { qos: 1 });
    const first = (await old.next(5000)) as IPublishPacket;
    assert.equal(String(first.payload), 'inflight'); // not acknowledged: it stays inflight
    const { c: neu, connack } = await clients.rawConnect(B.mqttPort, 5, { clientId: id, clean: false, properties: props });
    assert.equal((connack as IConnackPacket).sessionPresent, true);
    const d = (await old.next(5000)) as IDisconnectPacket | null;
    assert.equal(d?.cmd, 'disconnect');
    assert.equal(d?.reasonCode, 0x8e, 'Session taken over');
    const again = (await neu.next(5000)) as IPublishPacket;
    assert.equal(String(again.payload), 'inflight');
    assert.equal(again.dup, true, '[MQTT-4.4.0-1] resent with DUP');
  });

  test('[v3.1.1 MQTT-3.1.2-4] clean session 0 across nodes keeps the subscription; clean session 1 elsewhere ends it', T, async () => {
    const id = uid('v3');
    const topic = `v3/${process.pid}`;
    const a = await clients.mqtt(A.url, { clientId: id, clean: false, protocolVersion: 4 });
    await a.subscribeAsync(topic, { qos: 1 });
    await a.endAsync();
    const { c, connack } = await clients.rawConnect(B.mqttPort, 4, { clientId: id, clean: false });
    assert.equal((connack as IConnackPacket).sessionPresent, true);
    c.destroy();
    await sleep(100);
    const { c: cleanOne, connack: fresh } = await clients.rawConnect(R.mqttPort, 4, { clientId: id, clean: true });
    assert.equal((fresh as IConnackPacket).sessionPresent, false);
    // A clean session lasts as long as its connection [MQTT-3.1.2-6].
    cleanOne.send({ cmd: 'disconnect' } as never);
    await eventually(() => cleanOne.closed, 'the clean session closed');
    await sleep(200);
    const { connack: after } = await clients.rawConnect(A.mqttPort, 4, { clientId: id, clean: false });
    assert.equal((after as IConnackPacket).sessionPresent, false, 'the clean start ended the session everywhere');
  });

  test('two clients with one client id connecting to two nodes at once: exactly one keeps the session', T, async () => {
    for (let round = 0; round < 5; round++) {
      const id = uid('race');
      const [x, y] = await Promise.all([
        RawClient.connected(A.mqttPort, 5, { clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } } as never),
        RawClient.connected(R.mqttPort, 5, { clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } } as never),
      ]);
      clients.track(x.c);
      clients.track(y.c);
      await eventually(() => x.c.closed || y.c.closed, 'one of them closed', 10_000);
      await sleep(300);
      assert.equal([x.c.closed, y.c.closed].filter((c) => !c).length, 1, `round ${round}: one connection left`);
      const survivor = x.c.closed ? y.c : x.c;
      survivor.send({ cmd: 'pingreq' } as never);
      assert.equal((await survivor.next(3000))?.cmd, 'pingresp');
    }
  });

  test('[MQTT-4.3.2-?] QoS 1 between nodes: the PUBACK waits until the subscriber\'s node holds the message', T, async () => {
    const topic = `hold/${process.pid}`;
    const sub = await clients.mqtt(B.url, { protocolVersion: 5, clientId: uid('hs') });
    const got: string[] = [];
    sub.on('message', (_t, p) => got.push(String(p)));
    await sub.subscribeAsync(topic, { qos: 1 });
    await routed(A, topic, B);
    const { c: pub } = await clients.rawConnect(A.mqttPort, 5, { clientId: uid('hp') });
    process.kill(B.proc!.pid!, 'SIGSTOP');
    try {
      pub.send({ cmd: 'publish', topic, payload: Buffer.from('held'), qos: 1, messageId: 7 } as never);
      await assert.rejects(pub.next(1200), /no packet within/, 'no PUBACK while B cannot take the message');
    } finally {
      process.kill(B.proc!.pid!, 'SIGCONT');
    }
    const ack = await pub.next(5000);
    assert.equal(ack?.cmd, 'puback');
    assert.equal((ack as { messageId?: number }).messageId, 7);
    await eventually(() => got.includes('held'), 'the message on B');
  });
});
