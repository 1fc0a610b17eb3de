// A replicant's route log is compacted by the core that writes it (docs/cluster.md, "Route
// writes"): after a few hundred entries the core writes a base of what the replicant holds
// and deletes the entries it replaces, so etcd does not grow with the replicant's uptime;
// a core that starts later still loads every one of the replicant's routes.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Etcd3 } from 'etcd3';
import { useEtcdCluster } from './helpers/etcd.js';
import { eventually, useNodes, type ClusterNode, routed } from './helpers/cluster.js';
import { Clients, inbox, uid } from './helpers/clients.js';

const T = { timeout: 120_000 };
/** More entries than a log holds before its first compaction (COMPACT_MIN_ENTRIES = 256). */
const ENTRIES = 300;

describe('a replicant\'s route log is compacted by its core', () => {
  const etcd = useEtcdCluster(1);
  const nodes = useNodes();
  const clients = new Clients();
  after(() => clients.closeAll());
  let kv: Etcd3 | null = null;
  after(() => kv?.close());

  test(`${ENTRIES} route log entries of a replicant shrink to a base and a few entries; a core started later loads all its routes`, T, async () => {
    const e = etcd.cluster.endpoints;
    const A = await nodes.start({ role: 'core', name: 'ca', etcd: e, workers: 1 });
    const R = await nodes.start({ role: 'replicant', name: 'cr', seeds: [A.clusterAddress], workers: 1 });
    const sub = await clients.mqtt(R.url, { protocolVersion: 5, clientId: uid('s') });
    const got = inbox(sub);
    const topic = (i: number): string => `cmp/${process.pid}/${i}`;
    // One SUBSCRIBE at a time: each SUBACK waits for its log entry, so each is an entry of its own.
    for (let i = 0; i < ENTRIES; i++) await sub.subscribeAsync(topic(i), { qos: 1 });

    kv = new Etcd3({ hosts: [...e] });
    const prefix = `/fleetmq/t${process.pid}/routes/${R.name}/`;
    let seen = '';
    await eventually(async () => {
      const keys = await kv!.getAll().prefix(prefix).keys();
      const logs = keys.filter((k) => k.includes('/l/')).length;
      const ends = keys.filter((k) => k.includes('/b/') && k.endsWith('/end')).length;
      seen = `${logs} log entries, ${ends} complete bases`;
      return ends === 1 && logs < ENTRIES / 3;
    }, 'the replicant\'s log compacted', 20_000).catch((err: Error) => {
      throw new Error(`${err.message} (${seen})`);
    });

    // A core that starts now reads the base and the entries after it.
    const B = await nodes.start({ role: 'core', name: 'cb', etcd: e, workers: 1 });
    await routed(B, topic(0), R, 20_000);
    await routed(B, topic(ENTRIES - 1), R, 20_000);
    const st = (await B.status())['cluster'] as { routes: { remote: number } };
    assert.ok(st.routes.remote >= ENTRIES, `B holds ${st.routes.remote} remote routes`);
    const pub = await clients.mqtt(B.url, { protocolVersion: 5, clientId: uid('p') });
    await pub.publishAsync(topic(0), 'from the base', { qos: 1 });
    await pub.publishAsync(topic(ENTRIES - 1), 'from the last entries', { qos: 1 });
    await eventually(() => got.length === 2, 'both messages on the replicant');
    assert.deepEqual(got.map((m) => m.payload).sort(), ['from the base', 'from the last entries']);
  });
});
