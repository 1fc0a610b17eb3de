// Interoperability with the Debian mosquitto clients (mosquitto_pub / mosquitto_sub) for
// MQTT 3.1, 3.1.1 and 5.0: QoS round trips, retained messages, username/password, wills,
// 5.0 user properties and the example configuration's subscription deny list.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startBroker, waitFor, type TestBroker } from './helpers/broker.js';
import { fleetmqPasswd } from './helpers/cli.js';
import { trackClients } from './helpers/clients.js';
import { mosquittoPub, mosquittoSub, type Proc, type Run } from './helpers/mosquitto.js';
import { killRunning } from './helpers/process.js';
import { tempDir } from './helpers/tmp.js';

const EXAMPLE = fileURLToPath(new URL('../../deploy/fleetmq.example.json', import.meta.url));
const T = { timeout: 20_000 };

type Version = 'mqttv31' | 'mqttv311' | 'mqttv5';
const VERSIONS: readonly Version[] = ['mqttv31', 'mqttv311', 'mqttv5'];
/** Short names: MQTT 3.1 client identifiers are at most 23 characters. */
const SHORT: Record<Version, string> = { mqttv31: 'v31', mqttv311: 'v311', mqttv5: 'v5' };

const tmp = tempDir('fleetmq-mosq-');

// ---------------------------------------------------------------- helpers

const clients = trackClients();
after(killRunning);

/** Bound on each mosquitto client run. */
const TOOL_MS = 10_000;

const lines = (s: string): string[] => s.split('\n').filter((l) => l !== '');

/** mosquitto_pub to completion; asserts exit 0 unless `expectFail`. */
async function pub(b: TestBroker, v: Version, args: string[], expectFail = false): Promise<Run> {
  const r = await mosquittoPub(b.port, ['-V', v, ...args], TOOL_MS);
  if (!expectFail) assert.equal(r.code, 0, `mosquitto_pub ${args.join(' ')}: ${r.stderr}`);
  return r;
}

/** Starts mosquitto_sub (bounded by -W) and waits until the broker holds its subscription. */
async function sub(b: TestBroker, v: Version, id: string, filter: string, args: string[]): Promise<Proc> {
  const p = mosquittoSub(b.port, ['-V', v, '-i', id, '-t', filter, '-W', '8', ...args], TOOL_MS);
  let exited: Run | null = null;
  void p.done.then((r) => (exited = r));
  await waitFor(async () => exited !== null || (await b.session(id))?.subscriptions.some((x) => x.key === filter) === true,
    `mosquitto_sub ${id} subscribed to ${filter}`, 5000);
  assert.equal(exited, null, `mosquitto_sub ${id} exited early: ${JSON.stringify(exited)}`);
  return p;
}

const FMT = '%t|%p|%q|%r';

// ---------------------------------------------------------------- anonymous broker, example deny list

describe('mosquitto_pub / mosquitto_sub', () => {
  let b: TestBroker;
  before(async () => {
    const example = JSON.parse(readFileSync(EXAMPLE, 'utf8')) as { mqtt: { deny_subscribe: string[] } };
    assert.deepEqual(example.mqtt.deny_subscribe, ['test/nosubscribe']);
    b = await startBroker({ mqtt: { deny_subscribe: example.mqtt.deny_subscribe } });
  });
  after(async () => {
    await b?.stop();
  });

  const qosTag: Record<Version, string> = {
    mqttv31: '[v3.1 §3.8]', mqttv311: '[v3.1.1 MQTT-3.8.4-6]', mqttv5: '[v5 MQTT-3.8.4-8]',
  };
  for (const v of VERSIONS) {
    test(`${qosTag[v]} -V ${v}: QoS 0/1/2 round trips, delivered at min(published, granted) QoS`, T, async () => {
      const s = SHORT[v];
      const topic = `mosq/${s}/qos`;
      const s2 = await sub(b, v, `rt2-${s}`, topic, ['-q', '2', '-C', '3', '-F', FMT]);
      const s1 = await sub(b, v, `rt1-${s}`, topic, ['-q', '1', '-C', '3', '-F', FMT]);
      for (const q of ['0', '1', '2']) await pub(b, v, ['-i', `p-${s}-${q}`, '-q', q, '-t', topic, '-m', `m${q}`]);
      const [r2, r1] = await Promise.all([s2.done, s1.done]);
      // Three mosquitto_pub processes are three publishers: MQTT orders messages per
      // publisher only, and with worker threads a QoS 0 one (no acknowledgement before
      // mosquitto_pub exits) may still be on its way when the next publisher's arrives.
      assert.equal(r2.code, 0, r2.stderr);
      assert.deepEqual(lines(r2.stdout).sort(), [`${topic}|m0|0|0`, `${topic}|m1|1|0`, `${topic}|m2|2|0`]);
      assert.equal(r1.code, 0, r1.stderr);
      assert.deepEqual(lines(r1.stdout).sort(), [`${topic}|m0|0|0`, `${topic}|m1|1|0`, `${topic}|m2|1|0`]);
    });
  }

  const retainTag: Record<Version, string> = {
    mqttv31: '[v3.1 §3.3]', mqttv311: '[v3.1.1 MQTT-3.3.1-5/6/8/9]', mqttv5: '[v5 MQTT-3.3.1-5/9/12]',
  };
  for (const v of VERSIONS) {
    test(`${retainTag[v]} -V ${v}: a retained message (-r) reaches a later mosquitto_sub with RETAIN 1; live delivery has RETAIN 0`, T, async () => {
      const s = SHORT[v];
      const topic = `mosq/${s}/retained`;
      const live = await sub(b, v, `rl-${s}`, topic, ['-q', '1', '-C', '1', '-F', FMT]);
      await pub(b, v, ['-i', `rp-${s}`, '-r', '-q', '1', '-t', topic, '-m', `kept ${s}`]);
      const rl = await live.done;
      assert.deepEqual(lines(rl.stdout), [`${topic}|kept ${s}|1|0`]);
      const later = await mosquittoSub(b.port, ['-V', v, '-i', `rs-${s}`,
        '-t', topic, '-q', '1', '-C', '1', '-W', '5', '-F', FMT], TOOL_MS).done;
      assert.equal(later.code, 0, later.stderr);
      assert.deepEqual(lines(later.stdout), [`${topic}|kept ${s}|1|1`]);
      // An empty retained message clears it [MQTT-3.3.1-10/11 v3.1.1, 3.3.1-6/7 v5].
      await pub(b, v, ['-i', `rc-${s}`, '-r', '-n', '-t', topic]);
      await waitFor(async () => (await b.retained(topic)).length === 0, 'retained message cleared');
    });
  }

  const willTag: Record<Version, string> = {
    mqttv31: '[v3.1 §3.1]', mqttv311: '[v3.1.1 MQTT-3.1.2-8/10]', mqttv5: '[v5 MQTT-3.1.2-8/10]',
  };
  for (const v of VERSIONS) {
    test(`${willTag[v]} -V ${v}: the will of a client killed with SIGKILL reaches mosquitto_sub; a clean exit sends none`, T, async () => {
      const s = SHORT[v];
      const willTopic = `mosq/${s}/will`;
      const watcher = await sub(b, v, `ww-${s}`, willTopic, ['-q', '1', '-C', '1', '-F', FMT]);
      const wills = b.counters.willsPublished;
      // A clean exit (DISCONNECT) discards the will.
      await pub(b, v, ['-i', `wc-${s}`, '-t', `mosq/${s}/other`, '-m', 'x',
        '--will-topic', willTopic, '--will-payload', 'clean exit', '--will-qos', '1']);
      // A client that dies: its will is published.
      const doomed = await sub(b, v, `wd-${s}`, `mosq/${s}/idle`, ['--will-topic', willTopic, '--will-payload', `gone ${s}`, '--will-qos', '1']);
      assert.equal((await b.session(`wd-${s}`))?.conn?.willTopic, willTopic);
      doomed.proc.kill('SIGKILL');
      const w = await watcher.done;
      assert.equal(w.code, 0, w.stderr);
      assert.deepEqual(lines(w.stdout), [`${willTopic}|gone ${s}|1|0`]);
      assert.equal(b.counters.willsPublished - wills, 1);
      assert.equal((await doomed.done).signal, 'SIGKILL');
    });
  }

  test('[v5 MQTT-3.3.2-17] user properties (-D publish user-property) reach mosquitto_sub (-F %P) and MQTT.js unaltered', T, async () => {
    const topic = 'mosq/v5/props';
    const mq = await clients.mqtt(b.url, { protocolVersion: 5, clientId: 'props-mqttjs', connectTimeout: 5000 }, false);
    const got: { payload: string; user: unknown }[] = [];
    mq.on('message', (_t, payload, packet) => got.push({ payload: payload.toString(), user: { ...packet.properties?.userProperties } }));
    await mq.subscribeAsync(topic, { qos: 1 });
    const ms = await sub(b, 'mqttv5', 'props-sub', topic, ['-q', '1', '-C', '1', '-F', '%P|%p']);
    await pub(b, 'mqttv5', ['-i', 'props-pub', '-q', '1', '-t', topic, '-m', 'with props',
      '-D', 'publish', 'user-property', 'site', 'plant 7',
      '-D', 'publish', 'user-property', 'tag', 'a',
      '-D', 'publish', 'user-property', 'tag', 'b']);
    const r = await ms.done;
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(lines(r.stdout), ['site:plant 7 tag:a tag:b|with props']);
    await waitFor(() => got.length === 1, 'MQTT.js message');
    assert.deepEqual(got[0], { payload: 'with props', user: { site: 'plant 7', tag: ['a', 'b'] } });
    await mq.endAsync();
  });

  test('[v5 MQTT-3.3.2-18] the order of interleaved user properties (a, b, a) is kept', T, async () => {
    const topic = 'mosq/v5/props-order';
    const ms = await sub(b, 'mqttv5', 'order-sub', topic, ['-C', '1', '-F', '%P']);
    await pub(b, 'mqttv5', ['-i', 'order-pub', '-t', topic, '-m', 'x',
      '-D', 'publish', 'user-property', 'a', '1', '-D', 'publish', 'user-property', 'b', '2',
      '-D', 'publish', 'user-property', 'a', '3']);
    const r = await ms.done;
    assert.deepEqual(lines(r.stdout), ['a:1 b:2 a:3']);
  });

  const denyTag: Record<Version, string> = {
    mqttv31: '[v3.1 §3.9]', mqttv311: '[v3.1.1 MQTT-3.8.4-5]', mqttv5: '[v5 MQTT-3.8.4-6]',
  };
  for (const v of VERSIONS) {
    test(`${denyTag[v]} -V ${v}: mosquitto_sub on test/nosubscribe (example deny list) is refused`, T, async () => {
      const s = SHORT[v];
      const started = Date.now();
      const r = await mosquittoSub(b.port, ['-V', v, '-i', `deny-${s}`,
        '-t', 'test/nosubscribe', '-W', '8'], TOOL_MS).done;
      // mosquitto_sub reports the SUBACK failure and disconnects at once (well before -W).
      assert.match(r.stderr, /All subscription requests were denied/);
      assert.equal(r.stdout, '');
      assert.ok(Date.now() - started < 7000, 'exited on the refusal, not the -W timeout');
      await waitFor(async () => (await b.session(`deny-${s}`)) === null, 'refused subscriber gone');
      // A permitted filter next to it still works.
      const ok = await sub(b, v, `deny-ok-${s}`, `test/${s}/allowed`, ['-C', '1', '-F', FMT]);
      await pub(b, v, ['-t', `test/${s}/allowed`, '-m', 'fine']);
      assert.deepEqual(lines((await ok.done).stdout), [`test/${s}/allowed|fine|0|0`]);
    });
  }
});

// ---------------------------------------------------------------- password file

describe('mosquitto clients with -u / -P against a password file', () => {
  let b: TestBroker;
  before(async () => {
    const file = tmp.file('passwd');
    assert.equal((await fleetmqPasswd(['-b', 'mosq-pw', file, 'mosq'])).code, 0);
    b = await startBroker({ auth: { allow_anonymous: false, password_file: file } });
  });
  after(async () => {
    await b?.stop();
  });

  const tag: Record<Version, string> = {
    mqttv31: '[v3.1 §3.1]', mqttv311: '[v3.1.1 MQTT-3.2.2-5]', mqttv5: '[v5 MQTT-3.1.4-2]',
  };
  for (const v of VERSIONS) {
    test(`${tag[v]} -V ${v}: the right -u/-P logs in; a wrong password or none is refused`, T, async () => {
      const s = SHORT[v];
      const topic = `auth/${s}`;
      const failures = b.counters.authFailures;
      const ok = await sub(b, v, `au-${s}`, topic, ['-u', 'mosq', '-P', 'mosq-pw', '-q', '1', '-C', '1', '-F', FMT]);
      assert.equal((await b.session(`au-${s}`))?.conn?.username, 'mosq');
      await pub(b, v, ['-i', `ap-${s}`, '-u', 'mosq', '-P', 'mosq-pw', '-q', '1', '-t', topic, '-m', 'authed']);
      assert.deepEqual(lines((await ok.done).stdout), [`${topic}|authed|1|0`]);

      const bad = await pub(b, v, ['-i', `ab-${s}`, '-u', 'mosq', '-P', 'wrong', '-t', topic, '-m', 'x'], true);
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /bad user ?name or password/i);
      const none = await pub(b, v, ['-i', `an-${s}`, '-t', topic, '-m', 'x'], true);
      assert.notEqual(none.code, 0);
      assert.match(none.stderr, /not authori[sz]ed/i);
      assert.equal(b.counters.authFailures - failures, 2);
    });
  }
});
