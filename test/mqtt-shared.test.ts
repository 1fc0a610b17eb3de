// Shared subscriptions ($share/<group>/<filter>, $queue/<filter>) over loopback sockets:
// each dispatch strategy (one broker per strategy), mixing with ordinary subscribers,
// retained messages, No Local, redispatch when a member leaves, and the "not available"
// switch.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { MqttClient } from 'mqtt';
import type { IPublishPacket, Packet } from 'mqtt-packet';
import { queued, settles, stored, sleep, waitFor, type TestBroker } from './helpers/broker.js';
import { BrokerEnv, uid } from './helpers/clients.js';
import { mosquittoSub } from './helpers/mosquitto.js';
import { expectPacket } from './helpers/raw-client.js';

const T = { timeout: 15_000 };

/** A broker plus the clients made on it, all closed by `close()`; `members()` makes shared-subscription members. */
class Env extends BrokerEnv {
  /** Connected members subscribed to `filter`, each recording the payloads it receives. */
  async members(n: number, filter: string, qos: 0 | 1 | 2 = 1): Promise<{ c: MqttClient; got: string[] }[]> {
    const out: { c: MqttClient; got: string[] }[] = [];
    for (let i = 0; i < n; i++) {
      const c = await this.mq({ clientId: uid(`member${i}`) });
      const got: string[] = [];
      c.on('message', (_t, payload) => got.push(payload.toString()));
      const r = await c.subscribeAsync(filter, { qos });
      assert.equal(r[0]?.qos, qos, 'granted QoS');
      out.push({ c, got });
    }
    return out;
  }
}

function total(ms: { got: string[] }[]): number {
  return ms.reduce((n, m) => n + m.got.length, 0);
}

/** Waits until `n` messages arrived in all, then a little longer to catch any extra ones. */
async function settle(ms: { got: string[] }[], n: number): Promise<void> {
  await waitFor(() => total(ms) >= n, `${n} messages across the group`);
  await sleep(100);
}

/** Waits until the session of `id` exists and has no connection. */
async function offline(b: TestBroker, id: string, what: string): Promise<void> {
  await waitFor(async () => (await b.session(id))?.connected === false, what);
}

/** Every payload in `sent` reached exactly one member. */
function assertExactlyOnce(ms: { got: string[] }[], sent: string[]): void {
  const all = ms.flatMap((m) => m.got).sort();
  assert.deepEqual(all, [...sent].sort(), 'each message to exactly one member');
}

// ---------------------------------------------------------------- strategies

async function publishSeq(
  pub: MqttClient, topic: (i: number) => string, n: number, tag: string, qos: 1 | 2 = 1,
): Promise<string[]> {
  const sent: string[] = [];
  for (let i = 0; i < n; i++) {
    const m = `${tag}-${i}`;
    await pub.publishAsync(topic(i), m, { qos });
    sent.push(m);
  }
  return sent;
}

describe('shared subscriptions: round_robin', () => {
  const env = new Env();
  before(() => env.start({ mqtt: { shared_strategy: 'round_robin' } }));
  after(() => env.close());

  test('[v5 4.8.2] $share/g/bench/# with 3 members: each message to exactly one member, an even split', T, async () => {
    const ms = await env.members(3, '$share/g/bench/#');
    const pub = await env.mq();
    const sent = await publishSeq(pub, (i) => `bench/rr/${i % 4}`, 30, 'rr');
    await settle(ms, 30);
    assertExactlyOnce(ms, sent);
    assert.deepEqual(ms.map((m) => m.got.length), [10, 10, 10]);
  });

  test('[v5 4.8.2] an ordinary subscriber on the same topics still gets every message', T, async () => {
    const ms = await env.members(2, '$share/mix/mixed/+');
    const plain = await env.mq();
    const plainGot: string[] = [];
    plain.on('message', (_t, p) => plainGot.push(p.toString()));
    await plain.subscribeAsync('mixed/#', { qos: 1 });
    const pub = await env.mq();
    const sent = await publishSeq(pub, (i) => `mixed/${i % 3}`, 12, 'mix');
    await settle(ms, 12);
    assertExactlyOnce(ms, sent);
    await waitFor(() => plainGot.length >= 12, 'plain subscriber');
    assert.deepEqual(plainGot, sent);
  });

  test('[v5 4.8.2] two groups on one filter each get every message once', T, async () => {
    const g1 = await env.members(2, '$share/one/twogroups/t');
    const g2 = await env.members(2, '$share/two/twogroups/t');
    const pub = await env.mq();
    const sent = await publishSeq(pub, () => 'twogroups/t', 8, 'tg');
    await settle([...g1, ...g2], 16);
    assertExactlyOnce(g1, sent);
    assertExactlyOnce(g2, sent);
  });

  test('[v5 4.8.2] $queue/<filter> works as a shared group (mosquitto_sub 3.1.1 + MQTT.js 5.0 members)', T, async () => {
    const b = env.b;
    const topic = uid('queue');
    const mosqId = uid('mosq');
    const sub = mosquittoSub(b.port, ['-V', 'mqttv311', '-i', mosqId, '-q', '1', '-t', `$queue/${topic}`, '-C', '5', '-W', '8'], 10_000);
    try {
      const [js] = await env.members(1, `$queue/${topic}`);
      await waitFor(async () => (await b.groupMembers(topic, '$queue')).length === 2, 'two $queue members');
      const pub = await env.mq();
      const sent = await publishSeq(pub, () => topic, 10, 'q');
      const r = await sub.done;
      assert.equal(r.code, 0, 'mosquitto_sub got its 5 messages');
      await settle([js!], 5);
      const mosqGot = r.stdout.trim().split('\n');
      assert.equal(mosqGot.length, 5);
      assert.equal(js!.got.length, 5);
      assertExactlyOnce([js!, { got: mosqGot }], sent);
    } finally {
      sub.proc.kill();
    }
  });

  test('[v5 4.8.2] a shared subscription gets no retained messages when it subscribes', T, async () => {
    const topic = uid('ret');
    const pub = await env.mq();
    await pub.publishAsync(`${topic}/x`, 'kept', { qos: 1, retain: true });
    const [shared] = await env.members(1, `$share/g/${topic}/#`);
    const plain = await env.mq();
    const plainGot: IPublishPacket[] = [];
    plain.on('message', (_t, _p, pkt) => plainGot.push(pkt));
    await plain.subscribeAsync(`${topic}/#`, { qos: 1 });
    await waitFor(() => plainGot.length >= 1, 'retained message on the ordinary subscription');
    assert.equal(plainGot[0]!.retain, true);
    await sleep(150);
    assert.deepEqual(shared!.got, []);
    // New messages do reach the shared member.
    await pub.publishAsync(`${topic}/x`, 'live', { qos: 1 });
    await waitFor(() => shared!.got.length >= 1, 'live message');
    assert.deepEqual(shared!.got, ['live']);
    await pub.publishAsync(`${topic}/x`, '', { qos: 1, retain: true });
  });

  test('[v5 4.8.2] while a member with a persistent session is offline, messages go to the online members only', T, async () => {
    const b = env.b;
    const topic = uid('offline');
    const offId = uid('off-member');
    const off = await env.mq({ clientId: offId, clean: false, properties: { sessionExpiryInterval: 60 } });
    await off.subscribeAsync(`$share/off/${topic}`, { qos: 1 });
    await off.endAsync();
    await offline(b, offId, 'member offline');
    const online = await env.members(2, `$share/off/${topic}`);
    const pub = await env.mq();
    const sent = await publishSeq(pub, () => topic, 10, 'off');
    await settle(online, 10);
    assertExactlyOnce(online, sent);
    assert.equal(await queued(b, offId), 0, 'nothing queued for the offline member');
    // With no member online, the offline persistent member keeps the messages.
    for (const m of online) await m.c.endAsync();
    const onlineIds = online.map((m) => m.c.options.clientId!);
    await waitFor(async () => (await Promise.all(onlineIds.map((id) => stored(b, id)))).every((s) => !s), 'online members gone');
    await publishSeq(pub, () => topic, 3, 'kept');
    await settles(() => queued(b, offId), 3, 'three queued for the offline member');
    // A clean start ends the persistent session (and its queue).
    await (await env.mq({ clientId: offId, clean: true })).endAsync();
    await waitFor(async () => !(await stored(b, offId)), 'the persistent session to end');
  });

  test('[v5 MQTT-3.8.3-4] No Local on a shared subscription → DISCONNECT 0x82', T, async () => {
    const { c } = await env.raw();
    c.send({ cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: '$share/g/nl/t', qos: 1, nl: true }] } as Packet);
    const d = await expectPacket(c, 'disconnect');
    assert.equal(d.reasonCode, 0x82);
    await c.waitClose();
  });

  test('[v5 MQTT-4.8.2-1/2] malformed $share filters are refused with SUBACK 0x8F', T, async () => {
    const { c } = await env.raw();
    c.send({
      cmd: 'subscribe', messageId: 4,
      subscriptions: [
        { topic: '$share/g', qos: 0 }, { topic: '$share//t', qos: 0 }, { topic: '$share/g+/t', qos: 0 },
        { topic: '$share/g/', qos: 0 }, { topic: '$share/ok/t', qos: 0 },
      ],
    } as Packet);
    const ack = await expectPacket(c, 'suback');
    assert.deepEqual(ack.granted, [0x8f, 0x8f, 0x8f, 0x8f, 0]);
  });

  test('[v5 4.8.2] QoS 1 messages unacknowledged by a member that disconnects go to another member (sharedRedispatched)', T, async () => {
    const b = env.b;
    const topic = uid('redisp');
    const counters = b.counters;
    // Member A never acknowledges; member B is an ordinary MQTT.js client.
    const aId = uid('rd-a');
    const a = await env.raw(5, { clientId: aId });
    a.c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `$share/rd/${topic}`, qos: 1 }] } as Packet);
    assert.deepEqual((await expectPacket(a.c, 'suback')).granted, [1]);
    const [bm] = await env.members(1, `$share/rd/${topic}`);
    const pub = await env.mq();
    const before = counters.sharedRedispatched;
    const sent = await publishSeq(pub, () => topic, 6, 'rd');
    const toA: string[] = [];
    for (let i = 0; i < 3; i++) toA.push((await expectPacket(a.c, 'publish')).payload.toString());
    await waitFor(() => bm!.got.length >= 3, "B's own share");
    assert.equal((await b.session(aId))?.inflight.length, 3, 'three unacknowledged at A');
    a.c.destroy();
    await waitFor(() => bm!.got.length >= 6, 'the redispatched messages at B');
    await sleep(50);
    assert.deepEqual([...bm!.got].sort(), [...sent].sort());
    assert.ok(toA.every((m) => bm!.got.includes(m)));
    // Counted once the message went to B: poll rather than race B's receipt.
    await settles(() => counters.sharedRedispatched - before, 3, 'three redispatched');
  });

  test('[v5 MQTT-4.8.2-4/5] a QoS 2 message in flight to a member that disconnects is not sent to another member; it completes on reconnect', T, async () => {
    const b = env.b;
    const topic = uid('rdq2');
    const clientId = uid('q2member');
    const a = await env.raw(5, { clientId, properties: { sessionExpiryInterval: 60 } });
    a.c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `$share/q2/${topic}`, qos: 2 }] } as Packet);
    assert.deepEqual((await expectPacket(a.c, 'suback')).granted, [2]);
    const [bm] = await env.members(1, `$share/q2/${topic}`, 2);
    const pub = await env.mq();
    const before = counters();
    await publishSeq(pub, () => topic, 2, 'q2', 2);
    const first = await expectPacket(a.c, 'publish'); // no PUBREC
    assert.equal(first.qos, 2);
    await waitFor(() => bm!.got.length >= 1, "B's message");
    a.c.destroy();
    await offline(b, clientId, 'member A offline');
    await sleep(150);
    assert.equal(bm!.got.length, 1, 'B must not get the QoS 2 message sent to A');
    assert.ok(!bm!.got.includes(first.payload.toString()));
    assert.equal(counters() - before, 0);

    const again = await env.raw(5, { clientId, clean: false, properties: { sessionExpiryInterval: 60 } });
    assert.equal(again.connack.sessionPresent, true);
    const re = await expectPacket(again.c, 'publish');
    assert.equal(re.payload.toString(), first.payload.toString());
    assert.equal(re.messageId, first.messageId);
    assert.equal(re.dup, true);
    again.c.send({ cmd: 'pubrec', messageId: re.messageId, reasonCode: 0 } as Packet);
    const rel = await expectPacket(again.c, 'pubrel');
    again.c.send({ cmd: 'pubcomp', messageId: (rel as { messageId: number }).messageId, reasonCode: 0 } as Packet);
    again.c.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 0 } } as Packet);
    await again.c.waitClose();

    function counters(): number {
      return b.counters.sharedRedispatched;
    }
  });
});

describe('shared subscriptions: random', () => {
  const env = new Env();
  before(() => env.start({ mqtt: { shared_strategy: 'random' } }));
  after(() => env.close());

  test('[v5 4.8.2] random: each message to exactly one member, the total equals the published count', T, async () => {
    const ms = await env.members(3, '$share/g/bench/#');
    const pub = await env.mq();
    const sent = await publishSeq(pub, (i) => `bench/rnd/${i % 5}`, 60, 'rnd');
    await settle(ms, 60);
    assertExactlyOnce(ms, sent);
    // 60 random picks among 3 members leave one out with probability ~1e-10.
    assert.ok(ms.every((m) => m.got.length > 0), `split ${ms.map((m) => m.got.length).join('/')}`);
  });
});

describe('shared subscriptions: sticky', () => {
  const env = new Env();
  before(() => env.start({ mqtt: { shared_strategy: 'sticky' } }));
  after(() => env.close());

  test('[v5 4.8.2] sticky: every message to one member while it stays, then all to one other member', T, async () => {
    const ms = await env.members(3, '$share/g/bench/#');
    const pub = await env.mq();
    const sent1 = await publishSeq(pub, (i) => `bench/st/${i % 3}`, 20, 'st1');
    await settle(ms, 20);
    assertExactlyOnce(ms, sent1);
    const holder = ms.findIndex((m) => m.got.length > 0);
    assert.equal(ms[holder]!.got.length, 20, `split ${ms.map((m) => m.got.length).join('/')}`);

    const holderId = ms[holder]!.c.options.clientId!;
    await ms[holder]!.c.endAsync();
    await waitFor(async () => !(await stored(env.b, holderId)), 'the sticky member to leave');
    const rest = ms.filter((_, i) => i !== holder);
    for (const m of rest) m.got.length = 0;
    const sent2 = await publishSeq(pub, (i) => `bench/st/${i % 3}`, 20, 'st2');
    await settle(rest, 20);
    assertExactlyOnce(rest, sent2);
    assert.deepEqual(rest.map((m) => m.got.length).sort((x, y) => x - y), [0, 20]);
  });
});

describe('shared subscriptions: hash_clientid', () => {
  const env = new Env();
  before(() => env.start({ mqtt: { shared_strategy: 'hash_clientid' } }));
  after(() => env.close());

  test('[v5 4.8.2] hash_clientid: every message of one publisher goes to the same member', T, async () => {
    const ms = await env.members(3, '$share/g/bench/#');
    const pubs: MqttClient[] = [];
    for (let i = 0; i < 6; i++) pubs.push(await env.mq({ clientId: `hc-publisher-${i}` }));
    const sent: string[] = [];
    for (let round = 0; round < 4; round++) {
      for (const [i, p] of pubs.entries()) {
        const m = `p${i}-r${round}`;
        await p.publishAsync(`bench/hc/${round}`, m, { qos: 1 });
        sent.push(m);
      }
    }
    await settle(ms, sent.length);
    assertExactlyOnce(ms, sent);
    const memberOf = (p: number) => new Set(ms.flatMap((m, k) => m.got.filter((x) => x.startsWith(`p${p}-`)).map(() => k)));
    const used = new Set<number>();
    for (let p = 0; p < pubs.length; p++) {
      const s = memberOf(p);
      assert.equal(s.size, 1, `publisher ${p} spread over members ${[...s].join(',')}`);
      used.add([...s][0]!);
    }
    assert.ok(used.size > 1, 'six publishers all hashed onto one member');
  });
});

describe('shared subscriptions: hash_topic', () => {
  const env = new Env();
  before(() => env.start({ mqtt: { shared_strategy: 'hash_topic' } }));
  after(() => env.close());

  test('[v5 4.8.2] hash_topic: every message on one topic goes to the same member, whoever publishes', T, async () => {
    const ms = await env.members(3, '$share/g/bench/#');
    const pubs = [await env.mq(), await env.mq()];
    const sent: string[] = [];
    for (let round = 0; round < 4; round++) {
      for (let t = 0; t < 6; t++) {
        const m = `t${t}-r${round}`;
        await pubs[(round + t) % 2]!.publishAsync(`bench/ht/topic${t}`, m, { qos: 1 });
        sent.push(m);
      }
    }
    await settle(ms, sent.length);
    assertExactlyOnce(ms, sent);
    const used = new Set<number>();
    for (let t = 0; t < 6; t++) {
      const s = new Set(ms.flatMap((m, k) => m.got.filter((x) => x.startsWith(`t${t}-`)).map(() => k)));
      assert.equal(s.size, 1, `topic ${t} spread over members ${[...s].join(',')}`);
      used.add([...s][0]!);
    }
    assert.ok(used.size > 1, 'six topics all hashed onto one member');
  });
});

describe('shared subscriptions not available', () => {
  const env = new Env();
  before(() => env.start({ mqtt: { shared_subscription_available: false } }));
  after(() => env.close());

  test('[v5 3.2.2.3.15] shared_subscription_available false → CONNACK says so, SUBSCRIBE $share → SUBACK 0x9E', T, async () => {
    const { c, connack } = await env.raw();
    assert.equal(connack.properties?.sharedSubscriptionAvailable, false);
    c.send({
      cmd: 'subscribe', messageId: 5,
      subscriptions: [{ topic: '$share/g/na/t', qos: 1 }, { topic: '$queue/na/t', qos: 1 }, { topic: 'na/t', qos: 1 }],
    } as Packet);
    const ack = await expectPacket(c, 'suback');
    assert.deepEqual(ack.granted, [0x9e, 0x9e, 1]);
  });

  test('[v3.1.1 MQTT-3.9.3-2] shared_subscription_available false → a 3.1.1 $share SUBSCRIBE gets 0x80', T, async () => {
    const { c } = await env.raw(4, { clientId: uid('v4') });
    c.send({ cmd: 'subscribe', messageId: 6, subscriptions: [{ topic: '$share/g/na/t', qos: 1 }, { topic: 'na/t', qos: 1 }] } as Packet);
    const ack = await expectPacket(c, 'suback');
    assert.deepEqual(ack.granted, [0x80, 1]);
  });
});
