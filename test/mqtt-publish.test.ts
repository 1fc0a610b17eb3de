// PUBLISH end to end for 3.1.1 and 5.0: QoS 0/1/2 with MQTT.js and the mosquitto
// clients, packet identifiers, the acknowledgement flows byte by byte (RawClient),
// exactly-once delivery, Receive Maximum both ways, QoS downgrade and ordering.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import mqttPacket from 'mqtt-packet';
import type { Packet } from 'mqtt-packet';
import type { SessionInfo } from '../src/runtime/probe.js';
import { waitFor, type TestBroker } from './helpers/broker.js';
import { inbox, trackClients, uid, VERSIONS } from './helpers/clients.js';
import { mosquittoPub, mosquittoSub, type Proc, type Run } from './helpers/mosquitto.js';
import { publishPacket } from './helpers/packets.js';
import { expectNothing, expectPacket, rawSubscribe } from './helpers/raw-client.js';

const T = { timeout: 20_000 };

const { broker, client, rawClient: raw, rawConnect } = trackClients();

function mosqPub(b: TestBroker, mosq: string, topic: string, msg: string, qos: number): Promise<Run> {
  return mosquittoPub(b.port, ['-V', mosq, '-i', uid('mpub'), '-t', topic, '-m', msg, '-q', String(qos)]);
}

/** Starts mosquitto_sub and resolves once the broker holds its subscription. */
async function mosqSub(b: TestBroker, mosq: string, topic: string, qos: number, count: number): Promise<Proc> {
  const id = uid('msub');
  const p = mosquittoSub(b.port, ['-V', mosq, '-i', id, '-t', topic, '-q', String(qos), '-C', String(count), '-F', '%t|%p|%q|%r']);
  await waitFor(async () => ((await b.session(id))?.subscriptions.length ?? 0) > 0, 'mosquitto_sub subscription', 5000);
  return p; // a Proc, not a bare promise: an async function returning a promise would wait for it
}

/** A snapshot of session `id`, which must exist. */
async function sessionOf(b: TestBroker, id: string): Promise<SessionInfo> {
  const s = await b.session(id);
  assert.ok(s, `session ${id}`);
  return s;
}

/** The id of the (one) session holding a subscription to `filter`. */
async function subscriberOf(b: TestBroker, filter: string): Promise<string> {
  const found: string[] = [];
  for (const id of await b.sessionIds()) {
    if ((await b.session(id))?.subscriptions.some((x) => x.key === filter)) found.push(id);
  }
  assert.equal(found.length, 1, `one session subscribed to ${filter}: ${found.join(', ')}`);
  return found[0]!;
}

// ---------------------------------------------------------------------------------
describe('PUBLISH QoS 0/1/2 with real clients', () => {
  let b: TestBroker;
  before(async () => {
    b = await broker();
  });

  for (const { v, tag, mosq } of VERSIONS) {
    const qosTags = v === 5 ? 'MQTT-4.3.1-1 MQTT-4.3.2-2 MQTT-4.3.3-2' : 'MQTT-4.3.1-1 MQTT-4.3.2-1 MQTT-4.3.3-1';
    test(`[${tag} ${qosTags}] MQTT.js → MQTT.js at QoS 0, 1 and 2 keeps each QoS`, T, async () => {
      const topic = uid('pub/js');
      const sub = await client(b, v);
      const got = inbox(sub);
      await sub.subscribeAsync(topic, { qos: 2 });
      const p = await client(b, v);
      for (const qos of [0, 1, 2] as const) await p.publishAsync(topic, `m${qos}`, { qos });
      await waitFor(() => got.length === 3, '3 messages');
      got.sort((x, y) => x.payload.localeCompare(y.payload));
      for (const [i, g] of got.entries()) {
        assert.equal(g.topic, topic);
        assert.equal(g.payload, `m${i}`);
        assert.equal(g.qos, i, 'delivered at the published QoS (subscription is QoS 2)');
        assert.equal(g.packet.dup, false);
        if (i === 0) assert.equal(g.packet.messageId, undefined, 'QoS 0 has no packet identifier');
        else assert.ok((g.packet.messageId ?? 0) > 0, 'QoS > 0 carries a non-zero packet identifier');
      }
    });

    test(`[${tag} MQTT-4.3.2-${v === 5 ? 4 : 2} MQTT-4.3.3-${v === 5 ? 8 : 2}] mosquitto_pub at QoS 0/1/2 → MQTT.js subscriber`, T, async () => {
      const topic = uid('pub/mosq-in');
      const sub = await client(b, v);
      const got = inbox(sub);
      await sub.subscribeAsync(topic, { qos: 2 });
      for (const qos of [0, 1, 2]) {
        const r = await mosqPub(b, mosq, topic, `q${qos}`, qos);
        assert.equal(r.code, 0, `mosquitto_pub -q ${qos} failed: ${r.stderr}`);
      }
      await waitFor(() => got.length === 3, '3 messages from mosquitto_pub');
      got.sort((x, y) => x.payload.localeCompare(y.payload));
      assert.deepEqual(got.map((g) => [g.payload, g.qos]), [['q0', 0], ['q1', 1], ['q2', 2]]);
    });

    test(`[${tag} MQTT-4.3.2-1 MQTT-4.3.3-1] MQTT.js at QoS 0/1/2 → mosquitto_sub`, T, async () => {
      const topic = uid('pub/mosq-out');
      const { done } = await mosqSub(b, mosq, topic, 2, 3);
      const p = await client(b, v);
      for (const qos of [0, 1, 2] as const) await p.publishAsync(topic, `q${qos}`, { qos });
      const r = await done;
      assert.equal(r.code, 0, `mosquitto_sub: ${r.stderr}`);
      const lines = r.stdout.trim().split('\n').sort();
      assert.deepEqual(lines, [`${topic}|q0|0|0`, `${topic}|q1|1|0`, `${topic}|q2|2|0`]);
    });

    test(`[${tag} MQTT-3.8.4-${v === 5 ? 8 : 6}] mosquitto_pub → mosquitto_sub at QoS 1: QoS 2 arrives as QoS 1, QoS 0 as 0`, T, async () => {
      const topic = uid('pub/mosq-mosq');
      const { done } = await mosqSub(b, mosq, topic, 1, 3);
      for (const qos of [0, 1, 2]) {
        const r = await mosqPub(b, mosq, topic, `q${qos}`, qos);
        assert.equal(r.code, 0, r.stderr);
      }
      const r = await done;
      assert.equal(r.code, 0, `mosquitto_sub: ${r.stderr}`);
      assert.deepEqual(r.stdout.trim().split('\n').sort(), [`${topic}|q0|0|0`, `${topic}|q1|1|0`, `${topic}|q2|1|0`]);
    });
  }
});

// ---------------------------------------------------------------------------------
describe('QoS downgrade and per-publisher order', () => {
  let b: TestBroker;
  before(async () => {
    // MQTT.js does not hold back its QoS 2 PUBLISHes for the server's Receive Maximum:
    // leave room for the pipelined burst below.
    b = await broker({ mqtt: { receive_maximum: 200 } });
  });

  for (const { v, tag } of VERSIONS) {
    test(`[${tag} MQTT-3.8.4-${v === 5 ? 8 : 6}] delivered QoS is min(published, granted)`, T, async () => {
      const base = uid('down');
      const sub = await client(b, v);
      const got = inbox(sub);
      await sub.subscribeAsync({ [`${base}/s0`]: { qos: 0 }, [`${base}/s1`]: { qos: 1 }, [`${base}/s2`]: { qos: 2 } });
      const p = await client(b, v);
      const cases: [string, 0 | 1 | 2, number][] = [
        ['s0', 2, 0], ['s0', 1, 0], ['s1', 2, 1], ['s1', 0, 0], ['s2', 1, 1], ['s2', 2, 2], ['s2', 0, 0],
      ];
      for (const [s, q] of cases) await p.publishAsync(`${base}/${s}`, `${s}-${q}`, { qos: q });
      await waitFor(() => got.length === cases.length, `${cases.length} messages`);
      for (const [s, q, want] of cases) {
        const g = got.find((x) => x.payload === `${s}-${q}`);
        assert.ok(g, `${s}-${q} delivered`);
        assert.equal(g.qos, want, `subscription ${s}, published QoS ${q}`);
      }
    });

    test(`[${tag} MQTT-4.6.0-${v === 5 ? 5 : 6}] messages of one publisher arrive in publish order per QoS`, T, async () => {
      const topic = uid('order');
      // 5.0: a small Receive Maximum makes most messages wait in the session queue.
      const sub = await client(b, v, v === 5 ? { properties: { receiveMaximum: 3 } } : {});
      const got = inbox(sub);
      await sub.subscribeAsync(topic, { qos: 2 });
      const p = await client(b, v);
      const N = 60;
      const sends: Promise<unknown>[] = [];
      for (let i = 0; i < N; i++) sends.push(p.publishAsync(topic, `1:${i}`, { qos: 1 }));
      for (let i = 0; i < N; i++) sends.push(p.publishAsync(topic, `2:${i}`, { qos: 2 }));
      for (let i = 0; i < N; i++) sends.push(p.publishAsync(topic, `0:${i}`, { qos: 0 }));
      await Promise.all(sends);
      await waitFor(() => got.length === 3 * N, `${3 * N} messages`, 10_000);
      for (const q of ['0', '1', '2']) {
        const seen = got.filter((g) => g.payload.startsWith(q + ':')).map((g) => Number(g.payload.slice(2)));
        assert.deepEqual(seen, [...Array(N).keys()], `QoS ${q} order`);
      }
    });
  }
});

// ---------------------------------------------------------------------------------
describe('acknowledgement flows byte by byte (RawClient)', () => {
  let b: TestBroker;
  before(async () => {
    b = await broker({ mqtt: { receive_maximum: 2 } });
  });

  for (const { v, tag } of VERSIONS) {
    const v5 = v === 5;

    test(`[${tag} ${v5 ? 'MQTT-4.3.2-4 MQTT-2.2.1-5' : 'MQTT-4.3.2-2 MQTT-2.3.1-6'}] inbound QoS 1: PUBACK with the same packet identifier`, T, async () => {
      const topic = uid('flow/q1');
      const sub = await raw(b, v);
      await rawSubscribe(sub, [{ topic, qos: 1 }]);
      const c = await raw(b, v);
      c.send(publishPacket(topic, 'hello', 1, 0x1234));
      const ack = await expectPacket(c, 'puback');
      assert.equal(ack.messageId, 0x1234);
      if (v5) assert.equal(ack.reasonCode ?? 0, 0, 'Success: there is a subscriber');
      const got = await expectPacket(sub, 'publish');
      assert.equal(got.payload.toString(), 'hello');
      assert.equal(got.qos, 1);
    });

    test(`[${tag} ${v5 ? 'MQTT-4.3.3-8 MQTT-4.3.3-11' : 'MQTT-4.3.3-2 MQTT-2.3.1-6'}] inbound QoS 2: PUBREC, then PUBREL → PUBCOMP, same identifier throughout`, T, async () => {
      const topic = uid('flow/q2');
      const sub = await raw(b, v);
      await rawSubscribe(sub, [{ topic, qos: 2 }]);
      const id = uid('q2pub');
      const c = await raw(b, v, { clientId: id });
      c.send(publishPacket(topic, 'two', 2, 0x0203));
      const rec = await expectPacket(c, 'pubrec');
      assert.equal(rec.messageId, 0x0203);
      if (v5) assert.equal(rec.reasonCode ?? 0, 0);
      assert.ok((await sessionOf(b, id)).inboundQos2.includes(0x0203), 'identifier held until PUBREL');
      c.send({ cmd: 'pubrel', messageId: 0x0203 } as Packet);
      const comp = await expectPacket(c, 'pubcomp');
      assert.equal(comp.messageId, 0x0203);
      if (v5) assert.equal(comp.reasonCode ?? 0, 0, 'known identifier → Success');
      assert.equal((await sessionOf(b, id)).inboundQos2.includes(0x0203), false, 'identifier released by PUBREL');
      const got = await expectPacket(sub, 'publish');
      assert.equal(got.payload.toString(), 'two');
      assert.equal(got.qos, 2);
    });

    test(`[${tag} ${v5 ? 'MQTT-4.3.3-10 MQTT-4.3.3-12' : 'MQTT-4.3.3-2'}] a QoS 2 PUBLISH repeated with DUP before PUBREL is delivered once; after PUBCOMP the identifier is a new message`, T, async () => {
      const topic = uid('flow/once');
      const sub = await raw(b, v);
      await rawSubscribe(sub, [{ topic, qos: 0 }]);
      const c = await raw(b, v);
      c.send(publishPacket(topic, 'once', 2, 7));
      assert.equal((await expectPacket(c, 'pubrec')).messageId, 7);
      c.send(publishPacket(topic, 'once', 2, 7, { dup: true }));
      assert.equal((await expectPacket(c, 'pubrec')).messageId, 7, 'the duplicate is acknowledged again');
      c.send(publishPacket(topic, 'once', 2, 7, { dup: true }));
      assert.equal((await expectPacket(c, 'pubrec')).messageId, 7);
      const first = await expectPacket(sub, 'publish');
      assert.equal(first.payload.toString(), 'once');
      await expectNothing(sub);
      c.send({ cmd: 'pubrel', messageId: 7 } as Packet);
      assert.equal((await expectPacket(c, 'pubcomp')).messageId, 7);
      // Same identifier after PUBCOMP: a new application message.
      c.send(publishPacket(topic, 'again', 2, 7));
      assert.equal((await expectPacket(c, 'pubrec')).messageId, 7);
      const second = await expectPacket(sub, 'publish');
      assert.equal(second.payload.toString(), 'again');
      c.send({ cmd: 'pubrel', messageId: 7 } as Packet);
      await expectPacket(c, 'pubcomp');
      await expectNothing(sub);
    });

    test(`[${tag} MQTT-3.3.1-3] the outgoing DUP flag is set by the broker alone: an inbound DUP=1 PUBLISH goes out with DUP=0`, T, async () => {
      const topic = uid('flow/dup');
      const sub = await raw(b, v);
      await rawSubscribe(sub, [{ topic, qos: 1 }]);
      const c = await raw(b, v);
      c.send(publishPacket(topic, 'dup', 1, 21, { dup: true }));
      assert.equal((await expectPacket(c, 'puback')).messageId, 21);
      const g = await expectPacket(sub, 'publish');
      assert.equal(g.payload.toString(), 'dup');
      assert.equal(g.dup, false);
      // QoS 1: after the PUBACK the same identifier is a new message, DUP or not [MQTT-4.3.2-${v5 ? 5 : 2}].
      c.send(publishPacket(topic, 'dup', 1, 21, { dup: true }));
      assert.equal((await expectPacket(c, 'puback')).messageId, 21);
      assert.equal((await expectPacket(sub, 'publish')).payload.toString(), 'dup');
    });

    test(`[${tag} ${v5 ? '§3.7.2.1 0x92' : 'MQTT-4.3.3-2'}] PUBREL for an unknown identifier → PUBCOMP${v5 ? ' 0x92 Packet Identifier not found' : ''}`, T, async () => {
      const c = await raw(b, v);
      c.send({ cmd: 'pubrel', messageId: 4242 } as Packet);
      const comp = await expectPacket(c, 'pubcomp');
      assert.equal(comp.messageId, 4242);
      if (v5) assert.equal(comp.reasonCode, 0x92);
      // The connection stays usable.
      c.send({ cmd: 'pingreq' } as Packet);
      await expectPacket(c, 'pingresp');
    });

    test(`[${tag} ${v5 ? 'MQTT-4.3.2-1 MQTT-4.3.2-2 MQTT-4.3.2-3' : 'MQTT-4.3.2-1'}] outbound QoS 1: PUBLISH DUP 0 with an identifier, held until PUBACK`, T, async () => {
      const topic = uid('flow/out1');
      const sub = await raw(b, v, { clientId: uid('out1') });
      await rawSubscribe(sub, [{ topic, qos: 1 }]);
      const p = await client(b, v);
      await p.publishAsync(topic, 'x', { qos: 1 });
      const got = await expectPacket(sub, 'publish');
      assert.equal(got.qos, 1);
      assert.equal(got.dup, false);
      assert.ok((got.messageId ?? 0) > 0);
      const s = await subscriberOf(b, topic);
      assert.equal((await sessionOf(b, s)).inflight.length, 1, 'unacknowledged until PUBACK');
      sub.send({ cmd: 'puback', messageId: got.messageId } as Packet);
      await waitFor(async () => (await sessionOf(b, s)).inflight.length === 0, 'inflight released by PUBACK');
    });

    test(`[${tag} ${v5 ? 'MQTT-4.3.3-2 MQTT-4.3.3-4 MQTT-4.3.3-5' : 'MQTT-4.3.3-1'}] outbound QoS 2: PUBLISH → PUBREC → PUBREL (same id) → PUBCOMP`, T, async () => {
      const topic = uid('flow/out2');
      const sub = await raw(b, v);
      await rawSubscribe(sub, [{ topic, qos: 2 }]);
      const p = await client(b, v);
      await p.publishAsync(topic, 'y', { qos: 2 });
      const got = await expectPacket(sub, 'publish');
      assert.equal(got.qos, 2);
      assert.equal(got.dup, false);
      const id = got.messageId!;
      assert.ok(id > 0);
      const s = await subscriberOf(b, topic);
      sub.send({ cmd: 'pubrec', messageId: id } as Packet);
      const rel = await expectPacket(sub, 'pubrel');
      assert.equal(rel.messageId, id);
      if (v5) assert.equal(rel.reasonCode ?? 0, 0);
      assert.equal((await sessionOf(b, s)).inflight.find((e) => e.id === id)?.state, 'pubrel', 'PUBREL unacknowledged until PUBCOMP');
      sub.send({ cmd: 'pubcomp', messageId: id } as Packet);
      await waitFor(async () => (await sessionOf(b, s)).inflight.length === 0, 'inflight released by PUBCOMP');
      await expectNothing(sub, 200);
    });

    test(`[${tag} ${v5 ? 'MQTT-2.2.1-4 MQTT-2.2.1-2' : 'MQTT-2.3.1-2 MQTT-2.3.1-5'}] every in-flight QoS > 0 PUBLISH has its own non-zero identifier; QoS 0 has none`, T, async () => {
      const topic = uid('flow/ids');
      const sub = await raw(b, v);
      await rawSubscribe(sub, [{ topic, qos: 2 }]);
      const p = await client(b, v);
      for (let i = 0; i < 6; i++) await p.publishAsync(topic, `i${i}`, { qos: i % 2 === 0 ? 1 : 2 });
      await p.publishAsync(topic, 'zero', { qos: 0 });
      const ids: number[] = [];
      for (let i = 0; i < 6; i++) {
        const g = await expectPacket(sub, 'publish');
        assert.equal(g.payload.toString(), `i${i}`);
        ids.push(g.messageId!);
      }
      const z = await expectPacket(sub, 'publish');
      assert.equal(z.qos, 0);
      assert.equal(z.messageId, undefined);
      assert.ok(ids.every((id) => Number.isInteger(id) && id > 0 && id <= 65535), `ids ${ids}`);
      assert.equal(new Set(ids).size, ids.length, `distinct ids while unacknowledged: ${ids}`);
    });
  }

  test('[v5 §3.4.2.1 0x10 §3.5.2.1 0x10] PUBACK / PUBREC carry 0x10 No matching subscribers', T, async () => {
    const c = await raw(b, 5);
    c.send(publishPacket(uid('flow/nobody'), 'x', 1, 11));
    const ack = await expectPacket(c, 'puback');
    assert.equal(ack.messageId, 11);
    assert.equal(ack.reasonCode, 0x10);
    c.send(publishPacket(uid('flow/nobody'), 'x', 2, 12));
    const rec = await expectPacket(c, 'pubrec');
    assert.equal(rec.messageId, 12);
    assert.equal(rec.reasonCode, 0x10, '0x10 is a success code: the flow goes on');
    c.send({ cmd: 'pubrel', messageId: 12 } as Packet);
    const comp = await expectPacket(c, 'pubcomp');
    assert.equal(comp.reasonCode ?? 0, 0, 'the identifier was kept after PUBREC 0x10');
  });

  test('[v3.1.1 MQTT-4.3.2-2] 3.1.1 PUBACK has no reason code even without subscribers', T, async () => {
    const c = await raw(b, 4);
    c.send(publishPacket(uid('flow/nobody3'), 'x', 1, 13));
    const ack = await expectPacket(c, 'puback');
    assert.equal(ack.messageId, 13);
    assert.equal(ack.reasonCode, undefined);
  });

  test('[v5 §3.6.2.1 0x92] PUBREC for an unknown identifier → PUBREL 0x92', T, async () => {
    const c = await raw(b, 5);
    c.send({ cmd: 'pubrec', messageId: 999 } as Packet);
    const rel = await expectPacket(c, 'pubrel');
    assert.equal(rel.messageId, 999);
    assert.equal(rel.reasonCode, 0x92);
  });

  test('[v5 MQTT-3.3.4-9 MQTT-3.3.4-10] a subscriber with Receive Maximum 2 gets at most 2 unacknowledged QoS 1 PUBLISHes; the rest follow its PUBACKs', T, async () => {
    const topic = uid('flow/rmax');
    const sub = await raw(b, 5, { properties: { receiveMaximum: 2 } });
    await rawSubscribe(sub, [{ topic, qos: 1 }]);
    const p = await client(b, 5);
    for (let i = 0; i < 5; i++) await p.publishAsync(topic, `r${i}`, { qos: 1 });
    const a = await expectPacket(sub, 'publish');
    const b2 = await expectPacket(sub, 'publish');
    assert.deepEqual([a.payload.toString(), b2.payload.toString()], ['r0', 'r1']);
    await expectNothing(sub, 400);
    // Non-PUBLISH packets are not held back by the full window.
    sub.send({ cmd: 'pingreq' } as Packet);
    await expectPacket(sub, 'pingresp');
    sub.send({ cmd: 'puback', messageId: a.messageId } as Packet);
    const c3 = await expectPacket(sub, 'publish');
    assert.equal(c3.payload.toString(), 'r2');
    await expectNothing(sub, 300);
    sub.send({ cmd: 'puback', messageId: b2.messageId } as Packet);
    sub.send({ cmd: 'puback', messageId: c3.messageId } as Packet);
    const rest = [await expectPacket(sub, 'publish'), await expectPacket(sub, 'publish')];
    assert.deepEqual(rest.map((x) => x.payload.toString()), ['r3', 'r4']);
    for (const x of rest) sub.send({ cmd: 'puback', messageId: x.messageId } as Packet);
    await expectNothing(sub, 200);
  });

  test('[v5 MQTT-3.3.4-9] a QoS 2 delivery holds its Receive Maximum slot until PUBCOMP, not PUBREC', T, async () => {
    const topic = uid('flow/rmax2');
    const sub = await raw(b, 5, { properties: { receiveMaximum: 1 } });
    await rawSubscribe(sub, [{ topic, qos: 2 }]);
    const p = await client(b, 5);
    await p.publishAsync(topic, 'a', { qos: 2 });
    await p.publishAsync(topic, 'b', { qos: 2 });
    const a = await expectPacket(sub, 'publish');
    assert.equal(a.payload.toString(), 'a');
    sub.send({ cmd: 'pubrec', messageId: a.messageId } as Packet);
    await expectPacket(sub, 'pubrel');
    await expectNothing(sub, 300);
    sub.send({ cmd: 'pubcomp', messageId: a.messageId } as Packet);
    const b2 = await expectPacket(sub, 'publish');
    assert.equal(b2.payload.toString(), 'b');
  });

  test('[v5 MQTT-3.3.4-7 §3.3.4 0x93] a 5.0 client exceeding the broker\'s Receive Maximum (2) with unreleased QoS 2 → DISCONNECT 0x93', T, async () => {
    const { c, connack } = await rawConnect(b.port, 5, { clientId: uid('rmaxin') });
    assert.equal((connack as { properties?: { receiveMaximum?: number } }).properties?.receiveMaximum, 2);
    const topic = uid('flow/in');
    c.send(publishPacket(topic, '1', 2, 1));
    c.send(publishPacket(topic, '2', 2, 2));
    assert.equal((await expectPacket(c, 'pubrec')).messageId, 1);
    assert.equal((await expectPacket(c, 'pubrec')).messageId, 2);
    // Releasing one frees one slot.
    c.send({ cmd: 'pubrel', messageId: 1 } as Packet);
    assert.equal((await expectPacket(c, 'pubcomp')).messageId, 1);
    c.send(publishPacket(topic, '3', 2, 3));
    assert.equal((await expectPacket(c, 'pubrec')).messageId, 3);
    // A third unreleased one is one too many.
    c.send(publishPacket(topic, '4', 2, 4));
    const d = await expectPacket(c, 'disconnect');
    assert.equal(d.reasonCode, 0x93);
    await c.waitClose();
  });

  test('[v5 MQTT-4.13.1-1 MQTT-3.14.4-1] packets behind the one that exceeded Receive Maximum (same TCP segment) are not processed', T, async () => {
    const topic = uid('flow/after');
    const sub = await raw(b, 5);
    await rawSubscribe(sub, [{ topic, qos: 0 }]);
    const c = await raw(b, 5);
    const bytes = Buffer.concat([
      mqttPacket.generate(publishPacket(uid('flow/x'), '1', 2, 1), { protocolVersion: 5 }),
      mqttPacket.generate(publishPacket(uid('flow/x'), '2', 2, 2), { protocolVersion: 5 }),
      mqttPacket.generate(publishPacket(uid('flow/x'), '3', 2, 3), { protocolVersion: 5 }), // one too many
      mqttPacket.generate(publishPacket(topic, 'must not be routed', 0), { protocolVersion: 5 }),
      mqttPacket.generate(publishPacket(topic, 'nor this', 1, 9), { protocolVersion: 5 }),
    ]);
    c.sendRaw(bytes);
    const got = await c.drainUntilClose();
    assert.deepEqual(got.map((p) => p.cmd), ['pubrec', 'pubrec', 'disconnect'], 'one DISCONNECT, then nothing');
    assert.equal((got[2] as { reasonCode?: number }).reasonCode, 0x93);
    await expectNothing(sub, 300);
  });

  test('[v3.1.1 §4.3.3] 3.1.1 has no Receive Maximum: more unreleased QoS 2 messages than receive_maximum are accepted', T, async () => {
    const c = await raw(b, 4);
    const topic = uid('flow/in3');
    for (let i = 1; i <= 4; i++) c.send(publishPacket(topic, String(i), 2, i));
    for (let i = 1; i <= 4; i++) assert.equal((await expectPacket(c, 'pubrec')).messageId, i);
    for (let i = 1; i <= 4; i++) c.send({ cmd: 'pubrel', messageId: i } as Packet);
    for (let i = 1; i <= 4; i++) assert.equal((await expectPacket(c, 'pubcomp')).messageId, i);
    assert.equal(c.closed, false);
  });
});
