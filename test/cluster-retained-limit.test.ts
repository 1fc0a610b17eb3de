// A retained message too large for the cluster's retained store (one etcd request, about
// 1.5 MiB) is refused at PUBLISH — MQTT 5 gets PUBACK 0x97 (Quota exceeded), 3.1.1 the
// acknowledgement its protocol allows — and is neither stored nor delivered anywhere, instead
// of being acknowledged and then dropped by the writer. One just under the limit is retained
// on every node. 2 cores on a 1-member etcd, mqtt.max_packet_size raised to 4 MiB.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { useEtcdCluster } from './helpers/etcd.js';
import { eventually, useNodes, type ClusterNode } from './helpers/cluster.js';
import { Clients, inbox, uid } from './helpers/clients.js';
import { sleep } from './helpers/broker.js';
import { retainedFits } from '../src/cluster/retained-codec.js';
import type { Message } from '../src/broker/message.js';

const T = { timeout: 60_000 };
const MIB = 1024 * 1024;

describe('retainedFits: what one etcd put of the retained shard takes', () => {
  const msg = (payload: number, props?: Message['props']): Message =>
    ({ topic: 't/x', payload: Buffer.alloc(payload), qos: 1, retain: true, from: 'c', expiresAt: 0, props });
  test('payload size decides without properties; properties count as encoded (correlation data in base64)', () => {
    assert.equal(retainedFits(msg(1 * MIB)), true);
    assert.equal(retainedFits(msg(1.6 * MIB)), false);
    assert.equal(retainedFits(msg(1.2 * MIB, { correlationData: Buffer.alloc(10 * 1024) })), true);
    // 1.2 MiB + 400 KiB of correlation data is 1.59 MiB raw, 1.73 MiB as the shard stores it.
    assert.equal(retainedFits(msg(1.2 * MIB, { correlationData: Buffer.alloc(400 * 1024) })), false);
    assert.equal(retainedFits(msg(1.2 * MIB, { userProperties: [['k', 'v'.repeat(100 * 1024)]] })), true);
  });
});

describe('cluster: retained messages too large for etcd are refused at PUBLISH', () => {
  const etcd = useEtcdCluster(1);
  const nodes = useNodes();
  const clients = new Clients();
  after(() => clients.closeAll());
  let A: ClusterNode;
  let B: ClusterNode;

  before(async () => {
    const env = { FLEETMQ_MQTT__MAX_PACKET_SIZE: String(4 * MIB) };
    const e = etcd.cluster.endpoints;
    [A, B] = await Promise.all([nodes.start({ role: 'core', name: 'ra', etcd: e, env }), nodes.start({ role: 'core', name: 'rb', etcd: e, env })]);
  });

  test('1.6 MiB retained: v5 PUBACK 0x97, 3.1.1 acknowledged; neither kept; 1 MiB retained reaches the other node', T, async () => {
    const topic = uid('big');
    const v5 = await clients.mqtt(A.url, { protocolVersion: 5, clientId: uid('p5') });
    const v3 = await clients.mqtt(A.url, { protocolVersion: 4, clientId: uid('p3') });
    // MQTT.js rejects a PUBACK with a failure reason code, carrying the code.
    await assert.rejects(v5.publishAsync(`${topic}/v5`, Buffer.alloc(1.6 * MIB, 0x61), { qos: 1, retain: true }), { code: 0x97 });
    await v3.publishAsync(`${topic}/v3`, Buffer.alloc(1.6 * MIB, 0x62), { qos: 1, retain: true });
    await v5.publishAsync(`${topic}/ok`, Buffer.alloc(1 * MIB, 0x63), { qos: 1, retain: true }); // accepted (it resolves)
    await eventually(() => A.lines('mqtt.retained_too_large').length === 2, 'both refusals logged');
    for (const n of [A, B]) {
      const sub = await clients.mqtt(n.url, { protocolVersion: 5, clientId: uid('s') });
      const got = inbox(sub);
      await sub.subscribeAsync(`${topic}/#`, { qos: 1 });
      await eventually(() => got.length >= 1, `the 1 MiB retained message on ${n.name}`);
      await sleep(300);
      assert.deepEqual(got.map((m) => [m.topic, m.payload.length, m.retain]), [[`${topic}/ok`, MIB, true]], `only the one that fits, on ${n.name}`);
    }
    assert.equal(A.lines('cluster.write_too_large').length, 0, 'nothing reached the writer to be dropped there');
  });
});
