// Smoke test of the peer comparison (npm run bench:compare, bench/src/compare): short real
// runs of p2p QoS 0 against fleetmq, Mosquitto and Aedes with the TypeScript generator.
// Checks the result file's shape (brokers alternating run by run, figures present,
// ratios), `unsupported` for Aedes with MQTT 5.0 and shared subscriptions, a broker
// killed mid-run recorded as `crashed` with the next runs still made, and that no
// process the comparison started is left running. Never asserts performance.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url)); // dist/test → repository root
const COMPARE = join(ROOT, 'bench/dist/compare/cli.js');
const REPORT = join(ROOT, 'bench/dist/compare/report.js');
/** Tiny, short runs: 2 pairs at 100 msg/s each, 0.5 s warm-up, 1 s measured. */
const SMALL = ['-c', '2', '-q', '0', '-s', '32', '-I', '10', '--duration', '1', '--warmup', '0.5', '--pause-s', '0'];

interface Figures {
  msgs_per_s: number | null; p50_us: number | null; p99_us: number | null; p999_us: number | null;
  cpu_us_per_msg: number | null; peak_rss_bytes: number | null; sent: number | null; received: number | null; lost: number | null;
}
interface Run {
  seq: number; round: number; broker: string; status: string; reason: string | null;
  broker_pid: number | null; generator_pid: number | null; broker_exit: { signal: string | null } | null;
  test_hook: string | null; figures: Figures; cpu: { ticks: number | null; clk_tck: number } | null;
  result: { messages?: { sent?: number; received?: number; expected?: number; lost?: number } } | null;
}
interface Result {
  kind: string; scenario: string; generator: string; rounds: number; brokers: string[]; order: string[];
  protocol: { V: number; name: string };
  machine: { cores: number; memory_bytes: number; kernel: string; node: string; clk_tck: number; versions: Record<string, string> };
  configs_written: Array<{ broker: string; text: string }>;
  runs: Run[];
  summary: Array<{ broker: string; ok: number; crashed: number; unsupported: number; median: Figures }>;
  ratios: Record<string, Record<string, { value: number | null; better: string; verdict: string }>>;
}

let dir = '';
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'fleetmq-compare-test-'));
  for (const f of [COMPARE, join(ROOT, 'bench/dist/cli.js'), join(ROOT, 'bench/dist/peers/aedes-server.js'), join(ROOT, 'dist/src/cli/main.js')]) {
    assert.ok(existsSync(f), `${f} is missing: run npm ci and npm run build:all`);
  }
  assert.ok(existsSync('/usr/sbin/mosquitto'), '/usr/sbin/mosquitto is missing: run npm run test:all (scripts/test-setup.sh)');
});
after(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Runs `bench:compare` with an output directory of its own; killed after `timeoutMs`. */
function compare(name: string, args: string[], timeoutMs = 60_000): Promise<{ code: number | null; stdout: string; stderr: string; out: string }> {
  const out = join(dir, name);
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [COMPARE, ...args, '--out', out], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs, killSignal: 'SIGINT' });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.once('error', reject);
    p.once('close', (code) => resolve({ code, stdout, stderr, out }));
  });
}

function readResult(out: string): Result {
  const files = readdirSync(out).filter((f) => f.endsWith('.json'));
  assert.equal(files.length, 1, `one result file in ${out}: ${files.join(', ')}`);
  return JSON.parse(readFileSync(join(out, files[0] as string), 'utf8')) as Result;
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function assertAllGone(r: Result): void {
  for (const run of r.runs) {
    for (const pid of [run.broker_pid, run.generator_pid]) {
      if (pid !== null) assert.equal(alive(pid), false, `process ${pid} (${run.broker} run ${run.seq}) still running`);
    }
  }
}

const isNum = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);

function assertOkFigures(run: Run): void {
  const f = run.figures;
  const where = `${run.broker} run ${run.seq}`;
  assert.equal(run.status, 'ok', `${where}: ${String(run.reason)}`);
  assert.ok(isNum(f.msgs_per_s) && f.msgs_per_s > 0, `${where}: msgs_per_s ${String(f.msgs_per_s)}`);
  for (const k of ['p50_us', 'p99_us', 'p999_us'] as const) assert.ok(isNum(f[k]) && f[k] > 0, `${where}: ${k} ${String(f[k])}`);
  assert.ok((f.p50_us as number) <= (f.p99_us as number) && (f.p99_us as number) <= (f.p999_us as number), `${where}: percentiles in order`);
  assert.ok(isNum(f.cpu_us_per_msg) && f.cpu_us_per_msg >= 0, `${where}: cpu_us_per_msg ${String(f.cpu_us_per_msg)}`);
  assert.ok(isNum(run.cpu?.ticks) && (run.cpu?.ticks as number) >= 0, `${where}: CPU ticks sampled`);
  assert.ok(isNum(f.peak_rss_bytes) && f.peak_rss_bytes > 1024 * 1024, `${where}: peak RSS ${String(f.peak_rss_bytes)}`);
  // Counts add up (loopback, tiny rate: nothing lost).
  const m = run.result?.messages;
  assert.ok(m && isNum(m.sent) && m.sent > 0, `${where}: messages sent`);
  assert.equal(m.expected, m.sent, `${where}: p2p expects one delivery per message`);
  assert.equal(m.received, m.sent, `${where}: received = sent`);
  assert.equal(m.lost, 0, `${where}: lost`);
  assert.equal(f.received, m.received);
}

describe('bench:compare smoke (real brokers, tiny runs)', { timeout: 120_000 }, () => {
  test('p2p QoS 0 against all three brokers, 3 rounds, alternating', { timeout: 90_000 }, async () => {
    const r0 = await compare('all', ['p2p', ...SMALL, '--rounds', '3']);
    assert.equal(r0.code, 0, r0.stderr);
    const r = readResult(r0.out);
    assert.equal(r.kind, 'fleetmq-bench-compare');
    assert.equal(r.scenario, 'p2p');
    assert.equal(r.generator, 'ts');
    assert.deepEqual(r.protocol, { V: 4, name: '3.1.1' });
    assert.deepEqual(r.brokers, ['fleetmq', 'mosquitto', 'aedes']);
    // 3 brokers × 3 rounds, A B C A B C A B C.
    assert.equal(r.runs.length, 9);
    r.runs.forEach((run, i) => {
      assert.equal(run.seq, i + 1);
      assert.equal(run.broker, r.brokers[i % 3]);
      assert.equal(run.round, Math.floor(i / 3) + 1);
      assertOkFigures(run);
    });
    // A fresh broker process per run.
    assert.equal(new Set(r.runs.map((x) => x.broker_pid)).size, 9);
    // Summary and ratios.
    assert.deepEqual(r.summary.map((s) => [s.broker, s.ok]), [['fleetmq', 3], ['mosquitto', 3], ['aedes', 3]]);
    for (const s of r.summary) {
      for (const k of ['msgs_per_s', 'p50_us', 'p99_us', 'p999_us', 'cpu_us_per_msg', 'peak_rss_bytes'] as const) {
        assert.ok(isNum(s.median[k]), `${s.broker} median ${k}`);
      }
    }
    for (const peer of ['mosquitto', 'aedes']) {
      const ratios = r.ratios[peer];
      assert.ok(ratios, `ratios vs ${peer}`);
      for (const [k, better] of [['msgs_per_s', 'higher'], ['p50_us', 'lower'], ['p99_us', 'lower'], ['p999_us', 'lower'], ['cpu_us_per_msg', 'lower'], ['peak_rss_bytes', 'lower']] as const) {
        const x: { value: number | null; better: string } | undefined = ratios[k];
        assert.ok(x, `ratio ${k} vs ${peer}`);
        assert.equal(x.better, better);
        const fm = r.summary.find((s) => s.broker === 'fleetmq')?.median[k] as number;
        const pm = r.summary.find((s) => s.broker === peer)?.median[k] as number;
        if (pm > 0) assert.ok(Math.abs((x.value as number) - fm / pm) < 1e-9, `ratio ${k} = fleetmq / ${peer}`);
      }
    }
    // Machine and configs recorded.
    assert.ok(r.machine.cores >= 1 && r.machine.memory_bytes > 0 && r.machine.kernel && r.machine.node.startsWith('v'));
    assert.ok(r.machine.clk_tck > 0);
    assert.match(r.machine.versions['mosquitto'] ?? '', /^\d+\.\d+/);
    assert.equal(r.machine.versions['aedes'], '1.2.0');
    assert.equal(r.configs_written.length, 9);
    const mosq = r.configs_written.find((c) => c.broker === 'mosquitto')?.text ?? '';
    for (const line of ['max_inflight_messages 32', 'max_queued_messages 1000', 'persistence false', 'set_tcp_nodelay true', 'allow_anonymous true']) {
      assert.ok(mosq.includes(line), `mosquitto config has ${line}`);
    }
    const fleet = JSON.parse(r.configs_written.find((c) => c.broker === 'fleetmq')?.text ?? '{}') as { mqtt?: { max_inflight?: number; max_queued_messages?: number } };
    assert.equal(fleet.mqtt?.max_inflight, 32);
    assert.equal(fleet.mqtt?.max_queued_messages, 1000);
    // Markdown printed and written, SVG written.
    for (const b of ['fleetmq', 'mosquitto', 'aedes']) assert.match(r0.stdout, new RegExp(`\\| ${b} `));
    assert.match(r0.stdout, /fleetmq ÷ mosquitto/);
    const files = readdirSync(r0.out);
    assert.ok(files.some((f) => f.endsWith('.md')) && files.some((f) => f.endsWith('.svg')), files.join(', '));
    assert.match(readFileSync(join(r0.out, files.find((f) => f.endsWith('.svg')) as string), 'utf8'), /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    // Live progress: one line per run start and end.
    assert.equal((r0.stderr.match(/^\[\d+\/9\] round \d \w+: starting — broker pid \d+ on 127\.0\.0\.1:\d+$/gm) ?? []).length, 9);
    assert.equal((r0.stderr.match(/^\[\d+\/9\] round \d \w+: ok in /gm) ?? []).length, 9);
    assertAllGone(r);
    // The report entry renders the same file.
    const rep = await new Promise<{ code: number | null; stdout: string }>((resolve, reject) => {
      const p = spawn(process.execPath, [REPORT, '--svg-dir', join(dir, 'charts'), join(r0.out, readdirSync(r0.out).find((f) => f.endsWith('.json')) as string)], { timeout: 20_000 });
      let stdout = '';
      p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      p.once('error', reject);
      p.once('close', (code) => resolve({ code, stdout }));
    });
    assert.equal(rep.code, 0);
    assert.match(rep.stdout, /### p2p/);
    assert.match(rep.stdout, /\| mosquitto /);
    assert.ok(readdirSync(join(dir, 'charts')).some((f) => f.endsWith('.svg')));
  });

  test('Aedes: MQTT 5.0 and shared subscriptions are recorded as unsupported, not failures', { timeout: 60_000 }, async () => {
    const v5 = await compare('v5', ['p2p', ...SMALL, '-V', '5', '--brokers', 'mosquitto,aedes', '--rounds', '1']);
    assert.equal(v5.code, 0, v5.stderr);
    const r = readResult(v5.out);
    assert.deepEqual(r.protocol, { V: 5, name: '5.0' });
    assert.deepEqual(r.runs.map((x) => [x.broker, x.status]), [['mosquitto', 'ok'], ['aedes', 'unsupported']]);
    assertOkFigures(r.runs[0] as Run);
    assert.match(r.runs[1]?.reason ?? '', /5\.0/);
    assert.equal(r.runs[1]?.broker_pid, null);
    assert.equal(r.summary.find((s) => s.broker === 'aedes')?.unsupported, 1);
    assert.match(v5.stdout, /\| aedes [^|]*\| unsupported \|/);
    assertAllGone(r);

    const shared = await compare('shared', ['fanin-shared', '--pubs', '2', '--subs', '2', '-q', '0', '-s', '32', '-I', '10', '--duration', '1', '--warmup', '0.5', '--brokers', 'aedes', '--rounds', '1']);
    assert.equal(shared.code, 0, shared.stderr);
    const s = readResult(shared.out);
    assert.deepEqual(s.runs.map((x) => [x.broker, x.status]), [['aedes', 'unsupported']]);
    assert.match(s.runs[0]?.reason ?? '', /shared/);
  });

  test('a broker killed mid-run is recorded as crashed and the next runs still happen', { timeout: 60_000 }, async () => {
    const c = await compare('crash', ['p2p', ...SMALL, '--brokers', 'mosquitto,fleetmq', '--rounds', '2', '--crash-grace-s', '1', '--test-kill-broker', 'mosquitto:1']);
    assert.equal(c.code, 0, c.stderr);
    const r = readResult(c.out);
    assert.deepEqual(r.runs.map((x) => [x.round, x.broker, x.status]), [
      [1, 'mosquitto', 'crashed'], [1, 'fleetmq', 'ok'], [2, 'mosquitto', 'ok'], [2, 'fleetmq', 'ok'],
    ]);
    const crashed = r.runs[0] as Run;
    assert.equal(crashed.broker_exit?.signal, 'SIGKILL');
    assert.match(crashed.reason ?? '', /exited during the run/);
    assert.ok(crashed.test_hook);
    assert.notEqual(r.runs[2]?.broker_pid, crashed.broker_pid, 'mosquitto restarted for its next run');
    assertOkFigures(r.runs[2] as Run);
    const mosq = r.summary.find((s) => s.broker === 'mosquitto');
    assert.equal(mosq?.crashed, 1);
    assert.equal(mosq?.ok, 1);
    assert.match(c.stdout, /round 1: \*\*crashed\*\*/);
    assertAllGone(r);
  });
});
