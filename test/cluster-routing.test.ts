// One broker over several processes (docs/cluster.md): a 3-member etcd, 2 cores and 2
// replicants on loopback, real MQTT clients on different nodes. Subscribe on one node,
// publish on another: delivered once, in order per publisher, QoS 0/1/2, 3.1.1 and 5.0,
// exact and wildcard filters, 5.0 properties, subscription identifiers, No Local and Retain
// As Published kept; shared subscriptions pick one member cluster-wide (and `local` prefers
// the publisher's node); retained messages are seen from every node; the cluster API and
// `fleetmq ctl cluster status`.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { MqttClient } from 'mqtt';
import { useEtcdCluster } from './helpers/etcd.js';
import { eventually, useNodes, type ClusterNode } from './helpers/cluster.js';
import { CLI_MAIN } from './helpers/cli.js';
import { Clients, inbox, uid } from './helpers/clients.js';
import { sleep } from './helpers/broker.js';

const T = { timeout: 60_000 };
describe('cluster of 2 cores and 2 replicants on a 3-member etcd', () => {
  const etcd = useEtcdCluster(3);
  const nodes = useNodes();
  const clients = new Clients();
  after(() => clients.closeAll());

  let A: ClusterNode;
  let B: ClusterNode;
  let R1: ClusterNode;
  let R2: ClusterNode;

  /** Waits until `on` routes `topic` to node `to` (or, with `to` = null, to no other node). */
  async function routed(on: ClusterNode, topic: string, to: ClusterNode | null): Promise<void> {
    await eventually(async () => {
      const r = (await on.get(`/api/v1/routes?topic=${encodeURIComponent(topic)}`)).body as { nodes: string[]; groups: { nodes: string[] }[] };
      const all = [...r.nodes, ...r.groups.flatMap((g) => g.nodes)];
      return to === null ? all.length === 0 : all.includes(to.name);
    }, `${on.name} routing ${topic} to ${to?.name ?? 'nobody'}`);
  }

  function client(n: ClusterNode, v: 4 | 5, opts: Record<string, unknown> = {}): Promise<MqttClient> {
    return clients.mqtt(n.url, { protocolVersion: v, clientId: uid(`c${v}`), ...opts });
  }

  before(async () => {
    const e = etcd.cluster.endpoints;
    [A, B] = await Promise.all([nodes.start({ role: 'core', name: 'ra', etcd: e }), nodes.start({ role: 'core', name: 'rb', etcd: e })]);
    [R1, R2] = await Promise.all([
      nodes.start({ role: 'replicant', name: 'r1', seeds: [A.clusterAddress] }),
      nodes.start({ role: 'replicant', name: 'r2', seeds: [B.clusterAddress], env: { FLEETMQ_MQTT__SHARED_STRATEGY: 'local' } }),
    ]);
  });

  describe('cluster: messages between nodes', () => {
    for (const v of [4, 5] as const) {
      for (const [from, to] of [['A', 'B'], ['B', 'R1'], ['R1', 'R2'], ['R2', 'A']] as const) {
        test(`[v${v === 4 ? '3.1.1' : '5'}] subscribe on ${to}, publish on ${from}: QoS 0/1/2, exact and wildcard filters, once each`, T, async () => {
          const byName = { A, B, R1, R2 };
          const sn = byName[to];
          const pn = byName[from];
          const base = `x/${v}/${from}${to}/${process.pid}`;
          const exact = await client(sn, v);
          const wild = await client(sn, v);
          const gotE = inbox(exact);
          const gotW = inbox(wild);
          await exact.subscribeAsync(`${base}/t`, { qos: 2 });
          await wild.subscribeAsync(`${base}/+`, { qos: 2 });
          await routed(pn, `${base}/t`, sn);
          const pub = await client(pn, v);
          for (const qos of [0, 1, 2] as const) await pub.publishAsync(`${base}/t`, `q${qos}`, { qos });
          await eventually(() => gotE.length >= 3 && gotW.length >= 3, 'three messages on each subscriber');
          await sleep(200); // no duplicate arrives later
          for (const got of [gotE, gotW]) {
            assert.deepEqual(got.map((m) => [m.topic, m.payload, m.qos]), [[`${base}/t`, 'q0', 0], [`${base}/t`, 'q1', 1], [`${base}/t`, 'q2', 2]]);
          }
        });
      }
    }

    test('per-publisher order: 2,000 QoS 1 messages from a replicant reach a subscriber on a core in order', T, async () => {
      const topic = `order/${process.pid}`;
      const sub = await client(B, 5);
      const got = inbox(sub);
      await sub.subscribeAsync(topic, { qos: 1 });
      await routed(R1, topic, B);
      const pub = await client(R1, 4);
      const n = 2000;
      await Promise.all(Array.from({ length: n }, (_, i) => pub.publishAsync(topic, String(i), { qos: 1 })));
      await eventually(() => got.length >= n, `${n} messages`, 30_000);
      assert.deepEqual(got.map((m) => Number(m.payload)), Array.from({ length: n }, (_, i) => i));
    });

    test('[v5 MQTT-3.3.2-15/16/17/18/20 MQTT-3.8.3-3 MQTT-3.3.1-12] properties, subscription identifiers, No Local and Retain As Published cross nodes', T, async () => {
      const topic = `props/${process.pid}`;
      const sub = await client(A, 5);
      const got = inbox(sub);
      await sub.subscribeAsync(topic, { qos: 1, rap: true, properties: { subscriptionIdentifier: 42 } });
      await routed(R2, topic, A);
      const pub = await client(R2, 5);
      await pub.publishAsync(topic, 'with props', {
        qos: 1, retain: true,
        properties: {
          contentType: 'text/plain', responseTopic: 'reply/here', correlationData: Buffer.from([1, 2, 3]), payloadFormatIndicator: true,
          userProperties: { a: '1', b: ['2', '3'] }, messageExpiryInterval: 60,
        },
      });
      await eventually(() => got.length >= 1, 'the message');
      const m = got[0]!;
      const p = m.packet.properties!;
      assert.equal(m.retain, true, 'Retain As Published keeps RETAIN on a live message');
      assert.equal(p.contentType, 'text/plain');
      assert.equal(p.responseTopic, 'reply/here');
      assert.deepEqual([...(p.correlationData as Buffer)], [1, 2, 3]);
      assert.equal(p.payloadFormatIndicator, true);
      assert.deepEqual({ ...p.userProperties }, { a: '1', b: ['2', '3'] });
      assert.ok(p.messageExpiryInterval !== undefined && p.messageExpiryInterval <= 60 && p.messageExpiryInterval >= 58);
      assert.deepEqual(p.subscriptionIdentifier, 42);

      // No Local: a client subscribed on A, publishing from A, still gets what another node publishes.
      const nl = await client(A, 5);
      const nlGot = inbox(nl);
      const nlTopic = `nolocal/${process.pid}`;
      await nl.subscribeAsync(nlTopic, { qos: 1, nl: true });
      await routed(B, nlTopic, A);
      await nl.publishAsync(nlTopic, 'own', { qos: 1 });
      const other = await client(B, 5);
      await other.publishAsync(nlTopic, 'other', { qos: 1 });
      await eventually(() => nlGot.length >= 1, 'the other client\'s message');
      await sleep(200);
      assert.deepEqual(nlGot.map((x) => x.payload), ['other']);
    });
  });

  describe('cluster: retained messages', () => {
    test('[MQTT-3.3.1-5/6/10] a retained message set on one node is seen from every node; an empty one clears it everywhere', T, async () => {
      const topic = `ret/${process.pid}/a`;
      const pub = await client(R1, 4);
      await pub.publishAsync(topic, 'kept', { qos: 1, retain: true });
      for (const n of [A, B, R1, R2]) {
        await eventually(async () => {
          const c = await client(n, 4);
          const got = inbox(c);
          await c.subscribeAsync(`ret/${process.pid}/#`, { qos: 1 });
          await sleep(150);
          await c.endAsync();
          return got.length === 1 && got[0]!.payload === 'kept' && got[0]!.retain;
        }, `the retained message on ${n.name}`);
      }
      await pub.publishAsync(topic, '', { qos: 1, retain: true });
      for (const n of [A, B, R1, R2]) {
        await eventually(async () => {
          const c = await client(n, 4);
          const got = inbox(c);
          await c.subscribeAsync(`ret/${process.pid}/#`, { qos: 1 });
          await sleep(150);
          await c.endAsync();
          return got.length === 0;
        }, `the retained message gone on ${n.name}`);
      }
    });

    test('a retained message reaches subscribers on every node as a live message too', T, async () => {
      const topic = `ret/${process.pid}/live`;
      const subs = await Promise.all([A, B, R1, R2].map((n) => client(n, 5)));
      const boxes = subs.map((s) => inbox(s));
      await Promise.all(subs.map((s) => s.subscribeAsync(topic, { qos: 1 })));
      for (const n of [A, R1, R2]) await routed(B, topic, n);
      const pub = await client(B, 5);
      await pub.publishAsync(topic, 'live', { qos: 1, retain: true });
      await eventually(() => boxes.every((b) => b.length === 1), 'one copy on every node');
      for (const b of boxes) assert.equal(b[0]!.retain, false, '[MQTT-3.3.1-12] RETAIN is cleared on routed delivery');
      await pub.publishAsync(topic, '', { qos: 1, retain: true });
    });
  });

  describe('cluster: shared subscriptions', () => {
    test('[MQTT-4.8.2-?] $share/g/…: each message goes to one member cluster-wide, members on three nodes all get some', T, async () => {
      const f = `jobs/${process.pid}/+`;
      const members = await Promise.all([A, R1, R2].map((n) => client(n, 5)));
      const boxes = members.map((m) => inbox(m));
      await Promise.all(members.map((m) => m.subscribeAsync(`$share/g/${f}`, { qos: 1 })));
      await routed(B, `jobs/${process.pid}/1`, A);
      await routed(B, `jobs/${process.pid}/1`, R1);
      await routed(B, `jobs/${process.pid}/1`, R2);
      const pub = await client(B, 5);
      const n = 60;
      for (let i = 0; i < n; i++) await pub.publishAsync(`jobs/${process.pid}/${i}`, String(i), { qos: 1 });
      await eventually(() => boxes.reduce((s, b) => s + b.length, 0) >= n, `${n} deliveries`);
      await sleep(300);
      const all = boxes.flatMap((b) => b.map((m) => Number(m.payload))).sort((a, b) => a - b);
      assert.deepEqual(all, Array.from({ length: n }, (_, i) => i), 'each message exactly once');
      for (const b of boxes) assert.ok(b.length > 0, `every member got some: ${boxes.map((x) => x.length).join('/')}`);
    });

    test('shared_strategy "local": a publisher\'s node with members keeps the messages; without members they go elsewhere', T, async () => {
      const f = `local/${process.pid}`;
      const onR2 = await client(R2, 5);
      const onA = await client(A, 5);
      const gotR2 = inbox(onR2);
      const gotA = inbox(onA);
      await onR2.subscribeAsync(`$share/lg/${f}`, { qos: 1 });
      await onA.subscribeAsync(`$share/lg/${f}`, { qos: 1 });
      await routed(R2, f, A);
      const pub = await client(R2, 5); // R2 runs with shared_strategy "local"
      for (let i = 0; i < 20; i++) await pub.publishAsync(f, String(i), { qos: 1 });
      await eventually(() => gotR2.length + gotA.length >= 20, '20 deliveries');
      await sleep(200);
      assert.equal(gotR2.length, 20);
      assert.equal(gotA.length, 0);
      await onR2.unsubscribeAsync(`$share/lg/${f}`);
      await eventually(async () => {
        const r = (await R2.get(`/api/v1/routes?topic=${f}`)).body as { groups: { workers: number[] }[] };
        return r.groups.every((g) => g.workers.length === 0);
      }, 'R2 without local members');
      await pub.publishAsync(f, 'elsewhere', { qos: 1 });
      await eventually(() => gotA.length === 1, 'the message on A');
    });
  });

  describe('cluster: API and ctl', () => {
    test('GET /api/v1/cluster lists every node with role, status, uptime, core and shards; ctl cluster status --json prints the same', T, async () => {
      await eventually(async () => {
        const v = (await A.get('/api/v1/cluster')).body as { nodes: { name: string; status: string }[] };
        return v.nodes.length === 4 && v.nodes.every((n) => n.status === 'running');
      }, 'four running nodes');
      const view = (await R1.get('/api/v1/cluster')).body as { nodes: Record<string, unknown>[] };
      const byName = new Map(view.nodes.map((n) => [n['name'] as string, n]));
      for (const [n, role] of [[A, 'core'], [B, 'core'], [R1, 'replicant'], [R2, 'replicant']] as const) {
        const row = byName.get(n.name);
        assert.ok(row, `${n.name} listed`);
        assert.equal(row['role'], role);
        assert.equal(row['status'], 'running');
        assert.equal(typeof row['uptime_s'], 'number');
        const shards = row['shards'] as { name: string; revision: number; lag: number }[];
        assert.deepEqual(shards.map((s) => s.name), ['nodes', 'routes', 'sessions', 'retained', 'config', 'auth']);
        for (const s of shards) assert.ok(s.revision > 0 && s.lag >= 0, JSON.stringify(s));
      }
      assert.equal(byName.get(R1.name)!['core'], A.name);
      assert.equal(byName.get(R2.name)!['core'], B.name);
      assert.equal(byName.get(A.name)!['core'], null);

      const { stdout } = await promisify(execFile)(process.execPath, [CLI_MAIN, 'ctl', '--url', `http://127.0.0.1:${B.httpPort}`, 'cluster', 'status', '--json'], { timeout: 15_000 });
      const printed = JSON.parse(stdout) as { nodes: { name: string; role: string; status: string; core: string | null }[] };
      assert.deepEqual(printed.nodes.map((n) => [n.name, n.role, n.status, n.core]).sort(), view.nodes.map((n) => [n['name'], n['role'], n['status'], n['core']]).sort());
      const table = await promisify(execFile)(process.execPath, [CLI_MAIN, 'ctl', '--url', `http://127.0.0.1:${B.httpPort}`, 'cluster', 'status'], { timeout: 15_000 });
      for (const n of [A, B, R1, R2]) assert.match(table.stdout, new RegExp(n.name.replace(/[.]/g, '\\.')));
    });

    test('GET /api/v1/cluster `forwarding`: the node\'s senders to each peer, summed over its workers (sent, acked, unacked, connections)', T, async () => {
      type Row = { peer: string; connections: number; connections_up: number; sent: number; acked: number; unacked: number; queued_bytes: number; resent: number; reconnects: number };
      const rowFor = async (peer: ClusterNode): Promise<Row | undefined> =>
        ((await R2.get('/api/v1/cluster')).body as { forwarding: Row[] }).forwarding.find((r) => r.peer === peer.name);
      const topic = `fwdstats/${process.pid}`;
      const sub = await client(A, 5);
      const got = inbox(sub);
      await sub.subscribeAsync(topic, { qos: 1 });
      await routed(R2, topic, A);
      const before = await rowFor(A);
      assert.ok(before, 'a row for A');
      assert.ok(before.connections >= 1 && before.connections_up === before.connections, JSON.stringify(before));
      const pub = await client(R2, 5);
      const n = 200;
      await Promise.all(Array.from({ length: n }, (_, i) => pub.publishAsync(topic, String(i), { qos: 1 })));
      await eventually(() => got.length >= n, `${n} messages at A`);
      // Every PUBACK came after A held the message, so the acknowledgements are counted.
      const after = (await rowFor(A))!;
      assert.ok(after.sent - before.sent >= n, `sent ${before.sent} → ${after.sent}`);
      assert.ok(after.acked - before.acked >= n, `acked ${before.acked} → ${after.acked}`);
      assert.equal(after.unacked, 0);
      const peers = ((await R2.get('/api/v1/cluster')).body as { forwarding: Row[] }).forwarding.map((r) => r.peer);
      assert.ok(!peers.includes(R2.name), 'no row for the node itself');
    });

    test('per-node /api/v1/stats and /status keep working; stats count what crossed nodes', T, async () => {
      const st = (await A.get('/api/v1/stats')).body as Record<string, number>;
      assert.ok(st['forwardedRemote']! > 0 || st['forwardedInRemote']! > 0, 'traffic between nodes is counted');
      const s = await R1.status();
      assert.equal(s['status'], 'running');
      const c = s['cluster'] as { role: string; core: string };
      assert.equal(c.role, 'replicant');
      assert.equal(c.core, A.name);
      const sa = (await A.status())['cluster'] as { etcd: { state: string } };
      assert.equal(sa.etcd.state, 'up');
    });

    test('bad input: /api/v1/routes without a topic, join without a node: 400 naming the field', T, async () => {
      const r = await A.get('/api/v1/routes');
      assert.equal(r.status, 400);
      assert.equal((r.body as { field: string }).field, 'topic');
      const j = await A.post('/api/v1/cluster/join', {});
      assert.equal(j.status, 400);
      assert.equal((j.body as { field: string }).field, 'node');
    });
  });
});
