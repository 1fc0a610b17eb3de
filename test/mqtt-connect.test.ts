// CONNECT / CONNACK and keep alive over real loopback sockets: MQTT 3.1, 3.1.1 and 5.0,
// with MQTT.js, the mosquitto clients, and the byte-level RawClient where exact packets matter.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import mqttPacket from 'mqtt-packet';
import type { IConnackPacket, IDisconnectPacket, IPublishPacket, ISubackPacket, Packet } from 'mqtt-packet';
import { upsertUser } from '../src/auth/password-file.js';
import { sleep, startBroker, waitFor, type TestBroker } from './helpers/broker.js';
import { trackClients, uid } from './helpers/clients.js';
import { mosquittoPub } from './helpers/mosquitto.js';
import { frame, lenPrefixed } from './helpers/packets.js';
import { RawClient } from './helpers/raw-client.js';
import { tempDir } from './helpers/tmp.js';

const T = { timeout: 15_000 };

// ---------------------------------------------------------------- byte builders

/** A CONNECT frame: protocol name, level, connect flags, keep alive 60, [5.0 empty properties], payload. */
function connectFrame(name: string, level: number, flags: number, payload: number[], v5Props = level === 5): Buffer {
  return frame(0x10, [...lenPrefixed(name), level, flags, 0, 60, ...(v5Props ? [0] : []), ...payload]);
}

/** Writes bytes on a fresh socket and returns everything the broker sent until it closed the socket. */
function exchange(port: number, bytes: Buffer, timeoutMs = 3000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    const s = net.connect({ port, host: '127.0.0.1' }, () => s.write(bytes));
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`socket still open after ${timeoutMs} ms; got ${Buffer.concat(got).toString('hex')}`));
    }, timeoutMs);
    s.on('data', (d) => got.push(d));
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(t);
      resolve(Buffer.concat(got));
    });
  });
}

/** Decodes one 5.0 packet from bytes. */
function parse5(bytes: Buffer): Packet | null {
  const parser = mqttPacket.parser({ protocolVersion: 5 });
  let out: Packet | null = null;
  parser.on('packet', (p: Packet) => (out ??= p));
  parser.on('error', () => undefined);
  parser.parse(bytes);
  return out;
}

const { track, connack: mqConnect, rawConnect } = trackClients();

const rawConnected = (b: TestBroker, version: 3 | 4 | 5, fields: Record<string, unknown> = {}) => rawConnect(b.port, version, fields);

// =====================================================================================
describe('CONNECT on a default broker (connect_timeout_ms 300)', () => {
  let b: TestBroker;
  before(async () => {
    b = await startBroker({ mqtt: { connect_timeout_ms: 300 } });
  });
  after(() => b.stop());

  // ---------------------------------------------------------------- protocol name / level

  test('[v3.1 MQIsdp/3] MQTT.js protocolVersion 3 connects, subscribes and receives', T, async () => {
    const id = uid('v31');
    const topic = uid('t/v31');
    const { client, connack } = await mqConnect(b.url, { protocolVersion: 3, protocolId: 'MQIsdp', clientId: id });
    track(client);
    assert.equal(connack.returnCode, 0);
    assert.equal((await b.session(id))?.conn?.protocol, 3);
    await client.subscribeAsync(topic, { qos: 1 });
    const got = new Promise<Buffer>((r) => client.once('message', (_t, p) => r(p)));
    await client.publishAsync(topic, 'hello 3.1', { qos: 1 });
    assert.equal((await got).toString(), 'hello 3.1');
    await client.endAsync();
  });

  test('[v3.1 MQIsdp/3] mosquitto_pub -V mqttv31 publishes to a 3.1.1 subscriber', T, async () => {
    const topic = uid('t/mosq31');
    const { c } = await rawConnected(b, 4);
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 0 }] } as Packet);
    assert.equal((await c.next())?.cmd, 'suback');
    const before = b.counters.connectionsAccepted;
    const r = await mosquittoPub(b.port, ['-V', 'mqttv31', '-t', topic, '-m', 'from-31', '-q', '1']);
    assert.equal(r.code, 0, r.stderr);
    const p = (await c.next()) as IPublishPacket;
    assert.equal(p.cmd, 'publish');
    assert.equal(p.topic, topic);
    assert.equal(p.payload.toString(), 'from-31');
    assert.ok(b.counters.connectionsAccepted > before);
  });

  test('[v3.1.1 MQTT-3.1.2-1] [v3.1.1 MQTT-3.1.2-2] MQTT/4 is accepted (MQTT.js and mosquitto_pub)', T, async () => {
    const id = uid('v311');
    const { client, connack } = await mqConnect(b.url, { protocolVersion: 4, clientId: id });
    track(client);
    assert.equal(connack.returnCode, 0);
    assert.equal(connack.sessionPresent, false);
    assert.equal((await b.session(id))?.conn?.protocol, 4);
    await client.endAsync();
    const r = await mosquittoPub(b.port, ['-V', 'mqttv311', '-t', uid('t/m311'), '-m', 'x']);
    assert.equal(r.code, 0, r.stderr);
  });

  test('[v5 MQTT-3.1.2-1] [v5 MQTT-3.1.2-2] MQTT/5 is accepted (MQTT.js and mosquitto_pub)', T, async () => {
    const id = uid('v5');
    const { client, connack } = await mqConnect(b.url, { protocolVersion: 5, clientId: id });
    track(client);
    assert.equal(connack.reasonCode, 0);
    assert.equal((await b.session(id))?.conn?.protocol, 5);
    await client.endAsync();
    const r = await mosquittoPub(b.port, ['-V', 'mqttv5', '-t', uid('t/m5'), '-m', 'x']);
    assert.equal(r.code, 0, r.stderr);
  });

  test('[v5 MQTT-3.1.2-2] unsupported level 6: CONNACK 0x84 in 5.0 format, then close', T, async () => {
    const refused = b.counters.connectionsRefused;
    const got = await exchange(b.port, connectFrame('MQTT', 6, 0x02, lenPrefixed(uid('l6'))));
    // A 5.0 CONNACK: flags 0, reason 0x84, a property block (remaining length > 2).
    assert.deepEqual([got[0], got[2], got[3]], [0x20, 0x00, 0x84], got.toString('hex'));
    assert.ok((got[1] ?? 0) >= 3, got.toString('hex'));
    const ack = parse5(got);
    assert.equal(ack?.cmd, 'connack');
    assert.equal((ack as IConnackPacket).reasonCode, 0x84);
    assert.equal(b.counters.connectionsRefused, refused + 1);
  });

  test('[v3.1.1 MQTT-3.1.2-2] unsupported level (MQTT/3, MQIsdp/4): CONNACK return code 1, then close', T, async () => {
    for (const [name, level] of [['MQTT', 3], ['MQTT', 2], ['MQIsdp', 4]] as const) {
      const got = await exchange(b.port, connectFrame(name, level, 0x02, lenPrefixed(uid('l3'))));
      assert.deepEqual([...got], [0x20, 0x02, 0x00, 0x01], `${name}/${level}`);
    }
  });

  test('[v3.1.1 MQTT-3.1.2-1] [v5 MQTT-3.1.2-1] unknown protocol name: refused and closed', T, async () => {
    const id = uid('pn');
    const got = await exchange(b.port, connectFrame('MQTX', 4, 0x02, lenPrefixed(id)));
    // Either nothing or a refusing CONNACK (return code 1 here); never an accepting one.
    assert.ok(got.length === 0 || (got[0] === 0x20 && got[3] !== 0x00), got.toString('hex'));
    assert.equal(await b.session(id), null);
  });

  // ---------------------------------------------------------------- reserved flag

  test('[v3.1.1 MQTT-3.1.2-3] [v5 MQTT-3.1.2-3] reserved connect flag set: closed without CONNACK 0', T, async () => {
    for (const level of [4, 5]) {
      const malformed = b.counters.malformedPackets;
      const got = await exchange(b.port, connectFrame('MQTT', level, 0x03, lenPrefixed(uid('rsv'))));
      // No accepting CONNACK; the connection is closed.
      assert.equal(got.length === 0 || got[3] !== 0x00, true, `level ${level}: ${got.toString('hex')}`);
      assert.equal(b.counters.malformedPackets, malformed + 1, `level ${level}`);
    }
    // The same CONNECT with the flag clear is accepted (the test bytes are right).
    const ok = await RawClient.open(b.port, 4);
    track(ok);
    ok.sendRaw(connectFrame('MQTT', 4, 0x02, lenPrefixed(uid('rsv-ok'))));
    const ack = (await ok.next()) as IConnackPacket;
    assert.equal(ack.cmd, 'connack');
    assert.equal(ack.returnCode, 0);
    ok.destroy();
  });

  // ---------------------------------------------------------------- client identifier

  test('[v3.1.1 MQTT-3.1.3-8] empty client id with clean session 0: return code 2, then close', T, async () => {
    const got = await exchange(b.port, connectFrame('MQTT', 4, 0x00, lenPrefixed('')));
    assert.deepEqual([...got], [0x20, 0x02, 0x00, 0x02]);
  });

  test('[v3.1 §3.1] empty client id on MQIsdp/3: return code 2 (identifier rejected)', T, async () => {
    const got = await exchange(b.port, connectFrame('MQIsdp', 3, 0x02, lenPrefixed('')));
    assert.deepEqual([...got], [0x20, 0x02, 0x00, 0x02]);
  });

  test('[v3.1.1 MQTT-3.1.3-6] empty client id with clean session 1: accepted with a unique assigned id', T, async () => {
    const before = new Set(await b.sessionIds());
    const a = await rawConnected(b, 4, { clientId: '', clean: true });
    const c = await rawConnected(b, 4, { clientId: '', clean: true });
    assert.equal((a.connack as IConnackPacket).returnCode, 0);
    assert.equal((c.connack as IConnackPacket).returnCode, 0);
    assert.equal((a.connack as IConnackPacket).sessionPresent, false);
    const added = (await b.sessionIds()).filter((k) => !before.has(k));
    assert.equal(added.length, 2, 'two distinct sessions');
    assert.ok(added.every((k) => k.length > 0));
    // It works like any client: subscribe and receive.
    const topic = uid('t/anon');
    a.c.send({ cmd: 'subscribe', messageId: 3, subscriptions: [{ topic, qos: 0 }] } as Packet);
    assert.equal((await a.c.next())?.cmd, 'suback');
    c.c.send({ cmd: 'publish', topic, payload: Buffer.from('hi'), qos: 0, retain: false, dup: false } as Packet);
    const p = (await a.c.next()) as IPublishPacket;
    assert.equal(p.payload.toString(), 'hi');
    // MQTT.js with an empty id works too.
    const m = await mqConnect(b.url, { protocolVersion: 4, clientId: '', clean: true });
    track(m.client);
    assert.equal(m.connack.returnCode, 0);
    await m.client.endAsync();
  });

  test('[v5 MQTT-3.1.3-6] [v5 MQTT-3.2.2-16] empty client id: CONNACK carries the Assigned Client Identifier', T, async () => {
    const { c, connack } = await rawConnected(b, 5, { clientId: '' });
    const ack = connack as IConnackPacket;
    assert.equal(ack.reasonCode, 0);
    const assigned = ack.properties?.assignedClientIdentifier;
    assert.equal(typeof assigned, 'string');
    assert.ok((assigned as string).length > 0);
    // The session really is under that id.
    assert.equal((await b.session(assigned as string))?.conn?.protocol, 5);
    c.destroy();
    // A client that sends its own id gets no assigned one.
    const own = await rawConnected(b, 5, { clientId: uid('own') });
    assert.equal((own.connack as IConnackPacket).properties?.assignedClientIdentifier, undefined);
    // MQTT.js adopts the assigned id.
    const m = await mqConnect(b.url, { protocolVersion: 5, clientId: '' });
    track(m.client);
    const mAssigned = m.connack.properties?.assignedClientIdentifier;
    assert.ok(mAssigned && (await b.session(mAssigned)) !== null);
    assert.notEqual(mAssigned, assigned);
    await m.client.endAsync();
  });

  // ---------------------------------------------------------------- username / password flags

  test('[v3.1.1 MQTT-3.1.2-22] password flag without user name flag: closed without CONNACK', T, async () => {
    // flags: password (0x40) + clean (0x02); payload: client id, password.
    const got = await exchange(b.port, connectFrame('MQTT', 4, 0x42, [...lenPrefixed(uid('pw')), ...lenPrefixed('secret')]));
    assert.equal(got.length, 0, got.toString('hex'));
  });

  test('[v5 §3.1.2.9] password without user name is allowed in 5.0', T, async () => {
    const id = uid('pw5');
    const c = track(await RawClient.open(b.port, 5));
    c.sendRaw(connectFrame('MQTT', 5, 0x42, [...lenPrefixed(id), ...lenPrefixed('secret')]));
    const ack = (await c.next()) as IConnackPacket;
    assert.equal(ack.cmd, 'connack');
    assert.equal(ack.reasonCode, 0);
    assert.ok((await b.session(id)) !== null);
    c.destroy();
  });

  test('[v3.1.1 MQTT-3.1.2-19] user name flag without the field: closed', T, async () => {
    // User name flag set but the payload ends after the client id.
    const got = await exchange(b.port, connectFrame('MQTT', 4, 0x82, lenPrefixed(uid('un'))));
    assert.equal(got.length, 0, got.toString('hex'));
    // With the field present the broker takes the user name (anonymous broker: accepted).
    const id = uid('un-ok');
    const c = track(await RawClient.open(b.port, 4));
    c.sendRaw(connectFrame('MQTT', 4, 0x82, [...lenPrefixed(id), ...lenPrefixed('alice')]));
    const ack = (await c.next()) as IConnackPacket;
    assert.equal(ack.returnCode, 0);
    assert.equal((await b.session(id))?.conn?.username, 'alice');
    c.destroy();
  });

  // ---------------------------------------------------------------- first packet / timeout / second CONNECT

  test('[v3.1.1 MQTT-3.1.0-1] [v5 MQTT-3.1.0-1] first packet not CONNECT: closed, nothing sent', T, async () => {
    const pingreq = Buffer.from([0xc0, 0x00]);
    const publish = frame(0x30, [...lenPrefixed('a/b'), 0x68, 0x69]);
    const subscribe = frame(0x82, [0x00, 0x01, ...lenPrefixed('a/#'), 0x00]);
    for (const bytes of [pingreq, publish, subscribe]) {
      const got = await exchange(b.port, bytes);
      assert.equal(got.length, 0, `${bytes.toString('hex')} answered with ${got.toString('hex')}`);
    }
  });

  test('[v3.1.1 §3.1] [v5 §3.1] no CONNECT within connect_timeout_ms (300 ms): closed', T, async () => {
    const c = track(await RawClient.open(b.port, 4));
    const t0 = Date.now();
    await c.waitClose(3000);
    const dt = Date.now() - t0;
    assert.ok(dt >= 250, `closed after ${dt} ms, before the timeout`);
    // A partial CONNECT does not keep it open either.
    const p = track(await RawClient.open(b.port, 4));
    p.sendRaw(connectFrame('MQTT', 4, 0x02, lenPrefixed(uid('partial'))).subarray(0, 6));
    await p.waitClose(3000);
  });

  test('[v3.1.1 MQTT-3.1.0-2] second CONNECT: closed', T, async () => {
    const id = uid('twice4');
    const { c, connack } = await rawConnected(b, 4, { clientId: id });
    assert.equal((connack as IConnackPacket).returnCode, 0);
    const errs = b.counters.protocolErrors;
    c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: id, keepalive: 60 } as Packet);
    const rest = await c.drainUntilClose(3000);
    assert.deepEqual(rest.map((p) => p.cmd), []);
    assert.equal(b.counters.protocolErrors, errs + 1);
  });

  test('[v5 MQTT-3.1.0-2] second CONNECT: DISCONNECT 0x82, then closed', T, async () => {
    const id = uid('twice5');
    const { c } = await rawConnected(b, 5, { clientId: id });
    c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: id, keepalive: 60 } as Packet);
    const rest = await c.drainUntilClose(3000);
    assert.equal(rest.length, 1);
    assert.equal(rest[0]?.cmd, 'disconnect');
    assert.equal((rest[0] as IDisconnectPacket).reasonCode, 0x82);
  });

  // ---------------------------------------------------------------- CONNACK properties (defaults)

  test('[v5 §3.2.2.3] default CONNACK properties: receive maximum, packet size, alias maximum; no restrictions', T, async () => {
    const { c, connack } = await rawConnected(b, 5, { clientId: uid('props') });
    const pr = (connack as IConnackPacket).properties ?? {};
    assert.equal(pr.receiveMaximum, 32);
    assert.equal(pr.maximumPacketSize, 1048576);
    assert.equal(pr.topicAliasMaximum, 65535);
    // Absent means "supported" / QoS 2 [MQTT-3.2.2-9 v5 only requires it when below 2].
    assert.equal(pr.maximumQoS, undefined);
    assert.equal(pr.retainAvailable, undefined);
    assert.equal(pr.wildcardSubscriptionAvailable, undefined);
    assert.equal(pr.sharedSubscriptionAvailable, undefined);
    assert.equal(pr.serverKeepAlive, undefined);
    assert.equal(pr.responseInformation, undefined, 'only on request');
    c.destroy();
  });

  test('[v5 §3.1.2.11.6] Request Response Information 1: CONNACK has Response Information', T, async () => {
    const { c, connack } = await rawConnected(b, 5, { clientId: uid('rri'), properties: { requestResponseInformation: true } });
    const ri = (connack as IConnackPacket).properties?.responseInformation;
    assert.equal(typeof ri, 'string');
    assert.ok((ri as string).length > 0);
    c.destroy();
    // MQTT.js sees it too.
    const m = await mqConnect(b.url, { protocolVersion: 5, clientId: uid('rri-js'), properties: { requestResponseInformation: true } });
    track(m.client);
    assert.ok(m.connack.properties?.responseInformation);
    await m.client.endAsync();
  });

  // ---------------------------------------------------------------- AUTH

  test('[v5 MQTT-4.12.0-1] Authentication Method in CONNECT: CONNACK 0x8C, then close', T, async () => {
    const c = track(await RawClient.open(b.port, 5));
    const id = uid('am');
    c.send({
      cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: id, keepalive: 60,
      properties: { authenticationMethod: 'SCRAM-SHA-1' },
    } as Packet);
    const got = await c.drainUntilClose(3000);
    assert.equal(got.length, 1);
    assert.equal(got[0]?.cmd, 'connack');
    assert.equal((got[0] as IConnackPacket).reasonCode, 0x8c);
    assert.equal(await b.session(id), null);
  });

  test('[v5 MQTT-4.12.0-7] AUTH without an agreed method: DISCONNECT 0x82, then close', T, async () => {
    const { c } = await rawConnected(b, 5, { clientId: uid('auth') });
    c.send({ cmd: 'auth', reasonCode: 0x19, properties: { authenticationMethod: 'SCRAM-SHA-1' } } as Packet);
    const got = await c.drainUntilClose(3000);
    assert.deepEqual(got.map((p) => [p.cmd, (p as IDisconnectPacket).reasonCode]), [['disconnect', 0x82]]);
  });

  // ---------------------------------------------------------------- keep alive

  async function keepaliveClose(version: 4 | 5): Promise<{ dt: number; packets: Packet[] }> {
    const { c, connack } = await rawConnected(b, version, { clientId: uid(`ka${version}`), keepalive: 1 });
    assert.equal(connack.cmd, 'connack');
    const t0 = Date.now();
    const packets = await c.drainUntilClose(4000);
    return { dt: Date.now() - t0, packets };
  }

  test('[v3.1.1 MQTT-3.1.2-24] keep alive 1 s and silence: closed after 1.5 s (not before 1 s)', T, async () => {
    const n = b.counters.keepaliveTimeouts;
    const { dt, packets } = await keepaliveClose(4);
    assert.ok(dt >= 1000, `closed after only ${dt} ms`);
    assert.ok(dt < 3500, `closed after ${dt} ms`);
    assert.deepEqual(packets, [], '3.1.1 has no server DISCONNECT');
    assert.equal(b.counters.keepaliveTimeouts, n + 1);
  });

  test('[v5 MQTT-3.1.2-22] keep alive 1 s and silence: DISCONNECT 0x8D after 1.5 s (not before 1 s)', T, async () => {
    const { dt, packets } = await keepaliveClose(5);
    assert.ok(dt >= 1000, `closed after only ${dt} ms`);
    assert.ok(dt < 3500, `closed after ${dt} ms`);
    assert.equal(packets.length, 1);
    assert.equal(packets[0]?.cmd, 'disconnect');
    assert.equal((packets[0] as IDisconnectPacket).reasonCode, 0x8d);
  });

  test('[v3.1.1 MQTT-3.12.4-1] [v5 MQTT-3.12.4-1] PINGREQ gets PINGRESP and keeps a keep-alive-1 s connection open', T, async () => {
    for (const version of [4, 5] as const) {
      const { c } = await rawConnected(b, version, { clientId: uid(`ping${version}`), keepalive: 1 });
      const end = Date.now() + 2500; // well past 1.5 × keep alive
      while (Date.now() < end) {
        c.send({ cmd: 'pingreq' } as Packet);
        const p = await c.next(2000);
        assert.equal(p?.cmd, 'pingresp', `v${version}`);
        await sleep(400);
      }
      assert.equal(c.closed, false, `v${version}: closed despite PINGREQs`);
      c.destroy();
    }
  });

  test('[v3.1.1 MQTT-3.1.2-23] MQTT.js keep alive 1 s stays connected (it pings)', T, async () => {
    const id = uid('kajs');
    const { client } = await mqConnect(b.url, { protocolVersion: 4, clientId: id, keepalive: 1 });
    track(client);
    let closed = false;
    client.on('close', () => (closed = true));
    await sleep(2500);
    assert.equal(closed, false);
    assert.ok((await b.session(id))?.conn);
    await client.endAsync();
  });
});

// =====================================================================================
describe('CONNACK on a restricted broker', () => {
  let b: TestBroker;
  before(async () => {
    b = await startBroker({
      mqtt: {
        receive_maximum: 10, max_packet_size: 65536, max_topic_alias: 7, max_qos: 1, retain_available: false,
        wildcard_subscription_available: false, shared_subscription_available: false, max_keepalive: 5,
        max_session_expiry: 1,
      },
    });
  });
  after(() => b.stop());

  test('[v5 MQTT-3.2.2-9] [v5 §3.2.2.3] CONNACK advertises the configured limits', T, async () => {
    const { c, connack } = await rawConnected(b, 5, { clientId: uid('lim') });
    const pr = (connack as IConnackPacket).properties ?? {};
    assert.equal(pr.receiveMaximum, 10);
    assert.equal(pr.maximumPacketSize, 65536);
    assert.equal(pr.topicAliasMaximum, 7);
    assert.equal(pr.maximumQoS, 1);
    assert.equal(pr.retainAvailable, false);
    assert.equal(pr.wildcardSubscriptionAvailable, false);
    assert.equal(pr.sharedSubscriptionAvailable, false);
    c.destroy();
  });

  test('[v5 MQTT-3.2.2-21] client keep alive 60 above max_keepalive 5: Server Keep Alive 5, and it applies', T, async () => {
    const id = uid('ska');
    const { c, connack } = await rawConnected(b, 5, { clientId: id, keepalive: 60 });
    assert.equal((connack as IConnackPacket).properties?.serverKeepAlive, 5);
    assert.equal((await b.session(id))?.conn?.keepalive, 5);
    c.destroy();
    // Below the maximum: the client's value stands and no Server Keep Alive is sent.
    const low = await rawConnected(b, 5, { clientId: uid('ska-low'), keepalive: 3 });
    assert.equal((low.connack as IConnackPacket).properties?.serverKeepAlive, undefined);
    low.c.destroy();
    // MQTT.js gets the same.
    const m = await mqConnect(b.url, { protocolVersion: 5, clientId: uid('ska-js'), keepalive: 60 });
    track(m.client);
    assert.equal(m.connack.properties?.serverKeepAlive, 5);
    await m.client.endAsync();
  });

  test('[v5 §3.2.2.3.2] Session Expiry 60 above max_session_expiry 1: CONNACK says 1, and the session ends after it', T, async () => {
    const id = uid('sx');
    const { c, connack } = await rawConnected(b, 5, { clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } });
    assert.equal((connack as IConnackPacket).properties?.sessionExpiryInterval, 1);
    c.destroy();
    await waitFor(async () => (await b.session(id))?.conn == null, 'offline');
    assert.ok((await b.session(id)) !== null, 'kept for the (capped) interval');
    await waitFor(async () => (await b.session(id)) === null, 'session expired after 1 s', 3000);
    // Within the limit: no Session Expiry Interval in the CONNACK.
    const low = await rawConnected(b, 5, { clientId: uid('sx-low'), properties: { sessionExpiryInterval: 1 } });
    assert.equal((low.connack as IConnackPacket).properties?.sessionExpiryInterval, undefined);
    low.c.destroy();
  });

  test('[v5 MQTT-3.2.2-10] SUBSCRIBE at QoS 2 is still accepted, granted the maximum QoS 1', T, async () => {
    const { c } = await rawConnected(b, 5, { clientId: uid('mq') });
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: uid('q/t'), qos: 2 }] } as Packet);
    const sa = (await c.next()) as ISubackPacket;
    assert.deepEqual(sa.granted, [1]);
    c.destroy();
  });

  test('[v5 MQTT-3.2.2-12] Will QoS above the maximum QoS: CONNACK 0x9B, then close', T, async () => {
    const id = uid('wq');
    const c = track(await RawClient.open(b.port, 5));
    c.send({
      cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: id, keepalive: 60,
      will: { topic: 'w/t', payload: Buffer.from('bye'), qos: 2, retain: false },
    } as Packet);
    const got = await c.drainUntilClose(3000);
    assert.deepEqual(got.map((p) => [p.cmd, (p as IConnackPacket).reasonCode]), [['connack', 0x9b]]);
    assert.equal(await b.session(id), null);
  });

  test('[v5 MQTT-3.2.2-13] Will Retain with retain unavailable: CONNACK 0x9A, then close', T, async () => {
    const id = uid('wr');
    const c = track(await RawClient.open(b.port, 5));
    c.send({
      cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: id, keepalive: 60,
      will: { topic: 'w/t', payload: Buffer.from('bye'), qos: 0, retain: true },
    } as Packet);
    const got = await c.drainUntilClose(3000);
    assert.deepEqual(got.map((p) => [p.cmd, (p as IConnackPacket).reasonCode]), [['connack', 0x9a]]);
    assert.equal(await b.session(id), null);
  });
});

// =====================================================================================
describe('CONNECT user name / password against a password file', () => {
  let b: TestBroker;
  after(() => b.stop()); // before the directory goes
  const tmp = tempDir('fleetmq-connect-');
  before(async () => {
    const file = tmp.file('passwd');
    await upsertUser(file, 'alice', 'wonderland');
    b = await startBroker({ auth: { allow_anonymous: false, password_file: file } });
  });

  test('[v3.1.1 MQTT-3.1.2-19] [v3.1.1 MQTT-3.1.2-21] user name + password: 0 accepted, 4 bad credentials, 5 no user name', T, async () => {
    const ok = await rawConnected(b, 4, { clientId: uid('u-ok'), username: 'alice', password: Buffer.from('wonderland') });
    assert.equal((ok.connack as IConnackPacket).returnCode, 0);
    ok.c.destroy();
    const bad = await rawConnected(b, 4, { clientId: uid('u-bad'), username: 'alice', password: Buffer.from('nope') });
    assert.equal((bad.connack as IConnackPacket).returnCode, 4);
    await bad.c.waitClose();
    const none = await rawConnected(b, 4, { clientId: uid('u-none') });
    assert.equal((none.connack as IConnackPacket).returnCode, 5);
    await none.c.waitClose();
    // mosquitto_pub with the right credentials.
    const r = await mosquittoPub(b.port, ['-V', 'mqttv311', '-u', 'alice', '-P', 'wonderland', '-t', 'x', '-m', 'y']);
    assert.equal(r.code, 0, r.stderr);
    const r2 = await mosquittoPub(b.port, ['-V', 'mqttv311', '-u', 'alice', '-P', 'wrong', '-t', 'x', '-m', 'y']);
    assert.notEqual(r2.code, 0);
  });

  test('[v5 §3.2.2.2] user name + password: 0x00 accepted, 0x86 bad credentials, 0x87 not authorized', T, async () => {
    const ok = await mqConnect(b.url, { protocolVersion: 5, clientId: uid('u5-ok'), username: 'alice', password: 'wonderland' });
    track(ok.client);
    assert.equal(ok.connack.reasonCode, 0);
    await ok.client.endAsync();
    const bad = await rawConnected(b, 5, { clientId: uid('u5-bad'), username: 'alice', password: Buffer.from('nope') });
    assert.equal((bad.connack as IConnackPacket).reasonCode, 0x86);
    await bad.c.waitClose();
    const none = await rawConnected(b, 5, { clientId: uid('u5-none') });
    assert.equal((none.connack as IConnackPacket).reasonCode, 0x87);
    await none.c.waitClose();
    // 5.0 allows a password without a user name; with no user it is not authorized.
    const c = track(await RawClient.open(b.port, 5));
    c.sendRaw(connectFrame('MQTT', 5, 0x42, [...lenPrefixed(uid('u5-pw')), ...lenPrefixed('wonderland')]));
    const ack = (await c.next()) as IConnackPacket;
    assert.equal(ack.reasonCode, 0x87);
    await c.waitClose();
  });
});
