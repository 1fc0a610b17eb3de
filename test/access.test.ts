// Access control over real sockets: password file (made with the real `fleetmq passwd`),
// anonymous access, the ACL file (allow/deny, %u / %c, acl_default deny), TLS client
// certificates as usernames, and max_connections (incl. a burst far past the limit).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import type { IClientOptions, MqttClient } from 'mqtt';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { startBroker, sleep, waitFor, type TestBroker } from './helpers/broker.js';
import { makeTestPki } from './helpers/certs.js';
import { fleetmqPasswd } from './helpers/cli.js';
import { messages, trackClients } from './helpers/clients.js';
import { field } from './helpers/raw-client.js';
import { tempDir } from './helpers/tmp.js';

const T = { timeout: 20_000 };

const tmp = tempDir('fleetmq-access-');
const f = tmp.file;

// ---------------------------------------------------------------- helpers

const clients = trackClients();

const connectMqtt = (url: string, opts: IClientOptions): Promise<MqttClient> =>
  clients.mqtt(url, { connectTimeout: 5000, ...opts }, false);

const raw = (port: number, version: 4 | 5, connect: Record<string, unknown>) => clients.rawConnect(port, version, connect);

/** Error from a refused MQTT.js connect (the promise must reject). */
async function refusedMqtt(url: string, opts: IClientOptions): Promise<Error & { code?: number }> {
  try {
    const c = await connectMqtt(url, opts);
    await c.endAsync(true);
  } catch (e) {
    return e as Error & { code?: number };
  }
  assert.fail('connection was accepted');
}

/** SUBACK codes for a SUBSCRIBE (MQTT.js rejects when any code is a failure; the SUBACK is on the error). */
async function subscribeCodes(c: MqttClient, subs: Record<string, { qos: 0 | 1 | 2 }>): Promise<number[]> {
  try {
    return (await c.subscribeAsync(subs)).map((g) => g.qos);
  } catch (e) {
    const packet = (e as { packet?: { granted?: number[] } }).packet;
    assert.ok(packet?.granted, `subscribe failed without a SUBACK: ${String(e)}`);
    return packet.granted;
  }
}

// ---------------------------------------------------------------- password file + ACL

describe('password file and ACL (allow_anonymous false, acl_default deny)', () => {
  let b: TestBroker;
  before(async () => {
    const pw = f('passwd');
    // Piped stdin (the documented way) and -b batch mode.
    assert.equal((await fleetmqPasswd([pw, 'alice'], 'alice-pw\n')).code, 0);
    assert.equal((await fleetmqPasswd(['-b', 'bob-pw', pw, 'bob'])).code, 0);
    assert.equal((await fleetmqPasswd([pw, 'admin'], 'admin-pw\n')).code, 0);
    assert.match(readFileSync(pw, 'utf8'), /^alice:\$scrypt\$/m);
    writeFileSync(f('acl'), [
      '# operators may do anything',
      'allow all        user:admin   #',
      'deny  all        all          control/#',
      'allow all        all          devices/%c/#',
      'allow all        all          users/%u/inbox',
      'allow publish    user:alice   public/#',
      'allow subscribe  all          public/#',
      '',
    ].join('\n'));
    b = await startBroker({
      auth: { allow_anonymous: false, password_file: pw, acl_file: f('acl'), acl_default: 'deny' },
    });
  });
  after(async () => {
    await b?.stop();
  });

  test('[v5 MQTT-3.1.4-2] [v3.1.1 §5.4.1] users made with "fleetmq passwd" (stdin and -b) log in with the right password', T, async () => {
    const a5 = await connectMqtt(b.url, { protocolVersion: 5, clientId: 'pw-alice5', username: 'alice', password: 'alice-pw' });
    const b4 = await connectMqtt(b.url, { protocolVersion: 4, clientId: 'pw-bob4', username: 'bob', password: 'bob-pw' });
    assert.equal(a5.connected, true);
    assert.equal(b4.connected, true);
    const conns = (await b.clients()).filter((c) => c.clientId.startsWith('pw-'));
    assert.deepEqual(conns.map((c) => [c.clientId, c.username]).sort(), [['pw-alice5', 'alice'], ['pw-bob4', 'bob']]);
    // Round trip through the authenticated connections (users/%u/inbox is theirs).
    const got = messages(a5);
    await a5.subscribeAsync('users/alice/inbox', { qos: 1 });
    await a5.publishAsync('users/alice/inbox', 'hi', { qos: 1 });
    await waitFor(() => got.length === 1, 'own inbox message');
    await a5.endAsync();
    await b4.endAsync();
  });

  test('[v5 MQTT-3.2.2-6/7] bad password or unknown user: CONNACK 0x86, Session Present 0, closed; authFailures counted', T, async () => {
    const before = b.counters.authFailures;
    for (const [user, pass] of [['alice', 'wrong'], ['mallory', 'alice-pw'], ['bob', '']] as const) {
      const { c, connack } = await raw(b.port, 5, { clientId: `bad5-${user}`, username: user, password: Buffer.from(pass) });
      assert.equal(field(connack, 'cmd'), 'connack');
      assert.equal(field(connack, 'reasonCode'), 0x86, `${user}/${pass}`);
      assert.equal(field(connack, 'sessionPresent'), false);
      await c.waitClose();
    }
    // A username without a password at all.
    const np = await raw(b.port, 5, { clientId: 'bad5-nopass', username: 'alice' });
    assert.equal(field(np.connack, 'reasonCode'), 0x86);
    await np.c.waitClose();
    // A real client sees the same refusal.
    const err = await refusedMqtt(b.url, { protocolVersion: 5, clientId: 'bad5-mqttjs', username: 'alice', password: 'nope' });
    assert.equal(err.code, 0x86);
    assert.equal(b.counters.authFailures - before, 5);
    assert.ok(!(await b.sessionIds()).some((k) => k.startsWith('bad5-')), 'no session for a refused client');
  });

  test('[v3.1.1 MQTT-3.2.2-4/5] bad password or unknown user: CONNACK return code 4, closed; authFailures counted', T, async () => {
    const before = b.counters.authFailures;
    for (const [user, pass] of [['bob', 'alice-pw'], ['nobody', 'x']] as const) {
      const { c, connack } = await raw(b.port, 4, { clientId: `bad4-${user}`, username: user, password: Buffer.from(pass) });
      assert.equal(field(connack, 'returnCode'), 4, `${user}/${pass}`);
      assert.equal(field(connack, 'sessionPresent'), false);
      await c.waitClose();
    }
    const err = await refusedMqtt(b.url, { protocolVersion: 4, clientId: 'bad4-mqttjs', username: 'bob', password: 'nope' });
    assert.equal(err.code, 4);
    assert.equal(b.counters.authFailures - before, 3);
  });

  test('[v5 MQTT-3.2.2-7] [v3.1.1 MQTT-3.2.2-5] no username with allow_anonymous false: 0x87 / return code 5', T, async () => {
    const before = b.counters.authFailures;
    const r5 = await raw(b.port, 5, { clientId: 'anon5' });
    assert.equal(field(r5.connack, 'reasonCode'), 0x87);
    await r5.c.waitClose();
    const r4 = await raw(b.port, 4, { clientId: 'anon4' });
    assert.equal(field(r4.connack, 'returnCode'), 5);
    await r4.c.waitClose();
    const err = await refusedMqtt(b.url, { protocolVersion: 5, clientId: 'anon5-mqttjs' });
    assert.equal(err.code, 0x87);
    assert.equal(b.counters.authFailures - before, 3);
  });

  test('[v5 MQTT-3.8.4-6] ACL: a denied filter gets SUBACK 0x87 next to granted ones; aclDeniedSubscribe counted', T, async () => {
    const before = b.counters.aclDeniedSubscribe;
    const { c } = await raw(b.port, 5, { clientId: 'sub5-alice', username: 'alice', password: Buffer.from('alice-pw') });
    c.send({
      cmd: 'subscribe', messageId: 7,
      subscriptions: [
        { topic: 'public/#', qos: 1 },
        { topic: 'control/#', qos: 1 }, // deny all all control/#
        { topic: 'users/alice/inbox', qos: 2 }, // %u = alice
        { topic: 'users/bob/inbox', qos: 0 }, // someone else's inbox: default deny
        { topic: 'users/+/inbox', qos: 0 }, // wider than users/alice/inbox: not covered
      ],
    } as Packet);
    const suback = await c.next();
    assert.equal(field(suback, 'cmd'), 'suback');
    assert.equal(field(suback, 'messageId'), 7);
    assert.deepEqual(field(suback, 'granted'), [1, 0x87, 2, 0x87, 0x87]);
    assert.equal(b.counters.aclDeniedSubscribe - before, 3);
    const s = await b.session('sub5-alice');
    assert.ok(s, 'session of sub5-alice');
    assert.deepEqual(s.subscriptions.map((x) => x.key).sort(), ['public/#', 'users/alice/inbox']);
    c.destroy();
  });

  test('[v3.1.1 MQTT-3.8.4-5] ACL: a denied filter gets SUBACK 0x80; aclDeniedSubscribe counted', T, async () => {
    const before = b.counters.aclDeniedSubscribe;
    const { c } = await raw(b.port, 4, { clientId: 'sub4-bob', username: 'bob', password: Buffer.from('bob-pw') });
    c.send({
      cmd: 'subscribe', messageId: 3,
      subscriptions: [{ topic: 'users/bob/inbox', qos: 1 }, { topic: 'users/alice/inbox', qos: 1 }, { topic: '#', qos: 0 }],
    } as Packet);
    const suback = await c.next();
    assert.deepEqual(field(suback, 'granted'), [1, 0x80, 0x80]);
    assert.equal(b.counters.aclDeniedSubscribe - before, 2);
    c.destroy();
  });

  test('[v5 MQTT-3.4.2-1/MQTT-3.5.2-1] ACL: denied QoS 1 gets PUBACK 0x87, QoS 2 PUBREC 0x87; nothing delivered; aclDeniedPublish counted', T, async () => {
    const admin = await connectMqtt(b.url, { protocolVersion: 5, clientId: 'pub5-admin', username: 'admin', password: 'admin-pw' });
    const seen = messages(admin);
    await admin.subscribeAsync('#', { qos: 2 });
    const before = b.counters.aclDeniedPublish;
    const { c } = await raw(b.port, 5, { clientId: 'dev7', username: 'alice', password: Buffer.from('alice-pw') });
    c.send({ cmd: 'publish', topic: 'control/reboot', payload: Buffer.from('q1'), qos: 1, messageId: 11, retain: false, dup: false } as Packet);
    const puback = await c.next();
    assert.equal(field(puback, 'cmd'), 'puback');
    assert.equal(field(puback, 'messageId'), 11);
    assert.equal(field(puback, 'reasonCode'), 0x87);
    c.send({ cmd: 'publish', topic: 'devices/dev8/cmd', payload: Buffer.from('q2'), qos: 2, messageId: 12, retain: false, dup: false } as Packet);
    const pubrec = await c.next();
    assert.equal(field(pubrec, 'cmd'), 'pubrec');
    assert.equal(field(pubrec, 'messageId'), 12);
    assert.equal(field(pubrec, 'reasonCode'), 0x87);
    // %c = dev7: its own subtree is allowed, QoS 2 completes.
    c.send({ cmd: 'publish', topic: 'devices/dev7/temp', payload: Buffer.from('ok'), qos: 2, messageId: 13, retain: false, dup: false } as Packet);
    const rec = await c.next();
    assert.equal(field(rec, 'cmd'), 'pubrec');
    assert.ok(((field(rec, 'reasonCode') as number | undefined) ?? 0) < 0x80);
    c.send({ cmd: 'pubrel', messageId: 13 } as Packet);
    assert.equal(field(await c.next(), 'cmd'), 'pubcomp');
    await waitFor(() => seen.length === 1, 'allowed message at the admin');
    await sleep(100);
    assert.deepEqual(seen.map((m) => m.topic), ['devices/dev7/temp']);
    assert.equal(b.counters.aclDeniedPublish - before, 2);
    c.destroy();
    await admin.endAsync();
  });

  test('[v3.1.1 MQTT-4.3.2-2] ACL: a denied QoS 1 message is acknowledged (PUBACK) and dropped', T, async () => {
    const admin = await connectMqtt(b.url, { protocolVersion: 4, clientId: 'pub4-admin', username: 'admin', password: 'admin-pw' });
    const seen = messages(admin);
    await admin.subscribeAsync('users/#', { qos: 1 });
    const before = b.counters.aclDeniedPublish;
    const { c } = await raw(b.port, 4, { clientId: 'pub4-bob', username: 'bob', password: Buffer.from('bob-pw') });
    c.send({ cmd: 'publish', topic: 'users/alice/inbox', payload: Buffer.from('no'), qos: 1, messageId: 21, retain: false, dup: false } as Packet);
    const puback = await c.next();
    assert.equal(field(puback, 'cmd'), 'puback');
    assert.equal(field(puback, 'messageId'), 21);
    c.send({ cmd: 'publish', topic: 'users/bob/inbox', payload: Buffer.from('yes'), qos: 1, messageId: 22, retain: false, dup: false } as Packet);
    assert.equal(field(await c.next(), 'messageId'), 22);
    await waitFor(() => seen.length === 1, 'allowed message');
    await sleep(100);
    assert.deepEqual(seen.map((m) => [m.topic, m.payload]), [['users/bob/inbox', 'yes']]);
    assert.equal(b.counters.aclDeniedPublish - before, 1);
    c.destroy();
    await admin.endAsync();
  });

  test('[v5 §5.4.2] [v3.1.1 §5.4.2] ACL: a denied QoS 0 message is dropped silently; the publisher stays connected', T, async () => {
    for (const v of [5, 4] as const) {
      const bob = await connectMqtt(b.url, { protocolVersion: v, clientId: `q0-bob${v}`, username: 'bob', password: 'bob-pw' });
      const bobGot = messages(bob);
      await bob.subscribeAsync('users/bob/inbox', { qos: 0 });
      const admin = await connectMqtt(b.url, { protocolVersion: v, clientId: `q0-admin${v}`, username: 'admin', password: 'admin-pw' });
      const adminGot = messages(admin);
      await admin.subscribeAsync('users/#', { qos: 0 });
      const before = b.counters.aclDeniedPublish;
      const alice = await connectMqtt(b.url, { protocolVersion: v, clientId: `q0-alice${v}`, username: 'alice', password: 'alice-pw' });
      await alice.publishAsync('users/bob/inbox', 'denied', { qos: 0 }); // %u = alice: not bob's inbox
      await alice.publishAsync('control/x', 'denied', { qos: 0 });
      await alice.publishAsync('users/alice/inbox', 'allowed', { qos: 0 });
      await waitFor(() => adminGot.length === 1, 'the allowed message');
      await sleep(100);
      assert.deepEqual(adminGot.map((m) => m.topic), ['users/alice/inbox']);
      assert.deepEqual(bobGot, []);
      assert.equal(b.counters.aclDeniedPublish - before, 2);
      assert.equal(alice.connected, true);
      await alice.publishAsync('public/news', 'still here', { qos: 1 }); // a later QoS 1 round trip works
      await Promise.all([alice.endAsync(), bob.endAsync(), admin.endAsync()]);
    }
  });

  test('[v5 MQTT-3.1.2-8] [v3.1.1 MQTT-3.1.2-8] ACL: a will on a topic the client may not publish to is never published', T, async () => {
    const admin = await connectMqtt(b.url, { protocolVersion: 5, clientId: 'will-admin', username: 'admin', password: 'admin-pw' });
    const seen = messages(admin);
    await admin.subscribeAsync('#', { qos: 1 });
    const before = b.counters.aclDeniedPublish;
    const wills = b.counters.willsPublished;
    const will = (topic: string) => ({ topic, payload: Buffer.from(`will ${topic}`), qos: 1, retain: false });
    const denied = await raw(b.port, 5, { clientId: 'will-d5', username: 'alice', password: Buffer.from('alice-pw'), will: will('control/alarm') });
    assert.equal(field(denied.connack, 'reasonCode'), 0, 'the connection itself is accepted');
    const denied4 = await raw(b.port, 4, { clientId: 'will-d4', username: 'bob', password: Buffer.from('bob-pw'), will: will('users/alice/inbox') });
    assert.equal(field(denied4.connack, 'returnCode'), 0);
    const allowed = await raw(b.port, 4, { clientId: 'will-a4', username: 'alice', password: Buffer.from('alice-pw'), will: will('users/alice/inbox') });
    assert.equal(b.counters.aclDeniedPublish - before, 2, 'denied wills counted at CONNECT');
    // Connections lost without DISCONNECT.
    denied.c.destroy();
    denied4.c.destroy();
    allowed.c.destroy();
    await waitFor(() => seen.length === 1, 'the allowed will');
    await sleep(150);
    assert.deepEqual(seen.map((m) => [m.topic, m.payload]), [['users/alice/inbox', 'will users/alice/inbox']]);
    await waitFor(() => b.counters.willsPublished - wills >= 1, 'willsPublished counted');
    assert.equal(b.counters.willsPublished - wills, 1);
    await admin.endAsync();
  });

  test('[v5 MQTT-3.8.4-6] ACL %c: a client owns devices/<client id>/# whatever its username', T, async () => {
    const c = await connectMqtt(b.url, { protocolVersion: 5, clientId: 'dev9', username: 'bob', password: 'bob-pw' });
    const got = messages(c);
    const granted = await subscribeCodes(c, { 'devices/dev9/#': { qos: 1 }, 'devices/+/temp': { qos: 1 }, 'devices/dev1/#': { qos: 1 } });
    assert.deepEqual(granted, [1, 0x87, 0x87]);
    await c.publishAsync('devices/dev9/temp', '21', { qos: 1 });
    await waitFor(() => got.length === 1, 'own device message');
    await assert.rejects(c.publishAsync('devices/dev1/temp', 'spoof', { qos: 1 }), (e: Error & { code?: number }) => e.code === 0x87);
    await c.endAsync();
  });
});

// ---------------------------------------------------------------- anonymous access

describe('allow_anonymous true', () => {
  let b: TestBroker;
  before(async () => {
    const pw = f('passwd-anon');
    assert.equal((await fleetmqPasswd(['-b', 'carol-pw', pw, 'carol'])).code, 0);
    b = await startBroker({ auth: { allow_anonymous: true, password_file: pw } });
  });
  after(async () => {
    await b?.stop();
  });

  test('[v5 MQTT-3.1.4-2] [v3.1.1 §5.4.1] clients without credentials are accepted; given names are still checked', T, async () => {
    const a5 = await connectMqtt(b.url, { protocolVersion: 5, clientId: 'anon-ok5' });
    const a4 = await connectMqtt(b.url, { protocolVersion: 4, clientId: 'anon-ok4' });
    const got = messages(a4);
    await a4.subscribeAsync('anon/t', { qos: 1 });
    await a5.publishAsync('anon/t', 'hello', { qos: 1 });
    await waitFor(() => got.length === 1, 'anonymous round trip');
    const before = b.counters.authFailures;
    const err = await refusedMqtt(b.url, { protocolVersion: 5, clientId: 'anon-bad', username: 'carol', password: 'wrong' });
    assert.equal(err.code, 0x86);
    assert.equal(b.counters.authFailures - before, 1);
    const carol = await connectMqtt(b.url, { protocolVersion: 5, clientId: 'anon-carol', username: 'carol', password: 'carol-pw' });
    await Promise.all([a5.endAsync(), a4.endAsync(), carol.endAsync()]);
  });
});

// ---------------------------------------------------------------- TLS client certificates

describe('TLS client certificate: CN as username', () => {
  let b: TestBroker;
  let tlsOpts: IClientOptions;
  before(async () => {
    makeTestPki(tmp.path, 'fleetmq access test CA', 'device42');
    writeFileSync(f('acl-cn'), 'allow all user:device42 devices/%u/#\n');
    b = await startBroker({
      listeners: {
        tls: { cert: f('server.crt'), key: f('server.key'), ca: f('ca.crt'), request_cert: true, cn_as_username: true },
      },
      auth: { allow_anonymous: false, acl_file: f('acl-cn'), acl_default: 'deny' },
    });
    tlsOpts = {
      ca: readFileSync(f('ca.crt')), cert: readFileSync(f('client.crt')), key: readFileSync(f('client.key')),
      rejectUnauthorized: true,
    };
  });
  after(async () => {
    await b?.stop();
  });

  test('[v5 §5.4.1] [v5 MQTT-3.8.4-6] the verified CN is the username: ACL "devices/%u/#" allows devices/device42/# only', T, async () => {
    const url = `mqtts://127.0.0.1:${b.mqttsPort}`;
    // Username / password in CONNECT are ignored when a certificate identifies the client.
    const c = await connectMqtt(url, { ...tlsOpts, protocolVersion: 5, clientId: 'cert-5', username: 'mallory', password: 'x' });
    const conn = (await b.clients()).find((x) => x.clientId === 'cert-5');
    assert.equal(conn?.transport, 'tls');
    assert.equal(conn?.username, 'device42');
    const got = messages(c);
    const granted = await subscribeCodes(c, { 'devices/device42/#': { qos: 1 }, 'devices/mallory/#': { qos: 1 } });
    assert.deepEqual(granted, [1, 0x87]);
    await c.publishAsync('devices/device42/temp', '20.5', { qos: 1 });
    await waitFor(() => got.length === 1, 'own message over TLS');
    assert.deepEqual(got[0], { topic: 'devices/device42/temp', payload: '20.5', qos: 1 });
    await assert.rejects(c.publishAsync('devices/mallory/temp', 'x', { qos: 1 }), (e: Error & { code?: number }) => e.code === 0x87);
    await c.endAsync();
  });

  test('[v3.1.1 §5.4.1] a 3.1.1 client is identified by its certificate too', T, async () => {
    const c = await connectMqtt(`mqtts://127.0.0.1:${b.mqttsPort}`, { ...tlsOpts, protocolVersion: 4, clientId: 'cert-4' });
    const got = messages(c);
    const granted = await subscribeCodes(c, { 'devices/device42/x': { qos: 0 }, 'devices/other/x': { qos: 0 } });
    assert.deepEqual(granted, [0, 0x80]);
    await c.publishAsync('devices/device42/x', 'v4', { qos: 0 });
    await waitFor(() => got.length === 1, 'own message');
    await c.endAsync();
  });

  test('[v5 §5.4.1] no client certificate: refused at the TLS handshake; plain TCP without credentials gets 0x87', T, async () => {
    const accepted = b.counters.connectionsAccepted;
    const { cert: _c, key: _k, ...noCert } = tlsOpts;
    await assert.rejects(connectMqtt(`mqtts://127.0.0.1:${b.mqttsPort}`, { ...noCert, protocolVersion: 5, clientId: 'nocert' }));
    assert.equal(b.counters.connectionsAccepted, accepted, 'no MQTT connection reached the broker');
    const { c, connack } = await raw(b.port, 5, { clientId: 'tcp-nocert', username: 'device42' });
    // No password file: a bare username proves nothing.
    assert.equal(field(connack, 'reasonCode'), 0x87);
    await c.waitClose();
  });
});

// ---------------------------------------------------------------- max_connections

describe('max_connections', () => {
  let b: TestBroker;
  const MAX = 5;
  before(async () => {
    b = await startBroker({ node: { max_connections: MAX }, mqtt: { connect_timeout_ms: 2000 } });
  });
  after(async () => {
    await b?.stop();
  });

  test('[v5 MQTT-3.2.2-7] [v3.1.1 MQTT-3.2.2-5] past the limit: CONNACK 0x97 (5.0) / return code 3 (3.1.1), closed; the broker still serves', T, async () => {
    const ctr = b.counters;
    const held: MqttClient[] = [];
    for (let i = 0; i < MAX; i++) held.push(await connectMqtt(b.url, { protocolVersion: 5, clientId: `held-${i}` }));
    const refusedBefore = ctr.connectionsRefusedMax;

    const r5 = await raw(b.port, 5, { clientId: 'over-5' });
    assert.equal(field(r5.connack, 'reasonCode'), 0x97);
    assert.equal(field(r5.connack, 'sessionPresent'), false);
    await r5.c.waitClose();
    const r4 = await raw(b.port, 4, { clientId: 'over-4' });
    assert.equal(field(r4.connack, 'returnCode'), 3);
    await r4.c.waitClose();
    const err = await refusedMqtt(b.url, { protocolVersion: 5, clientId: 'over-mqttjs' });
    assert.equal(err.code, 0x97);
    assert.equal(ctr.connectionsRefusedMax - refusedBefore, 3);
    assert.equal(await b.session('over-5'), null);

    // The held connections still work.
    const got = messages(held[1]!);
    await held[1]!.subscribeAsync('mc/t', { qos: 1 });
    await held[0]!.publishAsync('mc/t', 'still serving', { qos: 1 });
    await waitFor(() => got.length === 1, 'message between held clients');

    // A freed slot is usable again.
    await held[4]!.endAsync();
    await waitFor(() => b.connectionCount() === MAX - 1, 'slot freed');
    held[4] = await connectMqtt(b.url, { protocolVersion: 4, clientId: 'held-4b' });
    assert.equal(held[4].connected, true);
    await Promise.all(held.map((c) => c.endAsync()));
    await waitFor(() => b.connectionCount() === 0, 'all closed');
  });

  test('[v5 MQTT-3.2.2-7] a burst of 150 sockets past the limit is closed cleanly (no EMFILE); the broker keeps serving', T, async () => {
    const ctr = b.counters;
    const held: MqttClient[] = [];
    for (let i = 0; i < MAX; i++) held.push(await connectMqtt(b.url, { protocolVersion: 4, clientId: `burst-held-${i}` }));
    const refusedBefore = ctr.connectionsRefusedMax;
    const acceptedBefore = ctr.connectionsAccepted;
    const logsBefore = b.logs.length;
    const connect = mqttPacket.generate({
      cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: 'burst', keepalive: 30,
    } as Packet, { protocolVersion: 5 });

    // 150 sockets at once, all silent until the broker has seen every one of them.
    const N = 150;
    interface Burst { s: net.Socket; data: Buffer[]; closed: Promise<boolean> }
    const burst: Burst[] = await Promise.all(Array.from({ length: N }, () => new Promise<Burst>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port: b.port });
      const data: Buffer[] = [];
      s.on('data', (d: Buffer) => data.push(d));
      s.on('error', () => undefined); // a socket closed at once may see a reset
      const closed = new Promise<boolean>((res) => {
        const timer = setTimeout(() => res(false), 10_000);
        s.once('close', () => {
          clearTimeout(timer);
          res(true);
        });
      });
      s.once('connect', () => resolve({ s, data, closed }));
      s.once('close', () => resolve({ s, data, closed }));
    })));
    await waitFor(() => (ctr.connectionsAccepted - acceptedBefore) + (ctr.connectionsRefusedMax - refusedBefore) === N, 'broker saw the burst');
    const inMargin = ctr.connectionsAccepted - acceptedBefore;
    const closedAtOnce = ctr.connectionsRefusedMax - refusedBefore;
    assert.ok(inMargin > 0 && closedAtOnce > 0, `margin ${inMargin}, closed at once ${closedAtOnce}`);
    // Everything past the margin is closed without being served; the rest get CONNACK 0x97 for their CONNECT.
    await sleep(50);
    for (const x of burst) if (!x.s.destroyed) x.s.write(connect);
    const closed = await Promise.all(burst.map((x) => x.closed));
    assert.equal(closed.filter((c) => !c).length, 0, 'every over-limit socket is closed by the broker');
    let connack97 = 0;
    for (const x of burst) {
      const data = Buffer.concat(x.data);
      if (data.length === 0) continue;
      assert.equal(data[0], 0x20, 'CONNACK');
      assert.equal(data[3], 0x97, 'reason code 0x97 (never 0x00)');
      connack97++;
    }
    assert.equal(connack97, inMargin);
    assert.equal(ctr.connectionsRefusedMax - refusedBefore, N);
    const newLogs = b.logs.slice(logsBefore);
    assert.deepEqual(newLogs.filter((l) => /"level":"error"/.test(l) || /EMFILE/.test(l)), []);
    await waitFor(() => b.connectionCount() === MAX, 'only the held connections left');

    // Still serving: the held clients talk, and a freed slot is accepted.
    const got = messages(held[2]!);
    await held[2]!.subscribeAsync('burst/t', { qos: 1 });
    await held[3]!.publishAsync('burst/t', 'alive', { qos: 1 });
    await waitFor(() => got.length === 1, 'message after the burst');
    await held[0]!.endAsync();
    await waitFor(() => b.connectionCount() === MAX - 1, 'slot freed');
    const fresh = await connectMqtt(b.url, { protocolVersion: 5, clientId: 'burst-fresh' });
    assert.equal(fresh.connected, true);
    await Promise.all([...held, fresh].map((c) => c.endAsync()));
  });
});
