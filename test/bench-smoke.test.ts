// Smoke runs of the TypeScript load generator (bench/dist/cli.js) against an in-process
// fleetmq: tiny sizes, 1-second windows. Checks that the outputs are right (the contract of
// docs/bench-format.md, counts that add up, phases in order), never performance.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { freePort, startBroker, type TestBroker } from './helpers/broker.js';
import { killRunning, spawnBounded, type Run } from './helpers/process.js';
import { tempDir } from './helpers/tmp.js';
import {
  PHASES, assertAttemptsAddUp, assertProgressFields, percentilesOrdered, type BenchEvent, type BenchResultBase,
} from './helpers/bench-result.js';

const CLI = fileURLToPath(new URL('../../bench/dist/cli.js', import.meta.url));
const tmp = tempDir('fleetmq-bench-smoke-');
let broker: TestBroker;
let runs = 0;

before(async () => {
  broker = await startBroker();
});
after(async () => {
  killRunning();
  await broker.stop();
});

type Event = BenchEvent;
type Result = BenchResultBase;

interface BenchRun extends Run {
  result: Result;
  events: Event[];
}

/** Runs the generator (JSON progress, result file), bounded in time. */
async function bench(args: string[], timeoutMs = 20_000): Promise<BenchRun> {
  const file = tmp.file(`r${++runs}.json`);
  const run = await spawnBounded(process.execPath, [CLI, ...args, '--progress', 'json', '--json', file], { timeoutMs }).done;
  assert.equal(run.signal, null, `bench was killed (${run.signal}): ${run.stderr}`);
  const lines = run.stdout.trim().split('\n');
  const result = JSON.parse(lines[lines.length - 1]!) as Result;
  assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), result, 'the --json file holds the stdout result');
  const events = run.stderr
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      try {
        return JSON.parse(l) as Event;
      } catch {
        assert.fail(`stderr line is not JSON: ${l}`);
      }
    });
  return { ...run, result, events };
}

const base = (): string[] => ['-h', '127.0.0.1', '-p', String(broker.port), '-i', '0', '--duration', '1', '--warmup', '0.2', '--drain', '1'];

function assertContract(r: Result, scenario: string): void {
  assert.equal(r.tool, 'fleetmq-bench');
  assert.equal(r.version, 1);
  assert.equal(r.scenario, scenario);
  assert.equal(typeof r.params, 'object');
  assert.equal(r.params['host'], '127.0.0.1');
  assert.equal(typeof r.params['port'], 'number');
  assert.ok([3, 4, 5].includes(r.params['V'] as number));
  assert.ok(!Number.isNaN(Date.parse(r.started_at)), 'started_at is ISO-8601');
  assert.equal(typeof r.measure_s, 'number');
  for (const k of ['attempted', 'connected', 'refused', 'failed'] as const) assert.equal(typeof r.connections[k], 'number', `connections.${k}`);
  for (const k of ['sent', 'received', 'expected', 'lost'] as const) assert.equal(typeof r.messages[k], 'number', `messages.${k}`);
  for (const k of ['sent_per_s', 'received_per_s'] as const) assert.equal(typeof r.rates[k], 'number', `rates.${k}`);
  for (const k of ['count', 'min', 'mean', 'p50', 'p90', 'p99', 'p999', 'max'] as const) assert.equal(typeof r.latency_us[k], 'number', `latency_us.${k}`);
  for (const k of ['user_s', 'system_s', 'us_per_msg'] as const) assert.equal(typeof r.generator_cpu[k], 'number', `generator_cpu.${k}`);
  assert.ok(Array.isArray(r.errors));
  assertAttemptsAddUp(r.connections);
  const l = r.latency_us;
  if (l.count > 0) assert.ok(percentilesOrdered(l), `percentiles ordered: ${JSON.stringify(l)}`);
}

function assertPhases(events: Event[], expected = PHASES): void {
  const phases = events.filter((e) => e.event === 'phase');
  assert.deepEqual(phases.map((e) => e.phase), expected);
  for (let k = 1; k < phases.length; k++) assert.ok(phases[k]!.t! >= phases[k - 1]!.t!, 'phase times ascend');
}

function assertProgress(events: Event[]): void {
  const p = events.filter((e) => e.event === 'progress');
  assert.ok(p.length >= 1, 'at least one progress event');
  for (const e of p) assertProgressFields(e);
}

/** A clean end-to-end run at a low fixed rate: nothing lost, counts consistent. */
function assertDelivered(r: Result, connections: number, perSent: number, maxSent: number): void {
  assert.equal(r.connections.attempted, connections);
  assert.equal(r.connections.connected, connections, JSON.stringify(r.errors));
  assert.equal(r.connections.dropped, 0);
  assert.ok(r.measure_s >= 0.9 && r.measure_s <= 1.5, `measure_s ${r.measure_s}`);
  assert.ok(r.messages.sent > 0, 'something was sent');
  assert.ok(r.messages.sent <= maxSent, `sent ${r.messages.sent} exceeds what -I allows (${maxSent})`);
  assert.equal(r.messages.expected, r.messages.sent * perSent);
  assert.ok(r.messages.received <= r.messages.expected);
  assert.equal(r.messages.lost, r.messages.expected - r.messages.received);
  assert.equal(r.messages.lost, 0, `lost at a low rate on loopback: ${JSON.stringify(r.errors)}`);
  assert.equal(r.latency_us.count, r.messages.received, 'one latency per received message');
  assert.ok(r.latency_us.max < 5_000_000, 'latencies are plausible');
  assert.ok(Math.abs(r.rates.received_per_s - r.messages.received / r.measure_s) <= 0.5 + r.messages.received * 0.001);
  assert.deepEqual(r.errors, []);
}

describe('fleetmq-bench scenarios against fleetmq', () => {
  test('p2p QoS 0', async () => {
    const { code, result: r, events } = await bench(['p2p', ...base(), '-c', '3', '-I', '50', '-q', '0']);
    assert.equal(code, 0);
    assertContract(r, 'p2p');
    assertPhases(events);
    assertProgress(events);
    // 3 publishers every 50 ms for 1 s: at most 3 * 21 in the window.
    assertDelivered(r, 6, 1, 3 * 21);
    assert.equal(r.params['c'], 3);
    assert.ok(r.generator_cpu.us_per_msg > 0);
  });

  test('p2p QoS 1, MQTT 3.1.1, two processes', async () => {
    const { code, result: r, events } = await bench(['p2p', ...base(), '-c', '4', '-I', '50', '-q', '1', '-V', '4', '--max-per-proc', '4']);
    assert.equal(code, 0, JSON.stringify(r.errors));
    assertContract(r, 'p2p');
    assertPhases(events);
    assert.equal(r.params['processes'], 2);
    assertDelivered(r, 8, 1, 4 * 21);
  });

  test('p2p QoS 2 over WebSocket, MQTT 3.1 (MQIsdp)', async () => {
    const { code, result: r, events } = await bench(['p2p', ...base(), '-p', String(broker.wsPort), '--ws', '-c', '2', '-I', '50', '-q', '2', '-V', '3', '--shortids', '--prefix', 'w']);
    assert.equal(code, 0, JSON.stringify(r.errors));
    assertContract(r, 'p2p');
    assertPhases(events);
    assertDelivered(r, 4, 1, 2 * 21);
  });

  test('fanout: every message reaches every subscriber', async () => {
    const { code, result: r, events } = await bench(['fanout', ...base(), '--pubs', '2', '--subs', '4', '-I', '50', '-V', '4']);
    assert.equal(code, 0, JSON.stringify(r.errors));
    assertContract(r, 'fanout');
    assertPhases(events);
    assertDelivered(r, 6, 4, 2 * 21);
    assert.equal(r.messages.received, r.messages.sent * 4);
  });

  test('fanin-shared: each message reaches one member of the group', async () => {
    const { code, result: r, events } = await bench(['fanin-shared', ...base(), '--pubs', '4', '--subs', '2', '-I', '50', '-q', '1']);
    assert.equal(code, 0, JSON.stringify(r.errors));
    assertContract(r, 'fanin-shared');
    assertPhases(events);
    assertDelivered(r, 6, 1, 4 * 21);
  });

  test('wildcard-scale', async () => {
    const { code, result: r, events } = await bench(['wildcard-scale', ...base(), '-c', '3', '-I', '50']);
    assert.equal(code, 0, JSON.stringify(r.errors));
    assertContract(r, 'wildcard-scale');
    assertPhases(events);
    assertDelivered(r, 6, 1, 3 * 21);
  });

  test('conn holds connections and reports the broker RSS per connection', async () => {
    const { code, result: r, events } = await bench(['conn', ...base(), '-c', '20', '--warmup', '0', '--broker-pid', String(process.pid)]);
    assert.equal(code, 0, JSON.stringify(r.errors));
    assertContract(r, 'conn');
    assertPhases(events);
    assert.deepEqual(r.connections, { attempted: 20, connected: 20, refused: 0, failed: 0, dropped: 0 });
    assert.deepEqual(r.messages, { sent: 0, received: 0, expected: 0, lost: 0, skipped: 0 });
    assert.equal(r.latency_us.count, 0);
    assert.equal(r.params['broker_pid'], process.pid);
    assert.equal(typeof r.broker_rss_per_conn_bytes, 'number');
    assert.ok(r.measure_s >= 0.9);
  });

  test('sub + pub: the subscriber receives exactly what the publisher sent (-L)', async () => {
    const subFile = tmp.file('sub.json');
    const sub = spawnBounded(process.execPath, [
      CLI, 'sub', ...base(), '-c', '2', '-t', 'ps/%i', '-q', '1', '--payload-hdrs', 'ts', '--warmup', '0', '--duration', '3', '--drain', '0.5',
      '--progress', 'json', '--json', subFile,
    ], { timeoutMs: 20_000 });
    // Publish once the subscribers are in their measured window.
    await new Promise<void>((resolve, reject) => {
      let buf = '';
      const onData = (d: Buffer): void => {
        buf += d.toString();
        if (buf.includes('"phase":"measure"')) {
          sub.proc.stderr!.off('data', onData);
          resolve();
        }
      };
      sub.proc.stderr!.on('data', onData);
      sub.proc.once('close', () => reject(new Error(`sub ended early: ${buf}`)));
    });
    const pub = await bench(['pub', ...base(), '-c', '2', '-t', 'ps/%i', '-q', '1', '--payload-hdrs', 'ts', '-I', '20', '-L', '30', '--warmup', '0', '--duration', '3']);
    assert.equal(pub.code, 0, JSON.stringify(pub.result.errors));
    assertContract(pub.result, 'pub');
    assertPhases(pub.events);
    assert.equal(pub.result.messages.sent, 30, '-L 30 with no warm-up: exactly 30 measured');
    assert.ok(pub.result.measure_s < 2.5, 'the limit ends the window early');
    const s = await sub.done;
    assert.equal(s.code, 0, s.stderr);
    const r = JSON.parse(readFileSync(subFile, 'utf8')) as Result;
    assertContract(r, 'sub');
    assert.equal(r.messages.received, 30);
    assert.equal(r.latency_us.count, 30);
    assert.deepEqual(r.errors, []);
  });
});

describe('fleetmq-bench failures are reported, never a hang', () => {
  test('refused connections (nothing listens) end the run at once with exit 1', async () => {
    const port = await freePort();
    const t0 = Date.now();
    const { code, result: r, events } = await bench(['p2p', ...base(), '-p', String(port), '-c', '3']);
    assert.equal(code, 1);
    assert.ok(Date.now() - t0 < 10_000);
    assertContract(r, 'p2p');
    assert.equal(r.connections.attempted, 6);
    assert.equal(r.connections.connected, 0);
    assert.equal(r.connections.refused + r.connections.failed, 6);
    assert.equal(r.connections.refused, 6, 'ECONNREFUSED counts as refused');
    assert.ok(r.errors.some((e) => e.includes('ECONNREFUSED')), JSON.stringify(r.errors));
    assert.ok(r.errors.includes('no connection succeeded'));
    assertPhases(events, ['connect', 'done']);
    assert.ok(events.some((e) => e.event === 'error' && String(e['message']).includes('ECONNREFUSED')));
  });

  const usage: Array<[string[], string]> = [
    [['p2p', '--bogus'], 'unknown flag --bogus'],
    [['p2p', '-q', '3'], '-q: expected an integer 0..2, got 3'],
    [['p2p', '-c'], '-c: missing value'],
    [['p2p', '-t', 'a/b'], '-t: not used by p2p'],
    [['pub', '-c', '1'], '-t: required for pub'],
    [['fanout', '-c', '3'], '-c: not used by fanout'],
    [['p2p', '--progress', 'xml'], '--progress: expected json or text'],
    [['p2p', '-s', '8'], '-s: must be at least 12'],
    [['p2p', '--duration', '0'], '--duration:'],
    [['bogus'], 'unknown command "bogus"'],
    [[], 'no command given'],
  ];
  test('a bad flag or value exits 2 naming it', async () => {
    await Promise.all(
      usage.map(async ([args, msg]) => {
        const r = await spawnBounded(process.execPath, [CLI, ...args], { timeoutMs: 10_000 }).done;
        assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
        assert.ok(r.stderr.includes(msg), `${args.join(' ')}: stderr lacks ${JSON.stringify(msg)}: ${r.stderr}`);
        assert.equal(r.stdout, '');
      }),
    );
  });

  test('--help prints the flags', async () => {
    const r = await spawnBounded(process.execPath, [CLI, '--help'], { timeoutMs: 10_000 }).done;
    assert.equal(r.code, 0);
    for (const f of ['-I', '-L', '-F', '--window', '--duration', 'fanin-shared', 'wildcard-scale']) assert.ok(r.stdout.includes(f), f);
  });
});
