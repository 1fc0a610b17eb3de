// The worker-threaded node (node.workers = 2) behaves as one broker whichever worker thread
// each client lands on: publisher and subscriber on different workers, per-publisher order
// across workers, session takeover and resumption on another worker, retained messages,
// shared groups with members on both workers, wills; a worker that throws or exits is
// restarted while the other worker's clients keep working; GET /api/v1/stats adds the
// workers up. Clients are put on a chosen worker by test/helpers/placement.ts.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { IClientOptions, MqttClient } from 'mqtt';
import type { IDisconnectPacket } from 'mqtt-packet';
import type { WorkerStats } from '../src/workers/supervisor.js';
import { sleep, waitFor, type TestBroker } from './helpers/broker.js';
import { BrokerEnv, inbox, uid, VERSIONS, type Received } from './helpers/clients.js';
import { mqttOn, workerOfClient, type Placed, type Transport } from './helpers/placement.js';

// injectFault() needs this before any node starts (the supervisor reads it at start-up).
process.env['FLEETMQ_FAULT_INJECTION'] = '1';

const T = { timeout: 20_000 };
const TWO_WORKERS = { node: { workers: 2 } };
// The order test sends 5,000 QoS 1 messages at once: every one must fit a subscriber's queue.
const BIG_QUEUES = { ...TWO_WORKERS, mqtt: { max_queued_messages: 10_000 } };

// ---------------------------------------------------------------- helpers

/** A BrokerEnv whose clients are placed on a chosen worker. */
class WorkersEnv extends BrokerEnv {
  /** An MQTT.js client (tracked, closed by `close()`) on worker `worker`, past its CONNACK. */
  async on(
    worker: number, opts: IClientOptions & { clientId: string }, transport: Transport = 'tcp',
    setup?: (c: MqttClient) => void,
  ): Promise<Placed> {
    const p = await mqttOn(this.b, worker, opts, transport, setup);
    this.track(p.client);
    return p;
  }

  /** A client with a fresh id on worker `worker`. */
  async fresh(worker: number, v: 4 | 5, transport: Transport = 'tcp', extra: IClientOptions = {}): Promise<MqttClient> {
    return (await this.on(worker, { clientId: uid(`w${worker}`), protocolVersion: v, ...extra }, transport)).client;
  }
}

/** Resolves when `c`'s connection closes. */
function whenClosed(c: MqttClient): Promise<void> {
  return new Promise((resolve) => {
    if (c.disconnected || (c.stream !== undefined && c.stream.destroyed)) resolve();
    else c.once('close', () => resolve());
  });
}

/** `p`, or a failure naming `what` after `ms`. */
async function within<X>(p: Promise<X>, ms: number, what: string): Promise<X> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(t);
  }
}

/** Asserts that nothing more arrives in `got` for `ms`. */
async function expectNoMore(got: readonly unknown[], ms: number, what: string): Promise<void> {
  const n = got.length;
  await sleep(ms);
  assert.equal(got.length, n, `${what}: unexpected ${JSON.stringify(got.slice(n))}`);
}

/** `got` is 0, 1, …, n-1 (reports the first place where it is not). */
function assertSequence(got: readonly number[], n: number, what: string): void {
  const bad = got.findIndex((x, i) => x !== i);
  assert.equal(bad, -1, `${what}: message ${bad} is seq ${got[bad]}`);
  assert.equal(got.length, n, `${what}: ${got.length} of ${n} messages`);
}

/** `got` strictly increases. */
function assertIncreasing(got: readonly number[], what: string): void {
  const bad = got.findIndex((x, i) => i > 0 && x <= got[i - 1]!);
  assert.equal(bad, -1, `${what}: seq ${got[bad]} after ${got[bad - 1]}`);
}

interface Stats {
  connections: number;
  subscriptions: number;
  messagesReceived: number;
  messagesSent: number;
  sessionsLostOnRestart: number;
  workerRestarts: number;
  workers: WorkerStats[];
}

async function stats(b: TestBroker): Promise<Stats> {
  const res = await fetch(`http://127.0.0.1:${b.httpPort}/api/v1/stats`);
  assert.equal(res.status, 200, 'GET /api/v1/stats');
  return (await res.json()) as Stats;
}

const persistentOpts = (v: 4 | 5): IClientOptions =>
  v === 5 ? { clean: false, properties: { sessionExpiryInterval: 300 } } : { clean: false };

// ---------------------------------------------------------------- one node, clients on both workers

describe('[workers] 2 workers: clients on different workers see one broker', () => {
  const env = new WorkersEnv();
  before(() => env.start(BIG_QUEUES));
  after(() => env.close());

  for (const { v, tag } of VERSIONS) {
    const qosTags = v === 5 ? 'MQTT-4.3.1-1 MQTT-4.3.2-2 MQTT-4.3.3-2 MQTT-3.3.2-15/16/17/18/20' : 'MQTT-4.3.1-1 MQTT-4.3.2-1 MQTT-4.3.3-1';
    test(`[workers] [${tag} ${qosTags}] publisher and subscriber on different workers (both ways): QoS 0/1/2 arrive with topic, payload${v === 5 ? ' and properties' : ''} intact`, T, async () => {
      const payload = Buffer.from(Array.from({ length: 256 }, (_, i) => i)); // every byte value
      for (const [pw, sw] of [[0, 1], [1, 0]] as const) {
        const base = uid(`x${pw}${sw}`);
        const sub = await env.fresh(sw, v);
        const got = inbox(sub);
        await sub.subscribeAsync(`${base}/#`, { qos: 2 });
        const pub = await env.fresh(pw, v);
        for (const qos of [0, 1, 2] as const) {
          const props = {
            userProperties: { k: 'v', multi: ['a', 'b'] }, contentType: 'application/x-fleetmq-test',
            correlationData: Buffer.from([0, 1, 2, 0xff]), messageExpiryInterval: 60, responseTopic: `${base}/reply`,
          };
          await pub.publishAsync(`${base}/q${qos}`, payload, { qos, ...(v === 5 ? { properties: props } : {}) });
          await waitFor(() => got.length === qos + 1, `QoS ${qos} message from worker ${pw} on worker ${sw}`);
          const m = got[qos]!;
          assert.equal(m.topic, `${base}/q${qos}`);
          assert.ok(Buffer.from(m.packet.payload).equals(payload), 'payload bytes intact');
          assert.equal(m.qos, qos, 'delivered at the published QoS');
          assert.equal(m.retain, false);
          assert.equal(m.packet.dup, false);
          if (v === 5) {
            const p = m.packet.properties;
            assert.ok(p, 'properties present');
            assert.deepEqual(Object.entries(p.userProperties ?? {}), Object.entries(props.userProperties), 'user properties, in order');
            assert.equal(p.contentType, props.contentType);
            assert.ok(Buffer.isBuffer(p.correlationData) && p.correlationData.equals(props.correlationData), 'correlation data');
            assert.equal(p.responseTopic, props.responseTopic);
            const exp = p.messageExpiryInterval ?? -1;
            assert.ok(exp >= 58 && exp <= 60, `message expiry ${exp} (published 60)`);
          }
        }
        await expectNoMore(got, 100, 'one delivery per message');
      }
    });
  }

  for (const qos of [1, 0] as const) {
    test(`[workers] [v3.1.1 MQTT-4.6.0-6] [v5 MQTT-4.6.0-5] per-publisher order across workers: 5,000 QoS ${qos} messages from worker 0 reach subscribers on workers 1 and 0 in order`, { timeout: 30_000 }, async () => {
      const N = 5000;
      const topic = `${uid('order')}/seq`;
      const subs = [1, 0].map(async (w) => {
        const c = await env.fresh(w, 4);
        const seqs: number[] = [];
        c.on('message', (_t, payload) => seqs.push(Number(payload.toString())));
        await c.subscribeAsync(topic, { qos });
        return seqs;
      });
      const [far, near] = await Promise.all(subs) as [number[], number[]];
      const pub = await env.fresh(0, 4);
      const droppedBefore = env.b.counters.droppedRingFull;
      const queueFullBefore = env.b.counters.droppedQueueFull;
      const sends: Promise<unknown>[] = [];
      for (let i = 0; i < N; i++) sends.push(pub.publishAsync(topic, String(i), { qos }));
      await within(Promise.all(sends), 15_000, `${N} publishes written${qos === 1 ? ' and acknowledged' : ''}`);
      if (qos === 1) {
        await waitFor(() => far.length >= N && near.length >= N, `${N} messages at both subscribers`, 15_000)
          .catch((e: unknown) => assert.fail(`${String(e)}: worker 1 got ${far.length}, worker 0 got ${near.length}`));
        await sleep(100);
        assertSequence(far, N, 'subscriber on worker 1');
        assertSequence(near, N, 'subscriber on worker 0');
        assert.equal(env.b.counters.droppedQueueFull - queueFullBefore, 0, 'nothing dropped from a full queue');
      } else {
        // QoS 0 may be dropped (and counted) when the ring to another worker is full; what
        // arrives keeps its order, and the same-worker subscriber gets everything.
        const dropped = (): number => env.b.counters.droppedRingFull - droppedBefore;
        await waitFor(() => near.length >= N && far.length + dropped() >= N, `${N} messages delivered or counted`, 15_000);
        await sleep(100);
        assertSequence(near, N, 'subscriber on worker 0');
        assertIncreasing(far, 'subscriber on worker 1');
        assert.equal(far.length + dropped(), N, `delivered to worker 1 (${far.length}) + droppedRingFull (${dropped()})`);
      }
    });
  }

  for (const { v, tag } of VERSIONS) {
    const tags = v === 5 ? 'MQTT-3.1.4-3 MQTT-3.2.2-3 MQTT-3.1.2-23' : 'MQTT-3.1.4-2 MQTT-3.2.2-2 MQTT-3.1.2-5';
    test(`[workers] [${tag} ${tags}] takeover by a connection on the other worker: old one ${v === 5 ? 'gets DISCONNECT 0x8E' : 'is closed'}, Session Present 1, subscription and offline queue come across`, T, async () => {
      const id = uid(`tk${v}`);
      const topic = `${id}/t`;
      const first = await env.on(0, { clientId: id, protocolVersion: v, ...persistentOpts(v) });
      assert.equal(first.connack.sessionPresent, false, 'a new session');
      const firstGot = inbox(first.client);
      const disconnects: IDisconnectPacket[] = [];
      first.client.on('disconnect', (p) => disconnects.push(p));
      const firstClosed = whenClosed(first.client);
      await first.client.subscribeAsync(topic, { qos: 1 });

      // Connections that land on worker 0 are dropped before CONNECT: the first stays open.
      const second = await env.on(1, { clientId: id, protocolVersion: v, ...persistentOpts(v) });
      assert.equal(second.connack.sessionPresent, true, 'Session Present 1: the session came from worker 0');
      await within(firstClosed, 3000, 'the first connection closed');
      assert.deepEqual(disconnects.map((d) => d.reasonCode), v === 5 ? [0x8e] : [], v === 5 ? 'DISCONNECT 0x8E Session taken over' : '3.1.1 has no server DISCONNECT');
      const s = await env.b.session(id);
      assert.ok(s, 'a session');
      assert.equal(s.worker, 1, 'the session is on worker 1 now');
      assert.equal(s.connected, true);
      assert.deepEqual(s.subscriptions.map((x) => x.filter), [topic], 'the subscription came along');
      assert.deepEqual((await env.b.sessionIds()).filter((x) => x === id), [id], 'one session for the id on the node');

      const secondGot = inbox(second.client);
      const pub = await env.fresh(0, v);
      await pub.publishAsync(topic, 'after takeover', { qos: 1 });
      await waitFor(() => secondGot.length === 1, 'a message published after the takeover');
      assert.equal(secondGot[0]!.payload, 'after takeover');
      assert.equal(firstGot.length, 0, 'nothing reached the old connection');

      // Offline on worker 1, QoS 1 messages queue there; a reconnect on worker 0 gets them.
      await second.client.endAsync();
      await waitFor(async () => (await env.b.session(id))?.connected === false, 'the session offline on worker 1');
      for (let i = 0; i < 3; i++) await pub.publishAsync(topic, `queued ${i}`, { qos: 1 });
      await waitFor(async () => (await env.b.session(id))?.queue.length === 3, '3 messages queued on worker 1');
      let thirdGot: Received[] = [];
      const third = await env.on(0, { clientId: id, protocolVersion: v, ...persistentOpts(v) }, 'tcp', (c) => {
        thirdGot = inbox(c);
      });
      assert.equal(third.connack.sessionPresent, true, 'Session Present 1 back on worker 0');
      await waitFor(() => thirdGot.length === 3, 'the queued messages on worker 0');
      assert.deepEqual(thirdGot.map((m) => [m.payload, m.qos]), [['queued 0', 1], ['queued 1', 1], ['queued 2', 1]], 'in order, at QoS 1');
      assert.equal((await env.b.session(id))?.worker, 0);
      await expectNoMore(thirdGot, 100, 'no duplicates');
    });

    const cleanTags = v === 5 ? 'MQTT-3.1.4-3 MQTT-3.1.2-4 MQTT-3.2.2-2' : 'MQTT-3.1.4-2 MQTT-3.1.2-6 MQTT-3.2.2-1';
    test(`[workers] [${tag} ${cleanTags}] ${v === 5 ? 'Clean Start' : 'clean session'} takeover on the other worker: Session Present 0, the old subscription is gone`, T, async () => {
      const id = uid(`tc${v}`);
      const topic = `${id}/t`;
      const first = await env.on(0, { clientId: id, protocolVersion: v, ...persistentOpts(v) });
      const firstGot = inbox(first.client);
      const disconnects: IDisconnectPacket[] = [];
      first.client.on('disconnect', (p) => disconnects.push(p));
      const firstClosed = whenClosed(first.client);
      await first.client.subscribeAsync(topic, { qos: 1 });

      const second = await env.on(1, { clientId: id, protocolVersion: v, clean: true });
      assert.equal(second.connack.sessionPresent, false, 'Session Present 0');
      await within(firstClosed, 3000, 'the first connection closed');
      assert.deepEqual(disconnects.map((d) => d.reasonCode), v === 5 ? [0x8e] : []);
      const s = await env.b.session(id);
      assert.ok(s, 'a session');
      assert.equal(s.worker, 1);
      assert.deepEqual(s.subscriptions, [], 'no subscription from the old session');

      const secondGot = inbox(second.client);
      const pub = await env.fresh(0, v);
      await pub.publishAsync(topic, 'to nobody', { qos: 1 });
      await expectNoMore(secondGot, 300, 'the new session did not inherit the subscription');
      assert.equal(firstGot.length, 0);
    });
  }

  for (const { v, tag } of VERSIONS) {
    const tags = v === 5 ? 'MQTT-3.3.1-5 MQTT-3.3.1-6 MQTT-3.3.1-9' : 'MQTT-3.3.1-5 MQTT-3.3.1-6 MQTT-3.3.1-10';
    test(`[workers] [${tag} ${tags}] retained on worker 0 reaches a new subscriber on worker 1 at once; cleared on worker 1, new subscribers on workers 0 and 1 get nothing`, T, async () => {
      const topic = `${uid('ret')}/state`;
      const setter = await env.fresh(0, v);
      await setter.publishAsync(topic, 'kept', { qos: 1, retain: true }); // resolves on PUBACK
      const sub = await env.fresh(1, v);
      const got = inbox(sub);
      await sub.subscribeAsync(topic, { qos: 1 });
      await waitFor(() => got.length === 1, 'the retained message on SUBSCRIBE', 1000);
      assert.deepEqual([got[0]!.topic, got[0]!.payload, got[0]!.qos, got[0]!.retain], [topic, 'kept', 1, true]);

      const clearer = await env.fresh(1, v);
      await clearer.publishAsync(topic, '', { qos: 1, retain: true });
      // Both workers' replicas forgot it.
      const got2 = await Promise.all([0, 1].map(async (w) => {
        const c = await env.fresh(w, v);
        const got = inbox(c);
        await c.subscribeAsync(topic, { qos: 1 });
        return got;
      }));
      await sleep(300);
      for (const [w, got] of got2.entries()) assert.deepEqual(got.map((m) => m.payload), [], `a cleared retained message on worker ${w}`);
      assert.deepEqual(await env.b.retained(topic), []);
    });
  }

  for (const { members, pubOn } of [
    { members: [0, 1], pubOn: 0 },
    { members: [0, 0, 1], pubOn: 1 },
  ]) {
    test(`[workers] [v5 4.8.2] $share/g/…/# with members on workers ${members.join(', ')}, publisher on worker ${pubOn}: 300 messages, each to exactly one member, round robin even`, T, async () => {
      const base = uid('share');
      const ms: { id: string; got: string[] }[] = [];
      for (const w of members) {
        const id = uid(`m${w}`);
        const c = (await env.on(w, { clientId: id, protocolVersion: 5 })).client;
        const got: string[] = [];
        c.on('message', (_t, payload) => got.push(payload.toString()));
        const r = await c.subscribeAsync(`$share/g/${base}/#`, { qos: 1 });
        assert.equal(r[0]?.qos, 1);
        ms.push({ id, got });
      }
      await waitFor(async () => (await env.b.groupMembers(`${base}/#`, 'g')).length === members.length, 'every member in the group');
      for (const [i, m] of ms.entries()) assert.equal(await workerOfClient(env.b, m.id), members[i], `member ${i} on worker ${members[i]}`);
      const pub = await env.fresh(pubOn, 5);
      const N = 300;
      const sent: string[] = [];
      for (let i = 0; i < N; i++) {
        const p = `m${i}`;
        await pub.publishAsync(`${base}/${i % 7}`, p, { qos: 1 });
        sent.push(p);
      }
      const total = (): number => ms.reduce((n, m) => n + m.got.length, 0);
      await waitFor(() => total() >= N, `${N} messages across the group`, 5000);
      await sleep(150);
      assert.deepEqual(ms.flatMap((m) => m.got).sort(), [...sent].sort(), 'each message to exactly one member');
      const share = N / members.length;
      for (const [i, m] of ms.entries()) {
        assert.ok(Math.abs(m.got.length - share) <= share * 0.1, `member ${i} (worker ${members[i]}) got ${m.got.length}, its share is ${share} (±10%); split ${ms.map((x) => x.got.length).join('/')}`);
      }
    });
  }

  for (const { v, tag } of VERSIONS) {
    test(`[workers] [${tag} MQTT-3.1.2-8] a client on worker 0 killed (socket destroyed): its will reaches a subscriber on worker 1`, T, async () => {
      const topic = `${uid('will')}/gone`;
      const sub = await env.fresh(1, v);
      const got = inbox(sub);
      await sub.subscribeAsync(topic, { qos: 1 });
      const willsBefore = env.b.counters.willsPublished;
      const victim = await env.fresh(0, v, 'tcp', {
        will: {
          topic, payload: Buffer.from('gone'), qos: 1, retain: false,
          ...(v === 5 ? { properties: { contentType: 'text/plain', userProperties: { why: 'killed' } } } : {}),
        },
      });
      await expectNoMore(got, 100, 'no will while the client lives');
      victim.stream.destroy();
      await waitFor(() => got.length === 1, 'the will on worker 1');
      assert.deepEqual([got[0]!.topic, got[0]!.payload, got[0]!.qos], [topic, 'gone', 1]);
      if (v === 5) {
        assert.equal(got[0]!.packet.properties?.contentType, 'text/plain');
        assert.deepEqual({ ...got[0]!.packet.properties?.userProperties }, { why: 'killed' });
      }
      await waitFor(() => env.b.counters.willsPublished === willsBefore + 1, 'willsPublished counted');
    });
  }
});

// ---------------------------------------------------------------- faults

for (const sync of ['none', 'batch'] as const) describe(`[workers] a worker that throws or exits is restarted; only its own clients are disconnected (durability.sync ${sync})`, () => {
  const env = new WorkersEnv();
  before(() => env.start({ ...TWO_WORKERS, durability: { sync } }));
  after(() => env.close());
  // In memory the dead worker's sessions are lost; a durable node reads them back.
  const durable = sync !== 'none';

  /** A client that records what it receives and whether its connection closed. */
  interface Tracked { name: string; worker: number; c: MqttClient; got: string[]; closed: boolean }
  const tracked = async (worker: number, transport: Transport, v: 4 | 5, filter: string, extra: IClientOptions = {}): Promise<Tracked> => {
    const c = await env.fresh(worker, v, transport, extra);
    const t: Tracked = { name: `${transport} v${v === 5 ? '5' : '3.1.1'} on worker ${worker}`, worker, c, got: [], closed: false };
    c.on('message', (_topic, payload) => t.got.push(payload.toString()));
    c.on('close', () => {
      t.closed = true;
    });
    await c.subscribeAsync(filter, { qos: 1 });
    return t;
  };

  /** `from` publishes a QoS 1 message that every client in `to` must receive. */
  const exchange = async (from: Tracked, to: Tracked[], topic: string, payload: string): Promise<void> => {
    await from.c.publishAsync(topic, payload, { qos: 1 });
    for (const t of to) await waitFor(() => t.got.includes(payload), `${payload} from ${from.name} at ${t.name}`);
  };

  for (const { how, w } of [{ how: 'throw', w: 1 }, { how: 'exit', w: 0 }] as const) {
    test(`[workers] injectFault(${w}, '${how}'): worker ${w}'s TCP and WebSocket clients are closed, worker ${1 - w}'s keep working, the worker restarts and takes clients again; restarts and lost sessions counted`, { timeout: 30_000 }, async () => {
      const b = env.b;
      const pool = b.node.pool;
      assert.ok(pool, 'a worker-threaded node');
      const o = 1 - w;
      const base = uid(`fault-${how}`);
      const filter = `${base}/#`;
      const mk = (worker: number): Promise<Tracked[]> => Promise.all([
        tracked(worker, 'tcp', 5, filter, persistentOpts(5)),
        tracked(worker, 'tcp', 4, filter),
        tracked(worker, 'ws', 5, filter, persistentOpts(5)),
        tracked(worker, 'ws', 4, filter),
      ]);
      const victims = await mk(w);
      const survivors = await mk(o);
      for (const t of [...victims, ...survivors]) assert.equal(await workerOfClient(b, t.c.options.clientId!), t.worker, t.name);
      // An offline persistent session on worker w as well.
      const offlineId = uid('offline');
      const off = (await env.on(w, { clientId: offlineId, protocolVersion: 5, ...persistentOpts(5) })).client;
      await off.subscribeAsync(filter, { qos: 1 });
      await off.endAsync();
      await waitFor(async () => (await b.session(offlineId))?.connected === false, 'the offline session');
      // Traffic across both workers works before the fault.
      await exchange(survivors[0]!, [...victims, ...survivors], `${base}/before`, 'before');

      const pre = await stats(b);
      const held = pre.workers[w]!.sessions;
      assert.ok(held >= victims.length + 1, `worker ${w} holds ${held} sessions`);
      assert.equal(pre.workers[w]!.restarts, 0);

      pool.injectFault(w, how);
      await within(Promise.all(victims.map((t) => waitFor(() => t.closed, `${t.name} closed`, 5000))), 6000, `worker ${w}'s clients closed`);
      await within(pool.whenRunning(w, 1), 10_000, `worker ${w} running again after one restart`);
      for (const t of survivors) {
        assert.equal(t.closed, false, `${t.name} still open`);
        assert.equal(t.c.connected, true, `${t.name} still connected`);
      }
      // The surviving worker's clients still talk to each other (TCP ↔ WebSocket).
      await exchange(survivors[0]!, survivors, `${base}/tcp-after-crash`, 'tcp after crash');
      await exchange(survivors[2]!, survivors, `${base}/ws-after-crash`, 'ws after crash');

      const post = await stats(b);
      assert.ok(post.workerRestarts >= 1, `workerRestarts ${post.workerRestarts}`);
      assert.equal(post.workers[w]!.restarts, 1, `worker ${w} restarted once`);
      assert.equal(post.workers[o]!.restarts, pre.workers[o]!.restarts, `worker ${o} not restarted by this fault`);
      assert.equal(post.workerRestarts, pre.workerRestarts + 1, 'one more restart on the node');
      assert.equal(post.workers[w]!.state, 'running');
      const exited = b.logs.map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((l) => l['msg'] === 'worker.exited' && l['worker'] === w);
      assert.equal(exited.length, 1, `one worker.exited log line for worker ${w}`);
      if (durable) {
        assert.equal(post.sessionsLostOnRestart, pre.sessionsLostOnRestart, 'nothing lost on a durable node');
        assert.ok(Number(exited[0]!['sessions_to_recover']) >= held, `logged sessions_to_recover ${String(exited[0]!['sessions_to_recover'])}`);
      } else {
        assert.ok(post.sessionsLostOnRestart - pre.sessionsLostOnRestart >= held,
          `sessionsLostOnRestart grew by ${post.sessionsLostOnRestart - pre.sessionsLostOnRestart}, worker ${w} held ${held}`);
        assert.ok(Number(exited[0]!['sessions_lost']) >= held, `logged sessions_lost ${String(exited[0]!['sessions_lost'])}`);
      }

      // New clients land on the restarted worker and exchange messages with the other worker.
      const fresh = await mk(w);
      await exchange(survivors[0]!, [...fresh, ...survivors], `${base}/to-restarted`, 'to the restarted worker');
      await exchange(fresh[0]!, [...fresh, ...survivors], `${base}/from-restarted-tcp`, 'from the restarted worker (tcp)');
      await exchange(fresh[2]!, [...fresh, ...survivors], `${base}/from-restarted-ws`, 'from the restarted worker (ws)');
      // In memory the sessions of the dead worker are gone: the offline one does not come
      // back. On a durable node it does, with its subscription, from the other worker too.
      const back = await env.on(o, { clientId: offlineId, protocolVersion: 5, ...persistentOpts(5) });
      assert.equal(back.connack.sessionPresent, durable, durable ? 'the dead worker\'s session was read back from the store' : 'a session held by the dead worker is lost');
      if (durable) {
        const got: string[] = [];
        back.client.on('message', (_t, p) => got.push(p.toString()));
        await survivors[0]!.c.publishAsync(`${base}/after-recovery`, 'to the recovered session', { qos: 1 });
        await waitFor(() => got.includes('to the recovered session'), 'the recovered session\'s subscription routes');
      }
      for (const t of survivors) assert.equal(t.closed, false, `${t.name} still open at the end`);
    });
  }
});

// ---------------------------------------------------------------- stats

describe('[workers] GET /api/v1/stats adds the workers up', () => {
  const env = new WorkersEnv();
  before(() => env.start(TWO_WORKERS));
  after(() => env.close());

  test('[workers] after a known workload: totals and workers[i].connections / subscriptions / messagesReceived / messagesSent agree', T, async () => {
    const b = env.b;
    const base = uid('stats');
    // Worker 0: a subscriber with 2 filters and a publisher; worker 1: a subscriber with 1 filter and a publisher.
    const s0 = await env.fresh(0, 5);
    const got0 = inbox(s0);
    await s0.subscribeAsync([`${base}/a/#`, `${base}/b/#`], { qos: 1 });
    const s1 = await env.fresh(1, 4);
    const got1 = inbox(s1);
    await s1.subscribeAsync(`${base}/#`, { qos: 1 });
    const p0 = await env.fresh(0, 4);
    const p1 = await env.fresh(1, 5);
    for (let i = 0; i < 10; i++) await p0.publishAsync(`${base}/a/x`, `a${i}`, { qos: 1 });
    for (let i = 0; i < 7; i++) await p1.publishAsync(`${base}/b/y`, `b${i}`, { qos: 1 });
    for (let i = 0; i < 3; i++) await p1.publishAsync(`${base}/c`, `c${i}`, { qos: 0 });
    await waitFor(() => got0.length === 17 && got1.length === 20, 'every delivery');
    await expectNoMore(got0, 100, 'worker 0 subscriber');
    assert.equal(got1.length, 20);

    const want = {
      connections: [2, 2], subscriptions: [2, 1], messagesReceived: [10, 10], messagesSent: [17, 20],
    } as const;
    let s: Stats | undefined;
    const agrees = (x: Stats): boolean => Object.entries(want).every(([k, per]) =>
      x.workers.map((wk) => wk[k as keyof typeof want]).join() === per.join());
    // Counters of another thread settle after the wire events seen here: poll.
    try {
      await waitFor(async () => agrees((s = await stats(b))), 'per-worker stats');
    } catch (e) {
      assert.fail(`${String(e)}: ${JSON.stringify(s?.workers)}`);
    }
    assert.ok(s);
    assert.equal(s.workers.length, 2);
    for (const [k, per] of Object.entries(want) as [keyof typeof want, readonly number[]][]) {
      assert.deepEqual(s.workers.map((wk) => wk[k]), per, `workers[i].${k}`);
      const sum: number = s.workers.reduce((n: number, wk) => n + wk[k], 0);
      assert.equal(s[k], sum, `${k}: total ${s[k]} = sum of the workers ${sum}`);
      assert.equal(sum, per[0]! + per[1]!);
    }
    assert.equal(s.workerRestarts, 0);
    assert.equal(s.sessionsLostOnRestart, 0);
  });
});

describe('[workers] the replication thread exits: the node cannot go on and says so', () => {
  test('[workers] injectReplicatorFault(): onFatal fires naming the replication thread (the CLI then stops the node, exit 1)', { timeout: 20_000 }, async () => {
    const env = new BrokerEnv();
    await env.start({ node: { workers: 2 } });
    try {
      const pool = env.b.node.pool;
      assert.ok(pool, 'a worker-threaded node');
      const fatal = new Promise<string>((resolve) => env.b.node.onFatal(resolve));
      pool.injectReplicatorFault();
      let timer: NodeJS.Timeout | undefined;
      const reason = await Promise.race([fatal, new Promise<string>((_, reject) => (timer = setTimeout(() => reject(new Error('no onFatal in 5 s')), 5000)))]);
      clearTimeout(timer);
      assert.match(reason, /the replication thread exited \(code 3\)/);
      assert.ok(env.b.logs.some((l) => l.includes('"replicator.exited"')), 'logged');
    } finally {
      await env.close();
    }
  });
});
