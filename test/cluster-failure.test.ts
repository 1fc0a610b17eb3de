// The cluster when things break (docs/cluster.md, "Failures"): a core killed with -9 while
// replicants serve traffic (they move to the other core and keep routing), a replicant
// restarted (it bootstraps again, its clients reconnect), a peer with the wrong cookie or
// cluster name (refused, never half-joined), etcd unreachable at start-up (exit 1, a clear
// error) and etcd lost while running (routing goes on from memory, a new subscription waits
// and completes once etcd is back, /status says so).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { MqttClient } from 'mqtt';
import { startEtcdCluster, useEtcdCluster, type EtcdCluster } from './helpers/etcd.js';
import { eventually, useNodes, type ClusterNode, routed, routesOf, coreOf } from './helpers/cluster.js';
import { Clients, inbox, uid } from './helpers/clients.js';
import { freePort, sleep } from './helpers/broker.js';

const T = { timeout: 90_000 };

describe('cluster failures: a core dies, a replicant restarts, wrong peers', () => {
  const etcd = useEtcdCluster(3);
  const nodes = useNodes();
  const clients = new Clients();
  after(() => clients.closeAll());
  let A: ClusterNode;
  let B: ClusterNode;
  let R1: ClusterNode;
  let R2: ClusterNode;

  before(async () => {
    const e = etcd.cluster.endpoints;
    [A, B] = await Promise.all([nodes.start({ role: 'core', name: 'fa', etcd: e }), nodes.start({ role: 'core', name: 'fb', etcd: e })]);
    // Both replicants start on A (their only seed) and learn B from the nodes shard.
    [R1, R2] = await Promise.all([
      nodes.start({ role: 'replicant', name: 'f1', seeds: [A.clusterAddress] }),
      nodes.start({ role: 'replicant', name: 'f2', seeds: [A.clusterAddress] }),
    ]);
  });

  test('a core killed with -9: its replicants move to the other core within 2 s and keep routing, old routes and new', T, async () => {
    assert.equal(await coreOf(R1), A.name);
    assert.equal(await coreOf(R2), A.name);
    const topic = `fail/${process.pid}/core`;
    const sub = await clients.mqtt(R2.url, { protocolVersion: 5, clientId: uid('s') });
    const got = inbox(sub);
    await sub.subscribeAsync(topic, { qos: 1 });
    await routed(R1, topic, R2);
    const pub = await clients.mqtt(R1.url, { protocolVersion: 5, clientId: uid('p') });
    await pub.publishAsync(topic, 'before', { qos: 1 });
    await eventually(() => got.length === 1, 'the first message');

    const t0 = Date.now();
    await A.kill();
    await eventually(async () => (await coreOf(R1)) === B.name && (await coreOf(R2)) === B.name, 'both replicants on B', 10_000);
    const moved = Date.now() - t0;
    assert.ok(moved <= 2000, `moved in ${moved} ms`);
    // The routes they had are still there: R1 still sends to R2.
    await pub.publishAsync(topic, 'after', { qos: 1 });
    await eventually(() => got.length === 2, 'the message after the failover');
    // A new subscription goes through B now, and is routed everywhere.
    const topic2 = `fail/${process.pid}/new`;
    const sub2 = await clients.mqtt(R1.url, { protocolVersion: 5, clientId: uid('s2') });
    const got2 = inbox(sub2);
    await sub2.subscribeAsync(topic2, { qos: 1 });
    await routed(R2, topic2, R1);
    await routed(B, topic2, R1);
    const pub2 = await clients.mqtt(B.url, { protocolVersion: 5, clientId: uid('p2') });
    await pub2.publishAsync(topic2, 'new route', { qos: 1 });
    await eventually(() => got2.length === 1, 'the message on the new route');
    // A is stopped for the cluster once its lease runs out (4 s here).
    await eventually(async () => {
      const v = (await B.get('/api/v1/cluster')).body as { nodes: { name: string; status: string }[] };
      return v.nodes.find((n) => n.name === A.name)?.status === 'stopped';
    }, 'A stopped in the cluster view', 15_000);
  });

  test('a replicant restarted bootstraps again and its clients come back to it', T, async () => {
    const topic = `fail/${process.pid}/rep`;
    const sub = await clients.mqtt(R2.url, { protocolVersion: 4, clientId: uid('rs'), reconnectPeriod: 200 });
    let subscribedAgain = 0;
    sub.on('connect', () => {
      subscribedAgain++;
      sub.subscribe(topic, { qos: 1 });
    });
    const got = inbox(sub);
    await sub.subscribeAsync(topic, { qos: 1 });
    await R2.kill();
    const bootstraps = R2.lines('cluster.shard_bootstrapped').length;
    await R2.start();
    assert.ok(R2.lines('cluster.shard_bootstrapped').length > bootstraps, 'the restarted replicant loaded its shards from a core');
    await eventually(() => subscribedAgain >= 1, 'the client reconnected', 15_000);
    await routed(R1, topic, R2);
    const pub = await clients.mqtt(R1.url, { protocolVersion: 4, clientId: uid('rp') });
    await pub.publishAsync(topic, 'back', { qos: 1 });
    await eventually(() => got.some((m) => m.payload === 'back'), 'the message after the restart');
  });

  test('a node with the wrong cookie is refused (logged on both sides) and never joins; so is one of another cluster', T, async () => {
    const bad = nodes.node({ role: 'replicant', name: 'bad', seeds: [B.clusterAddress], cookie: 'not-the-right-cookie' });
    await bad.start(1).catch(() => undefined); // it never runs: no core accepts it
    await eventually(() => B.lines('cluster.peer_refused').some((l) => l['reason'] === 'wrong cookie'), 'B refusing it', 10_000);
    // Its own refusal may be logged before the line naming the core it could not reach: wait for that one.
    await eventually(() => bad.lines('cluster.core_unreachable').length > 0, 'the refused node saying so');
    assert.match(JSON.stringify(bad.lines('cluster.core_unreachable')[0] ?? {}), /wrong cookie|refused/);
    const other = nodes.node({ role: 'replicant', name: 'other', seeds: [B.clusterAddress], clusterName: 'another-cluster' });
    await other.start(1).catch(() => undefined);
    await eventually(() => B.lines('cluster.peer_refused').some((l) => String(l['reason']).includes('wrong cluster name')), 'B refusing the other cluster', 10_000);
    const v = (await B.get('/api/v1/cluster')).body as { nodes: { name: string }[] };
    assert.equal(v.nodes.some((n) => n.name === bad.name || n.name === other.name), false, 'neither is a member');
    assert.equal((await bad.get('/status').catch(() => ({ status: 0 }))).status === 200, false, 'the refused node never runs');
    await bad.kill();
    await other.kill();
  });
});

describe('cluster failures: etcd', () => {
  const nodes = useNodes();
  const clients = new Clients();
  after(() => clients.closeAll());

  test('etcd unreachable at start-up: the core exits 1 with a message naming etcd', T, async () => {
    const port = await freePort();
    const n = nodes.node({ role: 'core', name: 'noetcd', etcd: [`http://127.0.0.1:${port}`] });
    await n.start(1).catch(() => undefined);
    const exit = await n.exited;
    assert.equal(exit.code, 1);
    const line = n.lines('node.start_failed')[0];
    assert.ok(line, n.tail());
    assert.equal(line['code'], 'CLUSTER_ETCD_UNREACHABLE');
    assert.match(String(line['error']), new RegExp(`etcd at http://127.0.0.1:${port} did not answer`));
  });

  let e: EtcdCluster | null = null;
  after(() => e?.stop());

  test('etcd lost while running: routing goes on, /status says so, a new subscription waits and completes when etcd is back', T, async () => {
    e = await startEtcdCluster(1);
    const A = await nodes.start({ role: 'core', name: 'ea', etcd: e.endpoints, leaseTtl: 10 });
    const R = await nodes.start({ role: 'replicant', name: 'er', seeds: [A.clusterAddress], leaseTtl: 10 });
    // A replicant that waits 1.5 s for a route to be committed before it refuses the SUBSCRIBE.
    const R2 = await nodes.start({
      role: 'replicant', name: 'er2', seeds: [A.clusterAddress], leaseTtl: 10, env: { FLEETMQ_CLUSTER__ROUTE_COMMIT_TIMEOUT_MS: '1500' },
    });
    const topic = `etcd/${process.pid}/old`;
    const sub = await clients.mqtt(R.url, { protocolVersion: 5, clientId: uid('s') });
    const got = inbox(sub);
    await sub.subscribeAsync(topic, { qos: 1 });
    await routed(A, topic, R);

    // R2's clients connect now: while etcd is away a CONNECT waits for its session claim.
    const topic3 = `etcd/${process.pid}/refused`;
    const sub3 = await clients.mqtt(R2.url, { protocolVersion: 5, clientId: uid('s3') });
    const got3 = inbox(sub3);
    const local = await clients.mqtt(R2.url, { protocolVersion: 5, clientId: uid('p3') });

    await e.kill(0);
    await eventually(async () => ((await A.status())['cluster'] as { etcd: { state: string } }).etcd.state === 'unreachable', 'A reporting etcd unreachable', 15_000);
    const pub: MqttClient = await clients.mqtt(A.url, { protocolVersion: 5, clientId: uid('p') });
    await pub.publishAsync(topic, 'while etcd is down', { qos: 1 });
    await eventually(() => got.length === 1, 'routing from memory');

    const topic2 = `etcd/${process.pid}/new`;
    const sub2 = await clients.mqtt(R.url, { protocolVersion: 5, clientId: uid('s2') });
    let subacked = false;
    const pending = sub2.subscribeAsync(topic2, { qos: 1 }).then(() => (subacked = true));
    // A subscription on the core itself: its route change is counted until etcd has it.
    type RouteState = { pending_writes: number; routes: { uncommitted: number } };
    const routeState = async (): Promise<RouteState> => (await A.status())['cluster'] as RouteState;
    const subA = await clients.mqtt(A.url, { protocolVersion: 5, clientId: uid('sa') });
    const pendingA = subA.subscribeAsync(`etcd/${process.pid}/on-core`, { qos: 1 });
    await eventually(async () => (await routeState()).routes.uncommitted >= 1, 'A counting its uncommitted route');
    const during = await routeState();
    assert.ok(during.pending_writes >= 1, `A's pending_writes counts the route entry it is writing (${JSON.stringify(during)})`);
    // On R2 the wait ends at 1.5 s: the subscription is refused (0x80) and undone.
    const t3 = Date.now();
    // MQTT.js rejects a SUBACK that holds a failure code, with the packet.
    const err = await sub3.subscribeAsync(topic3, { qos: 1 }).then(() => null, (x: { packet?: { granted?: number[] } }) => x);
    assert.ok(Date.now() - t3 >= 1400, `R2's SUBACK waited its commit timeout (${Date.now() - t3} ms)`);
    assert.deepEqual(err?.packet?.granted, [0x80], 'refused: the route is not in the cluster');
    // Logged by the worker; the line reaches the node's stdout a moment after the SUBACK.
    await eventually(() => R2.lines('mqtt.subscribe_not_committed').length === 1, 'the refusal logged');
    await local.publishAsync(topic3, 'not for a refused subscription', { qos: 1 });
    await sleep(1500);
    assert.equal(subacked, false, 'the SUBACK waits for etcd');
    assert.deepEqual(got3, [], 'the refused subscription was undone on its node too');
    await e.start(0);
    await pending;
    await pendingA;
    await eventually(async () => (await routeState()).routes.uncommitted === 0, 'A\'s route committed');
    await eventually(async () => ((await A.status())['cluster'] as { etcd: { state: string } }).etcd.state === 'up', 'A reporting etcd up', 15_000);
    const got2 = inbox(sub2);
    await routed(A, topic2, R);
    await pub.publishAsync(topic2, 'after etcd came back', { qos: 1 });
    await eventually(() => got2.length === 1, 'the new route');
    // R2's refused route was never left in the cluster (its add and its removal both went in).
    await sleep(500);
    assert.deepEqual(await routesOf(A, topic3), [], 'no route to R2 for the refused filter');
    await pub.publishAsync(topic3, 'after etcd came back', { qos: 1 });
    await sleep(300);
    assert.deepEqual(got3, []);
  });
});
