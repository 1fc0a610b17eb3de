// Retained messages and wills for 3.1.1 and 5.0: set / replace / clear, RETAIN on
// delivery, 5.0 Message Expiry on a retained message; wills on abnormal close, on
// 5.0 DISCONNECT 0x04, not on a normal DISCONNECT, will QoS / retain, keep alive
// expiry, and the 5.0 Will Delay Interval against the Session Expiry Interval.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { IClientOptions, MqttClient } from 'mqtt';
import type { IPublishPacket, Packet } from 'mqtt-packet';
import { sleep, waitFor, type TestBroker } from './helpers/broker.js';
import { inbox, trackClients, uid, VERSIONS, type Received } from './helpers/clients.js';
import { mosquittoPub, mosquittoSub } from './helpers/mosquitto.js';
import { expectPacket, rawSubscribe } from './helpers/raw-client.js';

type V = 4 | 5;
const T = { timeout: 20_000 };

const { broker, client, rawClient: raw } = trackClients();

/** A fresh RawClient subscribed to `filter`: returns the retained messages it got right after SUBACK. */
async function retainedOn(b: TestBroker, v: V, filter: string, qos: 0 | 1 | 2 = 0): Promise<IPublishPacket[]> {
  const c = await raw(b, v);
  await rawSubscribe(c, [{ topic: filter, qos }]);
  const out: IPublishPacket[] = [];
  for (;;) {
    const p = await c.next(300).catch(() => null);
    if (p === null) break;
    assert.equal(p.cmd, 'publish');
    out.push(p as IPublishPacket);
    if ((p as IPublishPacket).qos === 1) c.send({ cmd: 'puback', messageId: (p as IPublishPacket).messageId } as Packet);
  }
  c.end();
  return out;
}

/** Watches `topic` with MQTT.js; `settle()` returns what arrived before a sentinel from `via`. */
async function watcher(b: TestBroker, v: V, topic: string, qos: 0 | 1 | 2 = 2) {
  const w = await client(b, v);
  const got = inbox(w);
  const sentinel = uid('sentinel');
  await w.subscribeAsync([topic, sentinel], { qos });
  return {
    got,
    /** Everything received on `topic` once a later sentinel has gone through the broker. */
    async settle(): Promise<Received[]> {
      const p = await client(b, v);
      const tag = uid('end');
      await p.publishAsync(sentinel, tag, { qos: 0 });
      await waitFor(() => got.some((g) => g.payload === tag), 'sentinel');
      await p.endAsync();
      return got.filter((g) => g.topic === topic);
    },
  };
}

function willOpts(topic: string, payload: string, qos: 0 | 1 | 2 = 0, retain = false, properties?: Record<string, number>): IClientOptions['will'] {
  return { topic, payload: Buffer.from(payload), qos, retain, ...(properties ? { properties } : {}) } as IClientOptions['will'];
}

/** Closes an MQTT.js client's socket without DISCONNECT (an abnormal close). */
function kill(c: MqttClient): void {
  c.stream.destroy();
}

const gone = (b: TestBroker, id: string) => async () => !(await b.session(id))?.conn;

// ---------------------------------------------------------------------------------
describe('retained messages', () => {
  let b: TestBroker;
  before(async () => {
    b = await broker();
  });

  for (const { v, tag, mosq } of VERSIONS) {
    const v5 = v === 5;

    test(`[${tag} ${v5 ? 'MQTT-3.3.1-5 MQTT-3.3.1-6 MQTT-3.3.1-7 MQTT-3.3.1-8' : 'MQTT-3.3.1-5 MQTT-3.3.1-10 MQTT-3.3.1-11 MQTT-3.3.1-12'}] set, replace, keep on RETAIN=0, clear with an empty payload`, T, async () => {
      const topic = uid('ret/set');
      const p = await client(b, v);
      const live = await raw(b, v);
      await rawSubscribe(live, [{ topic, qos: 0 }]);

      await p.publishAsync(topic, 'one', { qos: 1, retain: true });
      assert.deepEqual((await retainedOn(b, v, topic)).map((m) => m.payload.toString()), ['one']);
      await p.publishAsync(topic, 'two', { qos: 1, retain: true });
      assert.deepEqual((await retainedOn(b, v, topic)).map((m) => m.payload.toString()), ['two'], 'replaced');
      await p.publishAsync(topic, 'not retained', { qos: 1, retain: false });
      assert.deepEqual((await retainedOn(b, v, topic)).map((m) => m.payload.toString()), ['two'], 'RETAIN=0 neither stores nor removes');
      await p.publishAsync(topic, '', { qos: 1, retain: true });
      assert.deepEqual(await retainedOn(b, v, topic), [], 'an empty retained payload clears the topic');
      await waitFor(async () => (await b.retained(topic)).length === 0, 'the cleared topic is not stored');

      // The live subscriber saw all four, the empty one included (processed normally).
      const seen: string[] = [];
      for (let i = 0; i < 4; i++) seen.push((await expectPacket(live, 'publish')).payload.toString());
      assert.deepEqual(seen, ['one', 'two', 'not retained', '']);
    });

    test(`[${tag} ${v5 ? 'MQTT-3.3.1-9' : 'MQTT-3.3.1-6 MQTT-3.3.1-8'}] retained messages go to new exact and wildcard subscriptions with RETAIN=1`, T, async () => {
      const base = uid('ret/wild');
      const p = await client(b, v);
      await p.publishAsync(base, 'root', { qos: 0, retain: true });
      await p.publishAsync(`${base}/a`, 'a', { qos: 0, retain: true });
      await p.publishAsync(`${base}/b/c`, 'bc', { qos: 1, retain: true });
      const sorted = (ms: IPublishPacket[]) => ms.map((m) => [m.topic, m.payload.toString(), m.retain] as const).sort();
      assert.deepEqual(sorted(await retainedOn(b, v, `${base}/a`)), [[`${base}/a`, 'a', true]]);
      assert.deepEqual(sorted(await retainedOn(b, v, `${base}/+`)), [[`${base}/a`, 'a', true]]);
      assert.deepEqual(sorted(await retainedOn(b, v, `${base}/#`)), [
        [base, 'root', true], [`${base}/a`, 'a', true], [`${base}/b/c`, 'bc', true],
      ], "'#' includes the parent level");
      assert.deepEqual(sorted(await retainedOn(b, v, `${base}/+/c`)), [[`${base}/b/c`, 'bc', true]]);
      // Retained QoS is capped by the subscription.
      const q = await retainedOn(b, v, `${base}/b/c`, 2);
      assert.equal(q[0]?.qos, 1, 'min(message QoS 1, granted 2)');
      // mosquitto_sub sees the retain flag too.
      const r = await mosquittoSub(b.port, ['-V', mosq, '-t', `${base}/#`, '-C', '3', '-F', '%t|%p|%r'], 5000).done;
      assert.equal(r.code, 0);
      assert.deepEqual(r.stdout.trim().split('\n').sort(), [`${base}/a|a|1`, `${base}/b/c|bc|1`, `${base}|root|1`].sort());
      for (const t of [base, `${base}/a`, `${base}/b/c`]) await p.publishAsync(t, '', { retain: true });
    });

    test(`[${tag} ${v5 ? 'MQTT-3.3.1-12' : 'MQTT-3.3.1-9'}] a retained PUBLISH routed to an existing subscription arrives with RETAIN=0`, T, async () => {
      const topic = uid('ret/live');
      const sub = await client(b, v);
      const got = inbox(sub);
      await sub.subscribeAsync(topic, { qos: 1 });
      const p = await client(b, v);
      await p.publishAsync(topic, 'live', { qos: 1, retain: true });
      await waitFor(() => got.length === 1, 'live delivery');
      assert.equal(got[0]!.retain, false);
      // ...while a new subscription gets the same message with RETAIN=1.
      const later = await client(b, v);
      const got2 = inbox(later);
      await later.subscribeAsync(topic, { qos: 1 });
      await waitFor(() => got2.length === 1, 'retained delivery');
      assert.deepEqual([got2[0]!.payload, got2[0]!.retain], ['live', true]);
      await p.publishAsync(topic, '', { retain: true });
    });

    test(`[${tag} MQTT-4.7.2-1] a retained '$' topic is not sent for '#' / '+/…' filters`, T, async () => {
      const leaf = uid('retdollar');
      const p = await client(b, v);
      await p.publishAsync(`$X/${leaf}`, 'dollar', { qos: 1, retain: true });
      await p.publishAsync(`x/${leaf}`, 'plain', { qos: 1, retain: true });
      assert.deepEqual((await retainedOn(b, v, `+/${leaf}`)).map((m) => m.topic), [`x/${leaf}`]);
      assert.deepEqual((await retainedOn(b, v, `$X/+`)).map((m) => m.topic).filter((t) => t.endsWith(leaf)), [`$X/${leaf}`]);
      const all = await retainedOn(b, v, '#');
      assert.ok(all.some((m) => m.topic === `x/${leaf}`));
      assert.ok(!all.some((m) => m.topic.startsWith('$')), `'#' got ${all.map((m) => m.topic).filter((t) => t.startsWith('$'))}`);
      await p.publishAsync(`$X/${leaf}`, '', { retain: true });
      await p.publishAsync(`x/${leaf}`, '', { retain: true });
    });
  }

  test('[v5 MQTT-3.3.2-5 MQTT-3.3.2-6] Message Expiry on a retained message: sent with the remaining interval, gone once expired', T, async () => {
    const base = uid('ret/exp');
    const p = await client(b, 5);
    await p.publishAsync(`${base}/short`, 'short', { qos: 1, retain: true, properties: { messageExpiryInterval: 1 } });
    await p.publishAsync(`${base}/long`, 'long', { qos: 1, retain: true, properties: { messageExpiryInterval: 10 } });
    const t0 = Date.now();
    const early = await retainedOn(b, 5, `${base}/#`);
    assert.deepEqual(early.map((m) => m.topic).sort(), [`${base}/long`, `${base}/short`]);
    const shortEarly = early.find((m) => m.topic.endsWith('short'))!;
    assert.equal(shortEarly.properties?.messageExpiryInterval, 1);
    await sleep(1500 - (Date.now() - t0));
    const late = await retainedOn(b, 5, `${base}/#`);
    assert.deepEqual(late.map((m) => m.topic), [`${base}/long`], 'the 1 s message has expired');
    const left = late[0]!.properties?.messageExpiryInterval ?? 0;
    assert.ok(left >= 1 && left <= 9, `remaining interval ${left} is 10 minus the time it waited`);
    // A 3.1.1 subscriber gets the live one too (no expiry property in 3.1.1).
    const v3 = await retainedOn(b, 4, `${base}/#`);
    assert.deepEqual(v3.map((m) => m.topic), [`${base}/long`]);
    assert.equal((await b.retained(`${base}/short`)).length, 0);
    await p.publishAsync(`${base}/long`, '', { retain: true });
  });

  test('[v5 MQTT-3.3.4-3] a retained message sent on SUBSCRIBE carries that subscription\'s identifier', T, async () => {
    const topic = uid('ret/sid');
    const p = await client(b, 5);
    await p.publishAsync(topic, 'x', { qos: 1, retain: true });
    const c = await raw(b, 5);
    await rawSubscribe(c, [{ topic, qos: 0 }], { subscriptionIdentifier: 77 });
    const g = await expectPacket(c, 'publish');
    assert.equal(g.retain, true);
    assert.deepEqual(([] as number[]).concat(g.properties?.subscriptionIdentifier ?? []), [77]);
    await p.publishAsync(topic, '', { retain: true });
  });
});

// ---------------------------------------------------------------------------------
describe('will messages', () => {
  let b: TestBroker;
  before(async () => {
    b = await broker();
  });

  for (const { v, tag, mosq } of VERSIONS) {
    const v5 = v === 5;

    test(`[${tag} MQTT-3.1.2-8] the will is published when the socket closes without DISCONNECT`, T, async () => {
      const topic = uid('will/abnormal');
      const w = await watcher(b, v, topic);
      const id = uid('dies');
      const before = b.counters.willsPublished;
      const c = await client(b, v, { clientId: id, will: willOpts(topic, 'gone', 1) });
      kill(c);
      await waitFor(() => w.got.some((g) => g.topic === topic), 'will');
      const got = await w.settle();
      assert.equal(got.length, 1, 'exactly one will');
      assert.deepEqual([got[0]!.payload, got[0]!.qos, got[0]!.retain], ['gone', 1, false]);
      assert.equal(b.counters.willsPublished, before + 1);
    });

    test(`[${tag} ${v5 ? 'MQTT-3.14.4-3 MQTT-3.1.2-10' : 'MQTT-3.14.4-3 MQTT-3.1.2-10'}] no will after a normal DISCONNECT (MQTT.js and mosquitto_pub)`, T, async () => {
      const topic = uid('will/normal');
      const w = await watcher(b, v, topic);
      const before = b.counters.willsPublished;
      const id = uid('polite');
      const c = await client(b, v, { clientId: id, will: willOpts(topic, 'should not appear', 1) });
      await c.endAsync();
      await waitFor(gone(b, id), 'MQTT.js connection gone');
      const r = await mosquittoPub(b.port, ['-V', mosq, '-t', uid('will/other'), '-m', 'hi',
        '--will-topic', topic, '--will-payload', 'mosquitto will', '--will-qos', '1'], 5000);
      assert.equal(r.code, 0);
      await waitFor(async () => (await b.clients()).every((x) => !x.clientId.startsWith('mosq')), 'mosquitto_pub gone');
      assert.deepEqual(await w.settle(), []);
      assert.equal(b.counters.willsPublished, before);
    });

    test(`[${tag} ${v5 ? 'MQTT-3.1.2-15' : 'MQTT-3.1.2-17'}] will QoS 2 + retain: live subscribers get it at QoS 2, later subscribers get the retained will`, T, async () => {
      const topic = uid('will/retained');
      const w = await watcher(b, v, topic, 2);
      const c = await client(b, v, { will: willOpts(topic, 'last words', 2, true) });
      kill(c);
      await waitFor(() => w.got.some((g) => g.topic === topic), 'will');
      const [live] = await w.settle();
      assert.deepEqual([live!.payload, live!.qos, live!.retain], ['last words', 2, false]);
      const later = await retainedOn(b, v, topic, 2);
      assert.deepEqual(later.map((m) => [m.payload.toString(), m.retain, m.qos]), [['last words', true, 2]]);
      const p = await client(b, v);
      await p.publishAsync(topic, '', { retain: true });
    });

    test(`[${tag} ${v5 ? 'MQTT-3.1.2-14' : 'MQTT-3.1.2-16'}] a will with retain 0 is not retained`, T, async () => {
      const topic = uid('will/notretained');
      const w = await watcher(b, v, topic, 1);
      const c = await client(b, v, { will: willOpts(topic, 'bye', 1, false) });
      kill(c);
      await waitFor(() => w.got.some((g) => g.topic === topic), 'will');
      assert.deepEqual(await retainedOn(b, v, topic), []);
    });

    test(`[${tag} ${v5 ? 'MQTT-3.1.2-22' : 'MQTT-3.1.2-24'} MQTT-3.1.2-8] the will is published when the keep alive expires`, T, async () => {
      const topic = uid('will/keepalive');
      const w = await watcher(b, v, topic, 1);
      const id = uid('silent');
      const c = await raw(b, v, { clientId: id, keepalive: 1, will: { topic, payload: Buffer.from('timed out'), qos: 1, retain: false } });
      const t0 = Date.now();
      // The client sends nothing: closed after 1.5 × keep alive.
      await waitFor(() => w.got.some((g) => g.topic === topic), 'will after keep alive', 5000);
      assert.ok(Date.now() - t0 >= 1000, 'not before the keep alive ran out');
      if (v5) {
        const d = await expectPacket(c, 'disconnect');
        assert.equal(d.reasonCode, 0x8d, 'Keep Alive timeout');
      }
      await c.waitClose();
      const got = await w.settle();
      assert.deepEqual(got.map((g) => [g.payload, g.qos]), [['timed out', 1]]);
    });
  }

  test('[v5 §3.14.2.1 0x04 MQTT-3.1.2-8] DISCONNECT 0x04 (Disconnect with Will Message) publishes the will', T, async () => {
    const topic = uid('will/0x04');
    const w = await watcher(b, 5, topic, 1);
    const id = uid('withwill');
    const c = await client(b, 5, { clientId: id, will: willOpts(topic, 'on purpose', 1) });
    await c.endAsync(false, { reasonCode: 0x04 });
    await waitFor(gone(b, id), 'connection gone');
    const got = await w.settle();
    assert.deepEqual(got.map((g) => g.payload), ['on purpose']);
  });

  test('[v5 MQTT-3.14.4-3] RawClient: DISCONNECT 0x00 discards the will, DISCONNECT 0x04 publishes it', T, async () => {
    const topic = uid('will/raw');
    const w = await watcher(b, 5, topic, 0);
    const a = await raw(b, 5, { will: { topic, payload: Buffer.from('a'), qos: 0, retain: false } });
    a.send({ cmd: 'disconnect', reasonCode: 0 } as Packet);
    await a.waitClose();
    const c = await raw(b, 5, { will: { topic, payload: Buffer.from('c'), qos: 0, retain: false } });
    c.send({ cmd: 'disconnect', reasonCode: 4 } as Packet);
    await c.waitClose();
    await waitFor(() => w.got.some((g) => g.payload === 'c'), 'will c');
    assert.deepEqual((await w.settle()).map((g) => g.payload), ['c']);
  });

  test('[v5 MQTT-3.1.2-8] Will Delay 1 s with Session Expiry 10 s: not at once, published after the delay', T, async () => {
    const topic = uid('will/delay');
    const w = await watcher(b, 5, topic, 1);
    const id = uid('delayed');
    const c = await client(b, 5, {
      clientId: id, clean: false, properties: { sessionExpiryInterval: 10 },
      will: willOpts(topic, 'late', 1, false, { willDelayInterval: 1 }),
    });
    kill(c);
    await waitFor(gone(b, id), 'connection gone');
    const t0 = Date.now();
    assert.deepEqual(await w.settle(), [], 'not published at the close');
    await waitFor(() => w.got.some((g) => g.topic === topic), 'delayed will', 4000);
    assert.ok(Date.now() - t0 >= 700, `published ${Date.now() - t0} ms after the close, not before the delay`);
    assert.ok((await b.session(id)) !== null, 'the session lives on');
    assert.deepEqual((await w.settle()).map((g) => g.payload), ['late']);
  });

  test('[v5 MQTT-3.1.3-9] reconnecting to the session within the Will Delay cancels the will', T, async () => {
    const topic = uid('will/cancel');
    const w = await watcher(b, 5, topic, 1);
    const id = uid('comesback');
    const before = b.counters.willsPublished;
    const c = await client(b, 5, {
      clientId: id, clean: false, properties: { sessionExpiryInterval: 10 },
      will: willOpts(topic, 'must not appear', 1, false, { willDelayInterval: 1 }),
    });
    kill(c);
    await waitFor(gone(b, id), 'connection gone');
    const again = await client(b, 5, { clientId: id, clean: false, properties: { sessionExpiryInterval: 10 } });
    assert.equal(again.connected, true);
    await sleep(1500);
    assert.deepEqual(await w.settle(), []);
    assert.equal(b.counters.willsPublished, before);
    // A later normal end of this session publishes nothing either.
    await again.endAsync(false, { reasonCode: 0, properties: { sessionExpiryInterval: 0 } });
    await waitFor(async () => (await b.session(id)) === null, 'session ended');
    assert.deepEqual(await w.settle(), []);
    assert.equal(b.counters.willsPublished, before);
  });

  test('[v5 MQTT-3.1.3-9] reconnecting with Clean Start within the Will Delay ends the session, so the will goes out at once', T, async () => {
    const topic = uid('will/cleanstart');
    const w = await watcher(b, 5, topic, 1);
    const id = uid('cleanback');
    const before = b.counters.willsPublished;
    const c = await client(b, 5, {
      clientId: id, clean: false, properties: { sessionExpiryInterval: 60 },
      will: willOpts(topic, 'session replaced', 1, false, { willDelayInterval: 30 }),
    });
    kill(c);
    await waitFor(gone(b, id), 'connection gone');
    await sleep(100);
    assert.equal(b.counters.willsPublished, before, 'not published before the reconnect');
    const again = await client(b, 5, { clientId: id, clean: true });
    assert.equal(again.connected, true);
    assert.deepEqual((await w.settle()).map((g) => g.payload), ['session replaced']);
    assert.equal(b.counters.willsPublished, before + 1);
    await again.endAsync();
  });

  test('[v5 MQTT-3.1.2-8] a Will Delay longer than the Session Expiry: the will goes out when the session ends', T, async () => {
    const topic = uid('will/sessionend');
    const w = await watcher(b, 5, topic, 1);
    const id = uid('shortsession');
    const c = await client(b, 5, {
      clientId: id, clean: false, properties: { sessionExpiryInterval: 1 },
      will: willOpts(topic, 'session over', 1, false, { willDelayInterval: 30 }),
    });
    kill(c);
    await waitFor(gone(b, id), 'connection gone');
    const t0 = Date.now();
    assert.deepEqual(await w.settle(), [], 'not at the close');
    await waitFor(() => w.got.some((g) => g.topic === topic), 'will at session end', 4000);
    assert.ok(Date.now() - t0 >= 700, 'not before the session expired');
    await waitFor(async () => (await b.session(id)) === null, 'session gone');
    assert.deepEqual((await w.settle()).map((g) => g.payload), ['session over']);
  });

  test('[v5 MQTT-3.1.2-8] Session Expiry 0 ends the session at the close: a delayed will goes out at once', T, async () => {
    const topic = uid('will/noexpiry');
    const w = await watcher(b, 5, topic, 1);
    const id = uid('nosession');
    const c = await client(b, 5, { clientId: id, will: willOpts(topic, 'now', 1, false, { willDelayInterval: 30 }) });
    kill(c);
    await waitFor(gone(b, id), 'connection gone');
    assert.deepEqual((await w.settle()).map((g) => g.payload), ['now']);
  });
});
