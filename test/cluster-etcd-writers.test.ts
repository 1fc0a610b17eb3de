// src/cluster/etcd/writers.ts against a real etcd (one member, test/helpers/etcd.ts): the
// KvWriter bounds its transactions by bytes as well as by count, and a put too large for one
// etcd request is dropped (counted, logged with its key and size) instead of being retried
// for ever in front of every later write; with an etcd whose request limit is below ours,
// batches go again in halves and a put it refuses alone is dropped the same way.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Etcd3 } from 'etcd3';
import { etcdClient } from '../src/cluster/etcd/client.js';
import { KvWriter, MAX_PUT_BYTES, TXN_BYTES, type WriterHealth } from '../src/cluster/etcd/writers.js';
import { testLogger, useEtcdCluster } from './helpers/etcd.js';

const health: WriterHealth = { onUnavailable: () => undefined, onAvailable: () => undefined };

type Line = Record<string, unknown> & { msg: string };
const parsed = (logs: string[]): Line[] => logs.map((l) => JSON.parse(l) as Line);

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<T>((_, reject) => (t = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms))),
  ]);
}

function writerSuite(name: string, extraArgs: readonly string[], body: (ctx: { client: () => Etcd3; writer: (prefix: string, logs: string[]) => KvWriter }) => void): void {
  describe(name, () => {
    const etcd = useEtcdCluster(1, { extraArgs });
    let client: Etcd3 | null = null;
    const writers: KvWriter[] = [];
    before(() => {
      client = etcdClient(etcd.cluster.endpoints);
    });
    after(() => {
      for (const w of writers) w.stop();
      client?.close();
    });
    body({
      client: () => client!,
      writer: (prefix, logs) => {
        const w = new KvWriter(client!, prefix, 2, testLogger(logs), health, 'topic');
        writers.push(w);
        return w;
      },
    });
  });
}

writerSuite('KvWriter: transactions bounded by bytes (etcd with its default request limit)', [], (ctx) => {
  it('30 retained messages of 200 KiB go in transactions of at most TXN_BYTES, all of them written', async () => {
    const logs: string[] = [];
    const w = ctx.writer('t1/', logs);
    const big = Buffer.alloc(200 * 1024, 0x61);
    const revs = await within(Promise.all(Array.from({ length: 30 }, (_, i) => w.set(`big/${i}`, big))), 20_000, 'the writes');
    assert.ok(revs.every((r) => r > 0), 'every write has a revision');
    const perTxn = Math.floor(TXN_BYTES / big.length);
    const txns = new Set(revs).size;
    assert.ok(txns >= Math.ceil(30 / perTxn), `at most ${perTxn} per transaction (${txns} transactions)`);
    const r = await ctx.client().getAll().prefix('t1/big/').keys();
    assert.equal(r.length, 30);
    assert.equal(w.refused, 0);
    assert.deepEqual(parsed(logs).filter((l) => l.level === 'error'), [], 'no failed write');
  });

  it('a message too large for etcd is dropped with a warning naming it; later writes are not held back', async () => {
    const logs: string[] = [];
    const w = ctx.writer('t2/', logs);
    const huge = Buffer.alloc(2 * 1024 * 1024, 0x62);
    const before = w.set('small/0', Buffer.from('a'));
    const refused = w.set('huge/topic', huge);
    const later = w.set('small/1', Buffer.from('b'));
    assert.equal(await within(refused, 2000, 'the refusal'), 0, 'resolved with revision 0: nothing written');
    const [r0, r1] = await within(Promise.all([before, later]), 5000, 'the small writes');
    assert.ok(r0 > 0 && r1 > 0);
    assert.deepEqual((await ctx.client().getAll().prefix('t2/').keys()).sort(), ['t2/small/0', 't2/small/1']);
    assert.equal(w.refused, 1);
    const warns = parsed(logs).filter((l) => l.msg === 'cluster.write_too_large');
    assert.equal(warns.length, 1);
    assert.deepEqual([warns[0]!.level, warns[0]!['topic'], warns[0]!['limit']], ['warn', 'huge/topic', MAX_PUT_BYTES]);
    assert.ok(Number(warns[0]!['bytes']) > huge.length);
    assert.deepEqual(parsed(logs).filter((l) => l.msg === 'cluster.etcd_write_failed'), [], 'never sent to etcd, never retried');
  });

  it('a put just under the limit goes alone and is written', async () => {
    const logs: string[] = [];
    const w = ctx.writer('t3/', logs);
    const v = Buffer.alloc(MAX_PUT_BYTES - 1024, 0x63);
    const [a, b, c] = await within(Promise.all([w.set('a', Buffer.from('x')), w.set('large', v), w.set('c', Buffer.from('y'))]), 10_000, 'the writes');
    assert.ok(a! > 0 && b! > 0 && c! > 0);
    assert.notEqual(b, a, 'the large put in a transaction of its own');
    assert.equal((await ctx.client().get('t3/large').buffer())?.length, v.length);
    assert.equal(w.refused, 0);
  });
});

writerSuite('KvWriter: etcd with a lower request limit (--max-request-bytes=262144)', ['--max-request-bytes=262144'], (ctx) => {
  it('batches etcd refuses go again in halves; a put it refuses alone is dropped, not retried', async () => {
    const logs: string[] = [];
    const w = ctx.writer('t4/', logs);
    const v = Buffer.alloc(60 * 1024, 0x64); // 8 of them (480 KiB) fit our batch, not this etcd
    const writes = Array.from({ length: 8 }, (_, i) => w.set(`m/${i}`, v));
    const tooBig = w.set('m/big', Buffer.alloc(300 * 1024, 0x65));
    const after = w.set('m/after', Buffer.from('z'));
    const revs = await within(Promise.all(writes), 10_000, 'the split writes');
    assert.ok(revs.every((r) => r > 0));
    assert.equal(await within(tooBig, 10_000, 'the refused put'), 0);
    assert.ok((await within(after, 10_000, 'the write after it')) > 0);
    const keys = await ctx.client().getAll().prefix('t4/m/').keys();
    assert.equal(keys.length, 9);
    assert.ok(!keys.includes('t4/m/big'));
    assert.equal(w.refused, 1);
    const warns = parsed(logs).filter((l) => l.msg === 'cluster.write_too_large');
    assert.deepEqual(warns.map((l) => l['topic']), ['m/big']);
  });
});
