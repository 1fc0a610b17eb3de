// Cores with their own managed etcd members (--etcd-managed): the first starts a one-member
// etcd, the next ones join it with member add (--seeds); a restarted core keeps its member;
// with 3 managed cores one may stop with no loss of service. Also: DNS discovery (A records)
// and inter-node links over TLS (cluster.tls).
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { get as httpsGet, type RequestOptions } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listMembers } from '../src/cluster/etcd/members.js';
import { useEtcdTls } from '../src/cluster/etcd/tls.js';
import { eventually, useNodes, type ClusterNode, routed, passes } from './helpers/cluster.js';
import { Clients, inbox, uid } from './helpers/clients.js';
import { makeTestPki } from './helpers/certs.js';

const T = { timeout: 120_000 };

/** The HTTP status of an https GET, or the error's code when the TLS handshake or the request fails. */
function httpsStatus(url: string, o: RequestOptions): Promise<number | string> {
  return new Promise((resolve) => {
    const req = httpsGet(url, { ...o, agent: false, timeout: 3000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

describe('managed etcd: cores that run their own etcd members', () => {
  const nodes = useNodes();
  const clients = new Clients();
  after(() => clients.closeAll());
  let M1: ClusterNode;
  let M2: ClusterNode;
  let M3: ClusterNode;
  const etcdUrl = (n: ClusterNode): string => `http://127.0.0.1:${n.etcdClientPort}`;

  test('the first managed core starts a one-member etcd; a second one with --seeds joins it (member add)', T, async () => {
    M1 = await nodes.start({ role: 'core', name: 'm1', managed: true, workers: 1 });
    M2 = await nodes.start({ role: 'core', name: 'm2', managed: true, seeds: [M1.clusterAddress], workers: 1 });
    const members = await listMembers([etcdUrl(M1)]);
    assert.deepEqual(members.map((m) => m.name).sort(), [M1.name, M2.name].sort());
    assert.ok(members.every((m) => m.started && !m.isLearner));
    assert.ok(M2.lines('cluster.etcd_member_join').length === 1, 'M2 joined by member add');
    await passes(M1, M2, clients, 'm1-m2');
    await passes(M2, M1, clients, 'm2-m1');
  });

  test('a third managed core joins; a restarted core starts its member again from its data dir', T, async () => {
    M3 = await nodes.start({ role: 'core', name: 'm3', managed: true, seeds: [M2.clusterAddress], workers: 1 });
    assert.equal((await listMembers([etcdUrl(M3)])).length, 3);
    const e = await M2.stop();
    assert.equal(e.code, 0);
    await M2.start();
    assert.equal(M2.lines('cluster.etcd_member_restart').length, 1, 'started its member again');
    assert.equal((await listMembers([etcdUrl(M1)])).length, 3, 'no member added twice');
    await passes(M3, M2, clients, 'm3-m2');
  });

  test('with three managed cores, one stopping leaves etcd and the cluster serving', T, async () => {
    assert.equal((await M1.stop()).code, 0);
    await passes(M2, M3, clients, 'after-m1');
    const v = (await M3.get('/api/v1/cluster')).body as { nodes: { name: string; status: string }[] };
    assert.equal(v.nodes.find((n) => n.name === M2.name)?.status, 'running');
    assert.equal((await M3.status())['status'], 'running');
  });
});

describe('managed cores started together', () => {
  const nodes = useNodes();
  const clients = new Clients();
  after(() => clients.closeAll());

  test('a core whose seed is not up yet waits for it (cluster.seed_wait), then joins its etcd', T, async () => {
    const first = nodes.node({ role: 'core', name: 'tg1', managed: true, workers: 1 });
    await first.pickPorts();
    const second = nodes.node({ role: 'core', name: 'tg2', managed: true, workers: 1, seeds: [first.clusterAddress] });
    const started = second.start(60_000);
    await eventually(() => second.lines('cluster.seed_wait').length > 0, 'the second core waiting for its seed');
    await new Promise((r) => setTimeout(r, 1500));
    await first.start();
    await started;
    assert.equal(second.lines('cluster.seed_answered').length, 1);
    assert.deepEqual((await listMembers([`http://127.0.0.1:${first.etcdClientPort}`])).map((m) => m.name).sort(), [first.name, second.name].sort());
    await passes(first, second, clients, 'together');
  });

  test('a seed that refuses (another cluster name) ends the wait at once: exit 1', T, async () => {
    const other = await nodes.start({ role: 'core', name: 'tg3', managed: true, workers: 1, clusterName: `other${process.pid}` });
    const bad = nodes.node({ role: 'core', name: 'tg4', managed: true, workers: 1, seeds: [other.clusterAddress] });
    await bad.pickPorts();
    const t0 = Date.now();
    bad.spawn();
    const exit = await bad.exited;
    assert.equal(exit.code, 1);
    assert.ok(Date.now() - t0 < 20_000, `no waiting on a refusal (${Date.now() - t0} ms)`);
    await eventually(() => bad.logs.some((l) => l.includes('cannot join: no seed answered')), 'the reason logged');
  });
});

describe('ctl cluster join on a running managed core', () => {
  const nodes = useNodes();
  const clients = new Clients();
  after(() => clients.closeAll());
  let J1: ClusterNode;
  let J2: ClusterNode;
  let J3: ClusterNode;
  const etcdUrl = (n: ClusterNode): string => `http://127.0.0.1:${n.etcdClientPort}`;
  const viewOf = async (n: ClusterNode): Promise<string[]> =>
    ((await n.get('/api/v1/cluster')).body as { nodes: { name: string; status: string }[] }).nodes.filter((x) => x.status === 'running').map((x) => x.name).sort();

  test('a core of a two-core cluster joins another cluster: it leaves the first (member removed), its member is added to the second', T, async () => {
    J1 = await nodes.start({ role: 'core', name: 'j1', managed: true, workers: 1 });
    J2 = await nodes.start({ role: 'core', name: 'j2', managed: true, workers: 1 });
    J3 = await nodes.start({ role: 'core', name: 'j3', managed: true, seeds: [J2.clusterAddress], workers: 1 });
    assert.equal((await listMembers([etcdUrl(J2)])).length, 2);
    // A client of J3 is disconnected by the move and reconnects.
    const c = await clients.mqtt(J3.url, { protocolVersion: 5, clientId: uid('jc'), reconnectPeriod: 200 });
    let closed = 0;
    c.on('close', () => closed++);

    const r = await J3.post('/api/v1/cluster/join', { node: J1.clusterAddress });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual((await listMembers([etcdUrl(J1)])).map((m) => m.name).sort(), [J1.name, J3.name].sort());
    assert.deepEqual((await listMembers([etcdUrl(J2)])).map((m) => m.name), [J2.name], 'its member left the first etcd cluster');
    await eventually(async () => (await viewOf(J1)).join() === [J1.name, J3.name].sort().join(), 'J1 sees J1 and J3');
    await eventually(async () => (await viewOf(J2)).join() === J2.name, 'J2 is alone');
    await eventually(() => J3.lines('cluster.rejoined').length === 1, 'J3 logged cluster.rejoined');
    assert.equal((await J3.status())['status'], 'running');
    await passes(J1, J3, clients, 'j1-j3');
    await passes(J3, J1, clients, 'j3-j1');
    await eventually(() => closed >= 1 && c.connected, 'the client was disconnected and is back');
  });

  test('a join to a core that does not answer changes nothing (502); a lone core then joins (no member to remove)', T, async () => {
    const r = await J2.post('/api/v1/cluster/join', { node: '127.0.0.1:1' });
    assert.equal(r.status, 502, JSON.stringify(r.body));
    assert.match((r.body as { message: string }).message, /still in this core's cluster/);
    assert.equal((await J2.status())['status'], 'running');
    assert.equal(J2.lines('cluster.rejoining').length, 0);
    const again = await J2.post('/api/v1/cluster/join', { node: J1.clusterAddress });
    assert.equal(again.status, 200, JSON.stringify(again.body));
    assert.equal((await listMembers([etcdUrl(J1)])).length, 3);
    const same = await J2.post('/api/v1/cluster/join', { node: J3.clusterAddress });
    assert.equal(same.status, 200, 'already a member');
    assert.match((same.body as { message: string }).message, /already/);
    await passes(J2, J3, clients, 'j2-j3');
  });

  test('a core that joined starts again in its new cluster', T, async () => {
    assert.equal((await J2.stop()).code, 0);
    await J2.start();
    await eventually(() => J2.lines('cluster.etcd_member_restart').length === 1, 'J2 started its member again');
    await passes(J1, J2, clients, 'j1-j2-restarted');
  });
});

describe('DNS discovery and TLS between nodes', () => {
  const nodes = useNodes();
  const clients = new Clients();
  after(() => clients.closeAll());
  const pki = mkdtempSync(join(tmpdir(), 'fleetmq-cluster-pki-'));
  after(() => rmSync(pki, { recursive: true, force: true }));

  test('a replicant with discovery "dns" finds its core by the A records of a name (localhost)', T, async () => {
    const C = await nodes.start({ role: 'core', name: 'dc', managed: true, workers: 1 });
    const R = await nodes.start({
      role: 'replicant', name: 'dr', workers: 1, args: ['--discovery', 'dns', '--dns-name', 'localhost'],
      env: { FLEETMQ_CLUSTER__DNS_PORT: String(C.clusterPort) },
    });
    assert.equal(((await R.status())['cluster'] as { core: string }).core, C.name);
    await passes(R, C, clients, 'dns');
  });

  test('cluster.tls: cores and replicants talk over TLS with the node certificate; a node without it is refused', T, async () => {
    makeTestPki(pki, 'fleetmq test CA');
    const tlsEnv = {
      FLEETMQ_CLUSTER__TLS: 'true', FLEETMQ_LISTENERS__TLS__CERT: join(pki, 'server.crt'),
      FLEETMQ_LISTENERS__TLS__KEY: join(pki, 'server.key'), FLEETMQ_LISTENERS__TLS__CA: join(pki, 'ca.crt'),
    };
    const C = await nodes.start({ role: 'core', name: 'tc', managed: true, workers: 1, env: tlsEnv });
    const R = await nodes.start({ role: 'replicant', name: 'tr', workers: 1, seeds: [C.clusterAddress], env: tlsEnv });
    await passes(C, R, clients, 'tls-c-r');
    await passes(R, C, clients, 'tls-r-c');
    const plain = nodes.node({ role: 'replicant', name: 'tp', workers: 1, seeds: [C.clusterAddress] });
    await plain.start(1).catch(() => undefined);
    await eventually(() => plain.lines('cluster.core_unreachable').length > 0, 'the plain node failing to reach the TLS core', 15_000);
    const v = (await C.get('/api/v1/cluster')).body as { nodes: { name: string }[] };
    assert.equal(v.nodes.some((n) => n.name === plain.name), false);
    await plain.kill();

    // The managed etcd member speaks TLS too, to clients and to peers, and wants a certificate of the CA.
    const health = `127.0.0.1:${C.etcdClientPort}/health`;
    await assert.rejects(fetch(`http://${health}`, { signal: AbortSignal.timeout(3000) }), 'no plain http on the etcd client port');
    const ca = readFileSync(join(pki, 'ca.crt'));
    const noCert = await httpsStatus(`https://${health}`, { ca });
    assert.ok(noCert !== 200, `https without a client certificate is refused (${noCert})`);
    assert.equal(await httpsStatus(`https://${health}`, { ca, cert: readFileSync(join(pki, 'server.crt')), key: readFileSync(join(pki, 'server.key')) }), 200);
    const C2 = await nodes.start({ role: 'core', name: 'tc2', managed: true, workers: 1, seeds: [C.clusterAddress], env: tlsEnv });
    useEtcdTls({ ca: join(pki, 'ca.crt'), cert: join(pki, 'server.crt'), key: join(pki, 'server.key') });
    try {
      const members = await listMembers([`https://127.0.0.1:${C.etcdClientPort}`]);
      assert.deepEqual(members.map((m) => m.name).sort(), [C.name, C2.name].sort());
      assert.ok(members.every((m) => m.peerURLs.every((u) => u.startsWith('https://')) && m.clientURLs.every((u) => u.startsWith('https://'))), JSON.stringify(members));
    } finally {
      useEtcdTls(null);
    }
    await passes(C2, R, clients, 'tls-c2-r');
  });
});
