// Crash-safe state of a single node (durability.sync, src/store): persistent sessions with
// their subscriptions, queued and in-flight QoS 1/2 messages and inbound QoS 2 ids, wills
// and retained messages survive `kill -9`; expired sessions are gone after a restart; a
// foreign or corrupt store is refused at start-up (exit 1, the path named). Each case runs
// on the inline node (--workers 0) and on worker threads (--workers 2), and with
// durability.sync "always" on worker threads. Real processes, real sockets, the real store
// on disk.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IPublishPacket, Packet } from 'mqtt-packet';
import { expectNothing, expectPacket, rawSubscribe, RawClient } from './helpers/raw-client.js';
import { useSingleNodes, type SingleNode } from './helpers/single-node.js';
import { uid } from './helpers/clients.js';

const T = { timeout: 60_000 };
const raws: RawClient[] = [];
after(() => {
  for (const c of raws) c.socket.destroy();
});

/** A v5 CONNECT (Session Expiry 300 s unless said) and its CONNACK. */
async function connect(n: SingleNode, clientId: string, o: { clean?: boolean; expiry?: number; will?: Record<string, unknown> } = {}): Promise<{ c: RawClient; present: boolean }> {
  const { c, connack } = await RawClient.connected(n.mqttPort, 5, {
    clientId, clean: o.clean ?? false, properties: { sessionExpiryInterval: o.expiry ?? 300 }, ...(o.will ? { will: o.will } : {}),
  } as Partial<Packet>);
  raws.push(c);
  assert.equal((connack as { reasonCode?: number }).reasonCode ?? 0, 0);
  return { c, present: (connack as { sessionPresent?: boolean }).sessionPresent === true };
}

async function publish(c: RawClient, topic: string, payload: string, qos: 1 | 2, messageId: number, retain = false): Promise<void> {
  c.send({ cmd: 'publish', topic, payload: Buffer.from(payload), qos, messageId, retain, dup: false } as Packet);
  if (qos === 1) {
    assert.equal((await expectPacket(c, 'puback')).messageId, messageId);
    return;
  }
  assert.equal((await expectPacket(c, 'pubrec')).messageId, messageId);
  c.send({ cmd: 'pubrel', messageId } as Packet);
  assert.equal((await expectPacket(c, 'pubcomp')).messageId, messageId);
}

async function close(c: RawClient): Promise<void> {
  c.send({ cmd: 'disconnect', reasonCode: 0 } as Packet);
  c.socket.end();
  await new Promise((r) => setTimeout(r, 100));
}

for (const [workers, sync] of [[0, 'batch'], [2, 'batch'], [2, 'always']] as const) {
  describe(`durability.sync ${sync}, --workers ${workers}`, () => {
    const nodes = useSingleNodes();
    const args = ['--durability', sync, '--workers', String(workers)];

    test('kill -9: an offline persistent session keeps its subscription and its acknowledged QoS 1/2 messages, in order; retained messages stay', T, async () => {
      const n = await nodes.make(args).start();
      const sid = uid('dsub');
      const topic = uid('dur/t');
      const s1 = await connect(n, sid);
      assert.equal(s1.present, false);
      assert.deepEqual(await rawSubscribe(s1.c, [{ topic: `${topic}/#`, qos: 2 }]), [2]);
      await close(s1.c);
      const p = (await connect(n, uid('dpub'), { clean: true, expiry: 0 })).c;
      for (let i = 1; i <= 5; i++) await publish(p, `${topic}/a`, `m${i}`, i % 2 === 0 ? 2 : 1, i);
      await publish(p, `${topic}/ret`, 'kept', 1, 6, true);
      await n.kill();

      await n.start();
      const rec = n.lines('store.recovered').at(-1) as { sessions: number; messages: number; retained: number } | undefined;
      assert.ok(rec && rec.sessions >= 1 && rec.messages >= 6 && rec.retained >= 1, JSON.stringify(rec));
      const s2 = await connect(n, sid);
      assert.equal(s2.present, true, 'session present after the crash');
      const got: string[] = [];
      while (got.length < 6) {
        const x = await s2.c.next(3000);
        assert.ok(x, 'a packet');
        if (x.cmd === 'pubrel') {
          s2.c.send({ cmd: 'pubcomp', messageId: x.messageId } as Packet);
          continue;
        }
        assert.equal(x.cmd, 'publish');
        const m = x as IPublishPacket;
        got.push(`${m.topic.slice(topic.length)} ${m.payload.toString()} q${m.qos}`);
        s2.c.send({ cmd: m.qos === 1 ? 'puback' : 'pubrec', messageId: m.messageId } as Packet);
      }
      // The PUBRELs of the QoS 2 ones still to come: then nothing more.
      for (;;) {
        const x = await s2.c.next(400).catch(() => null);
        if (x === null) break;
        assert.equal(x.cmd, 'pubrel', `only PUBRELs are left: ${JSON.stringify(x)}`);
        s2.c.send({ cmd: 'pubcomp', messageId: x.messageId } as Packet);
      }
      assert.deepEqual(got, ['/a m1 q1', '/a m2 q2', '/a m3 q1', '/a m4 q2', '/a m5 q1', '/ret kept q1']);
      // The retained message, for a new subscriber.
      const r = (await connect(n, uid('dret'), { clean: true, expiry: 0 })).c;
      await rawSubscribe(r, [{ topic: `${topic}/ret`, qos: 0 }]);
      const ret = (await expectPacket(r, 'publish')) as IPublishPacket;
      assert.deepEqual([ret.payload.toString(), ret.retain], ['kept', true]);
      // Acknowledged ones are gone from the store: nothing comes again after another crash.
      await close(s2.c);
      await new Promise((res) => setTimeout(res, 100));
      await n.kill();
      await n.start();
      const s3 = await connect(n, sid);
      assert.equal(s3.present, true);
      await expectNothing(s3.c, 400);
    });

    test('kill -9 with QoS 2 in flight: resent with DUP and the same packet id, a released one only as PUBREL; an inbound QoS 2 id is kept', T, async () => {
      const n = await nodes.make(args).start();
      const sid = uid('q2sub');
      const pid = uid('q2pub');
      const topic = uid('dur/q2');
      const s = await connect(n, sid);
      await rawSubscribe(s.c, [{ topic, qos: 2 }]);
      const p = (await connect(n, pid)).c;
      await publish(p, topic, 'first', 2, 1);
      await publish(p, topic, 'second', 2, 2);
      const a = (await expectPacket(s.c, 'publish')) as IPublishPacket;
      const b = (await expectPacket(s.c, 'publish')) as IPublishPacket;
      // The first gets as far as PUBREL; the second is not acknowledged at all.
      s.c.send({ cmd: 'pubrec', messageId: a.messageId } as Packet);
      await expectPacket(s.c, 'pubrel');
      // The publisher's third message stops after PUBREC (no PUBREL before the crash).
      p.send({ cmd: 'publish', topic, payload: Buffer.from('third'), qos: 2, messageId: 3, dup: false, retain: false } as Packet);
      assert.equal((await expectPacket(p, 'pubrec')).messageId, 3);
      await new Promise((r) => setTimeout(r, 100)); // the PUBREL state is written (no acknowledgement waits for it)
      await n.kill();

      await n.start();
      const s2 = await connect(n, sid);
      assert.equal(s2.present, true);
      const p2 = await connect(n, pid);
      assert.equal(p2.present, true);
      // The publisher sends its third again (DUP): it is known, so not routed a second time.
      p2.c.send({ cmd: 'publish', topic, payload: Buffer.from('third'), qos: 2, messageId: 3, dup: true, retain: false } as Packet);
      assert.equal((await expectPacket(p2.c, 'pubrec')).messageId, 3);
      p2.c.send({ cmd: 'pubrel', messageId: 3 } as Packet);
      assert.equal((await expectPacket(p2.c, 'pubcomp')).messageId, 3);
      // The subscriber: PUBREL for the first, the second again as DUP with its id, the third
      // (sent to it before the crash, unacknowledged) again as DUP, and only once.
      const seen: string[] = [];
      for (let i = 0; i < 3; i++) {
        const x = await s2.c.next(3000);
        assert.ok(x);
        if (x.cmd === 'pubrel') seen.push(`pubrel ${x.messageId === a.messageId}`);
        else if (x.cmd === 'publish') {
          const m = x as IPublishPacket;
          seen.push(`${m.payload.toString()} dup=${m.dup} same-id=${m.messageId === b.messageId}`);
          if (m.payload.toString() === 'third') {
            s2.c.send({ cmd: 'pubrec', messageId: m.messageId } as Packet);
          }
        } else seen.push(x.cmd);
      }
      assert.deepEqual(seen.sort(), ['pubrel true', 'second dup=true same-id=true', 'third dup=true same-id=false'].sort());
      await expectPacket(s2.c, 'pubrel');
      await expectNothing(s2.c, 300);
    });

    test('expired sessions are gone after a restart; a will of a connection the crash cut is published', T, async () => {
      const n = await nodes.make(args).start();
      const short = uid('short');
      const watcher = uid('watch');
      const topic = uid('dur/will');
      const w = await connect(n, watcher);
      await rawSubscribe(w.c, [{ topic, qos: 1 }]);
      await close(w.c);
      const s = await connect(n, short, { expiry: 1 });
      await close(s.c);
      // A connection with a will (no delay), up when the node is killed.
      await connect(n, uid('willer'), { clean: true, expiry: 0, will: { topic, payload: Buffer.from('gone'), qos: 1, retain: false } });
      await new Promise((r) => setTimeout(r, 200));
      await n.kill();
      await new Promise((r) => setTimeout(r, 1200));
      await n.start();
      const rec = n.lines('store.recovered').at(-1) as { expiredSessions: number; wills: number };
      assert.ok(rec.expiredSessions >= 1, JSON.stringify(rec));
      assert.ok(rec.wills >= 1, JSON.stringify(rec));
      assert.equal((await connect(n, short)).present, false, 'the 1 s session expired while the node was down');
      const back = await connect(n, watcher);
      assert.equal(back.present, true);
      const will = (await expectPacket(back.c, 'publish')) as IPublishPacket;
      assert.equal(will.payload.toString(), 'gone');
    });

    test('durability.sync none: nothing survives', T, async () => {
      const n = await nodes.make(['--durability', 'none', '--workers', String(workers)]).start();
      const sid = uid('none');
      const s = await connect(n, sid);
      await rawSubscribe(s.c, [{ topic: uid('x'), qos: 1 }]);
      await close(s.c);
      await n.kill();
      await n.start();
      assert.equal((await connect(n, sid)).present, false);
      assert.equal(n.lines('store.recovered').length, 0);
    });
  });
}

describe('durability across worker threads', () => {
  const nodes = useSingleNodes();
  test('a PUBACK on one worker waits until the subscriber\'s worker has the message on disk (200 ms group commit, kill -9 right after the PUBACK)', T, async () => {
    const n = await nodes.make(['--durability', 'batch', '--workers', '2'], undefined, { FLEETMQ_DURABILITY__BATCH_MS: '200' }).start();
    const workerOf = async (id: string): Promise<number | undefined> => {
      const rows = (await (await fetch(`http://127.0.0.1:${n.httpPort}/api/v1/clients`)).json()) as { clientId?: string; client_id?: string; id?: string; worker?: number }[];
      return rows.find((r) => (r.clientId ?? r.client_id ?? r.id) === id)?.worker;
    };
    const sid = uid('xsub');
    const topic = uid('dur/x');
    const s = await connect(n, sid);
    await rawSubscribe(s.c, [{ topic, qos: 1 }]);
    const sw = await workerOf(sid);
    assert.ok(sw !== undefined, 'the subscriber is listed with its worker');
    // A publisher on the other worker (connections are spread by the kernel: try a few).
    let p: RawClient | null = null;
    for (let i = 0; i < 40 && p === null; i++) {
      const id = uid('xpub');
      const c = (await connect(n, id, { clean: true, expiry: 0 })).c;
      if ((await workerOf(id)) !== sw) p = c;
      else c.socket.destroy();
    }
    assert.ok(p, 'a publisher connection on the other worker');
    const t0 = Date.now();
    await publish(p, topic, 'across', 1, 1);
    const acked = Date.now() - t0;
    await n.kill();
    assert.ok(acked >= 150, `the PUBACK waited for the other worker's group commit (${acked} ms)`);
    await n.start();
    const again = await connect(n, sid);
    assert.equal(again.present, true);
    const m = (await expectPacket(again.c, 'publish')) as IPublishPacket;
    assert.equal(m.payload.toString(), 'across');
  });
});

describe('a store that cannot be used is refused at start-up', () => {
  const nodes = useSingleNodes();
  test('a foreign directory or a corrupt store: exit 1, naming the path', T, async () => {
    const foreign = mkdtempSync(join(tmpdir(), 'fleetmq-foreign-'));
    writeFileSync(join(foreign, 'README'), 'not a store');
    const bad = mkdtempSync(join(tmpdir(), 'fleetmq-corrupt-'));
    const { mkdirSync } = await import('node:fs');
    mkdirSync(join(bad, 'store'));
    writeFileSync(join(bad, 'store', 'data.mdb'), Buffer.alloc(64 * 1024, 0x5a));
    mkdirSync(join(foreign, 'store'));
    writeFileSync(join(foreign, 'store', 'notes.txt'), 'mine');
    for (const [dir, what] of [[foreign, /not an LMDB store/], [bad, /cannot be (opened|read)|corrupt/]] as const) {
      const n = nodes.make(['--durability', 'batch', '--workers', '0'], dir);
      await assert.rejects(n.start(10_000), /exited/);
      const e = await n.exited;
      assert.equal(e.code, 1);
      const text = n.logs.join('\n');
      assert.match(text, what);
      assert.ok(text.includes(join(dir, 'store')), `the path is named: ${text.slice(-400)}`);
    }
  });
});
