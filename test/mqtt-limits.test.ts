// Configured limits as clients see them (topic levels / length, maximum QoS, retain and
// wildcard availability) and the periodic $SYS/brokers/<node>/… topics, over loopback.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { IDisconnectPacket, Packet } from 'mqtt-packet';
import { VERSION } from '../src/broker/sys.js';
import { sleep, waitFor } from './helpers/broker.js';
import { BrokerEnv, uid } from './helpers/clients.js';
import { mosquittoSub } from './helpers/mosquitto.js';
import { expectDisconnect, expectPacket, type RawClient } from './helpers/raw-client.js';

const T = { timeout: 15_000 };

function publish(topic: string, qos: 0 | 1 | 2 = 0, retain = false, messageId = 1): Packet {
  return { cmd: 'publish', topic, payload: Buffer.from('x'), qos, retain, dup: false, ...(qos ? { messageId } : {}) } as Packet;
}

async function subscribe(c: RawClient, subs: [string, 0 | 1 | 2][]): Promise<number[]> {
  c.send({ cmd: 'subscribe', messageId: 9, subscriptions: subs.map(([topic, qos]) => ({ topic, qos })) } as Packet);
  return (await expectPacket(c, 'suback')).granted as number[];
}

// ---------------------------------------------------------------- topic limits

describe('topic limits: max_topic_levels 3, max_topic_length 32', () => {
  const env = new BrokerEnv();
  before(() => env.start({ mqtt: { max_topic_levels: 3, max_topic_length: 32 } }));
  after(() => env.close());

  test('[v5 3.3.2.1 / 4.13] PUBLISH to a topic with 4 levels → DISCONNECT 0x90 (MQTT.js sees it); 3 levels pass', T, async () => {
    const sub = await env.mq();
    const got: string[] = [];
    sub.on('message', (t) => got.push(t));
    await sub.subscribeAsync('lv/#', { qos: 1 });
    const pub = await env.mq();
    await pub.publishAsync('lv/b/c', 'ok', { qos: 1 });
    await waitFor(() => got.length === 1, 'three-level message');
    assert.deepEqual(got, ['lv/b/c']);
    const seen = new Promise<IDisconnectPacket>((resolve) => pub.once('disconnect', (p) => resolve(p)));
    pub.publish('lv/b/c/d', 'too deep', { qos: 0 });
    const d = await Promise.race([seen, sleep(3000).then(() => null)]);
    assert.ok(d, 'no DISCONNECT');
    assert.equal(d.reasonCode, 0x90);
    await sleep(50);
    assert.deepEqual(got, ['lv/b/c'], 'the refused message was not routed');
  });

  test('[v5 3.3.2.1 / 4.13] PUBLISH to a topic over max_topic_length (UTF-8 bytes) → DISCONNECT 0x90; exactly 32 bytes pass', T, async () => {
    const ok = 'ln/' + 'ü'.repeat(14) + 'x'; // 3 + 28 + 1 = 32 bytes, 18 characters
    assert.equal(Buffer.byteLength(ok), 32);
    const { c } = await env.raw();
    c.send(publish(ok, 1, false, 1));
    assert.equal((await expectPacket(c, 'puback')).cmd, 'puback');
    const long = 'ln/' + 'ü'.repeat(15); // 33 bytes, 18 characters
    c.send(publish(long, 1, false, 2));
    await expectDisconnect(c, 0x90);
  });

  test('[v3.1.1 MQTT-4.8.0-1] a 3.1.1 PUBLISH over the topic limits closes the connection without an acknowledgement', T, async () => {
    for (const topic of ['v4/b/c/d', 'v4/' + 'y'.repeat(30)]) {
      const { c } = await env.raw(4);
      c.send(publish(topic, 1));
      assert.deepEqual(await c.drainUntilClose(), []);
    }
  });

  test('[v5 MQTT-3.8.4-6/7] SUBSCRIBE over the limits → SUBACK 0x8F per filter, the others granted', T, async () => {
    const { c } = await env.raw();
    const granted = await subscribe(c, [
      ['a/b/c/d', 1], ['a/+/+/#', 0], ['s/' + 'z'.repeat(31), 1], ['a/+/#', 1], ['$share/g/a/b/c', 1], ['$share/g/a/b/c/d', 1],
    ]);
    assert.deepEqual(granted, [0x8f, 0x8f, 0x8f, 1, 1, 0x8f]);
  });

  test('[v3.1.1 MQTT-3.9.3-2] SUBSCRIBE over the limits from a 3.1.1 client → SUBACK 0x80 per filter', T, async () => {
    const { c } = await env.raw(4);
    const granted = await subscribe(c, [['a/b/c/d', 1], ['s/' + 'z'.repeat(31), 0], ['a/b/c', 2]]);
    assert.deepEqual(granted, [0x80, 0x80, 2]);
  });
});

// ---------------------------------------------------------------- capabilities

describe('capabilities: max_qos 1, retain_available false, wildcard_subscription_available false', () => {
  const env = new BrokerEnv();
  before(() => env.start({
    mqtt: { max_qos: 1, retain_available: false, wildcard_subscription_available: false },
  }));
  after(() => env.close());

  test('[v5 MQTT-3.2.2-9] CONNACK carries Maximum QoS 1, Retain Available 0, Wildcard Subscription Available 0', T, async () => {
    const { connack } = await env.raw();
    assert.equal(connack.reasonCode, 0);
    assert.equal(connack.properties?.maximumQoS, 1);
    assert.equal(connack.properties?.retainAvailable, false);
    assert.equal(connack.properties?.wildcardSubscriptionAvailable, false);
  });

  test('[v5 MQTT-3.2.2-10] SUBSCRIBE at QoS 2 is accepted and granted QoS 1; deliveries are at most QoS 1', T, async () => {
    const topic = uid('q');
    const { c } = await env.raw();
    assert.deepEqual(await subscribe(c, [[topic, 2]]), [1]);
    const pub = await env.mq();
    await pub.publishAsync(topic, 'm', { qos: 1 });
    const p = await expectPacket(c, 'publish');
    assert.equal(p.qos, 1);
  });

  test('[v3.1.1 MQTT-3.8.4-6] a 3.1.1 SUBSCRIBE at QoS 2 is granted QoS 1', T, async () => {
    const { c } = await env.raw(4);
    assert.deepEqual(await subscribe(c, [[uid('q4'), 2]]), [1]);
  });

  test('[v5 MQTT-3.2.2-11 / 4.13] PUBLISH at QoS 2 above Maximum QoS → DISCONNECT 0x9B', T, async () => {
    const { c } = await env.raw();
    c.send(publish(uid('q2'), 2));
    await expectDisconnect(c, 0x9b);
  });

  test('[v5 MQTT-3.2.2-12] CONNECT with a QoS 2 will → CONNACK 0x9B', T, async () => {
    const { c, connack } = await env.raw(5, { will: { topic: 'w', payload: Buffer.from('x'), qos: 2, retain: false } });
    assert.equal(connack.reasonCode, 0x9b);
    await c.waitClose();
  });

  test('[v5 MQTT-3.2.2-14 / 4.13] a retained PUBLISH when retain is not available → DISCONNECT 0x9A', T, async () => {
    const { c } = await env.raw();
    c.send(publish(uid('r'), 1, true));
    await expectDisconnect(c, 0x9a);
    // Refused before it could be stored: the retained store stays empty.
    assert.deepEqual(await env.b.retained('#'), []);
    assert.equal(env.b.counters.retainedStored, 0);
  });

  test('[v5 MQTT-3.2.2-13] CONNECT with a retained will when retain is not available → CONNACK 0x9A', T, async () => {
    const { c, connack } = await env.raw(5, { will: { topic: 'w', payload: Buffer.from('x'), qos: 0, retain: true } });
    assert.equal(connack.reasonCode, 0x9a);
    await c.waitClose();
  });

  test('[v5 3.2.2.3.14] wildcard subscriptions not available → SUBACK 0xA2 for + and #, literal filters granted', T, async () => {
    const { c } = await env.raw();
    assert.deepEqual(await subscribe(c, [['w/+', 1], ['w/#', 0], ['#', 0], ['w/x', 1], ['$share/g/w/+', 1]]), [0xa2, 0xa2, 0xa2, 1, 0xa2]);
  });

  test('[v3.1.1 MQTT-3.9.3-2] wildcard subscriptions not available → a 3.1.1 client gets 0x80', T, async () => {
    const { c } = await env.raw(4);
    assert.deepEqual(await subscribe(c, [['w/+', 1], ['w/x', 1]]), [0x80, 1]);
  });
});

// ---------------------------------------------------------------- $SYS

describe('$SYS topics (sys_interval_ms 200)', () => {
  const env = new BrokerEnv();
  before(() => env.start({ mqtt: { sys_interval_ms: 200 } }));
  after(() => env.close());

  const NODE = 'test@local';

  test('[v5 MQTT-4.7.2-1] $SYS/brokers/<node>/… are published periodically with numbers that move', T, async () => {
    const sub = await env.mq();
    const values = new Map<string, string[]>();
    sub.on('message', (topic, payload) => {
      const m = /^\$SYS\/brokers\/([^/]+)\/(.+)$/.exec(topic);
      assert.ok(m, `unexpected topic ${topic}`);
      assert.equal(m[1], NODE);
      const k = m[2]!;
      if (!values.has(k)) values.set(k, []);
      values.get(k)!.push(payload.toString());
    });
    const keys = ['clients/connected', 'uptime', 'version', 'messages/received', 'messages/sent', 'bytes/sent',
      'bytes/received', 'sessions/count', 'subscriptions/count'];
    const granted = await sub.subscribeAsync(keys.map((k) => `$SYS/brokers/+/${k}`), { qos: 0 });
    assert.equal(granted.length, keys.length);
    const nums = (k: string) => (values.get(k) ?? []).map(Number);
    const last = (k: string) => nums(k).at(-1) ?? NaN;

    // Every topic arrives (retained at once, then every 200 ms) with a number (version: a string).
    await waitFor(() => keys.every((k) => (values.get(k)?.length ?? 0) >= 2), 'two rounds of $SYS values', 3000);
    for (const k of keys) {
      if (k === 'version') continue;
      for (const v of values.get(k)!) assert.match(v, /^\d+$/, `${k} = ${v}`);
    }
    assert.deepEqual([...new Set(values.get('version'))], [VERSION]);

    // bytes/sent grows: each round is itself sent to this subscriber.
    const bs0 = last('bytes/sent');
    await waitFor(() => last('bytes/sent') > bs0, 'bytes/sent to grow');

    // clients/connected follows a new connection.
    const cc0 = last('clients/connected');
    assert.ok(cc0 >= 1);
    await env.mq();
    await waitFor(() => last('clients/connected') === cc0 + 1, 'clients/connected to count the new client');

    // messages/received counts client messages (3 here), and $SYS rounds do not count.
    const mr0 = last('messages/received');
    const pub = await env.mq();
    for (let i = 0; i < 3; i++) await pub.publishAsync(uid('sysmsg'), 'm', { qos: 1 });
    await waitFor(() => last('messages/received') === mr0 + 3, 'messages/received +3');
    const n = nums('messages/received').length;
    await waitFor(() => nums('messages/received').length >= n + 2, 'two more rounds');
    assert.equal(last('messages/received'), mr0 + 3, 'stable without client traffic');

    // uptime is whole seconds since start and moves.
    const up0 = nums('uptime')[0]!;
    await waitFor(() => last('uptime') > up0, 'uptime to move', 2500);
  });

  test('[v5 MQTT-4.7.2-1] a # or +/… subscription does not receive $SYS topics', T, async () => {
    const sub = await env.mq();
    const got: string[] = [];
    sub.on('message', (t) => got.push(t));
    await sub.subscribeAsync(['#', '+/brokers/#', '+'], { qos: 0 });
    const topic = uid('plain');
    // Meanwhile a $SYS subscriber sees the retained value plus two live rounds.
    const sys = await env.mq();
    let sysCount = 0;
    sys.on('message', () => sysCount++);
    await sys.subscribeAsync('$SYS/brokers/+/uptime', { qos: 0 });
    await waitFor(() => sysCount >= 3, 'two live $SYS rounds');
    const pub = await env.mq();
    await pub.publishAsync(topic, 'p', { qos: 1 });
    await waitFor(() => got.includes(topic), 'the ordinary message');
    assert.deepEqual(got.filter((t) => t.startsWith('$')), []);
  });

  test('[v3.1.1 MQTT-4.7.2-1] mosquitto_sub 3.1.1 on # gets no $SYS message (retained or live); $SYS/# does', T, async () => {
    const b = env.b;
    const topic = uid('mosq-plain');
    const hashId = uid('mosq-hash');
    const run = (args: string[]) => mosquittoSub(b.port, ['-V', 'mqttv311', '-v', '-W', '6', ...args]).done;
    // $SYS/# gets the retained $SYS values at once.
    const sys = await run(['-t', '$SYS/#', '-C', '1']);
    assert.equal(sys.code, 0);
    assert.match(sys.stdout, /^\$SYS\/brokers\/test@local\/\S+ \S+/);
    // # : the first message must be ours, although $SYS rounds go on meanwhile.
    const hash = run(['-i', hashId, '-t', '#', '-C', '1']);
    await waitFor(async () => (await b.session(hashId))?.subscriptions.length === 1, 'mosquitto_sub subscribed');
    await sleep(450);
    const pub = await env.mq();
    await pub.publishAsync(topic, 'hello', { qos: 0 });
    const r = await hash;
    assert.equal(r.code, 0);
    assert.equal(r.stdout.trim(), `${topic} hello`);
  });
});
