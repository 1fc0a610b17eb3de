// DNS discovery without the internet (docs/cluster.md, "Replicants"): a tiny DNS server on
// a loopback UDP port (test/helpers/dns.ts) answers SRV and A queries, and
// cluster.dns_server points the resolver at it. SRV records in priority/weight order with
// their targets resolved through that server, the A-record fallback, re-resolution (a
// record added later is picked up), and a replicant that finds its core only by SRV.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DnsDiscovery, resolveCores } from '../src/cluster/discovery.js';
import { useDns, type TestDns } from './helpers/dns.js';
import { testLogger, useEtcdCluster } from './helpers/etcd.js';
import { eventually, useNodes, type ClusterNode } from './helpers/cluster.js';
import { Clients, inbox, uid } from './helpers/clients.js';
import { sleep } from './helpers/broker.js';

const T = { timeout: 60_000 };

describe('DNS discovery: resolveCores and DnsDiscovery against a local DNS server', () => {
  const local = useDns();
  let dns: TestDns;
  before(() => {
    dns = local.dns;
  });

  test('SRV records: lower priority first, then higher weight; targets resolved through the same server', T, async () => {
    dns.srv.set('cores.a.test', [
      { priority: 20, weight: 0, port: 4003, target: 'c3.a.test' },
      { priority: 10, weight: 1, port: 4002, target: 'c2.a.test' },
      { priority: 10, weight: 5, port: 4001, target: 'c1.a.test' },
      { priority: 30, weight: 0, port: 4004, target: 'unknown.a.test' },
    ]);
    dns.a.set('c1.a.test', ['127.0.0.11']);
    dns.a.set('c2.a.test', ['127.0.0.12']);
    dns.a.set('c3.a.test', ['127.0.0.13', '127.0.0.14']);
    const got = await resolveCores({ name: 'cores.a.test', port: 1, server: dns.server });
    assert.deepEqual(got, ['127.0.0.11:4001', '127.0.0.12:4002', '127.0.0.13:4003', '127.0.0.14:4003', 'unknown.a.test:4004']);
    assert.ok(dns.queries.includes('33 cores.a.test'), `an SRV query: ${dns.queries.join(', ')}`);
  });

  test('no SRV records: the A records of the name, with the configured port; none at all: an error', T, async () => {
    dns.a.set('plain.a.test', ['127.0.0.21', '127.0.0.22']);
    assert.deepEqual(await resolveCores({ name: 'plain.a.test', port: 4370, server: dns.server }), ['127.0.0.21:4370', '127.0.0.22:4370']);
    await assert.rejects(resolveCores({ name: 'nothing.a.test', port: 4370, server: dns.server }), /no SRV, A or AAAA records/);
  });

  test('re-resolution: a record added later is picked up; an answer that fails keeps the last good one', T, async () => {
    const logs: string[] = [];
    dns.srv.set('grow.a.test', [{ priority: 0, weight: 0, port: 5001, target: 'g1.a.test' }]);
    dns.a.set('g1.a.test', ['127.0.0.31']);
    const d = new DnsDiscovery({ name: 'grow.a.test', port: 1, server: dns.server }, 100, testLogger(logs));
    after(() => d.stop());
    assert.deepEqual(await d.refresh(), ['127.0.0.31:5001']);
    dns.srv.set('grow.a.test', [...dns.srv.get('grow.a.test')!, { priority: 0, weight: 0, port: 5002, target: 'g2.a.test' }]);
    dns.a.set('g2.a.test', ['127.0.0.32']);
    await eventually(() => d.cores.length === 2, 'the second core after a refresh', 5000);
    assert.deepEqual(d.cores, ['127.0.0.31:5001', '127.0.0.32:5002']);
    // The name disappears: the last good answer stays.
    dns.srv.delete('grow.a.test');
    await eventually(() => logs.some((l) => l.includes('"cluster.dns_failed"')), 'a failed refresh', 5000);
    assert.deepEqual(d.cores, ['127.0.0.31:5001', '127.0.0.32:5002']);
  });
});

describe('DNS discovery: a replicant finds its core by SRV records only', () => {
  const etcd = useEtcdCluster(1);
  const nodes = useNodes();
  const clients = new Clients();
  after(() => clients.closeAll());
  const local = useDns();
  let dns: TestDns;
  let C: ClusterNode;

  before(async () => {
    dns = local.dns;
    C = await nodes.start({ role: 'core', name: 'dnsc', etcd: etcd.cluster.endpoints, workers: 1 });
  });

  test('no records at start: the replicant waits; once the SRV record exists it joins and routes', T, async () => {
    const name = 'cores.fleetmq.test';
    const R = nodes.node({
      role: 'replicant', name: 'dnsr', workers: 1, args: ['--discovery', 'dns', '--dns-name', name],
      env: { FLEETMQ_CLUSTER__DNS_SERVER: dns.server, FLEETMQ_CLUSTER__DNS_REFRESH_MS: '1000' },
    });
    await R.start(1).catch(() => undefined); // picks ports and spawns; not running yet
    await sleep(1500);
    assert.ok(R.running, `the replicant keeps trying:\n${R.tail()}`);
    assert.notEqual((await R.get('/status').catch(() => ({ status: 0 }))).status, 200, 'not running without a core');
    // The core appears in DNS (SRV target → A record, both only in this server).
    dns.a.set('core1.fleetmq.test', ['127.0.0.1']);
    dns.srv.set(name, [{ priority: 0, weight: 0, port: C.clusterPort, target: 'core1.fleetmq.test' }]);
    await R.waitRunning(20_000);
    assert.ok(R.lines('cluster.dns_cores').some((l) => JSON.stringify(l['cores']) === JSON.stringify([`127.0.0.1:${C.clusterPort}`])), 'the SRV answer logged');
    assert.ok(dns.queries.includes(`33 ${name}`) && dns.queries.includes('1 core1.fleetmq.test'), `SRV and A queries: ${[...new Set(dns.queries)].join(', ')}`);
    // It is a working member: subscribe on the core, publish on the replicant.
    const topic = `dns/${process.pid}`;
    const sub = await clients.mqtt(C.url, { protocolVersion: 5, clientId: uid('ds') });
    const got = inbox(sub);
    await sub.subscribeAsync(topic, { qos: 1 });
    await eventually(async () => {
      const r = (await R.get(`/api/v1/routes?topic=${topic}`)).body as { nodes: string[] };
      return r.nodes.includes(C.name);
    }, 'the replicant routing to the core');
    const pub = await clients.mqtt(R.url, { protocolVersion: 5, clientId: uid('dp') });
    await pub.publishAsync(topic, 'via dns', { qos: 1 });
    await eventually(() => got.length === 1, 'the message on the core');
    assert.equal(got[0]!.payload, 'via dns');
  });
});
