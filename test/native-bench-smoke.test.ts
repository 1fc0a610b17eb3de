// Smoke runs of the C load generator (native-bench/fleetmq-nbench) against an in-process
// fleetmq: every scenario for about a second at tiny sizes, checking the result JSON of
// docs/bench-format.md (fields present, counts consistent, nothing lost at low fixed rates,
// one latency sample per counted message), the phase events in order, refused connections
// counted without a hang, and the flags it refuses (--ws, -S). Performance is not asserted.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, startBroker, type TestBroker } from './helpers/broker.js';
import {
  PHASES, assertAttemptsAddUp, assertProgressFields, percentilesOrdered, type BenchEvent, type BenchResultBase,
  type LatencySummary,
} from './helpers/bench-result.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url)); // dist/test -> repo root
const NB_DIR = join(ROOT, 'native-bench');
const BIN = join(NB_DIR, 'fleetmq-nbench');
const T = { timeout: 20_000 };

interface Result extends BenchResultBase {
  connect_us: LatencySummary;
  broker_rss?: { before_bytes: number; after_bytes: number };
}
type Event = BenchEvent;
interface Run { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; result: Result | null; events: Event[]; ms: number }

let dir = '';
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'fleetmq-nbench-'));
  if (!existsSync(BIN)) {
    const r = spawnSync('make', ['-s', '-C', NB_DIR], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, `make -C native-bench failed:\n${r.stdout}${r.stderr}`);
  }
});
after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Runs the generator (asynchronously: the broker lives in this process); killed after `timeoutMs`. */
function nbench(args: string[], timeoutMs = 15_000): Promise<Run> {
  const t0 = Date.now();
  const proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs, killSignal: 'SIGKILL' });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    proc.once('error', reject);
    proc.once('close', (code, signal) => {
      const last = stdout.trim().split('\n').pop() ?? '';
      let result: Result | null = null;
      try {
        result = JSON.parse(last) as Result;
      } catch {
        result = null;
      }
      const events: Event[] = [];
      for (const l of stderr.split('\n')) {
        if (l.startsWith('{')) events.push(JSON.parse(l) as Event);
      }
      resolve({ code, signal, stdout, stderr, result, events, ms: Date.now() - t0 });
    });
  });
}

const base = (b: TestBroker, extra: string[]): string[] =>
  ['-h', '127.0.0.1', '-p', String(b.port), '-R', '1000', '--duration', '1', '--warmup', '0.3',
    '--drain', '2', '--progress', 'json', ...extra];

/** The contract's shape and the invariants every run must satisfy. */
function checkShape(r: Run, scenario: string): Result {
  assert.ok(r.result, `no result JSON on stdout's last line:\n${r.stdout}\n${r.stderr}`);
  const res = r.result;
  assert.equal(res.tool, 'fleetmq-nbench');
  assert.equal(res.version, 1);
  assert.equal(res.scenario, scenario);
  assert.ok(!Number.isNaN(Date.parse(res.started_at)), 'started_at is ISO-8601');
  assert.equal(typeof res.params['port'], 'number');
  assert.equal(typeof res.params['V'], 'number');
  for (const k of ['attempted', 'connected', 'refused', 'failed'] as const) assert.equal(typeof res.connections[k], 'number');
  for (const k of ['sent', 'received', 'expected', 'lost', 'skipped'] as const) assert.equal(typeof res.messages[k], 'number');
  for (const k of ['count', 'min', 'mean', 'p50', 'p90', 'p99', 'p999', 'max'] as const) {
    assert.equal(typeof res.latency_us[k], 'number');
    assert.equal(typeof res.connect_us[k], 'number');
  }
  assert.equal(res.connect_us.count, res.connections.connected, 'one connect time per connection');
  for (const k of ['user_s', 'system_s', 'us_per_msg'] as const) assert.ok(res.generator_cpu[k] >= 0, `generator_cpu.${k}`);
  assert.ok(Array.isArray(res.errors));
  assertAttemptsAddUp(res.connections);
  for (const l of [res.latency_us, res.connect_us]) {
    if (l.count === 0) continue;
    assert.ok(percentilesOrdered(l), `percentiles in order: ${JSON.stringify(l)}`);
    assert.ok(l.mean >= l.min && l.mean <= l.max);
  }
  assert.equal(res.messages.lost, Math.max(0, res.messages.expected - res.messages.received));
  if (res.measure_s > 0) {
    assert.ok(Math.abs(res.rates.sent_per_s - res.messages.sent / res.measure_s) < 1);
    assert.ok(Math.abs(res.rates.received_per_s - res.messages.received / res.measure_s) < 1);
  }
  // phase events: each once, in order, with non-decreasing times
  const phases = r.events.filter((e) => e.event === 'phase');
  assert.deepEqual(phases.map((e) => e.phase), PHASES, r.stderr);
  for (let i = 1; i < phases.length; i++) assert.ok((phases[i]!.t ?? -1) >= (phases[i - 1]!.t ?? 0));
  for (const p of r.events.filter((e) => e.event === 'progress')) assertProgressFields(p);
  return res;
}

/** A complete, loss-free run: all connected and subscribed, every expected message received. */
function checkClean(r: Run, scenario: string, clients: number, fan: number): Result {
  const res = checkShape(r, scenario);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(res.errors, [], r.stderr);
  assert.equal(res.connections.attempted, clients);
  assert.equal(res.connections.connected, clients);
  assert.equal(res.connections.dropped, 0);
  assert.ok(res.measure_s > 0.5 && res.measure_s < 1.5, `measure_s ${res.measure_s}`);
  assert.ok(res.messages.sent > 0, 'messages were sent in the measured window');
  assert.equal(res.messages.expected, res.messages.sent * fan);
  assert.equal(res.messages.received, res.messages.expected);
  assert.equal(res.messages.lost, 0);
  assert.equal(res.latency_us.count, res.messages.received, 'one latency sample per counted message');
  assert.ok(res.latency_us.min >= 0 && res.latency_us.max < 60_000_000);
  return res;
}

describe('native-bench (fleetmq-nbench) against an in-process fleetmq', () => {
  let b: TestBroker;
  before(async () => {
    b = await startBroker();
  });
  after(async () => {
    await b?.stop();
  });

  test('p2p, QoS 0, 3.1.1: contract fields, paced sends, nothing lost, --json FILE = stdout', T, async () => {
    const file = join(dir, 'p2p.json');
    const r = await nbench(['p2p', ...base(b, ['-c', '4', '-I', '20', '-q', '0', '-V', '4', '-s', '64', '--json', file])]);
    const res = checkClean(r, 'p2p', 8, 1);
    assert.equal(res.params['c'], 4);
    assert.equal(res.params['q'], 0);
    assert.equal(res.params['s'], 64);
    // -I 20 per publisher: never faster than 4 × 50 msg/s
    assert.ok(res.messages.sent <= 4 * 50 * res.measure_s + 8, `sent ${res.messages.sent} in ${res.measure_s} s`);
    assert.equal(readFileSync(file, 'utf8').trim(), r.stdout.trim().split('\n').pop());
    assert.ok(r.events.some((e) => e.event === 'progress'), 'a progress event once a second');
  });

  test('fanout, QoS 1, 5.0: expected = sent × subscribers', T, async () => {
    const r = await nbench(['fanout', ...base(b, ['--pubs', '2', '--subs', '5', '-I', '25', '-q', '1', '-V', '5'])]);
    const res = checkClean(r, 'fanout', 7, 5);
    assert.equal(res.params['pubs'], 2);
    assert.equal(res.params['subs'], 5);
  });

  test('fanin-shared, QoS 2, 5.0, two threads: each message reaches one member of the group', T, async () => {
    const r = await nbench(['fanin-shared', ...base(b, ['--pubs', '4', '--subs', '2', '-I', '25', '-q', '2', '-V', '5', '--threads', '2'])]);
    const res = checkClean(r, 'fanin-shared', 6, 1);
    assert.equal(res.params['workers'], 2);
    assert.equal(res.params['processes'], 1);
  });

  test('wildcard-scale, QoS 1, 3.1.1, unpaced with --window 5 and -L: stops at the limit, nothing lost', T, async () => {
    const r = await nbench(['wildcard-scale', ...base(b, ['-c', '3', '-I', '0', '--window', '5', '-F', '5', '-q', '1',
      '-L', '1500', '--warmup', '0', '--duration', '8'])]);
    const res = checkShape(r, 'wildcard-scale');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(res.errors, []);
    assert.equal(res.messages.sent, 1500, 'warmup 0: the whole -L budget is in the window');
    assert.equal(res.messages.received, 1500);
    assert.equal(res.latency_us.count, 1500);
    assert.ok(res.measure_s < 8, 'the window ended when the limit was reached');
  });

  test('p2p over worker processes (--max-per-proc 6): partial results merged', T, async () => {
    const r = await nbench(['p2p', ...base(b, ['-c', '5', '-I', '20', '-q', '1', '--max-per-proc', '6'])]);
    const res = checkClean(r, 'p2p', 10, 1);
    assert.ok((res.params['processes'] as number) >= 2, `processes ${String(res.params['processes'])}`);
  });

  test('pub with --payload-hdrs ts into sub: counts and latency across two generator processes', T, async () => {
    const subRun = nbench(['sub', ...base(b, ['-c', '3', '-t', 'smoke/ps/#', '--payload-hdrs', 'ts', '--warmup', '0', '--duration', '3.5'])]);
    await new Promise((r) => setTimeout(r, 700)); // the subscriptions are in place
    const pubRun = await nbench(['pub', ...base(b, ['-c', '2', '-t', 'smoke/ps/%i', '--payload-hdrs', 'ts', '-I', '20', '--warmup', '0'])]);
    const subRes = await subRun;
    const pub = checkShape(pubRun, 'pub');
    const sub = checkShape(subRes, 'sub');
    assert.equal(pubRun.code, 0, pubRun.stderr);
    assert.equal(subRes.code, 0, subRes.stderr);
    assert.ok(pub.messages.sent > 0);
    assert.equal(pub.messages.received, 0);
    assert.equal(sub.messages.received, pub.messages.sent * 3, 'each of 3 subscribers got every message');
    assert.equal(sub.latency_us.count, sub.messages.received);
  });

  test('conn with --broker-pid: connections held, broker RSS per connection reported', T, async () => {
    const r = await nbench(['conn', ...base(b, ['-c', '30', '-R', '2000', '--broker-pid', String(process.pid)])]);
    const res = checkShape(r, 'conn');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(res.connections.connected, 30);
    assert.deepEqual(res.messages, { sent: 0, received: 0, expected: 0, lost: 0, skipped: 0 });
    assert.equal(res.params['broker_pid'], process.pid);
    assert.ok(res.broker_rss && res.broker_rss.before_bytes > 0 && res.broker_rss.after_bytes > 0, JSON.stringify(res.broker_rss));
    assert.equal(typeof res.broker_rss_per_conn_bytes, 'number');
  });

  test('a port nobody listens on: refusals counted, errors reported, the run ends', T, async () => {
    const port = await freePort();
    const r = await nbench(['p2p', '-p', String(port), '-c', '3', '-R', '1000', '--duration', '5', '--progress', 'json']);
    const res = checkShape(r, 'p2p');
    assert.equal(r.code, 1, 'nothing connected: exit status 1');
    assert.equal(res.connections.attempted, 6);
    assert.equal(res.connections.refused, 6);
    assert.equal(res.connections.connected, 0);
    assert.equal(res.messages.sent, 0);
    assert.ok(res.errors.includes('no connection succeeded'), JSON.stringify(res.errors));
    assert.ok(res.errors.some((e) => /refused \(x6\)/i.test(e)), JSON.stringify(res.errors));
    assert.ok(r.events.some((e) => e.event === 'error' && /refused/i.test(e.message ?? '')));
    assert.ok(r.ms < 5000, `ended without waiting for --duration (${r.ms} ms)`);
  });

  test('--ws and -S are refused with exit status 2 and a clear message; so are bad command lines', T, async () => {
    for (const flag of ['--ws', '-S']) {
      const r = await nbench(['p2p', '-p', String(b.port), flag]);
      assert.equal(r.code, 2, flag);
      assert.match(r.stderr, /not supported by fleetmq-nbench/);
      assert.equal(r.stdout, '');
    }
    for (const args of [['nosuch'], ['p2p', '-t', 'x/%i'], ['pub', '-c', '1'], ['fanout', '-c', '3'], ['p2p', '-q', '3'],
      ['p2p', '-s', '8'], ['conn', '--window', '5'], ['p2p', '--bogus', '1']]) {
      const r = await nbench(args);
      assert.equal(r.code, 2, args.join(' '));
      assert.equal(r.stdout, '', args.join(' '));
    }
  });
});
