// SUBSCRIBE / UNSUBSCRIBE for 3.1.1 and 5.0: SUBACK codes per filter, wildcard
// matching, $-topics, invalid and denied filters, the subscription quota, the 5.0
// subscription options (No Local, Retain As Published, Retain Handling), Subscription
// Identifiers, overlapping subscriptions and UNSUBACK.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { MqttClient } from 'mqtt';
import type { IPublishPacket, ISubscription, Packet } from 'mqtt-packet';
import type { SessionInfo } from '../src/runtime/probe.js';
import { waitFor, type TestBroker } from './helpers/broker.js';
import { inbox, trackClients, uid, VERSIONS, type Received } from './helpers/clients.js';
import { mosquittoSub } from './helpers/mosquitto.js';
import { publishPacket } from './helpers/packets.js';
import { expectNothing, expectPacket, rawSubscribe } from './helpers/raw-client.js';

const T = { timeout: 20_000 };

const { broker, client, rawClient: raw } = trackClients();

/**
 * Publishes `topics` then a sentinel from one QoS 0 publisher and returns the topics
 * `got` received before the sentinel: one publisher's messages are routed in order, so
 * anything that was going to match has arrived by then.
 */
async function routedBefore(p: MqttClient, got: Received[], topics: string[], sentinel: string): Promise<string[]> {
  const from = got.length;
  for (const t of topics) await p.publishAsync(t, 'm', { qos: 0 });
  await p.publishAsync(sentinel, 'end', { qos: 0 });
  await waitFor(() => got.slice(from).some((g) => g.topic === sentinel), `sentinel ${sentinel}`);
  const upTo = got.findIndex((g, i) => i >= from && g.topic === sentinel);
  return got.slice(from, upTo).map((g) => g.topic);
}

/** The first session (on any worker) holding a subscription keyed `key`. */
async function sessionSubscribedTo(b: TestBroker, key: string): Promise<SessionInfo | undefined> {
  for (const id of await b.sessionIds()) {
    const s = await b.session(id);
    if (s?.subscriptions.some((x) => x.key === key)) return s;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------
describe('SUBSCRIBE and SUBACK', () => {
  let b: TestBroker;
  before(async () => {
    b = await broker({ mqtt: { deny_subscribe: ['test/nosubscribe'] } });
  });

  for (const { v, tag, mosq } of VERSIONS) {
    const v5 = v === 5;
    const BAD = v5 ? 0x8f : 0x80;

    test(`[${tag} ${v5 ? 'MQTT-3.8.4-5 MQTT-3.8.4-6 MQTT-3.9.3-1 MQTT-3.8.4-2' : 'MQTT-3.8.4-4 MQTT-3.8.4-5 MQTT-3.9.3-1 MQTT-3.8.4-2'}] several filters in one SUBSCRIBE: one SUBACK, one code per filter in order`, T, async () => {
      const base = uid('multi');
      const c = await raw(b, v);
      const granted = await rawSubscribe(c, [
        { topic: `${base}/q2`, qos: 2 }, { topic: `${base}/q0`, qos: 0 }, { topic: `${base}/q1/#`, qos: 1 },
      ]);
      assert.deepEqual(granted, [2, 0, 1]);
      await expectNothing(c, 100); // a single SUBACK
      const p = await client(b, v);
      await p.publishAsync(`${base}/q2`, 'a', { qos: 2 });
      await p.publishAsync(`${base}/q0`, 'b', { qos: 2 });
      await p.publishAsync(`${base}/q1/x`, 'c', { qos: 2 });
      const got: IPublishPacket[] = [];
      while (got.length < 3) {
        const g = await c.next();
        assert.ok(g);
        if (g.cmd === 'pubrel') {
          c.send({ cmd: 'pubcomp', messageId: g.messageId } as Packet);
          continue;
        }
        assert.equal(g.cmd, 'publish');
        got.push(g);
        if (g.qos === 1) c.send({ cmd: 'puback', messageId: g.messageId } as Packet);
        if (g.qos === 2) c.send({ cmd: 'pubrec', messageId: g.messageId } as Packet);
      }
      assert.deepEqual(got.map((g) => [g.topic, g.qos]), [[`${base}/q2`, 2], [`${base}/q0`, 0], [`${base}/q1/x`, 1]]);
    });

    test(`[${tag} ${v5 ? 'MQTT-4.7.1-1 MQTT-4.7.1-2 §3.9.3 0x8F' : 'MQTT-4.7.1-2 MQTT-4.7.1-3 MQTT-3.9.3-2'}] invalid filters get ${v5 ? '0x8F' : '0x80'}; the valid ones in the same packet are granted`, T, async () => {
      const base = uid('inv');
      const c = await raw(b, v);
      const granted = await rawSubscribe(c, [
        { topic: `${base}/#/b`, qos: 1 },
        { topic: `${base}/ok`, qos: 1 },
        { topic: `${base}/a+`, qos: 1 },
        { topic: `${base}/#x`, qos: 1 },
        { topic: `${base}/ok2/#`, qos: 0 },
        { topic: `${base}/+x/y`, qos: 0 },
      ]);
      assert.deepEqual(granted, [BAD, 1, BAD, BAD, 0, BAD]);
      assert.equal(c.closed, false, 'an invalid filter is refused, not a reason to close');
      const s = await sessionSubscribedTo(b, `${base}/ok`);
      assert.ok(s, `a session subscribed to ${base}/ok`);
      assert.deepEqual(s.subscriptions.map((x) => x.key).sort(), [`${base}/ok`, `${base}/ok2/#`]);
      const p = await client(b, v);
      await p.publishAsync(`${base}/ok`, 'x', { qos: 0 });
      await p.publishAsync(`${base}/ok2/z`, 'y', { qos: 0 });
      assert.equal((await expectPacket(c, 'publish')).topic, `${base}/ok`);
      assert.equal((await expectPacket(c, 'publish')).topic, `${base}/ok2/z`);
    });

    test(`[${tag} §3.9.3 0x80] deny_subscribe: test/nosubscribe → 0x80, other filters granted, nothing routed`, T, async () => {
      const base = uid('deny');
      const c = await raw(b, v);
      const granted = await rawSubscribe(c, [{ topic: 'test/nosubscribe', qos: 1 }, { topic: `${base}/fine`, qos: 1 }]);
      assert.deepEqual(granted, [0x80, 1]);
      // MQTT.js sees the refusal too (it turns a 0x80 SUBACK code into an error).
      const js = await client(b, v);
      await assert.rejects(js.subscribeAsync('test/nosubscribe', { qos: 0 }), /Unspecified error/);
      // And mosquitto_sub gives up on it.
      const r = await mosquittoSub(b.port, ['-V', mosq, '-t', 'test/nosubscribe', '-C', '1'], 5000).done;
      const out = r.stdout + r.stderr;
      assert.notEqual(r.code, null, 'mosquitto_sub exited by itself');
      assert.match(out, /denied/i, `mosquitto_sub output: ${out}`);
      const p = await client(b, v);
      await p.publishAsync('test/nosubscribe', 'x', { qos: 1 });
      await p.publishAsync(`${base}/fine`, 'y', { qos: 0 });
      const g = await expectPacket(c, 'publish');
      assert.equal(g.topic, `${base}/fine`, 'the denied filter routes nothing');
    });

    test(`[${tag} §4.7.1] '+' and '#' matching: '+' matches one (possibly empty) level, 'a/#' also matches 'a'`, T, async () => {
      const P = uid('wild');
      const cases: { filter: string; yes: string[]; no: string[] }[] = [
        { filter: `${P}/a/+`, yes: [`${P}/a/b`, `${P}/a/`], no: [`${P}/a`, `${P}/a/b/c`, `${P}/b/c`] },
        { filter: `${P}/a/#`, yes: [`${P}/a`, `${P}/a/`, `${P}/a/b`, `${P}/a/b/c`], no: [`${P}/ab`, `${P}/b`, `${P}/A/b`] },
        { filter: `${P}/+/+`, yes: [`${P}//`, `${P}/x/y`, `${P}/a/`], no: [`${P}/x`, `${P}/x/y/z`] },
        { filter: `${P}/+/c/#`, yes: [`${P}/b/c`, `${P}/b/c/d`, `${P}//c`, `${P}/b/c/d/e`], no: [`${P}/b/d/c`, `${P}/c`] },
        { filter: `+/${P}-x`, yes: [`/${P}-x`, `q/${P}-x`], no: [`${P}-x`, `q/r/${P}-x`] },
        { filter: `${P}/A`, yes: [`${P}/A`], no: [`${P}/a`, `${P}/A/`, `${P}/A `] },
      ];
      const p = await client(b, v);
      for (const { filter, yes, no } of cases) {
        const sub = await client(b, v);
        const got = inbox(sub);
        const sentinel = uid('sentinel');
        await sub.subscribeAsync([filter, sentinel], { qos: 0 });
        const routed = await routedBefore(p, got, [...no, ...yes], sentinel);
        assert.deepEqual(routed.sort(), [...yes].sort(), `filter ${filter}`);
      }
    });

    test(`[${tag} MQTT-4.7.2-1] topics starting with '$' are not matched by '#' or '+/…'; '$SYS/#' matches them`, T, async () => {
      const leaf = uid('leaf');
      const sysTopic = `$SYS/${leaf}`;
      const other = `$other/${leaf}`;
      const p = await client(b, v);
      const subs = [
        { filter: '#', want: [`x/${leaf}`] },
        { filter: `+/${leaf}`, want: [`x/${leaf}`] },
        { filter: '+/+', want: [`x/${leaf}`] },
        { filter: '$SYS/#', want: [sysTopic] },
        { filter: `$SYS/${leaf}`, want: [sysTopic] },
        { filter: `$other/+`, want: [other] },
      ];
      for (const { filter, want } of subs) {
        const sub = await client(b, v);
        const got = inbox(sub);
        const sentinel = uid('sentinel');
        await sub.subscribeAsync([filter, sentinel], { qos: 0 });
        const routed = await routedBefore(p, got, [sysTopic, other, `x/${leaf}`], sentinel);
        assert.deepEqual(routed, want, `filter ${filter}`);
      }
    });

    test(`[${tag} ${v5 ? 'MQTT-3.3.4-2' : 'MQTT-3.3.5-1'}] overlapping subscriptions (a/+ QoS 0, a/# QoS 2): one delivery at the highest QoS`, T, async () => {
      const base = uid('overlap');
      const c = await raw(b, v);
      assert.deepEqual(await rawSubscribe(c, [{ topic: `${base}/+`, qos: 0 }, { topic: `${base}/#`, qos: 2 }]), [0, 2]);
      const p = await client(b, v);
      await p.publishAsync(`${base}/x`, 'two', { qos: 2 });
      const g = await expectPacket(c, 'publish');
      assert.equal(g.payload.toString(), 'two');
      assert.equal(g.qos, 2);
      c.send({ cmd: 'pubrec', messageId: g.messageId } as Packet);
      await expectPacket(c, 'pubrel');
      c.send({ cmd: 'pubcomp', messageId: g.messageId } as Packet);
      await p.publishAsync(`${base}/x`, 'one', { qos: 1 });
      const g1 = await expectPacket(c, 'publish');
      assert.equal(g1.payload.toString(), 'one');
      assert.equal(g1.qos, 1, 'still capped by the published QoS');
      c.send({ cmd: 'puback', messageId: g1.messageId } as Packet);
      await expectNothing(c, 300);
    });

    test(`[${tag} MQTT-3.10.4-1 MQTT-3.10.4-2 MQTT-3.10.4-4 MQTT-3.10.4-5${v5 ? ' MQTT-3.11.3-1 §3.11.3 0x11' : ''}] UNSUBSCRIBE: UNSUBACK with the same identifier${v5 ? ', codes 0x00 / 0x11' : ''}; no delivery afterwards`, T, async () => {
      const base = uid('unsub');
      const c = await raw(b, v);
      await rawSubscribe(c, [{ topic: `${base}/one`, qos: 1 }, { topic: `${base}/two`, qos: 0 }, { topic: `${base}/three`, qos: 0 }]);
      c.send({ cmd: 'unsubscribe', messageId: 777, unsubscriptions: [`${base}/one`, `${base}/none`, `${base}/+`, `${base}/two`] } as Packet);
      const ack = await expectPacket(c, 'unsuback');
      assert.equal(ack.messageId, 777);
      if (v5) assert.deepEqual(ack.granted, [0x00, 0x11, 0x11, 0x00], 'per filter, in order; `+` is compared literally');
      const p = await client(b, v);
      await p.publishAsync(`${base}/one`, 'gone', { qos: 1 });
      await p.publishAsync(`${base}/two`, 'gone', { qos: 0 });
      await p.publishAsync(`${base}/three`, 'kept', { qos: 0 });
      const g = await expectPacket(c, 'publish');
      assert.equal(g.topic, `${base}/three`, 'only the subscription that was not removed still delivers');
      await expectNothing(c, 200);
      // Unsubscribing when nothing matches still gets an UNSUBACK.
      c.send({ cmd: 'unsubscribe', messageId: 778, unsubscriptions: [`${base}/never`] } as Packet);
      const ack2 = await expectPacket(c, 'unsuback');
      assert.equal(ack2.messageId, 778);
      if (v5) assert.deepEqual(ack2.granted, [0x11]);
    });

    test(`[${tag} MQTT-3.10.4-2] MQTT.js: messages stop after unsubscribeAsync`, T, async () => {
      const topic = uid('unsub-js');
      const sentinel = uid('sentinel');
      const sub = await client(b, v);
      const got = inbox(sub);
      await sub.subscribeAsync([topic, sentinel], { qos: 1 });
      const p = await client(b, v);
      assert.deepEqual(await routedBefore(p, got, [topic], sentinel), [topic]);
      await sub.unsubscribeAsync(topic);
      assert.deepEqual(await routedBefore(p, got, [topic], sentinel), []);
    });
  }

  test('[v3.1.1 §3.8.3.1] 3.1.1 has no No Local: a subscriber gets its own messages', T, async () => {
    const topic = uid('own3');
    const c = await client(b, 4);
    const got = inbox(c);
    await c.subscribeAsync(topic, { qos: 1 });
    await c.publishAsync(topic, 'mine', { qos: 1 });
    await waitFor(() => got.length === 1, 'own message');
  });
});

// ---------------------------------------------------------------------------------
describe('5.0 subscription options and identifiers', () => {
  let b: TestBroker;
  before(async () => {
    b = await broker();
  });

  test('[v5 MQTT-3.8.3-3] No Local: the publisher does not get its own message with nl=1, does with nl=0', T, async () => {
    const base = uid('nl');
    const c = await client(b, 5);
    const got = inbox(c);
    const other = await client(b, 5);
    const otherGot = inbox(other);
    await c.subscribeAsync(`${base}/nl`, { qos: 1, nl: true });
    await c.subscribeAsync(`${base}/local`, { qos: 1, nl: false });
    await other.subscribeAsync(`${base}/+`, { qos: 1, nl: true });
    await c.publishAsync(`${base}/nl`, 'a', { qos: 1 });
    await c.publishAsync(`${base}/local`, 'b', { qos: 1 });
    await waitFor(() => otherGot.length === 2, 'other subscriber gets both (nl only concerns the publisher)');
    await waitFor(() => got.length >= 1, 'own message on the nl=0 subscription');
    // Messages from someone else still arrive on the nl=1 subscription.
    await other.publishAsync(`${base}/nl`, 'c', { qos: 1 });
    await waitFor(() => got.length >= 2, 'message from another client on the nl subscription');
    assert.deepEqual(got.map((g) => [g.topic, g.payload]), [[`${base}/local`, 'b'], [`${base}/nl`, 'c']]);
  });

  test('[v5 MQTT-3.8.3-3 §3.4.2.1 0x10] No Local (RawClient): the publisher as the only subscriber → PUBACK 0x10, nothing delivered', T, async () => {
    const topic = uid('nlraw');
    const c = await raw(b, 5);
    assert.deepEqual(await rawSubscribe(c, [{ topic, qos: 0, nl: true } as ISubscription]), [0]);
    c.send(publishPacket(topic, 'self', 1, 5));
    const ack = await expectPacket(c, 'puback');
    assert.equal(ack.reasonCode, 0x10, 'the only subscriber is the publisher itself, excluded by No Local');
    await expectNothing(c, 200);
  });

  test('[v5 MQTT-3.3.1-12 MQTT-3.3.1-13] Retain As Published: rap=1 keeps RETAIN on routed delivery, rap=0 clears it', T, async () => {
    const topic = uid('rap');
    const keep = await raw(b, 5);
    const clear = await raw(b, 5);
    await rawSubscribe(keep, [{ topic, qos: 0, rap: true } as ISubscription]);
    await rawSubscribe(clear, [{ topic, qos: 0, rap: false } as ISubscription]);
    const p = await client(b, 5);
    await p.publishAsync(topic, 'retained', { qos: 0, retain: true });
    await p.publishAsync(topic, 'plain', { qos: 0, retain: false });
    const k1 = await expectPacket(keep, 'publish');
    const k2 = await expectPacket(keep, 'publish');
    const c1 = await expectPacket(clear, 'publish');
    const c2 = await expectPacket(clear, 'publish');
    assert.deepEqual([k1.payload.toString(), k1.retain, k2.payload.toString(), k2.retain], ['retained', true, 'plain', false]);
    assert.deepEqual([c1.payload.toString(), c1.retain, c2.payload.toString(), c2.retain], ['retained', false, 'plain', false]);
    await p.publishAsync(topic, '', { qos: 0, retain: true }); // clear the retained message
  });

  test('[v5 MQTT-3.3.1-9 MQTT-3.3.1-10 MQTT-3.3.1-11] Retain Handling 0 / 1 / 2', T, async () => {
    const topic = uid('rh');
    const p = await client(b, 5);
    await p.publishAsync(topic, 'kept', { qos: 1, retain: true });
    const c = await raw(b, 5);
    // 0: sent at every SUBSCRIBE.
    await rawSubscribe(c, [{ topic, qos: 1, rh: 0 } as ISubscription]);
    let g = await expectPacket(c, 'publish');
    assert.deepEqual([g.payload.toString(), g.retain], ['kept', true]);
    c.send({ cmd: 'puback', messageId: g.messageId } as Packet);
    await rawSubscribe(c, [{ topic, qos: 1, rh: 0 } as ISubscription]);
    g = await expectPacket(c, 'publish');
    assert.equal(g.retain, true, 'rh 0 re-sends on a repeated SUBSCRIBE');
    c.send({ cmd: 'puback', messageId: g.messageId } as Packet);
    // 1: only when the subscription is new.
    const c1 = await raw(b, 5);
    await rawSubscribe(c1, [{ topic, qos: 1, rh: 1 } as ISubscription]);
    g = await expectPacket(c1, 'publish');
    assert.deepEqual([g.payload.toString(), g.retain], ['kept', true]);
    c1.send({ cmd: 'puback', messageId: g.messageId } as Packet);
    await rawSubscribe(c1, [{ topic, qos: 1, rh: 1 } as ISubscription]);
    await expectNothing(c1, 300);
    // Turning the existing subscription into rh 0 does re-send.
    await rawSubscribe(c1, [{ topic, qos: 1, rh: 0 } as ISubscription]);
    g = await expectPacket(c1, 'publish');
    assert.equal(g.retain, true);
    c1.send({ cmd: 'puback', messageId: g.messageId } as Packet);
    // 2: never.
    const c2 = await raw(b, 5);
    await rawSubscribe(c2, [{ topic, qos: 1, rh: 2 } as ISubscription]);
    await expectNothing(c2, 300);
    // ...but live messages still flow on an rh 2 subscription.
    await p.publishAsync(topic, 'live', { qos: 0 });
    g = await expectPacket(c2, 'publish');
    assert.deepEqual([g.payload.toString(), g.retain], ['live', false]);
    await p.publishAsync(topic, '', { qos: 0, retain: true });
  });

  test('[v5 MQTT-3.3.4-3 MQTT-3.3.4-4] overlapping subscriptions with identifiers 1 and 2 → one delivery carrying both', T, async () => {
    const base = uid('sid');
    const c = await raw(b, 5);
    await rawSubscribe(c, [{ topic: `${base}/+`, qos: 1 }], { subscriptionIdentifier: 1 });
    await rawSubscribe(c, [{ topic: `${base}/#`, qos: 0 }], { subscriptionIdentifier: 2 });
    await rawSubscribe(c, [{ topic: `${base}/x/+`, qos: 0 }]); // no identifier
    const p = await client(b, 5);
    await p.publishAsync(`${base}/x`, 'both', { qos: 1 });
    const g = await expectPacket(c, 'publish');
    assert.equal(g.payload.toString(), 'both');
    assert.equal(g.qos, 1);
    const ids = ([] as number[]).concat(g.properties?.subscriptionIdentifier ?? []).sort();
    assert.deepEqual(ids, [1, 2]);
    c.send({ cmd: 'puback', messageId: g.messageId } as Packet);
    await expectNothing(c, 200);
    // Only `#` (id 2) and the id-less `x/+` match here: just [2].
    await p.publishAsync(`${base}/x/y`, 'deep', { qos: 0 });
    const d = await expectPacket(c, 'publish');
    assert.equal(d.payload.toString(), 'deep');
    assert.deepEqual(([] as number[]).concat(d.properties?.subscriptionIdentifier ?? []), [2]);
    await expectNothing(c, 200);
  });

  test('[v5 MQTT-3.3.4-3] MQTT.js: a Subscription Identifier comes back on the delivery', T, async () => {
    const topic = uid('sidjs');
    const c = await client(b, 5);
    const got = inbox(c);
    await c.subscribeAsync(topic, { qos: 0, properties: { subscriptionIdentifier: 4711 } });
    await c.publishAsync(topic, 'x', { qos: 0 });
    await waitFor(() => got.length === 1, 'delivery');
    assert.deepEqual(([] as number[]).concat(got[0]!.packet.properties?.subscriptionIdentifier ?? []), [4711]);
  });
});

// ---------------------------------------------------------------------------------
describe('max_subscriptions quota (2)', () => {
  let b: TestBroker;
  before(async () => {
    b = await broker({ mqtt: { max_subscriptions: 2 } });
  });

  for (const { v, tag } of VERSIONS) {
    const v5 = v === 5;
    test(`[${tag} ${v5 ? '§3.9.3 0x97' : 'MQTT-3.9.3-2 0x80'}] the third subscription gets ${v5 ? '0x97 Quota exceeded' : '0x80'}; replacing an existing one still works`, T, async () => {
      const base = uid('quota');
      const c = await raw(b, v);
      const granted = await rawSubscribe(c, [
        { topic: `${base}/a`, qos: 0 }, { topic: `${base}/b`, qos: 1 }, { topic: `${base}/c`, qos: 1 },
      ]);
      assert.deepEqual(granted, [0, 1, v5 ? 0x97 : 0x80]);
      // Re-subscribing an existing filter replaces it and is not a new subscription [MQTT-3.8.4-3].
      assert.deepEqual(await rawSubscribe(c, [{ topic: `${base}/a`, qos: 2 }, { topic: `${base}/d`, qos: 0 }]), [2, v5 ? 0x97 : 0x80]);
      // After an UNSUBSCRIBE there is room again.
      c.send({ cmd: 'unsubscribe', messageId: 99, unsubscriptions: [`${base}/b`] } as Packet);
      await expectPacket(c, 'unsuback');
      assert.deepEqual(await rawSubscribe(c, [{ topic: `${base}/c`, qos: 1 }]), [1]);
      const p = await client(b, v);
      await p.publishAsync(`${base}/d`, 'refused', { qos: 0 });
      await p.publishAsync(`${base}/c`, 'ok', { qos: 0 });
      assert.equal((await expectPacket(c, 'publish')).topic, `${base}/c`);
    });
  }
});
