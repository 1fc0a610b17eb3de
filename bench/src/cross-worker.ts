#!/usr/bin/env node
// Cross-worker cost: the broker's CPU per delivered message when each publisher sits on a
// different connection worker than its subscriber ("cross": every message crosses a SAB
// ring) vs on the same worker ("same": every message stays in one engine).
// Target (issue): cross ≤ 1.15 × same.
//
//   node bench/dist/cross-worker.js [--workers 2] [--pairs 50] [--rate 20000] [--duration 10]
//                                   [--warmup 2] [--rounds 3] [--qos 0] [--payload 64]
//                                   [--json FILE]
//
// Each run starts a fresh broker (`node dist/src/cli/main.js start --workers N ...` on free
// loopback ports) and a load process (this file with --client). The load process connects
// subscriber `sub-i` (topic `xw/i`) and publisher `pub-i` for every pair, reads
// GET /api/v1/clients, and reconnects misplaced publishers (DISCONNECT, new TCP connection,
// same client id; the kernel's SO_REUSEPORT hash picks the worker) until every publisher
// sits on its subscriber's worker (same) or on another one (cross). It then publishes
// --rate messages/s in total, spread evenly over the pairs and paced by a 5 ms timer, for
// --warmup + --duration seconds. The broker's CPU (utime + stime of its process in
// /proc/<pid>/stat, clock ticks) is sampled at the start and end of the measured window;
// deliveries are counted at the subscribers by receive time in that window; latency is end
// to end (send time in the payload, hdr-histogram).
// Rounds run the two modes in ABBA order (same, cross, cross, same, ...) so that a slow
// drift of the machine falls on both. Prints a Markdown table on stdout and the median
// cross/same ratio of broker CPU µs per message; progress goes to stderr.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { clockTicks } from './compare/procfs.js';
import { freePort } from './compare/brokers.js';
import { addEncoded, encode, newHist, summary, type LatencySummary } from './hist.js';
import { getJson } from './local.js';
import { encodeSubscribe, publishTemplate, type PublishTemplate } from './mqtt.js';
import { Conn, ReceiveWindow, WRITE_BOUND, eachLimited, median, mqttConnect, mqttDisconnect, nowNs, publishPaced, sleep, withTimeout } from './load-conn.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const BROKER_MAIN = join(ROOT, 'dist/src/cli/main.js');
const HOST = '127.0.0.1';
const TARGET = 1.15;

type Mode = 'same' | 'cross';

interface Options {
  workers: number;
  pairs: number;
  rate: number;
  duration: number;
  warmup: number;
  rounds: number;
  qos: 0 | 1;
  payload: number;
  json: string | null;
}

function log(line: string): void {
  process.stderr.write(`[cross-worker] ${line}\n`);
}

// ---------------------------------------------------------------- /proc

/** utime and stime (clock ticks) from a /proc/.../stat line; the comm field may hold spaces. */
function statTicks(text: string): { user: number; system: number } {
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // After "pid (comm) ": f[0] is state (field 3), so utime (field 14) is f[11], stime f[12].
  return { user: Number(f[11]), system: Number(f[12]) };
}

interface CpuSample {
  at: bigint;
  user: number;
  system: number;
  /** Per thread: tid → utime + stime (ticks). */
  threads: Map<number, number>;
}

function sampleCpu(pid: number): CpuSample {
  const at = nowNs();
  const { user, system } = statTicks(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  const threads = new Map<number, number>();
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        const t = statTicks(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8'));
        threads.set(Number(tid), t.user + t.system);
      } catch {
        /* thread gone */
      }
    }
  } catch {
    /* process gone: the process line above would have thrown already */
  }
  return { at, user, system, threads };
}

// ---------------------------------------------------------------- options
const USAGE = `usage: node bench/dist/cross-worker.js [--workers 2] [--pairs 50] [--rate 20000] [--duration 10]
                                      [--warmup 2] [--rounds 3] [--qos 0] [--payload 64] [--json FILE]`;

function parseOptions(argv: string[]): Options {
  const o: Options = { workers: 2, pairs: 50, rate: 20000, duration: 10, warmup: 2, rounds: 3, qos: 0, payload: 64, json: null };
  const num = (name: string, v: string | undefined, min: number, max: number, int: boolean): number => {
    const n = Number(v);
    if (v === undefined || !Number.isFinite(n) || n < min || n > max || (int && !Number.isInteger(n))) {
      throw new Error(`${name}: expected ${int ? 'an integer' : 'a number'} in ${min}..${max}, got ${v ?? 'nothing'}\n${USAGE}`);
    }
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = argv[i + 1];
    switch (a) {
      case '--workers': o.workers = num(a, v, 2, 31, true); break;
      // 2 connections per pair; the process may hold at most 20,000 open files.
      case '--pairs': o.pairs = num(a, v, 1, 5000, true); break;
      case '--rate': o.rate = num(a, v, 1, 2_000_000, false); break;
      case '--duration': o.duration = num(a, v, 0.5, 3600, false); break;
      case '--warmup': o.warmup = num(a, v, 0, 600, false); break;
      case '--rounds': o.rounds = num(a, v, 1, 100, true); break;
      case '--qos': o.qos = num(a, v, 0, 1, true) as 0 | 1; break;
      // The payload carries the send time (8 bytes) and the pair index (4 bytes).
      case '--payload': o.payload = num(a, v, 12, 1 << 20, true); break;
      case '--json':
        if (v === undefined) throw new Error(`--json: expected a file name\n${USAGE}`);
        o.json = v;
        break;
      case '--help': case '-h':
        process.stdout.write(`${USAGE}\n`);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown argument ${a}\n${USAGE}`);
    }
    i++;
  }
  return o;
}

// ---------------------------------------------------------------- IPC between controller and load
interface ClientSpec {
  mqttPort: number;
  httpPort: number;
  pairs: number;
  qos: 0 | 1;
  payload: number;
  mode: Mode;
  /** Placement passes (one GET /api/v1/clients + reconnect of the misplaced publishers each). */
  maxPasses: number;
}

interface Placement {
  passes: number;
  reconnects: number;
  subsPerWorker: Record<string, number>;
  pubsPerWorker: Record<string, number>;
}

type ToClient =
  | { t: 'run'; base: string; rate: number; warmupMs: number; durationMs: number; drainMs: number }
  | { t: 'stop' };

interface ClientResult {
  sentAll: number;
  recvAll: number;
  /** Sent with a send time in the measured window. */
  sentM: number;
  /** Received with a receive time in the measured window. */
  recvM: number;
  /** Messages not written because the socket buffer was over its bound (broker not reading). */
  skipped: number;
  pubacks: number;
  hist: string | null;
  /** Load process CPU over the measured window, µs. */
  cpuUs: number;
}

type FromClient =
  | { t: 'placed'; placement: Placement }
  | { t: 'tick'; sec: number; sent: number; recv: number }
  | { t: 'result'; r: ClientResult }
  | { t: 'error'; message: string };

interface ClientRow {
  clientId?: unknown;
  worker?: unknown;
  connected?: unknown;
}

/** clientId → worker of its connected session; ids seen on several workers are left out. */
async function placementMap(httpPort: number): Promise<Map<string, number>> {
  const res = await getJson(httpPort, '/api/v1/clients', 10_000);
  if (res.status !== 200 || !Array.isArray(res.body)) throw new Error(`GET /api/v1/clients: ${res.status}`);
  const out = new Map<string, number>();
  const dup = new Set<string>();
  for (const row of res.body as ClientRow[]) {
    if (typeof row.clientId !== 'string' || typeof row.worker !== 'number' || row.connected === false) continue;
    if (out.has(row.clientId)) dup.add(row.clientId);
    out.set(row.clientId, row.worker);
  }
  for (const id of dup) out.delete(id);
  return out;
}

async function clientMain(spec: ClientSpec): Promise<void> {
  const send = (m: FromClient): void => {
    if (process.connected) process.send!(m);
  };
  const subs: Conn[] = [];
  const pubs: Conn[] = [];
  const closeAll = (): void => {
    for (const c of [...subs, ...pubs]) c.sock.destroy();
  };
  process.on('disconnect', () => {
    closeAll();
    process.exit(0);
  });

  // Receive side: counts and latency by receive time relative to `base` (set by 'run').
  const rx = new ReceiveWindow();

  // Placement.
  const idx = Array.from({ length: spec.pairs }, (_, i) => i);
  let reconnects = 0;
  let passes = 0;
  const subsPerWorker: Record<string, number> = {};
  const pubsPerWorker: Record<string, number> = {};
  await eachLimited(idx, 64, async (i) => {
    const c = await mqttConnect(spec.mqttPort, `sub-${i}`);
    c.onPublish = rx.onPublish;
    const ack = c.next(9, `sub-${i}: SUBACK`);
    c.sock.write(encodeSubscribe(4, 1, `xw/${i}`, spec.qos));
    const suback = await ack;
    if (suback[suback.length - 1]! >= 0x80) throw new Error(`sub-${i}: subscription refused`);
    subs[i] = c;
  });
  await eachLimited(idx, 64, async (i) => {
    pubs[i] = await mqttConnect(spec.mqttPort, `pub-${i}`);
  });
  const subWorker = new Map<number, number>();
  for (;;) {
    const where = await placementMap(spec.httpPort);
    const misplaced: number[] = [];
    for (const i of idx) {
      const sw = where.get(`sub-${i}`);
      const pw = where.get(`pub-${i}`);
      if (sw === undefined) throw new Error(`sub-${i} is not in /api/v1/clients`);
      const prev = subWorker.get(i);
      if (prev !== undefined && prev !== sw) throw new Error(`sub-${i} moved from worker ${prev} to ${sw}`);
      subWorker.set(i, sw);
      if (pw === undefined || (spec.mode === 'same') !== (pw === sw)) misplaced.push(i);
    }
    if (misplaced.length === 0) {
      for (const i of idx) {
        const sw = String(where.get(`sub-${i}`));
        const pw = String(where.get(`pub-${i}`));
        subsPerWorker[sw] = (subsPerWorker[sw] ?? 0) + 1;
        pubsPerWorker[pw] = (pubsPerWorker[pw] ?? 0) + 1;
      }
      break;
    }
    if (++passes > spec.maxPasses) {
      throw new Error(`placement (${spec.mode}): ${misplaced.length} publishers still misplaced after ${spec.maxPasses} passes`);
    }
    await eachLimited(misplaced, 64, async (i) => {
      await mqttDisconnect(pubs[i]!);
      reconnects++;
      pubs[i] = await mqttConnect(spec.mqttPort, `pub-${i}`);
    });
  }
  send({ t: 'placed', placement: { passes, reconnects, subsPerWorker, pubsPerWorker } });

  const run = await new Promise<Extract<ToClient, { t: 'run' }>>((r) => {
    process.on('message', (m: ToClient) => {
      if (m.t === 'run') r(m);
      else {
        closeAll();
        process.exit(0);
      }
    });
  });

  // Publish side.
  const base = (rx.base = BigInt(run.base));
  const wStart = (rx.wStart = run.warmupMs * 1e6);
  const wEnd = (rx.wEnd = (run.warmupMs + run.durationMs) * 1e6);
  const tpl: PublishTemplate[] = idx.map((i) => publishTemplate(4, `xw/${i}`, spec.qos, spec.payload, true, i));
  let cpu0: NodeJS.CpuUsage | null = null;
  const startWait = Number(base - nowNs()) / 1e6;
  if (startWait > 0) await sleep(startWait);

  let lastTick = 0;
  const paced = await publishPaced(pubs, tpl, run.rate, base, wStart, wEnd, (t, p) => {
    if (cpu0 === null && t >= wStart) cpu0 = process.cpuUsage();
    const sec = Math.floor(t / 1e9);
    if (sec > lastTick) {
      lastTick = sec;
      send({ t: 'tick', sec, sent: p.sent, recv: rx.all });
    }
  });
  const c1 = process.cpuUsage(cpu0 ?? undefined);
  const cpuUs = c1.user + c1.system;
  const { sent: sentAll, sentInWindow: sentM, skipped } = paced;

  // Drain: wait for the messages still on their way (bounded).
  const drainUntil = Date.now() + run.drainMs;
  while (rx.all < sentAll - skipped && Date.now() < drainUntil) await sleep(20);
  let pubacks = 0;
  for (const c of pubs) pubacks += c.pubacks;
  send({ t: 'result', r: { sentAll, recvAll: rx.all, sentM, recvM: rx.inWindow, skipped, pubacks, hist: encode(rx.hist), cpuUs } });
}

// ---------------------------------------------------------------- controller
const live = new Set<ChildProcess>();

function track(c: ChildProcess): ChildProcess {
  live.add(c);
  c.once('exit', () => live.delete(c));
  return c;
}

function killAll(): void {
  for (const c of live) {
    try {
      c.kill('SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

function exited(c: ChildProcess): Promise<void> {
  return c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise((r) => c.once('exit', () => r()));
}

/** SIGTERM (or the IPC stop), then SIGKILL after `graceMs`. */
async function stopChild(c: ChildProcess | null, graceMs: number, viaIpc = false): Promise<void> {
  if (c === null || c.exitCode !== null || c.signalCode !== null) return;
  if (viaIpc && c.connected) c.send({ t: 'stop' } satisfies ToClient);
  else c.kill('SIGTERM');
  await Promise.race([exited(c), sleep(graceMs)]);
  if (c.exitCode === null && c.signalCode === null) {
    c.kill('SIGKILL');
    await Promise.race([exited(c), sleep(2_000)]);
  }
}

interface RunRecord {
  mode: Mode;
  round: number;
  brokerPid: number;
  ports: { mqtt: number; http: number };
  placement: Placement | null;
  windowS: number;
  sent: number;
  sentInWindow: number;
  delivered: number;
  deliveredPerS: number;
  lost: number;
  skipped: number;
  pubacks: number;
  brokerCpu: { userTicks: number; systemTicks: number; seconds: number; usPerMsg: number; resolutionUsPerMsg: number; percentOfOneCore: number } | null;
  brokerThreads: Array<{ tid: number; main: boolean; seconds: number }>;
  loadCpuUsPerMsg: number;
  latencyUs: LatencySummary;
  error: string | null;
}

class BrokerRun {
  broker: ChildProcess | null = null;
  client: ChildProcess | null = null;
  brokerTail: string[] = [];

  async start(o: Options): Promise<{ pid: number; mqtt: number; http: number }> {
    const mqtt = await freePort();
    let httpPort = await freePort();
    while (httpPort === mqtt) httpPort = await freePort();
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('FLEETMQ_')) env[k] = v;
    const args = [
      BROKER_MAIN, 'start', '--workers', String(o.workers), '--mqtt-port', String(mqtt), '--ws-port', '0',
      '--http-port', String(httpPort), '--mqtts-port', '0', '--wss-port', '0', '--bind', HOST, '--log-level', 'warn',
    ];
    const b = track(spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] }));
    this.broker = b;
    const keep = (d: Buffer): void => {
      for (const line of d.toString('utf8').split('\n')) {
        if (line.length === 0 || line.includes('auth.anonymous_allowed')) continue;
        this.brokerTail.push(line);
        if (this.brokerTail.length > 20) this.brokerTail.shift();
        process.stderr.write(`[broker] ${line}\n`);
      }
    };
    b.stdout!.on('data', keep);
    b.stderr!.on('data', keep);
    const until = Date.now() + 20_000;
    for (;;) {
      if (b.exitCode !== null || b.signalCode !== null) throw new Error(`broker exited (${b.exitCode ?? b.signalCode}) while starting`);
      const ok = await getJson(httpPort, '/status', 1_000).then((r) => r.status === 200, () => false);
      if (ok) break;
      if (Date.now() > until) throw new Error('broker: /status not 200 within 20 s');
      await sleep(100);
    }
    return { pid: b.pid!, mqtt, http: httpPort };
  }

  async stop(): Promise<void> {
    await stopChild(this.client, 3_000, true);
    await stopChild(this.broker, 5_000);
  }
}

function nextMessage<T extends FromClient['t']>(c: ChildProcess, t: T, ms: number): Promise<Extract<FromClient, { t: T }>> {
  return withTimeout(
    new Promise((resolvePromise, reject) => {
      const on = (m: FromClient): void => {
        if (m.t === 'error') {
          off();
          reject(new Error(`load: ${m.message}`));
        } else if (m.t === t) {
          off();
          resolvePromise(m as Extract<FromClient, { t: T }>);
        }
      };
      const onExit = (code: number | null, sig: string | null): void => {
        off();
        reject(new Error(`load process exited (${code ?? sig}) before '${t}'`));
      };
      const off = (): void => {
        c.off('message', on);
        c.off('exit', onExit);
      };
      c.on('message', on);
      c.on('exit', onExit);
    }),
    ms,
    `load '${t}'`,
  );
}

async function runOne(o: Options, mode: Mode, round: number, clkTck: number): Promise<RunRecord> {
  const rec: RunRecord = {
    mode, round, brokerPid: 0, ports: { mqtt: 0, http: 0 }, placement: null, windowS: 0, sent: 0, sentInWindow: 0,
    delivered: 0, deliveredPerS: 0, lost: 0, skipped: 0, pubacks: 0, brokerCpu: null, brokerThreads: [],
    loadCpuUsPerMsg: 0, latencyUs: summary(newHist()), error: null,
  };
  const r = new BrokerRun();
  try {
    const b = await r.start(o);
    rec.brokerPid = b.pid;
    rec.ports = { mqtt: b.mqtt, http: b.http };
    log(`${mode} round ${round}: broker pid ${b.pid} on mqtt ${b.mqtt}, http ${b.http}, ${o.workers} workers`);
    const spec: ClientSpec = { mqttPort: b.mqtt, httpPort: b.http, pairs: o.pairs, qos: o.qos, payload: o.payload, mode, maxPasses: 40 };
    const c = track(spawn(process.execPath, [fileURLToPath(import.meta.url), '--client', JSON.stringify(spec)], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    }));
    r.client = c;
    c.on('message', (m: FromClient) => {
      if (m.t === 'tick') log(`  ${mode} round ${round}: t=${m.sec}s sent ${m.sent}, received ${m.recv}`);
    });
    const placed = await nextMessage(c, 'placed', 60_000 + o.pairs * 200);
    rec.placement = placed.placement;
    const pl = placed.placement;
    log(`  placed ${o.pairs} pairs (${mode}) in ${pl.passes} passes, ${pl.reconnects} reconnects; subscribers per worker ${JSON.stringify(pl.subsPerWorker)}, publishers ${JSON.stringify(pl.pubsPerWorker)}`);

    const warmupMs = o.warmup * 1000;
    const durationMs = o.duration * 1000;
    const drainMs = 3_000;
    const base = nowNs() + 200_000_000n;
    const resultP = nextMessage(c, 'result', 200 + warmupMs + durationMs + drainMs + 10_000);
    c.send({ t: 'run', base: String(base), rate: o.rate, warmupMs, durationMs, drainMs } satisfies ToClient);
    const at = async (ms: number): Promise<void> => {
      const wait = Number(base + BigInt(Math.round(ms * 1e6)) - nowNs()) / 1e6;
      if (wait > 0) await sleep(wait);
    };
    await at(warmupMs);
    const s0 = sampleCpu(b.pid);
    await at(warmupMs + durationMs);
    const s1 = sampleCpu(b.pid);
    const res = (await resultP).r;

    rec.windowS = Number(s1.at - s0.at) / 1e9;
    rec.sent = res.sentAll;
    rec.sentInWindow = res.sentM;
    rec.delivered = res.recvM;
    rec.deliveredPerS = res.recvM / o.duration;
    rec.lost = res.sentAll - res.skipped - res.recvAll;
    rec.skipped = res.skipped;
    rec.pubacks = res.pubacks;
    const userTicks = s1.user - s0.user;
    const systemTicks = s1.system - s0.system;
    const seconds = (userTicks + systemTicks) / clkTck;
    rec.brokerCpu = {
      userTicks, systemTicks, seconds,
      usPerMsg: res.recvM > 0 ? (seconds * 1e6) / res.recvM : NaN,
      // Each of the two samples can be off by one tick.
      resolutionUsPerMsg: res.recvM > 0 ? (2e6 / clkTck) / res.recvM : NaN,
      percentOfOneCore: (100 * seconds) / rec.windowS,
    };
    for (const [tid, t1] of s1.threads) {
      const d = t1 - (s0.threads.get(tid) ?? 0);
      if (d > 0) rec.brokerThreads.push({ tid, main: tid === b.pid, seconds: d / clkTck });
    }
    rec.brokerThreads.sort((x, y) => y.seconds - x.seconds);
    rec.loadCpuUsPerMsg = res.sentM > 0 ? res.cpuUs / res.sentM : NaN;
    const h = newHist();
    addEncoded(h, res.hist);
    rec.latencyUs = summary(h);
    log(`  ${mode} round ${round}: ${Math.round(rec.deliveredPerS)} msg/s delivered, broker ${rec.brokerCpu.usPerMsg.toFixed(2)} µs/msg (±${rec.brokerCpu.resolutionUsPerMsg.toFixed(2)}, ${rec.brokerCpu.percentOfOneCore.toFixed(0)} % of a core), p50 ${rec.latencyUs.p50} µs, p99 ${rec.latencyUs.p99} µs, lost ${rec.lost}, skipped ${rec.skipped}`);
    if (res.recvM === 0) rec.error = 'no message delivered in the measured window';
  } catch (e) {
    rec.error = (e as Error).message;
    log(`  ${mode} round ${round}: FAILED: ${rec.error}`);
    if (r.brokerTail.length > 0) log(`  broker's last lines:\n${r.brokerTail.join('\n')}`);
  } finally {
    await r.stop();
  }
  if (r.broker !== null && r.broker.exitCode !== null && r.broker.exitCode !== 0 && rec.error === null) {
    rec.error = `broker exited with code ${r.broker.exitCode}`;
  }
  return rec;
}

function fmt(n: number, digits: number): string {
  return Number.isFinite(n) ? n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : 'n/a';
}

async function main(argv: string[]): Promise<void> {
  const ci = argv.indexOf('--client');
  if (ci >= 0) {
    const spec = JSON.parse(argv[ci + 1] ?? '{}') as ClientSpec;
    try {
      await clientMain(spec);
    } catch (e) {
      if (process.connected) process.send!({ t: 'error', message: (e as Error).message } satisfies FromClient);
      process.exitCode = 1;
      setTimeout(() => process.exit(1), 100).unref();
    }
    return;
  }
  const o = parseOptions(argv);
  const clkTck = clockTicks();
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      log(`${sig}: stopping`);
      killAll();
      process.exit(130);
    });
  }
  const machine = { cores: cpus().length, cpu: cpus()[0]?.model ?? '?', node: process.version, clkTck };
  const expectedS = o.rounds * 2 * (o.warmup + o.duration + 6);
  log(`${o.rounds} rounds × (same, cross): ${o.workers} workers, ${o.pairs} pairs, ${o.rate} msg/s total, QoS ${o.qos}, ${o.payload} B, ${o.warmup} s warm-up + ${o.duration} s measured (≈ ${Math.round(expectedS)} s)`);
  if (o.duration < 5) log(`warning: a measured window under 5 s makes the 1/${clkTck} s CPU ticks coarse`);

  const runs: RunRecord[] = [];
  for (let round = 1; round <= o.rounds; round++) {
    const order: Mode[] = round % 2 === 1 ? ['same', 'cross'] : ['cross', 'same'];
    for (const mode of order) runs.push(await runOne(o, mode, round, clkTck));
  }

  const ok = runs.filter((r) => r.error === null && r.brokerCpu !== null);
  const cpuOf = (r: RunRecord): number => r.brokerCpu?.usPerMsg ?? NaN;
  const perRound: Array<{ round: number; ratio: number }> = [];
  for (let round = 1; round <= o.rounds; round++) {
    const s = ok.find((r) => r.round === round && r.mode === 'same');
    const x = ok.find((r) => r.round === round && r.mode === 'cross');
    if (s !== undefined && x !== undefined) perRound.push({ round, ratio: cpuOf(x) / cpuOf(s) });
  }
  const med = (mode: Mode, f: (r: RunRecord) => number): number => median(ok.filter((r) => r.mode === mode).map(f));
  const medianRatio = median(perRound.map((p) => p.ratio));
  const ratioOfMedians = med('cross', cpuOf) / med('same', cpuOf);

  const out: string[] = [];
  out.push(`# Cross-worker cost: ${o.workers} workers, ${o.pairs} pairs, ${o.rate} msg/s, QoS ${o.qos}, ${o.payload} B payload, ${o.duration} s measured after ${o.warmup} s warm-up`);
  out.push('');
  out.push(`Node ${machine.node}, ${machine.cores} CPU (${machine.cpu}); broker and load share the cores. Broker CPU = Δ(utime + stime) of the broker process (/proc, ${clkTck} ticks/s) over the measured window ÷ messages delivered in it.`);
  out.push('');
  out.push('| mode | round | delivered msg/s | broker CPU µs/msg | p50 µs | p99 µs |');
  out.push('| --- | ---: | ---: | ---: | ---: | ---: |');
  for (const r of runs) {
    if (r.error !== null) {
      out.push(`| ${r.mode} | ${r.round} | **failed: ${r.error.replace(/\|/g, '/')}** | | | |`);
      continue;
    }
    out.push(`| ${r.mode} | ${r.round} | ${fmt(r.deliveredPerS, 0)} | ${fmt(cpuOf(r), 2)} ± ${fmt(r.brokerCpu!.resolutionUsPerMsg, 2)} | ${fmt(r.latencyUs.p50, 0)} | ${fmt(r.latencyUs.p99, 0)} |`);
  }
  out.push('');
  out.push('| median | delivered msg/s | broker CPU µs/msg | p50 µs | p99 µs |');
  out.push('| --- | ---: | ---: | ---: | ---: |');
  for (const mode of ['same', 'cross'] as const) {
    out.push(`| ${mode} | ${fmt(med(mode, (r) => r.deliveredPerS), 0)} | ${fmt(med(mode, cpuOf), 2)} | ${fmt(med(mode, (r) => r.latencyUs.p50), 0)} | ${fmt(med(mode, (r) => r.latencyUs.p99), 0)} |`);
  }
  out.push('');
  const verdict = Number.isFinite(medianRatio) ? (medianRatio <= TARGET ? `meets the target (≤ ${TARGET}×)` : `misses the target (≤ ${TARGET}×)`) : 'n/a';
  out.push(`**Cross / same broker CPU per message: ${fmt(medianRatio, 3)}× (median of the per-round ratios ${perRound.map((p) => fmt(p.ratio, 3)).join(', ') || 'none'}; ratio of the medians ${fmt(ratioOfMedians, 3)}×): ${verdict}.**`);
  const lost = runs.reduce((s, r) => s + r.lost, 0);
  const skipped = runs.reduce((s, r) => s + r.skipped, 0);
  if (lost > 0 || skipped > 0) out.push(`\nLost (sent, never received): ${lost}; not sent (socket buffer over ${WRITE_BOUND >> 20} MiB): ${skipped}.`);
  const failed = runs.length - ok.length;
  if (failed > 0) out.push(`\n${failed} of ${runs.length} runs failed (left out of the medians).`);
  process.stdout.write(`${out.join('\n')}\n`);

  if (o.json !== null) {
    const doc = {
      command: `node bench/dist/cross-worker.js ${argv.join(' ')}`.trim(),
      options: o, machine, target: TARGET,
      summary: {
        medianRatio, ratioOfMedians, perRound, meetsTarget: Number.isFinite(medianRatio) ? medianRatio <= TARGET : null,
        same: { deliveredPerS: med('same', (r) => r.deliveredPerS), brokerCpuUsPerMsg: med('same', cpuOf) },
        cross: { deliveredPerS: med('cross', (r) => r.deliveredPerS), brokerCpuUsPerMsg: med('cross', cpuOf) },
      },
      runs,
    };
    writeFileSync(o.json, `${JSON.stringify(doc, null, 2)}\n`);
    log(`wrote ${o.json}`);
  }
  if (failed > 0) process.exitCode = 1;
}

main(process.argv.slice(2)).catch((e: unknown): void => {
  process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
  killAll();
  process.exit(2);
});
