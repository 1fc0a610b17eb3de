// MQTT 5.0 properties end to end over loopback sockets: Topic Alias (both ways), Maximum
// Packet Size (both ways), Message Expiry, the PUBLISH properties that travel with a
// message, Payload Format Indicator checks, Request Response / Problem Information and the
// reason codes of server-sent DISCONNECTs.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { IClientOptions, MqttClient } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import type { IDisconnectPacket, IPublishPacket, Packet } from 'mqtt-packet';
import { sleep, waitFor, type TestBroker } from './helpers/broker.js';
import { BrokerEnv, inbox, uid } from './helpers/clients.js';
import { mosquittoPub } from './helpers/mosquitto.js';
import { frame, lenPrefixed, u16, varint } from './helpers/packets.js';
import { expectDisconnect, expectPacket, type RawClient } from './helpers/raw-client.js';

const T = { timeout: 15_000 };
const MAX_ALIAS = 10;
const MAX_PACKET = 2048;

// ---------------------------------------------------------------- raw bytes

/** A 5.0 PUBLISH built by hand (mqtt-packet would refuse some of the values tested here). */
function rawPublish5(topic: string, props: Buffer, payload: Buffer | string, qos: 0 | 1 = 0, packetId = 1): Buffer {
  return frame(0x30 | (qos << 1), lenPrefixed(topic), qos > 0 ? u16(packetId) : [], varint(props.length), props, Buffer.from(payload));
}

/** Topic Alias property (0x23, two-byte integer). */
const aliasProp = (n: number) => Buffer.from([0x23, ...u16(n)]);

/** Whole-packet size of a decoded packet (mqtt-packet's `length` is the remaining length). */
function wireSize(p: Packet): number {
  const rl = (p as { length?: number }).length ?? 0;
  return 1 + varint(rl).length + rl;
}

// ---------------------------------------------------------------- suite

describe('MQTT 5.0 properties', () => {
  const env = new BrokerEnv();
  let b: TestBroker;
  before(async () => {
    await env.start({ mqtt: { max_topic_alias: MAX_ALIAS, max_packet_size: MAX_PACKET } });
    b = env.b;
  });
  after(() => env.close());

  const mq = (opts: IClientOptions = {}): Promise<MqttClient> => env.mq(opts);
  const raw = (connect: Record<string, unknown> = {}) => env.raw(5, connect);

  async function rawSubscribe(c: RawClient, topic: string, qos: 0 | 1 | 2 = 0): Promise<void> {
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos }] } as Packet);
    const ack = await expectPacket(c, 'suback');
    assert.deepEqual(ack.granted, [qos]);
  }

  // ------------------------------------------------------------ Topic Alias, inbound

  test('[v5 MQTT-3.3.2-12] inbound Topic Alias: topic + alias sets the mapping, empty topic + alias is routed to it', T, async () => {
    const base = uid('ta-in');
    const sub = await mq();
    const got = inbox(sub);
    await sub.subscribeAsync(`${base}/#`, { qos: 1 });
    const { c, connack } = await raw();
    assert.equal(connack.properties?.topicAliasMaximum, MAX_ALIAS, 'CONNACK Topic Alias Maximum');

    const send = async (topic: string, alias: number, payload: string, pid: number) => {
      c.sendRaw(rawPublish5(topic, aliasProp(alias), payload, 1, pid));
      const ack = await expectPacket(c, 'puback');
      assert.equal(ack.messageId, pid);
      assert.equal(ack.reasonCode ?? 0, 0);
    };
    await send(`${base}/one`, 3, 'p1', 1);
    await send('', 3, 'p2', 2);
    await send(`${base}/two`, MAX_ALIAS, 'p3', 3); // the highest alias the broker allows
    await send('', MAX_ALIAS, 'p4', 4);
    await send(`${base}/three`, 3, 'p5', 5); // re-mapping an alias
    await send('', 3, 'p6', 6);

    await waitFor(() => got.length >= 6, '6 messages');
    assert.deepEqual(got.map((g) => [g.topic, g.payload.toString()]), [
      [`${base}/one`, 'p1'], [`${base}/one`, 'p2'],
      [`${base}/two`, 'p3'], [`${base}/two`, 'p4'],
      [`${base}/three`, 'p5'], [`${base}/three`, 'p6'],
    ]);
  });

  test('[v5 MQTT-3.3.2-8] Topic Alias 0 → DISCONNECT 0x94', T, async () => {
    const { c } = await raw();
    c.sendRaw(rawPublish5(uid('ta0'), aliasProp(0), 'x'));
    await expectDisconnect(c, 0x94);
  });

  test('[v5 MQTT-3.3.2-9/12] Topic Alias above the CONNACK Topic Alias Maximum → DISCONNECT 0x94', T, async () => {
    const { c } = await raw();
    c.sendRaw(rawPublish5(uid('ta-hi'), aliasProp(MAX_ALIAS + 1), 'x'));
    await expectDisconnect(c, 0x94);
  });

  test('[v5 3.3.2.3.4 / 4.13] unknown Topic Alias with an empty topic → DISCONNECT 0x82', T, async () => {
    const { c } = await raw();
    c.sendRaw(rawPublish5('', aliasProp(4), 'x'));
    await expectDisconnect(c, 0x82);
  });

  test('[v5 MQTT-3.3.2-7] inbound aliases are not carried from one connection to the next', T, async () => {
    const clientId = uid('ta-carry');
    const base = uid('ta-carry');
    const first = await raw({ clientId });
    first.c.sendRaw(rawPublish5(`${base}/t`, aliasProp(2), 'a', 1, 1));
    await expectPacket(first.c, 'puback');
    first.c.send({ cmd: 'disconnect', reasonCode: 0 } as Packet);
    await first.c.waitClose();
    const second = await raw({ clientId });
    second.c.sendRaw(rawPublish5('', aliasProp(2), 'b'));
    await expectDisconnect(second.c, 0x82);
  });

  // ------------------------------------------------------------ Topic Alias, outbound

  test('[v5 MQTT-3.3.2-11 / 3.1.2-26] outbound Topic Alias: topic+alias first, then empty topic + alias, never above the client maximum', T, async () => {
    const base = uid('ta-out');
    // A byte-level subscriber allowing 2 aliases, and MQTT.js allowing 5 (it resolves them).
    const { c } = await raw({ properties: { topicAliasMaximum: 2 } });
    await rawSubscribe(c, `${base}/#`);
    const js = await mq({ properties: { topicAliasMaximum: 5 } });
    const jsGot = inbox(js);
    await js.subscribeAsync(`${base}/#`, { qos: 0 });

    const pub = await mq();
    const seq = ['a', 'a', 'b', 'b', 'c', 'c', 'a', 'b'];
    for (const [i, t] of seq.entries()) await pub.publishAsync(`${base}/${t}`, `m${i}`, { qos: 1 });

    const pkts: IPublishPacket[] = [];
    for (let i = 0; i < seq.length; i++) pkts.push(await expectPacket(c, 'publish'));
    const wire = pkts.map((p) => [p.topic, p.properties?.topicAlias ?? null, p.payload.toString()]);
    assert.deepEqual(wire, [
      [`${base}/a`, 1, 'm0'],
      ['', 1, 'm1'],
      [`${base}/b`, 2, 'm2'],
      ['', 2, 'm3'],
      [`${base}/c`, null, 'm4'], // the client allows 2 aliases: no third one
      [`${base}/c`, null, 'm5'],
      ['', 1, 'm6'],
      ['', 2, 'm7'],
    ]);

    await waitFor(() => jsGot.length >= seq.length, 'MQTT.js subscriber messages');
    assert.deepEqual(jsGot.map((g) => [g.topic, g.payload.toString()]), seq.map((t, i) => [`${base}/${t}`, `m${i}`]));
    // MQTT.js was given aliases too (3 topics, within its 5), and resolved them.
    const aliases = new Set(jsGot.map((g) => g.packet.properties?.topicAlias).filter((a) => a !== undefined));
    assert.ok(aliases.size >= 1 && [...aliases].every((a) => a! >= 1 && a! <= 5), `aliases ${[...aliases].join(',')}`);
  });

  test('[v5 MQTT-3.1.2-27] no Topic Alias is sent to a client that set no Topic Alias Maximum', T, async () => {
    const base = uid('ta-none');
    const { c } = await raw();
    await rawSubscribe(c, `${base}/#`);
    const pub = await mq();
    for (let i = 0; i < 3; i++) await pub.publishAsync(`${base}/x`, `n${i}`, { qos: 1 });
    for (let i = 0; i < 3; i++) {
      const p = await expectPacket(c, 'publish');
      assert.equal(p.topic, `${base}/x`);
      assert.equal(p.properties?.topicAlias, undefined);
    }
  });

  // ------------------------------------------------------------ Maximum Packet Size

  test('[v5 MQTT-3.2.2-15 / 4.13] a packet over the broker Maximum Packet Size → DISCONNECT 0x95 and close; one at the limit passes', T, async () => {
    const topic = uid('mps-in');
    const { c, connack } = await raw();
    assert.equal(connack.properties?.maximumPacketSize, MAX_PACKET, 'CONNACK Maximum Packet Size');
    // Exactly MAX_PACKET bytes on the wire: accepted.
    const gen = (n: number) => mqttPacket.generate(
      { cmd: 'publish', topic, payload: Buffer.alloc(n, 0x61), qos: 1, messageId: 7, retain: false, dup: false },
      { protocolVersion: 5 },
    );
    let n = MAX_PACKET - gen(0).length;
    while (gen(n).length > MAX_PACKET) n--;
    while (gen(n).length < MAX_PACKET) n++;
    assert.equal(gen(n).length, MAX_PACKET);
    c.sendRaw(gen(n));
    const ack = await expectPacket(c, 'puback');
    assert.equal(ack.messageId, 7);
    // One byte more: refused.
    c.sendRaw(gen(n + 1));
    const d = await expectDisconnect(c, 0x95);
    assert.equal(typeof d.properties?.reasonString, 'string');
  });

  test('[v5 MQTT-3.1.2-24/25] a subscriber with Maximum Packet Size 100 never gets a larger PUBLISH (droppedTooLarge), smaller ones arrive', T, async () => {
    const topic = uid('mps-out');
    const counters = b.counters;
    const sub = await mq({ properties: { maximumPacketSize: 100 } });
    const got = inbox(sub);
    await sub.subscribeAsync(topic, { qos: 0 });
    const pub = await mq();
    const before = counters.droppedTooLarge;
    await pub.publishAsync(topic, 'small-1', { qos: 1 });
    await pub.publishAsync(topic, Buffer.alloc(200, 0x62), { qos: 1 });
    await pub.publishAsync(topic, 'small-2', { qos: 1 });
    await waitFor(() => got.length >= 2, 'two small messages');
    await sleep(100);
    assert.deepEqual(got.map((g) => g.payload.toString()), ['small-1', 'small-2']);
    assert.equal(counters.droppedTooLarge - before, 1);
  });

  test('[v5 MQTT-3.1.2-25] a dropped too-large QoS 1 message counts as sent: it does not hold a Receive Maximum slot', T, async () => {
    const topic = uid('mps-win');
    const counters = b.counters;
    const { c } = await raw({ properties: { maximumPacketSize: 100, receiveMaximum: 1 } });
    await rawSubscribe(c, topic, 1);
    const pub = await mq();
    const before = counters.droppedTooLarge;
    await pub.publishAsync(topic, Buffer.alloc(300, 0x63), { qos: 1 });
    await pub.publishAsync(topic, 'fits', { qos: 1 });
    const p = await expectPacket(c, 'publish');
    assert.equal(p.payload.toString(), 'fits');
    assert.equal(p.qos, 1);
    assert.ok(wireSize(p) <= 100, `PUBLISH of ${wireSize(p)} bytes`);
    c.send({ cmd: 'puback', messageId: p.messageId, reasonCode: 0 } as Packet);
    assert.equal(counters.droppedTooLarge - before, 1);
    await assert.rejects(c.next(150), /no packet/);
  });

  test('[v5 MQTT-3.14.2-3] a server DISCONNECT leaves out the Reason String when it would exceed the client Maximum Packet Size', T, async () => {
    const clientId = uid('mps-disc');
    const a = await raw({ clientId, properties: { maximumPacketSize: 20 } });
    await raw({ clientId }); // takes the session over
    const d = await expectDisconnect(a.c, 0x8e);
    assert.ok(wireSize(d) <= 20, `DISCONNECT of ${wireSize(d)} bytes`);
    assert.equal(d.properties?.reasonString, undefined);
  });

  // ------------------------------------------------------------ Message Expiry

  test('[v5 MQTT-3.3.2-5/6] Message Expiry Interval counts down while queued for an offline session; expired messages are dropped', T, async () => {
    const clientId = uid('exp');
    const topic = uid('exp');
    const counters = b.counters;
    const first = await raw({ clientId, properties: { sessionExpiryInterval: 60 } });
    await rawSubscribe(first.c, topic, 1);
    first.c.send({ cmd: 'disconnect', reasonCode: 0 } as Packet);
    await first.c.waitClose();
    await waitFor(async () => (await b.session(clientId))?.conn === null, 'session offline');

    const pub = await mq();
    const before = counters.droppedExpired;
    await pub.publishAsync(topic, 'short', { qos: 1, properties: { messageExpiryInterval: 1 } });
    await pub.publishAsync(topic, 'long', { qos: 1, properties: { messageExpiryInterval: 30 } });
    await pub.publishAsync(topic, 'forever', { qos: 1 });
    // Queued for the offline session (on a worker thread: maybe just after the PUBACKs).
    await waitFor(async () => ((await b.session(clientId))?.queue.length ?? 0) >= 3, 'three queued messages');
    assert.equal((await b.session(clientId))?.queue.length, 3);
    await sleep(1300);

    const again = await raw({ clientId, clean: false, properties: { sessionExpiryInterval: 60 } });
    assert.equal(again.connack.sessionPresent, true);
    const p1 = await expectPacket(again.c, 'publish');
    const p2 = await expectPacket(again.c, 'publish');
    assert.deepEqual([p1.payload.toString(), p2.payload.toString()], ['long', 'forever']);
    const left = p1.properties?.messageExpiryInterval;
    assert.ok(left !== undefined && left < 30 && left >= 27, `remaining expiry ${left}`);
    assert.equal(p2.properties?.messageExpiryInterval, undefined);
    for (const p of [p1, p2]) again.c.send({ cmd: 'puback', messageId: p.messageId, reasonCode: 0 } as Packet);
    assert.equal(counters.droppedExpired - before, 1);
    await assert.rejects(again.c.next(150), /no packet/);
    again.c.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 0 } } as Packet);
    await again.c.waitClose();
  });

  test('[v5 MQTT-3.3.2-5] a message that expires while queued behind the Receive Maximum window is dropped, not sent', T, async () => {
    const topic = uid('exp-win');
    const counters = b.counters;
    const { c } = await raw({ properties: { receiveMaximum: 1 } });
    await rawSubscribe(c, topic, 1);
    const pub = await mq();
    const before = counters.droppedExpired;
    await pub.publishAsync(topic, 'holds-the-window', { qos: 1 });
    await pub.publishAsync(topic, 'expires', { qos: 1, properties: { messageExpiryInterval: 1 } });
    await pub.publishAsync(topic, 'after', { qos: 1 });
    const p1 = await expectPacket(c, 'publish');
    assert.equal(p1.payload.toString(), 'holds-the-window');
    await sleep(1300);
    c.send({ cmd: 'puback', messageId: p1.messageId, reasonCode: 0 } as Packet);
    const p2 = await expectPacket(c, 'publish');
    assert.equal(p2.payload.toString(), 'after');
    assert.equal(counters.droppedExpired - before, 1);
  });

  test('[v5 MQTT-3.3.2-5/6] retained messages: an expired one is not sent to a new subscriber, a live one carries the remaining interval', T, async () => {
    const base = uid('exp-ret');
    const pub = await mq();
    await pub.publishAsync(`${base}/short`, 's', { qos: 1, retain: true, properties: { messageExpiryInterval: 1 } });
    await pub.publishAsync(`${base}/long`, 'l', { qos: 1, retain: true, properties: { messageExpiryInterval: 60 } });
    await sleep(1300);
    const { c } = await raw();
    await rawSubscribe(c, `${base}/#`);
    const p = await expectPacket(c, 'publish');
    assert.equal(p.topic, `${base}/long`);
    assert.equal(p.retain, true);
    const left = p.properties?.messageExpiryInterval;
    assert.ok(left !== undefined && left < 60 && left >= 57, `remaining expiry ${left}`);
    await assert.rejects(c.next(150), /no packet/);
    await pub.publishAsync(`${base}/long`, '', { qos: 1, retain: true });
  });

  test('[v5 MQTT-3.3.2-6] a message delivered at once carries the expiry it was published with', T, async () => {
    const topic = uid('exp-live');
    const { c } = await raw();
    await rawSubscribe(c, topic);
    const pub = await mq();
    await pub.publishAsync(topic, 'x', { qos: 1, properties: { messageExpiryInterval: 120 } });
    const p = await expectPacket(c, 'publish');
    assert.equal(p.properties?.messageExpiryInterval, 120);
  });

  // ------------------------------------------------------------ properties carried through

  test('[v5 MQTT-3.3.2-4/15/16/17/20] Payload Format Indicator, Content Type, Response Topic, Correlation Data, User Properties reach the subscriber unchanged', T, async () => {
    const topic = uid('props');
    const js = await mq();
    const jsGot = inbox(js);
    await js.subscribeAsync(topic, { qos: 1 });
    const { c } = await raw();
    await rawSubscribe(c, topic, 1);

    const props = {
      payloadFormatIndicator: true,
      contentType: 'application/json; charset=utf-8',
      responseTopic: 'reply/to/me',
      correlationData: Buffer.from([0x00, 0x01, 0xfe, 0xff]),
      userProperties: { region: 'eu-west', tag: ['one', 'two'], empty: '' },
    };
    const pub = await mq();
    await pub.publishAsync(topic, '{"temp":21.5,"unit":"°C"}', { qos: 1, properties: props });

    const p = await expectPacket(c, 'publish');
    c.send({ cmd: 'puback', messageId: p.messageId, reasonCode: 0 } as Packet);
    await waitFor(() => jsGot.length >= 1, 'MQTT.js message');
    for (const got of [p, jsGot[0]!.packet]) {
      const q = got.properties ?? {};
      assert.equal(q.payloadFormatIndicator, true);
      assert.equal(q.contentType, props.contentType);
      assert.equal(q.responseTopic, props.responseTopic);
      assert.deepEqual(Buffer.from(q.correlationData!), props.correlationData);
      assert.deepEqual({ ...q.userProperties }, props.userProperties);
      assert.equal(got.payload.toString(), '{"temp":21.5,"unit":"°C"}');
    }
  });

  test('[v5 MQTT-3.3.2-15/16/17/20] properties set by mosquitto_pub reach an MQTT.js subscriber unchanged', T, async () => {
    const topic = uid('props-mosq');
    const js = await mq();
    const got = inbox(js);
    await js.subscribeAsync(topic, { qos: 1 });
    const args = [
      '-V', 'mqttv5', '-q', '1', '-t', topic, '-m', 'hello',
      '-D', 'publish', 'content-type', 'text/plain',
      '-D', 'publish', 'response-topic', 'rsp/topic',
      '-D', 'publish', 'correlation-data', 'corr-42',
      '-D', 'publish', 'payload-format-indicator', '1',
      '-D', 'publish', 'user-property', 'k1', 'v1',
      '-D', 'publish', 'user-property', 'k2', 'v2',
    ];
    const { code } = await mosquittoPub(b.port, args, 5000);
    assert.equal(code, 0, 'mosquitto_pub exit code');
    await waitFor(() => got.length >= 1, 'message from mosquitto_pub');
    const q = got[0]!.packet.properties ?? {};
    assert.equal(got[0]!.payload.toString(), 'hello');
    assert.equal(q.contentType, 'text/plain');
    assert.equal(q.responseTopic, 'rsp/topic');
    assert.equal(Buffer.from(q.correlationData!).toString(), 'corr-42');
    assert.equal(q.payloadFormatIndicator, true);
    assert.deepEqual({ ...q.userProperties }, { k1: 'v1', k2: 'v2' });
  });

  test('[v5 MQTT-3.3.2-18] User Properties keep their order when forwarded, repeated names included', T, async () => {
    const topic = uid('uprop-order');
    const { c } = await raw();
    await rawSubscribe(c, topic);
    const bytes: Buffer[] = [];
    c.socket.on('data', (d: Buffer) => bytes.push(d));
    const up = (k: string, v: string) => Buffer.from([0x26, ...lenPrefixed(k), ...lenPrefixed(v)]);
    const props = Buffer.concat([up('a', '1'), up('b', 'x'), up('a', '2')]);
    const pub = await raw();
    pub.c.sendRaw(rawPublish5(topic, props, 'ord', 1, 9));
    await expectPacket(pub.c, 'puback');
    await expectPacket(c, 'publish');
    const all = Buffer.concat(bytes);
    const at = (k: string, v: string) => all.indexOf(up(k, v));
    assert.ok(at('a', '1') >= 0 && at('a', '1') < at('b', 'x') && at('b', 'x') < at('a', '2'),
      `user property order on the wire: ${all.toString('hex')}`);
  });

  test('[v5 3.3.2.3.2] Payload Format Indicator 1 with a payload that is not UTF-8 → PUBACK 0x99, not routed', T, async () => {
    const topic = uid('pfi');
    const sub = await mq();
    const got = inbox(sub);
    await sub.subscribeAsync(topic, { qos: 1 });
    const { c } = await raw();
    c.send({
      cmd: 'publish', topic, payload: Buffer.from([0x68, 0xc3, 0x28, 0xff]), qos: 1, messageId: 11,
      retain: false, dup: false, properties: { payloadFormatIndicator: true },
    } as Packet);
    const bad = await expectPacket(c, 'puback');
    assert.equal(bad.messageId, 11);
    assert.equal(bad.reasonCode, 0x99);
    // The same bytes without the indicator are fine (binary payload).
    c.send({
      cmd: 'publish', topic, payload: Buffer.from([0x68, 0xc3, 0x28, 0xff]), qos: 1, messageId: 12,
      retain: false, dup: false,
    } as Packet);
    const ok = await expectPacket(c, 'puback');
    assert.equal(ok.messageId, 12);
    assert.equal(ok.reasonCode ?? 0, 0);
    await waitFor(() => got.length >= 1, 'binary message');
    await sleep(50);
    assert.equal(got.length, 1);
    assert.equal(got[0]!.packet.properties?.payloadFormatIndicator, undefined);
  });

  // ------------------------------------------------------------ CONNECT / CONNACK information

  test('[v5 MQTT-3.1.2-28] Request Response Information 1 → CONNACK Response Information; 0 or absent → none', T, async () => {
    const yes = await raw({ properties: { requestResponseInformation: true } });
    assert.equal(yes.connack.reasonCode, 0);
    const info = yes.connack.properties?.responseInformation;
    assert.equal(typeof info, 'string');
    assert.ok(info!.length > 0);
    const no = await raw({ properties: { requestResponseInformation: false } });
    assert.equal(no.connack.properties?.responseInformation, undefined);
    const absent = await raw();
    assert.equal(absent.connack.properties?.responseInformation, undefined);
  });

  test('[v5 MQTT-3.1.2-29 / 3.14.2.2.3] a server DISCONNECT carries a Reason String, left out with Request Problem Information 0', T, async () => {
    const withInfo = await raw();
    withInfo.c.sendRaw([0xf0, 0x00]); // AUTH: no method was agreed
    const d1 = await expectDisconnect(withInfo.c, 0x82);
    assert.equal(typeof d1.properties?.reasonString, 'string');
    assert.ok(d1.properties!.reasonString!.length > 0);

    const without = await raw({ properties: { requestProblemInformation: false } });
    without.c.sendRaw([0xf0, 0x00]);
    const d2 = await expectDisconnect(without.c, 0x82);
    assert.equal(d2.properties?.reasonString, undefined);
  });

  // ------------------------------------------------------------ server DISCONNECT reason codes

  test('[v5 MQTT-3.1.4-3] session takeover: the old connection gets DISCONNECT 0x8E and is closed', T, async () => {
    const clientId = uid('takeover');
    const old = await raw({ clientId });
    const js = await mq({ clientId, clean: true });
    const d = await expectDisconnect(old.c, 0x8e);
    assert.equal(typeof d.properties?.reasonString, 'string');
    assert.equal(js.connected, true);
    assert.equal((await b.session(clientId))?.conn?.clientId, clientId);
  });

  test('[v5 MQTT-3.1.2-22] keep alive expired (1.5 × Keep Alive) → DISCONNECT 0x8D', T, async () => {
    const { c } = await raw({ keepalive: 1 });
    const started = Date.now();
    const d = await c.next(4000);
    assert.ok(d && d.cmd === 'disconnect', `got ${JSON.stringify(d)}`);
    assert.equal((d as IDisconnectPacket).reasonCode, 0x8d);
    assert.ok(Date.now() - started >= 1400, 'not before 1.5 × keep alive');
    await c.waitClose();
  });

  test('[v5 MQTT-3.1.0-2] a second CONNECT → DISCONNECT 0x82', T, async () => {
    const { c } = await raw();
    c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: uid('again'), keepalive: 60 } as Packet);
    await expectDisconnect(c, 0x82);
  });

  test('[v5 MQTT-4.12.0-7] AUTH without an Authentication Method agreed at CONNECT → DISCONNECT 0x82', T, async () => {
    const { c } = await raw();
    c.send({ cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'SCRAM-SHA-1' } } as Packet);
    await expectDisconnect(c, 0x82);
  });

  test('[v5 4.13] an MQTT.js client sees the server DISCONNECT reason code', T, async () => {
    const clientId = uid('js-disc');
    const js = await mq({ clientId });
    const seen = new Promise<IDisconnectPacket>((resolve) => js.once('disconnect', (p) => resolve(p)));
    const { c } = await raw({ clientId });
    const d = await Promise.race([seen, sleep(3000).then(() => null)]);
    assert.ok(d, 'MQTT.js got no DISCONNECT');
    assert.equal(d.reasonCode, 0x8e);
    c.send({ cmd: 'disconnect', reasonCode: 0 } as Packet);
  });
});
