// Sessions over real loopback sockets: 3.1.1 Clean Session, 5.0 Clean Start + Session
// Expiry Interval, the offline queue and its bounds, session takeover, and redelivery of
// unacknowledged QoS 1/2 messages after a reconnect. MQTT.js and the mosquitto clients,
// plus the byte-level RawClient where exact packets (DUP, packet ids, PUBREL) matter.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type mqtt from 'mqtt';
import type {
  IConnackPacket, IDisconnectPacket, IPublishPacket, IPubrelPacket, Packet, QoS,
} from 'mqtt-packet';
import { queued, settles, stored, sleep, startBroker, waitFor, type TestBroker } from './helpers/broker.js';
import { messages, trackClients, uid, type Message } from './helpers/clients.js';
import { mosquittoPub, mosquittoSub } from './helpers/mosquitto.js';
import type { RawClient } from './helpers/raw-client.js';

const T = { timeout: 20_000 };

// ---------------------------------------------------------------- helpers

const clients = trackClients();

interface Mq {
  client: mqtt.MqttClient;
  connack: IConnackPacket;
  /** Every message received, in order (the handler is attached before CONNECT is sent). */
  got: Message[];
}

/** MQTT.js connect (no reconnects) resolving with the CONNACK; records messages from the start. */
async function mq(b: TestBroker, opts: mqtt.IClientOptions): Promise<Mq> {
  let got: Message[] = [];
  const r = await clients.connack(b.url, opts, (c) => (got = messages(c)));
  return { ...r, got };
}

async function raw(b: TestBroker, version: 4 | 5, fields: Record<string, unknown>) {
  const r = await clients.rawConnect(b.port, version, fields);
  assert.equal(r.connack.cmd, 'connack');
  return r;
}

async function rawSubscribe(c: RawClient, topic: string, qos: QoS, messageId = 1): Promise<void> {
  c.send({ cmd: 'subscribe', messageId, subscriptions: [{ topic, qos }] } as Packet);
  const sa = await c.next();
  assert.equal(sa?.cmd, 'suback');
}

/** Waits until the broker has seen the client's connection go (its session is offline or gone). */
async function offline(b: TestBroker, id: string): Promise<void> {
  await waitFor(async () => !(await b.session(id))?.connected, `${id} offline`);
}

/** Waits until the broker holds no session for `id`. */
async function gone(b: TestBroker, id: string, what: string, timeoutMs?: number): Promise<void> {
  await waitFor(async () => !(await stored(b, id)), what, timeoutMs);
}

/** Unacknowledged outbound QoS 1/2 messages of the session; undefined without a session. */
async function inflight(b: TestBroker, id: string): Promise<number | undefined> {
  return (await b.session(id))?.inflight.length;
}

/** Publishes with a throwaway MQTT.js client; QoS 1/2 publishes are acknowledged before it returns. */
async function publishAll(b: TestBroker, version: 4 | 5, msgs: { topic: string; payload: string; qos: QoS }[]): Promise<void> {
  const p = await mq(b, { protocolVersion: version, clientId: uid('pub') });
  for (const m of msgs) await p.client.publishAsync(m.topic, m.payload, { qos: m.qos });
  await p.client.endAsync();
}

const sp = (c: Packet) => (c as IConnackPacket).sessionPresent;

// =====================================================================================
describe('sessions on a default broker', () => {
  let b: TestBroker;
  before(async () => {
    b = await startBroker();
  });
  after(() => b.stop());

  // ---------------------------------------------------------------- 3.1.1 Clean Session

  test('[v3.1.1 MQTT-3.1.2-4] [v3.1.1 MQTT-3.2.2-2] [v3.1.1 MQTT-3.2.2-3] clean session 0 keeps subscriptions; Session Present 1 on return', T, async () => {
    const id = uid('cs0');
    const topic = uid('t/cs0');
    const a = await mq(b, { protocolVersion: 4, clientId: id, clean: false });
    assert.equal(a.connack.sessionPresent, false, 'no session yet [MQTT-3.2.2-3]');
    await a.client.subscribeAsync(topic, { qos: 1 });
    await a.client.endAsync();
    await offline(b, id);
    assert.ok(await stored(b, id), 'session kept while offline');

    const again = await mq(b, { protocolVersion: 4, clientId: id, clean: false });
    assert.equal(again.connack.sessionPresent, true);
    // No SUBSCRIBE this time: the stored subscription delivers.
    await publishAll(b, 4, [{ topic, payload: 'kept', qos: 1 }]);
    await waitFor(() => again.got.length === 1, 'message on the resumed session');
    assert.equal(again.got[0]?.payload, 'kept');
    await again.client.endAsync();
  });

  test('[v3.1.1 MQTT-3.1.2-6] [v3.1.1 MQTT-3.2.2-1] clean session 1 discards the previous session', T, async () => {
    const id = uid('cs1');
    const topic = uid('t/cs1');
    const a = await mq(b, { protocolVersion: 4, clientId: id, clean: false });
    await a.client.subscribeAsync(topic, { qos: 1 });
    await a.client.endAsync();
    await offline(b, id);
    await publishAll(b, 4, [{ topic, payload: 'queued', qos: 1 }]);
    await settles(() => queued(b, id), 1, 'one message queued');

    const c = await mq(b, { protocolVersion: 4, clientId: id, clean: true });
    assert.equal(c.connack.sessionPresent, false);
    await publishAll(b, 4, [{ topic, payload: 'after', qos: 1 }]);
    await sleep(300);
    assert.deepEqual(c.got, [], 'neither the queued message nor the old subscription survives');
    await c.client.endAsync();
    // A clean session ends with its connection.
    await gone(b, id, 'clean session removed at disconnect');
    const d = await mq(b, { protocolVersion: 4, clientId: id, clean: false });
    assert.equal(d.connack.sessionPresent, false);
    await d.client.endAsync();
  });

  // ---------------------------------------------------------------- 5.0 Clean Start / expiry

  test('[v5 MQTT-3.1.2-5] [v5 MQTT-3.2.2-3] Clean Start 0 with a stored session resumes it: Session Present 1', T, async () => {
    const id = uid('st0');
    const topic = uid('t/st0');
    const a = await mq(b, { protocolVersion: 5, clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } });
    assert.equal(a.connack.sessionPresent, false, 'no session yet');
    await a.client.subscribeAsync(topic, { qos: 1 });
    await a.client.endAsync();
    await offline(b, id);
    const again = await mq(b, { protocolVersion: 5, clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } });
    assert.equal(again.connack.sessionPresent, true);
    await publishAll(b, 5, [{ topic, payload: 'resumed', qos: 1 }]);
    await waitFor(() => again.got.length === 1, 'message on the resumed session');
    // Session Expiry 0 on this DISCONNECT ends it (cleanup).
    await again.client.endAsync(false, { properties: { sessionExpiryInterval: 0 } });
  });

  test('[v5 MQTT-3.1.2-4] [v5 MQTT-3.2.2-2] Clean Start 1 discards a stored session: Session Present 0', T, async () => {
    const id = uid('st1');
    const topic = uid('t/st1');
    const a = await mq(b, { protocolVersion: 5, clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } });
    await a.client.subscribeAsync(topic, { qos: 1 });
    await a.client.endAsync();
    await offline(b, id);
    const c = await mq(b, { protocolVersion: 5, clientId: id, clean: true, properties: { sessionExpiryInterval: 60 } });
    assert.equal(c.connack.sessionPresent, false);
    await publishAll(b, 5, [{ topic, payload: 'x', qos: 1 }]);
    await sleep(300);
    assert.deepEqual(c.got, []);
    assert.equal((await b.session(id))?.subscriptions.length, 0);
    await c.client.endAsync();
  });

  test('[v5 MQTT-3.1.2-23] Session Expiry Interval 0 (absent): the session ends at disconnect', T, async () => {
    const id = uid('ex0');
    const topic = uid('t/ex0');
    const a = await mq(b, { protocolVersion: 5, clientId: id, clean: false });
    await a.client.subscribeAsync(topic, { qos: 1 });
    await a.client.endAsync();
    await gone(b, id, 'session gone at disconnect');
    await publishAll(b, 5, [{ topic, payload: 'lost', qos: 1 }]);
    const again = await mq(b, { protocolVersion: 5, clientId: id, clean: false });
    assert.equal(again.connack.sessionPresent, false);
    await sleep(200);
    assert.deepEqual(again.got, []);
    await again.client.endAsync();
  });

  test('[v5 MQTT-3.1.2-23] Session Expiry Interval 2 s: present within it, gone after it', T, async () => {
    const id = uid('ex2');
    const topic = uid('t/ex2');
    const opts = { protocolVersion: 5 as const, clientId: id, clean: false, properties: { sessionExpiryInterval: 2 } };
    const a = await mq(b, opts);
    await a.client.subscribeAsync(topic, { qos: 1 });
    await a.client.endAsync();
    await offline(b, id);
    await sleep(300);
    const within = await mq(b, opts);
    assert.equal(within.connack.sessionPresent, true, 'back within the interval');
    await within.client.endAsync();
    await offline(b, id);
    const t0 = Date.now();
    await sleep(1000);
    assert.ok(await stored(b, id), 'still there 1 s into the 2 s interval');
    await gone(b, id, 'session expired', 3000);
    assert.ok(Date.now() - t0 >= 1900, `expired after ${Date.now() - t0} ms`);
    const late = await mq(b, opts);
    assert.equal(late.connack.sessionPresent, false, 'back after the interval');
    await publishAll(b, 5, [{ topic, payload: 'nobody', qos: 1 }]);
    await sleep(200);
    assert.deepEqual(late.got, [], 'the subscription expired with the session');
    await late.client.endAsync(false, { properties: { sessionExpiryInterval: 0 } });
  });

  test('[v5 §3.14.2.2.2] DISCONNECT changes Session Expiry from 60 to 0: the session ends', T, async () => {
    const id = uid('dx0');
    const { c } = await raw(b, 5, { clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } });
    await rawSubscribe(c, uid('t/dx0'), 1);
    c.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 0 } } as Packet);
    await c.waitClose();
    await gone(b, id, 'session ended');
    const again = await raw(b, 5, { clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } });
    assert.equal(sp(again.connack), false);
    again.c.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 0 } } as Packet);
  });

  test('[v5 §3.14.2.2.2] DISCONNECT raises a nonzero Session Expiry (1 → 30): the session outlives the old interval', T, async () => {
    const id = uid('dx30');
    const { c } = await raw(b, 5, { clientId: id, clean: false, properties: { sessionExpiryInterval: 1 } });
    c.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 30 } } as Packet);
    await c.waitClose();
    await sleep(1600);
    assert.ok(await stored(b, id), 'still stored after the original 1 s');
    const again = await raw(b, 5, { clientId: id, clean: false, properties: { sessionExpiryInterval: 0 } });
    assert.equal(sp(again.connack), true);
    again.c.send({ cmd: 'disconnect', reasonCode: 0 } as Packet);
    await gone(b, id, 'cleanup');
  });

  test('[v5 §3.14.2.2.2] [v5 MQTT-3.14.2-2] DISCONNECT changes Session Expiry from 0 to nonzero: DISCONNECT 0x82 (no expiry property), session ends', T, async () => {
    const id = uid('dx-err');
    const { c } = await raw(b, 5, { clientId: id, clean: false });
    await rawSubscribe(c, uid('t/dxe'), 1);
    const errs = b.counters.protocolErrors;
    c.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 60 } } as Packet);
    const got = await c.drainUntilClose(3000);
    assert.equal(got.length, 1);
    const d = got[0] as IDisconnectPacket;
    assert.equal(d.cmd, 'disconnect');
    assert.equal(d.reasonCode, 0x82);
    assert.equal(d.properties?.sessionExpiryInterval, undefined, 'a server DISCONNECT never carries Session Expiry');
    // Counted before the DISCONNECT was written.
    assert.equal(b.counters.protocolErrors, errs + 1);
    await gone(b, id, 'the session still ends (expiry stays 0)');
  });

  // ---------------------------------------------------------------- offline queue

  test('[v3.1.1 MQTT-3.1.2-5] [v3.1.1 MQTT-4.6.0-6] messages published while offline are delivered on reconnect, in order', T, async () => {
    const id = uid('oq');
    const topic = uid('t/oq');
    const a = await mq(b, { protocolVersion: 4, clientId: id, clean: false });
    await a.client.subscribeAsync(topic, { qos: 1 });
    await a.client.endAsync();
    await offline(b, id);
    // QoS 0 is queued too (queue_qos0 defaults to true), interleaved with QoS 1.
    const msgs = Array.from({ length: 10 }, (_, i) => ({ topic, payload: `m${i + 1}`, qos: (i % 2) as QoS }));
    await publishAll(b, 4, msgs);
    await settles(() => queued(b, id), 10, 'ten messages queued');
    const again = await mq(b, { protocolVersion: 4, clientId: id, clean: false });
    assert.equal(again.connack.sessionPresent, true);
    await waitFor(() => again.got.length >= 10, 'ten queued messages');
    assert.deepEqual(again.got.map((m) => m.payload), msgs.map((m) => m.payload));
    assert.deepEqual(again.got.map((m) => m.qos), msgs.map((m) => m.qos));
    await waitFor(async () => {
      const s = await b.session(id);
      return s?.queue.length === 0 && s.inflight.length === 0;
    }, 'queue drained and acked');
    await again.client.endAsync();
  });

  test('[v5 MQTT-3.1.2-23] [v5 MQTT-4.6.0-6] mosquitto_sub -c: offline QoS 2 messages arrive on reconnect, in order', T, async () => {
    const id = uid('mosq');
    const topic = uid('t/mosq');
    const base = ['-V', 'mqttv5', '-i', id, '-c', '-x', '60', '-q', '2', '-t', topic];
    const first = await mosquittoSub(b.port, [...base, '-E']).done;
    assert.equal(first.code, 0, first.stderr);
    await offline(b, id);
    const msgs = ['one', 'two', 'three', 'four'];
    for (const m of msgs) {
      // One QoS for all: libmosquitto hands a QoS 2 message to the app only at PUBREL, so a
      // mix would be printed out of wire order.
      const r = await mosquittoPub(b.port, ['-V', 'mqttv5', '-t', topic, '-m', m, '-q', '2']);
      assert.equal(r.code, 0, r.stderr);
    }
    await settles(() => queued(b, id), 4, 'four messages queued');
    const second = await mosquittoSub(b.port, [...base, '-C', '4', '-W', '5', '-F', '%p %q']).done;
    assert.equal(second.code, 0, second.stderr);
    assert.deepEqual(second.stdout.trim().split('\n'), ['one 2', 'two 2', 'three 2', 'four 2']);
    // Clean up the stored session.
    const end = await raw(b, 5, { clientId: id, clean: true });
    end.c.send({ cmd: 'disconnect', reasonCode: 0 } as Packet);
  });

  test('[v5 MQTT-4.4.0-1] [v5 MQTT-2.2.1-4] queued QoS 2 messages go out in order with fresh packet ids after a RawClient reconnect', T, async () => {
    const id = uid('oq5');
    const topic = uid('t/oq5');
    const { c } = await raw(b, 5, { clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } });
    await rawSubscribe(c, topic, 2);
    c.send({ cmd: 'disconnect', reasonCode: 0 } as Packet);
    await c.waitClose();
    await offline(b, id);
    await publishAll(b, 5, [1, 2, 3].map((i) => ({ topic, payload: `q${i}`, qos: 2 as QoS })));
    const again = await raw(b, 5, { clientId: id, clean: false, properties: { sessionExpiryInterval: 0 } });
    assert.equal(sp(again.connack), true);
    const pubs: IPublishPacket[] = [];
    for (let i = 0; i < 3; i++) pubs.push((await again.c.next()) as IPublishPacket);
    assert.deepEqual(pubs.map((p) => [p.cmd, p.payload.toString(), p.qos, p.dup]), [
      ['publish', 'q1', 2, false], ['publish', 'q2', 2, false], ['publish', 'q3', 2, false],
    ]);
    assert.equal(new Set(pubs.map((p) => p.messageId)).size, 3, 'distinct packet ids');
    for (const p of pubs) {
      again.c.send({ cmd: 'pubrec', messageId: p.messageId } as Packet);
      const rel = (await again.c.next()) as IPubrelPacket;
      assert.deepEqual([rel.cmd, rel.messageId], ['pubrel', p.messageId]);
      again.c.send({ cmd: 'pubcomp', messageId: p.messageId } as Packet);
    }
    await settles(() => inflight(b, id), 0, 'inflight empty');
    again.c.send({ cmd: 'disconnect', reasonCode: 0 } as Packet);
  });

  // ---------------------------------------------------------------- takeover

  test('[v3.1.1 MQTT-3.1.4-2] takeover: the first connection is closed; clean 0 carries the subscriptions over', T, async () => {
    const id = uid('to4');
    const topic = uid('t/to4');
    const a = await mq(b, { protocolVersion: 4, clientId: id, clean: false });
    await a.client.subscribeAsync(topic, { qos: 1 });
    const closed = new Promise<void>((r) => a.client.once('close', () => r()));
    const n = b.counters.takeovers;
    const second = await mq(b, { protocolVersion: 4, clientId: id, clean: false });
    await closed;
    assert.equal(second.connack.sessionPresent, true);
    // Counted before the first connection was closed.
    assert.equal(b.counters.takeovers, n + 1);
    assert.equal((await b.session(id))?.conn?.state, 'connected');
    await publishAll(b, 4, [{ topic, payload: 'to the new one', qos: 1 }]);
    await waitFor(() => second.got.length === 1, 'delivery on the new connection');
    assert.deepEqual(a.got, []);
    await second.client.endAsync();
  });

  test('[v5 MQTT-3.1.4-3] takeover: the first 5.0 client gets DISCONNECT 0x8E, then close; Clean Start 0 keeps the session', T, async () => {
    const id = uid('to5');
    const topic = uid('t/to5');
    const first = await raw(b, 5, { clientId: id, clean: true, properties: { sessionExpiryInterval: 60 } });
    await rawSubscribe(first.c, topic, 1);
    const second = await mq(b, { protocolVersion: 5, clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } });
    const got = await first.c.drainUntilClose(3000);
    assert.equal(got.length, 1);
    assert.equal(got[0]?.cmd, 'disconnect');
    assert.equal((got[0] as IDisconnectPacket).reasonCode, 0x8e);
    assert.equal(second.connack.sessionPresent, true);
    await publishAll(b, 5, [{ topic, payload: 'carried over', qos: 1 }]);
    await waitFor(() => second.got.length === 1, 'delivery on the new connection');
    // The old connection's close did not end or detach the session.
    assert.equal((await b.session(id))?.conn?.state, 'connected');
    await second.client.endAsync(false, { properties: { sessionExpiryInterval: 0 } });
  });

  test('[v5 MQTT-3.1.4-3] [v5 MQTT-3.1.2-4] takeover with Clean Start 1: DISCONNECT 0x8E and the old subscriptions are gone', T, async () => {
    const id = uid('to5c');
    const topic = uid('t/to5c');
    const first = await raw(b, 5, { clientId: id, clean: true, properties: { sessionExpiryInterval: 60 } });
    await rawSubscribe(first.c, topic, 1);
    const second = await raw(b, 5, { clientId: id, clean: true });
    assert.equal(sp(second.connack), false);
    const got = await first.c.drainUntilClose(3000);
    assert.deepEqual(got.map((p) => [p.cmd, (p as IDisconnectPacket).reasonCode]), [['disconnect', 0x8e]]);
    await publishAll(b, 5, [{ topic, payload: 'x', qos: 1 }]);
    await assert.rejects(second.c.next(300), /no packet/);
    second.c.send({ cmd: 'disconnect', reasonCode: 0 } as Packet);
  });

  // ---------------------------------------------------------------- redelivery

  for (const version of [4, 5] as const) {
    const tag = version === 4 ? '[v3.1.1 MQTT-4.4.0-1] [v3.1.1 MQTT-3.3.1-1]' : '[v5 MQTT-4.4.0-1] [v5 MQTT-3.3.1-1]';
    const persist = version === 5 ? { properties: { sessionExpiryInterval: 60 } } : {};

    test(`${tag} unacknowledged QoS 1 PUBLISH is resent after reconnect with the same packet id and DUP=1`, T, async () => {
      const id = uid(`rd1-${version}`);
      const topic = uid('t/rd1');
      const { c } = await raw(b, version, { clientId: id, clean: false, ...persist });
      await rawSubscribe(c, topic, 1);
      await publishAll(b, version, [{ topic, payload: 'again', qos: 1 }]);
      const p1 = (await c.next()) as IPublishPacket;
      assert.deepEqual([p1.cmd, p1.qos, p1.dup, p1.payload.toString()], ['publish', 1, false, 'again']);
      c.destroy(); // no PUBACK
      await offline(b, id);
      assert.equal(await inflight(b, id), 1);

      const again = await raw(b, version, { clientId: id, clean: false, ...persist });
      assert.equal(sp(again.connack), true);
      const p2 = (await again.c.next()) as IPublishPacket;
      assert.deepEqual([p2.cmd, p2.qos, p2.dup, p2.messageId, p2.topic, p2.payload.toString()],
        ['publish', 1, true, p1.messageId, topic, 'again']);
      again.c.send({ cmd: 'puback', messageId: p2.messageId } as Packet);
      await settles(() => inflight(b, id), 0, 'acked');
      // Not resent again once acknowledged.
      await assert.rejects(again.c.next(300), /no packet/);
      if (version === 5) again.c.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 0 } } as Packet);
      else again.c.send({ cmd: 'disconnect' } as Packet);
      await again.c.waitClose();
    });

    test(`${tag} unacknowledged QoS 2: PUBLISH resent with DUP=1, and after PUBREC the PUBREL is resent`, T, async () => {
      const id = uid(`rd2-${version}`);
      const topic = uid('t/rd2');
      const { c } = await raw(b, version, { clientId: id, clean: false, ...persist });
      await rawSubscribe(c, topic, 2);
      await publishAll(b, version, [{ topic, payload: 'exactly once', qos: 2 }]);
      const p1 = (await c.next()) as IPublishPacket;
      assert.deepEqual([p1.cmd, p1.qos, p1.dup], ['publish', 2, false]);
      c.destroy(); // no PUBREC
      await offline(b, id);

      const c2 = await raw(b, version, { clientId: id, clean: false, ...persist });
      assert.equal(sp(c2.connack), true);
      const p2 = (await c2.c.next()) as IPublishPacket;
      assert.deepEqual([p2.cmd, p2.qos, p2.dup, p2.messageId, p2.payload.toString()],
        ['publish', 2, true, p1.messageId, 'exactly once']);
      c2.c.send({ cmd: 'pubrec', messageId: p2.messageId } as Packet);
      const rel = (await c2.c.next()) as IPubrelPacket;
      assert.deepEqual([rel.cmd, rel.messageId], ['pubrel', p1.messageId]);
      c2.c.destroy(); // no PUBCOMP
      await offline(b, id);

      const c3 = await raw(b, version, { clientId: id, clean: false, ...persist });
      assert.equal(sp(c3.connack), true);
      const rel2 = (await c3.c.next()) as IPubrelPacket;
      // The PUBLISH is not sent again once PUBREL went out [v3.1.1 MQTT-4.3.3-1 / v5 MQTT-4.3.3-6].
      assert.deepEqual([rel2.cmd, rel2.messageId], ['pubrel', p1.messageId]);
      c3.c.send({ cmd: 'pubcomp', messageId: rel2.messageId } as Packet);
      await settles(() => inflight(b, id), 0, 'flow complete');
      await assert.rejects(c3.c.next(300), /no packet/);
      if (version === 5) c3.c.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 0 } } as Packet);
      else c3.c.send({ cmd: 'disconnect' } as Packet);
      await c3.c.waitClose();
    });
  }

  test('[v5 MQTT-4.4.0-1] [v5 MQTT-4.9.0-2] resent PUBLISHes respect the Receive Maximum of the new connection', T, async () => {
    const id = uid('rdrm');
    const topic = uid('t/rdrm');
    const { c } = await raw(b, 5, { clientId: id, clean: false, properties: { sessionExpiryInterval: 60, receiveMaximum: 10 } });
    await rawSubscribe(c, topic, 1);
    await publishAll(b, 5, ['a', 'b', 'c'].map((payload) => ({ topic, payload, qos: 1 as QoS })));
    const first: IPublishPacket[] = [];
    for (let i = 0; i < 3; i++) first.push((await c.next()) as IPublishPacket);
    c.destroy(); // none acknowledged
    await offline(b, id);
    await publishAll(b, 5, [{ topic, payload: 'd', qos: 1 }]); // queued behind the three

    const again = await raw(b, 5, { clientId: id, clean: false, properties: { sessionExpiryInterval: 0, receiveMaximum: 1 } });
    assert.equal(sp(again.connack), true);
    const seen: [string, number | undefined, boolean][] = [];
    for (let i = 0; i < 4; i++) {
      const p = (await again.c.next()) as IPublishPacket;
      seen.push([p.payload.toString(), p.messageId, p.dup]);
      // Only one PUBLISH may be unacknowledged at a time.
      await assert.rejects(again.c.next(200), /no packet/, `a second PUBLISH before the PUBACK of ${p.payload.toString()}`);
      again.c.send({ cmd: 'puback', messageId: p.messageId } as Packet);
    }
    assert.deepEqual(seen.slice(0, 3), first.map((p) => [p.payload.toString(), p.messageId, true]));
    assert.deepEqual([seen[3]?.[0], seen[3]?.[2]], ['d', false]);
    await settles(() => inflight(b, id), 0, 'all acknowledged');
    again.c.send({ cmd: 'disconnect', reasonCode: 0 } as Packet);
  });

  test('[v3.1.1 MQTT-4.3.3-2] [v5 MQTT-4.3.3-10] inbound QoS 2 state survives a reconnect: the resent PUBLISH is not routed twice', T, async () => {
    for (const version of [4, 5] as const) {
      const id = uid(`in2-${version}`);
      const topic = uid('t/in2');
      const persist = version === 5 ? { properties: { sessionExpiryInterval: 60 } } : {};
      const sub = await mq(b, { protocolVersion: version, clientId: uid('in2-sub') });
      await sub.client.subscribeAsync(topic, { qos: 2 });
      const { c } = await raw(b, version, { clientId: id, clean: false, ...persist });
      const pub = { cmd: 'publish', topic, payload: Buffer.from('once'), qos: 2, retain: false, dup: false, messageId: 42 };
      c.send(pub as Packet);
      assert.deepEqual([(await c.next())?.cmd], ['pubrec']);
      c.destroy(); // no PUBREL
      await offline(b, id);
      const c2 = await raw(b, version, { clientId: id, clean: false, ...persist });
      assert.equal(sp(c2.connack), true);
      c2.c.send({ ...pub, dup: true } as Packet);
      const rec = await c2.c.next();
      assert.deepEqual([rec?.cmd, (rec as IPubrelPacket).messageId], ['pubrec', 42]);
      c2.c.send({ cmd: 'pubrel', messageId: 42 } as Packet);
      const comp = await c2.c.next();
      assert.deepEqual([comp?.cmd, (comp as IPubrelPacket).messageId], ['pubcomp', 42]);
      await waitFor(() => sub.got.length >= 1, 'delivery');
      await sleep(200);
      assert.deepEqual(sub.got.map((m) => m.payload), ['once'], `v${version}: delivered exactly once`);
      await sub.client.endAsync();
      if (version === 5) c2.c.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 0 } } as Packet);
      else c2.c.send({ cmd: 'disconnect' } as Packet);
      await c2.c.waitClose();
    }
  });
});

// =====================================================================================
/** Subscribes a persistent 3.1.1 session at QoS 1, takes it offline, and returns its id and topic. */
async function offlineSubscriber(b: TestBroker, qos: QoS = 1): Promise<{ id: string; topic: string }> {
  const id = uid('bq');
  const topic = uid('t/bq');
  const a = await mq(b, { protocolVersion: 4, clientId: id, clean: false });
  await a.client.subscribeAsync(topic, { qos });
  await a.client.endAsync();
  await offline(b, id);
  return { id, topic };
}

/** Reconnects the session and returns the payloads it receives (waits for `n`, then a quiet 300 ms). */
async function drainOnReconnect(b: TestBroker, id: string, n: number): Promise<string[]> {
  const again = await mq(b, { protocolVersion: 4, clientId: id, clean: false });
  assert.equal(again.connack.sessionPresent, true);
  await waitFor(() => again.got.length >= n, `${n} messages`);
  await sleep(300);
  await again.client.endAsync();
  return again.got.map((m) => m.payload);
}

describe('offline queue bound: max_queued_messages 5, drop_oldest', () => {
  let b: TestBroker;
  before(async () => {
    b = await startBroker({ mqtt: { max_queued_messages: 5, queue_overflow: 'drop_oldest' } });
  });
  after(() => b.stop());

  test('[v3.1.1 MQTT-3.1.2-5] [v3.1.1 §4.1] 8 messages offline: the newest 5 are kept, 3 counted in droppedQueueFull', T, async () => {
    const { id, topic } = await offlineSubscriber(b);
    const before = b.counters.droppedQueueFull;
    await publishAll(b, 4, Array.from({ length: 8 }, (_, i) => ({ topic, payload: `m${i + 1}`, qos: 1 as QoS })));
    await settles(() => b.counters.droppedQueueFull, before + 3, 'three dropped');
    await settles(() => queued(b, id), 5, 'five queued');
    assert.deepEqual(await drainOnReconnect(b, id, 5), ['m4', 'm5', 'm6', 'm7', 'm8']);
  });

  test('[v5 MQTT-3.1.2-23] [v5 §4.1] the same bound applies to a 5.0 session (MQTT.js)', T, async () => {
    const id = uid('bq5');
    const topic = uid('t/bq5');
    const opts = { protocolVersion: 5 as const, clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } };
    const a = await mq(b, opts);
    await a.client.subscribeAsync(topic, { qos: 1 });
    await a.client.endAsync();
    await offline(b, id);
    const before = b.counters.droppedQueueFull;
    await publishAll(b, 5, Array.from({ length: 7 }, (_, i) => ({ topic, payload: `n${i + 1}`, qos: 1 as QoS })));
    await settles(() => b.counters.droppedQueueFull, before + 2, 'two dropped');
    const again = await mq(b, opts);
    await waitFor(() => again.got.length >= 5, 'five messages');
    await sleep(300);
    assert.deepEqual(again.got.map((m) => m.payload), ['n3', 'n4', 'n5', 'n6', 'n7']);
    await again.client.endAsync(false, { properties: { sessionExpiryInterval: 0 } });
  });
});

describe('offline queue bound: max_queued_messages 5, drop_new', () => {
  let b: TestBroker;
  before(async () => {
    b = await startBroker({ mqtt: { max_queued_messages: 5, queue_overflow: 'drop_new' } });
  });
  after(() => b.stop());

  test('[v3.1.1 MQTT-3.1.2-5] [v3.1.1 §4.1] 8 messages offline: the first 5 are kept, 3 counted in droppedQueueFull', T, async () => {
    const { id, topic } = await offlineSubscriber(b);
    const before = b.counters.droppedQueueFull;
    await publishAll(b, 4, Array.from({ length: 8 }, (_, i) => ({ topic, payload: `m${i + 1}`, qos: 1 as QoS })));
    await settles(() => b.counters.droppedQueueFull, before + 3, 'three dropped');
    await settles(() => queued(b, id), 5, 'five queued');
    assert.deepEqual(await drainOnReconnect(b, id, 5), ['m1', 'm2', 'm3', 'm4', 'm5']);
  });
});

describe('offline queue: queue_qos0 false', () => {
  let b: TestBroker;
  before(async () => {
    b = await startBroker({ mqtt: { queue_qos0: false } });
  });
  after(() => b.stop());

  test('[v3.1.1 MQTT-3.1.2-5] QoS 0 published while offline is dropped (droppedQos0Offline); QoS 1/2 are kept', T, async () => {
    const { id, topic } = await offlineSubscriber(b, 2);
    const before = b.counters.droppedQos0Offline;
    await publishAll(b, 4, [
      { topic, payload: 'a0', qos: 0 }, { topic, payload: 'b1', qos: 1 }, { topic, payload: 'c0', qos: 0 },
      { topic, payload: 'd2', qos: 2 }, { topic, payload: 'e0', qos: 0 },
    ]);
    // QoS 0 publishes carry no ack: wait for the broker to have routed the last one.
    await settles(() => b.counters.droppedQos0Offline, before + 3, 'three QoS 0 drops');
    await settles(() => queued(b, id), 2, 'the QoS 1 and 2 messages queued');
    assert.deepEqual(await drainOnReconnect(b, id, 2), ['b1', 'd2']);
  });

  test('[v3.1.1 MQTT-3.1.2-5] QoS 0 to an online persistent subscriber is still delivered', T, async () => {
    const id = uid('q0on');
    const topic = uid('t/q0on');
    const a = await mq(b, { protocolVersion: 4, clientId: id, clean: false });
    await a.client.subscribeAsync(topic, { qos: 1 });
    const before = b.counters.droppedQos0Offline;
    await publishAll(b, 4, [{ topic, payload: 'live', qos: 0 }]);
    await waitFor(() => a.got.length === 1, 'live QoS 0 delivery');
    assert.equal(b.counters.droppedQos0Offline, before);
    await a.client.endAsync();
  });
});
