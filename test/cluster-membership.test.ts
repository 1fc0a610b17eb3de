// Membership changes with real nodes and a real etcd (docs/cluster.md, "Operating" and
// "Replicants"): a failed `ctl cluster join` changes nothing; a replicant whose lease
// expired writes its routes again; a core that leaves hands its replicants to another core
// and ends as "left"; a failover goes to another live core, not back to the dead one; a
// core with many routes stops quickly; managed cores started together all join.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { MqttClient } from 'mqtt';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { listMembers } from '../src/cluster/etcd/members.js';
import { useEtcdCluster } from './helpers/etcd.js';
import { eventually, useNodes, type ClusterNode, routesOf, routed, coreOf, passes } from './helpers/cluster.js';
import { Clients, inbox, uid } from './helpers/clients.js';
import { freePort, sleep } from './helpers/broker.js';

const T = { timeout: 120_000 };

describe('membership: join, lease expiry, leave', () => {
  const etcd = useEtcdCluster(1);
  const nodes = useNodes();
  const clients = new Clients();
  after(() => clients.closeAll());
  let A: ClusterNode;
  let B: ClusterNode;
  let R1: ClusterNode;
  let R2: ClusterNode;

  before(async () => {
    const e = etcd.cluster.endpoints;
    // A 2 s lease: a replicant nobody keeps alive is dropped 2 s after its link closed.
    [A, B] = await Promise.all([
      nodes.start({ role: 'core', name: 'ja', etcd: e, leaseTtl: 2 }),
      nodes.start({ role: 'core', name: 'jb', etcd: e, leaseTtl: 2 }),
    ]);
    [R1, R2] = await Promise.all([
      nodes.start({ role: 'replicant', name: 'j1', seeds: [A.clusterAddress], leaseTtl: 2 }),
      nodes.start({ role: 'replicant', name: 'j2', seeds: [B.clusterAddress], leaseTtl: 2 }),
    ]);
  });

  test('a failed join (nobody there, wrong cookie) is answered with an error and changes nothing', T, async () => {
    assert.equal(await coreOf(R1), A.name);
    const file = join(R1.dataDir, 'cluster.json');
    await eventually(() => {
      try {
        return (JSON.parse(readFileSync(file, 'utf8')) as { cores: string[] }).cores.includes(B.clusterAddress);
      } catch {
        return false;
      }
    }, 'cluster.json naming both cores');
    const before = readFileSync(file, 'utf8');
    // A cluster port that nobody listens on.
    const nobody = `127.0.0.1:${await freePort()}`;
    const r1 = await R1.post('/api/v1/cluster/join', { node: nobody });
    assert.equal(r1.status, 502, JSON.stringify(r1.body));
    assert.match(String((r1.body as { message: string }).message), /cannot stream from/);
    // A node whose cluster port answers with another cookie (it never runs itself).
    const bad = nodes.node({ role: 'replicant', name: 'jbad', seeds: [nobody], cookie: 'another-cookie-entirely' });
    await bad.start(1).catch(() => undefined);
    const r2 = await R1.post('/api/v1/cluster/join', { node: bad.clusterAddress });
    assert.equal(r2.status, 502, JSON.stringify(r2.body));
    await bad.kill();
    assert.equal(readFileSync(file, 'utf8'), before, 'cluster.json unchanged');
    assert.equal(await coreOf(R1), A.name, 'still streaming from A');
    await passes(B, R1, clients, 'after-failed-join');
    await passes(R1, R2, clients, 'after-failed-join-2');
  });

  test('a replicant whose lease expired gets a new one, writes its routes again and claims its sessions again', T, async () => {
    const topic = `mb/${process.pid}/lease`;
    const sub = await clients.mqtt(R2.url, { protocolVersion: 5, clientId: uid('ls'), keepalive: 60 });
    const got = inbox(sub);
    await sub.subscribeAsync(topic, { qos: 1 });
    await routed(A, topic, R2);
    // Two more clients of R2: one keeps its id, the other's id connects to A meanwhile.
    const keepId = uid('lk');
    const lostId = uid('ll');
    const reasons = new Map<string, number[]>();
    const watch = async (id: string) => {
      const c = await clients.mqtt(R2.url, { protocolVersion: 5, clientId: id, keepalive: 60 });
      const r: number[] = [];
      reasons.set(id, r);
      c.on('disconnect', (p) => r.push(p.reasonCode ?? 0));
      return c;
    };
    await watch(keepId);
    const lost = await watch(lostId);
    let lostClosed = false;
    lost.on('close', () => (lostClosed = true));
    // Frozen: B drops its link after 5 s of silence, then nobody keeps R2's lease alive.
    R2.proc!.kill('SIGSTOP');
    try {
      await eventually(async () => !(await routesOf(A, topic)).includes(R2.name), 'R2\'s routes gone with its lease', 20_000);
      // The ownership keys went with the lease: A can claim lostId without asking R2.
      await clients.mqtt(A.url, { protocolVersion: 5, clientId: lostId });
    } finally {
      R2.proc!.kill('SIGCONT');
    }
    await eventually(() => R2.lines('cluster.lease_renewed').length > 0, 'R2 getting a new lease', 15_000);
    await routed(A, topic, R2);
    const pub = await clients.mqtt(A.url, { protocolVersion: 5, clientId: uid('lp') });
    await pub.publishAsync(topic, 'after the new lease', { qos: 1 });
    await eventually(() => got.length === 1, 'the message to the subscriber it had all along');
    // R2 claimed its sessions again: the one A owns now ends on R2 (0x8E) ...
    await eventually(() => lostClosed, 'R2 ending its copy of the session A took meanwhile', 15_000);
    assert.deepEqual(reasons.get(lostId), [0x8e]);
    await eventually(() => R2.lines('cluster.session_lost_with_lease').length === 1, 'the lost session logged');
    // ... and the one it kept is known as R2's again: a connect on A takes it over from R2.
    await clients.mqtt(A.url, { protocolVersion: 5, clientId: keepId });
    await eventually(() => (reasons.get(keepId) ?? []).length > 0, 'the takeover reaching R2\'s client', 10_000);
    assert.deepEqual(reasons.get(keepId), [0x8e]);
  });

  test('a core that leaves hands its replicants over and ends as "left"', T, async () => {
    // R1 to B first (a join that works: saved in cluster.json).
    const j = await R1.post('/api/v1/cluster/join', { node: B.clusterAddress });
    assert.equal(j.status, 200, JSON.stringify(j.body));
    assert.equal(await coreOf(R1), B.name);
    const l = await B.post('/api/v1/cluster/leave', {});
    assert.equal(l.status, 200, JSON.stringify(l.body));
    await eventually(async () => (await coreOf(R1)) === A.name, 'R1 on A after B left', 10_000);
    // A subscription made after the leave goes through A and is routed everywhere.
    await passes(R2, R1, clients, 'after-leave');
    await passes(A, R1, clients, 'after-leave-2');
    const st = await B.get('/status');
    assert.equal(st.status, 200);
    assert.equal(((st.body as Record<string, unknown>)['cluster'] as { state: string }).state, 'left');
    const view = (await B.get('/api/v1/cluster')).body as { nodes: { name: string; status: string }[] };
    assert.deepEqual(view.nodes.map((n) => [n.name, n.status]), [[B.name, 'left']]);
    const fromA = (await A.get('/api/v1/cluster')).body as { nodes: { name: string }[] };
    assert.equal(fromA.nodes.some((n) => n.name === B.name), false, 'B is no member for A');
    assert.equal((await B.stop()).code, 0);
  });
});

describe('failover: to another live core, spread, no herd back', () => {
  const etcd = useEtcdCluster(1);
  const nodes = useNodes();
  const clients = new Clients();
  after(() => clients.closeAll());

  test('with a replicant on each core, killing one core moves its replicant to the other within 2 s; nothing moves back', T, async () => {
    const e = etcd.cluster.endpoints;
    const [A, B] = await Promise.all([nodes.start({ role: 'core', name: 'fa', etcd: e }), nodes.start({ role: 'core', name: 'fb', etcd: e })]);
    const [R1, R2] = await Promise.all([
      nodes.start({ role: 'replicant', name: 'f1', seeds: [A.clusterAddress] }),
      nodes.start({ role: 'replicant', name: 'f2', seeds: [B.clusterAddress] }),
    ]);
    assert.equal(await coreOf(R1), A.name);
    assert.equal(await coreOf(R2), B.name);
    // Both know both cores (the nodes shard).
    await eventually(async () => {
      const v = (await R1.get('/api/v1/cluster')).body as { nodes: { name: string }[] };
      return v.nodes.filter((n) => n.name === A.name || n.name === B.name).length === 2;
    }, 'R1 knowing both cores');
    const topic = `mb/${process.pid}/failover`;
    const sub = await clients.mqtt(R1.url, { protocolVersion: 5, clientId: uid('fs') });
    const got = inbox(sub);
    await sub.subscribeAsync(topic, { qos: 1 });
    await routed(R2, topic, R1);

    const tried = R1.lines('cluster.core_unreachable').length;
    const t0 = Date.now();
    await A.kill();
    await eventually(async () => (await coreOf(R1)) === B.name, 'R1 on B', 10_000);
    const moved = Date.now() - t0;
    assert.ok(moved <= 2000, `moved in ${moved} ms`);
    assert.equal(R1.lines('cluster.core_unreachable').length, tried, 'the dead core was not tried first');
    assert.equal(await coreOf(R2), B.name);
    const pub = await clients.mqtt(R2.url, { protocolVersion: 5, clientId: uid('fp') });
    await pub.publishAsync(topic, 'after failover', { qos: 1 });
    await eventually(() => got.length === 1, 'the message after the failover');

    // A comes back: the replicants stay where they are (no herd onto it).
    await A.start();
    await sleep(1500);
    assert.equal(await coreOf(R1), B.name);
    assert.equal(await coreOf(R2), B.name);
  });
});

/** Subscribes `c` to `<prefix>/0` … `<prefix>/<n - 1>`, 1,000 filters per SUBSCRIBE. */
async function subscribeMany(c: MqttClient, prefix: string, n: number): Promise<void> {
  for (let i = 0; i < n; i += 1000) {
    const subs: Record<string, { qos: 0 }> = {};
    for (let j = i; j < Math.min(n, i + 1000); j++) subs[`${prefix}/${j}`] = { qos: 0 };
    await c.subscribeAsync(subs);
  }
}

describe('stopping a core with many routes', () => {
  const etcd = useEtcdCluster(1);
  const nodes = useNodes();
  const clients = new Clients();
  after(() => clients.closeAll());

  test('SIGTERM with 20,000 routes: exit 0 within 3 s, its routes gone from the other core at once', T, async () => {
    const e = etcd.cluster.endpoints;
    const [A, B] = await Promise.all([nodes.start({ role: 'core', name: 'sa', etcd: e }), nodes.start({ role: 'core', name: 'sb', etcd: e })]);
    const c = await clients.mqtt(A.url, { protocolVersion: 5, clientId: uid('big') });
    const N = 20_000;
    await subscribeMany(c, `big/${process.pid}`, N);
    await routed(B, `big/${process.pid}/${N - 1}`, A);
    const t0 = Date.now();
    const exit = await A.stop();
    const ms = Date.now() - t0;
    assert.equal(exit.code, 0, A.tail());
    assert.ok(ms < 3000, `stopped in ${ms} ms`);
    await eventually(async () => (await routesOf(B, `big/${process.pid}/0`)).length === 0, 'A\'s routes gone on B', 2000);
  });

  test('a replicant\'s SIGTERM with 20,000 routes: exit 0 within 3 s, its core revokes its lease (stopped and routes gone at once)', T, async () => {
    const e = etcd.cluster.endpoints;
    // A long lease: what goes at once goes because the core revoked it, not because it ran out.
    const C = await nodes.start({ role: 'core', name: 'sc', etcd: e, leaseTtl: 60 });
    const R = await nodes.start({ role: 'replicant', name: 'sr', seeds: [C.clusterAddress], leaseTtl: 60 });
    const c = await clients.mqtt(R.url, { protocolVersion: 5, clientId: uid('rbig') });
    const N = 20_000;
    await subscribeMany(c, `rbig/${process.pid}`, N);
    await routed(C, `rbig/${process.pid}/${N - 1}`, R);
    const t0 = Date.now();
    const exit = await R.stop();
    const ms = Date.now() - t0;
    assert.equal(exit.code, 0, R.tail());
    assert.ok(ms < 3000, `stopped in ${ms} ms`);
    assert.equal(R.lines('cluster.stop_not_announced').length, 0, R.tail());
    await eventually(async () => (await routesOf(C, `rbig/${process.pid}/0`)).length === 0, 'R\'s routes gone on its core', 2000);
    await eventually(async () => {
      const v = (await C.get('/api/v1/cluster')).body as { nodes: { name: string; status: string }[] };
      return v.nodes.find((n) => n.name === R.name)?.status === 'stopped';
    }, 'R stopped in the cluster view', 2000);
    assert.ok(C.lines('cluster.replicant_stopped').some((l) => l['replicant'] === R.name));
  });
});

describe('managed cores started together', () => {
  const nodes = useNodes();

  test('two managed cores joining one at the same time both start; etcd has 3 voting members', { timeout: 180_000 }, async () => {
    const M1 = await nodes.start({ role: 'core', name: 'g1', managed: true, workers: 1 });
    const M2 = nodes.node({ role: 'core', name: 'g2', managed: true, seeds: [M1.clusterAddress], workers: 1 });
    const M3 = nodes.node({ role: 'core', name: 'g3', managed: true, seeds: [M1.clusterAddress], workers: 1 });
    await Promise.all([M2.start(120_000), M3.start(120_000)]);
    const members = await listMembers([`http://127.0.0.1:${M1.etcdClientPort}`]);
    assert.deepEqual(members.map((m) => m.name).sort(), [M1.name, M2.name, M3.name].sort());
    assert.ok(members.every((m) => m.started && !m.isLearner), JSON.stringify(members));
    assert.ok([...M2.lines('cluster.etcd_member_join_wait'), ...M3.lines('cluster.etcd_member_join_wait')].length > 0, 'one of them waited for the other');
    for (const n of [M1, M2, M3]) assert.equal(((await n.status())['cluster'] as { state: string }).state, 'running');
  });
});
