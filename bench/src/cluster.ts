#!/usr/bin/env node
// Cluster benchmarks (docs/cluster.md, benchmark.md "Cluster"). Every run starts its own
// etcd member (/usr/bin/etcd, temp data dir) and fleetmq nodes (`node dist/src/cli/main.js
// start --role …`) on free loopback ports, drives them from this process with raw MQTT 3.1.1
// clients (./load-conn.ts) and stops everything at the end, on errors and on SIGINT.
//
//   node bench/dist/cluster.js [--scenario p2p,propagation,route-writes,bootstrap,fanout]
//        [--workers 1] [--json FILE] [--set PATH=VALUE ...] (a config option for every node,
//        e.g. --set cluster.forward_flush_ms=0; given to the nodes as FLEETMQ_ environment)
//        p2p:          [--pairs 50] [--rate 20000] [--qos 0,1] [--duration 10] [--warmup 2] [--rounds 2]
//                      [--modes single,local,cross] (a subset, e.g. for a profile of one mode)
//        propagation:  [--samples 100]
//        route-writes: [--subs 600000] [--clients 24] [--batch 100] [--window 8]
//        bootstrap:    [--routes 100000,1000000]
//        fanout:       [--fan-subs 400] [--fan-rate 500] [--fan-nodes 4]
//
// Scenarios:
//  - p2p: publisher i → subscriber i at a fixed total rate; "single" = a node without --role,
//    "local" = both clients on core A of a 2-core cluster, "cross" = publisher on A,
//    subscriber on B. Broker CPU = Δ(utime + stime) from /proc of every fleetmq process of
//    the run (not etcd, reported apart) over the measured window ÷ messages delivered in it.
//  - propagation: a subscriber on node X subscribes to a new topic while a publisher on node
//    Y publishes to it every millisecond (QoS 0, send time in the payload); the time from the
//    SUBSCRIBE to the send time of the first message delivered is the time the route took
//    to reach Y (an upper bound, within one publish interval). Directions core→core and
//    through a replicant both ways.
//  - route-writes: clients on 2 cores subscribe to unique exact filters (--batch filters per
//    SUBSCRIBE, --window SUBSCRIBEs in flight per client); SUBACKs per second, and the time
//    until every node holds every other node's routes (/status cluster.routes.remote).
//  - bootstrap: core A holds N routes; a replicant starts; time from its spawn to its routes
//    shard bootstrapped (its log line cluster.shard_bootstrapped) and to /status 200.
//  - fanout: one publisher, --fan-subs subscribers of one topic spread over --fan-nodes nodes
//    (2 cores, the rest replicants) vs all on one node; deliveries/s and CPU per delivery.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, ROOT } from './compare/brokers.js';
import { installSignalHandlers, startChild, stopAll, stopChild, type Child } from './compare/children.js';
import { clockTicks, sampleCpu } from './compare/procfs.js';
import { encode, summary, type LatencySummary } from './hist.js';
import { getJson, ints, list, num } from './local.js';
import { Conn, eachLimited, median, mqttConnect, mqttDisconnect, nowNs, publishPaced, ReceiveWindow, sleep, withTimeout } from './load-conn.js';
import { encodeSubscribe, encodeSubscribeMany, publishTemplate } from './mqtt.js';

const BROKER_MAIN = join(ROOT, 'dist/src/cli/main.js');
const ETCD = process.env['ETCD_BIN'] ?? '/usr/bin/etcd';
const HOST = '127.0.0.1';
const COOKIE = 'bench-cookie';
const SCENARIOS = ['p2p', 'propagation', 'route-writes', 'bootstrap', 'fanout'] as const;
type Scenario = (typeof SCENARIOS)[number];

function log(line: string): void {
  process.stderr.write(`[cluster-bench] ${line}\n`);
}

// ---------------------------------------------------------------- processes

interface Etcd {
  child: Child;
  url: string;
  dir: string;
}

async function startEtcd(): Promise<Etcd> {
  const client = await freePort();
  let peer = await freePort();
  while (peer === client) peer = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'fleetmq-bench-etcd-'));
  const url = `http://${HOST}:${client}`;
  const child = startChild('etcd', ETCD, [
    '--name', 'bench', '--data-dir', dir, '--listen-client-urls', url, '--advertise-client-urls', url,
    '--listen-peer-urls', `http://${HOST}:${peer}`, '--initial-advertise-peer-urls', `http://${HOST}:${peer}`,
    '--initial-cluster', `bench=http://${HOST}:${peer}`, '--logger', 'zap', '--log-level', 'error',
  ]);
  child.proc.stdout?.resume();
  child.proc.stderr?.resume();
  const until = Date.now() + 20_000;
  for (;;) {
    if (child.exit !== null) throw new Error(`etcd exited (${JSON.stringify(child.exit)}) while starting`);
    const ok = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) }).then((r) => r.ok, () => false);
    if (ok) return { child, url, dir };
    if (Date.now() > until) throw new Error('etcd: /health not ok within 20 s');
    await sleep(100);
  }
}

interface NodeSpec {
  role: 'none' | 'core' | 'replicant';
  name: string;
  etcd?: string;
  seeds?: string[];
  workers: number;
  logLevel?: 'info' | 'warn';
}

class BenchNode {
  child: Child | null = null;
  readonly dir = mkdtempSync(join(tmpdir(), 'fleetmq-bench-node-'));
  readonly tail: string[] = [];
  /** Parsed log lines whose msg is in `watch`, with the time they were read (ms, performance.now()). */
  readonly events: Array<{ at: number; line: Record<string, unknown> }> = [];
  mqtt = 0;
  http = 0;
  cluster = 0;
  forward = 0;
  spawnedAt = 0;
  constructor(readonly spec: NodeSpec, private readonly watch: readonly string[] = []) {}

  get pid(): number {
    return this.child?.pid ?? -1;
  }

  get clusterAddress(): string {
    return `${HOST}:${this.cluster}`;
  }

  async start(): Promise<this> {
    const got = new Set<number>();
    while (got.size < 4) got.add(await freePort());
    [this.mqtt, this.http, this.cluster, this.forward] = [...got] as [number, number, number, number];
    const s = this.spec;
    const args = [
      BROKER_MAIN, 'start', '--bind', HOST, '--mqtt-port', String(this.mqtt), '--ws-port', '0', '--mqtts-port', '0',
      '--wss-port', '0', '--http-port', String(this.http), '--workers', String(s.workers), '--data-dir', this.dir,
      '--log-level', s.logLevel ?? 'warn',
    ];
    if (s.role !== 'none') {
      args.push('--role', s.role, '--node-name', `${s.name}@${HOST}`, '--cluster-name', 'bench', '--cluster-cookie', COOKIE,
        '--cluster-port', String(this.cluster), '--forward-port', String(this.forward));
      if (s.etcd !== undefined) args.push('--etcd', s.etcd);
      if (s.seeds !== undefined) args.push('--seeds', s.seeds.join(','));
    }
    const env: NodeJS.ProcessEnv = { FLEETMQ_MQTT__SYS_INTERVAL_MS: '0', ...NODE_SETTINGS };
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('FLEETMQ_')) env[k] = v;
    this.spawnedAt = performance.now();
    // CLUSTER_BENCH_NODE_ARGS: node flags for every fleetmq node (e.g. --cpu-prof --cpu-prof-dir=DIR).
    const nodeArgs = (process.env['CLUSTER_BENCH_NODE_ARGS'] ?? '').split(' ').filter((a) => a.length > 0);
    const c = startChild(s.name, process.execPath, [...nodeArgs, ...args], { cwd: ROOT, env });
    this.child = c;
    let partial = '';
    const onData = (d: Buffer): void => {
      const lines = (partial + d.toString('utf8')).split('\n');
      partial = lines.pop() ?? '';
      const at = performance.now();
      for (const l of lines) {
        if (l.length === 0 || l.includes('auth.anonymous_allowed')) continue;
        if (this.watch.some((m) => l.includes(`"${m}"`))) {
          try {
            this.events.push({ at, line: JSON.parse(l) as Record<string, unknown> });
          } catch {
            /* not JSON */
          }
          continue;
        }
        this.tail.push(l);
        if (this.tail.length > 30) this.tail.shift();
        if (!l.includes('"level":"info"')) process.stderr.write(`[${s.name}] ${l}\n`);
      }
    };
    c.proc.stdout!.on('data', onData);
    c.proc.stderr!.on('data', onData);
    const until = Date.now() + 60_000;
    for (;;) {
      if (c.exit !== null) throw new Error(`${s.name} exited (${JSON.stringify(c.exit)}) while starting:\n${this.tail.join('\n')}`);
      const ok = await getJson(this.http, '/status', 1000).then((r) => r.status === 200, () => false);
      if (ok) return this;
      if (Date.now() > until) throw new Error(`${s.name}: /status not 200 within 60 s:\n${this.tail.join('\n')}`);
      await sleep(50);
    }
  }

  async status(): Promise<Record<string, unknown>> {
    const r = await getJson(this.http, '/status', 5000);
    return r.body as Record<string, unknown>;
  }

  /** Routes this node holds of other nodes (/status cluster.routes.remote). */
  async remoteRoutes(): Promise<number> {
    const st = await this.status().catch(() => null);
    const c = st?.['cluster'] as { routes?: { remote?: number } } | undefined;
    return c?.routes?.remote ?? -1;
  }

  async stop(): Promise<void> {
    if (this.child !== null) await stopChild(this.child, 10_000);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A cluster of `cores` cores (on `etcd`) and `replicants` replicants (seeded with every core). */
async function startCluster(etcd: Etcd, cores: number, replicants: number, workers: number, tag: string, replicantLog?: 'info'): Promise<BenchNode[]> {
  const nodes: BenchNode[] = [];
  for (let i = 0; i < cores; i++) nodes.push(await new BenchNode({ role: 'core', name: `${tag}c${i}`, etcd: etcd.url, workers }).start());
  const seeds = nodes.map((n) => n.clusterAddress);
  for (let i = 0; i < replicants; i++) {
    nodes.push(await new BenchNode({ role: 'replicant', name: `${tag}r${i}`, seeds, workers, ...(replicantLog ? { logLevel: replicantLog } : {}) }, ['cluster.shard_bootstrapped', 'cluster.bootstrap_progress']).start());
  }
  // Every node sees every other one running.
  await until(async () => {
    const r = await getJson(nodes[0]!.http, '/api/v1/cluster', 5000).catch(() => null);
    const ns = (r?.body as { nodes?: Array<{ status?: string }> } | undefined)?.nodes ?? [];
    return ns.filter((n) => n.status === 'running').length >= nodes.length;
  }, 30_000, `${nodes.length} nodes running in /api/v1/cluster`);
  return nodes;
}

async function until(cond: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

// ---------------------------------------------------------------- CPU windows

const CLK = clockTicks();

function ticksOf(pids: readonly number[]): number {
  let t = 0;
  for (const p of pids) t += sampleCpu(p, false)?.ticks ?? 0;
  return t;
}

/** CPU ticks per thread of `pids` (tid → ticks), for CLUSTER_BENCH_THREADS=1. */
function threadTicks(pids: readonly number[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const p of pids) {
    let tids: string[] = [];
    try {
      tids = readdirSync(`/proc/${p}/task`);
    } catch {
      continue;
    }
    for (const t of tids) {
      try {
        const f = readFileSync(`/proc/${p}/task/${t}/stat`, 'utf8');
        const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
        out.set(`${p}/${t}`, Number(rest[11]) + Number(rest[12]));
      } catch {
        /* gone */
      }
    }
  }
  return out;
}

function logThreadTicks(before: Map<string, number>, after: Map<string, number>, msgs: number): void {
  const rows = [...after].map(([k, v]) => [k, v - (before.get(k) ?? 0)] as const).filter(([, d]) => d > 0).sort((a, b) => b[1] - a[1]);
  log(`  threads (pid/tid: µs per message): ${rows.map(([k, d]) => `${k} ${((d / CLK) * 1e6 / msgs).toFixed(2)}`).join(', ')}`);
}

// ---------------------------------------------------------------- a paced load: publishers → subscribers

interface Flow {
  /** publisher i publishes to topics[i] on pubs[i]. */
  pubs: Conn[];
  topics: string[];
  subs: Conn[];
  qos: 0 | 1;
  payload: number;
}

interface LoadResult {
  sent: number;
  sentInWindow: number;
  delivered: number;
  deliveredInWindow: number;
  skipped: number;
  windowS: number;
  brokerCpuS: number;
  etcdCpuS: number;
  latency: LatencySummary;
  hist: string | null;
}

/**
 * Publishes `rate` messages/s in total over the flow's publishers (5 ms pacing) for
 * warmup + duration seconds and counts what the subscribers receive; CPU of `pids` (and
 * `etcdPid`) over the measured window.
 */
async function runLoad(f: Flow, rate: number, warmupS: number, durationS: number, pids: number[], etcdPid: number | null): Promise<LoadResult> {
  const rx = new ReceiveWindow();
  const base = (rx.base = nowNs());
  const wStart = (rx.wStart = warmupS * 1e9);
  const wEnd = (rx.wEnd = (warmupS + durationS) * 1e9);
  for (const s of f.subs) s.onPublish = rx.onPublish;
  const tpl = f.topics.map((t, i) => publishTemplate(4, t, f.qos, f.payload, true, i));
  let t0 = 0;
  let e0 = 0;
  let w0 = 0n;
  const perThread = process.env['CLUSTER_BENCH_THREADS'] === '1';
  let th0 = new Map<string, number>();
  const { sent, sentInWindow: sentM, skipped } = await publishPaced(f.pubs, tpl, rate, base, wStart, wEnd, (t) => {
    if (w0 === 0n && t >= wStart) {
      w0 = nowNs();
      t0 = ticksOf(pids);
      e0 = etcdPid === null ? 0 : ticksOf([etcdPid]);
      if (perThread) th0 = threadTicks(pids);
    }
  });
  const cpu = (ticksOf(pids) - t0) / CLK;
  const th1 = perThread ? threadTicks(pids) : null;
  const ecpu = etcdPid === null ? 0 : (ticksOf([etcdPid]) - e0) / CLK;
  const win = Number(nowNs() - w0) / 1e9;
  const drainUntil = Date.now() + 3000;
  const expected = (sent - skipped) * (f.subs.length / f.pubs.length);
  while (rx.all < expected && Date.now() < drainUntil) await sleep(20);
  for (const s of f.subs) s.onPublish = null;
  if (th1 !== null) logThreadTicks(th0, th1, rx.inWindow);
  return {
    sent, sentInWindow: sentM, delivered: rx.all, deliveredInWindow: rx.inWindow, skipped, windowS: win,
    brokerCpuS: cpu, etcdCpuS: ecpu, latency: summary(rx.hist), hist: encode(rx.hist),
  };
}

async function connectMany(node: BenchNode, ids: string[]): Promise<Conn[]> {
  const out: Conn[] = new Array<Conn>(ids.length);
  await eachLimited(ids.map((id, i) => ({ id, i })), 32, async ({ id, i }) => {
    out[i] = await mqttConnect(node.mqtt, id);
  });
  return out;
}

async function subscribe(c: Conn, filter: string, qos: 0 | 1, what: string): Promise<void> {
  const ack = c.next(9, `${what}: SUBACK`, 30_000);
  c.sock.write(encodeSubscribe(4, 1, filter, qos));
  const b = await ack;
  if (b[b.length - 1]! >= 0x80) throw new Error(`${what}: subscription to ${filter} refused`);
}

async function closeAll(cs: Conn[]): Promise<void> {
  await Promise.all(cs.map((c) => mqttDisconnect(c)));
}

/** Waits until `node` routes `topic` to `expect` node(s) (GET /api/v1/routes). */
async function routed(node: BenchNode, topic: string, expect: number): Promise<void> {
  await until(async () => {
    const r = await getJson(node.http, `/api/v1/routes?topic=${encodeURIComponent(topic)}`, 5000).catch(() => null);
    const nodes = (r?.body as { nodes?: unknown[] } | undefined)?.nodes;
    return Array.isArray(nodes) && nodes.length >= expect;
  }, 15_000, `route of ${topic} on ${node.spec.name}`);
}

// ---------------------------------------------------------------- scenario: p2p

interface P2pRow {
  mode: 'single' | 'local' | 'cross';
  qos: 0 | 1;
  round: number;
  deliveredPerS: number;
  lost: number;
  skipped: number;
  brokerUsPerMsg: number;
  resolutionUs: number;
  etcdUsPerMsg: number;
  latency: LatencySummary;
}

async function p2p(argv: string[], workers: number): Promise<{ rows: P2pRow[]; summary: Record<string, unknown>; lines: string[] }> {
  const pairs = num(argv, '--pairs', 50);
  const rate = num(argv, '--rate', 20_000);
  const qoss = list(argv, '--qos', '0,1').map((q) => {
    if (q !== '0' && q !== '1') throw new Error(`--qos: 0 and/or 1, comma-separated (got ${q})`);
    return Number(q) as 0 | 1;
  });
  const duration = num(argv, '--duration', 10);
  const warmup = num(argv, '--warmup', 2);
  const rounds = num(argv, '--rounds', 2);
  const modes = list(argv, '--modes', 'single,local,cross');
  for (const m of modes) if (m !== 'single' && m !== 'local' && m !== 'cross') throw new Error(`--modes: unknown mode "${m}" (single, local, cross)`);
  const rows: P2pRow[] = [];
  const etcd = await startEtcd();
  const cl = await startCluster(etcd, 2, 0, workers, 'p');
  const [A, B] = cl as [BenchNode, BenchNode];
  try {
    for (let round = 1; round <= rounds; round++) {
      for (const qos of qoss) {
        const all: P2pRow['mode'][] = round % 2 === 1 ? ['single', 'local', 'cross'] : ['cross', 'local', 'single'];
        for (const mode of all.filter((x) => modes.includes(x))) {
          let single: BenchNode | null = null;
          try {
            let pubNode = A;
            let subNode = mode === 'cross' ? B : A;
            let pids = [A.pid, B.pid];
            if (mode === 'single') {
              single = await new BenchNode({ role: 'none', name: `single${round}`, workers }).start();
              pubNode = single;
              subNode = single;
              pids = [single.pid];
            }
            const tag = `${mode}${round}q${qos}`;
            const ids = Array.from({ length: pairs }, (_, i) => i);
            const subs = await connectMany(subNode, ids.map((i) => `s-${tag}-${i}`));
            const topics = ids.map((i) => `p2p/${tag}/${i}`);
            await eachLimited(ids, 32, (i) => subscribe(subs[i]!, topics[i]!, qos, `s-${tag}-${i}`));
            const pubs = await connectMany(pubNode, ids.map((i) => `p-${tag}-${i}`));
            if (mode === 'cross') await routed(A, topics[pairs - 1]!, 1);
            log(`p2p ${mode} QoS ${qos} round ${round}: ${pairs} pairs, ${rate} msg/s, ${warmup}+${duration} s`);
            const r = await runLoad({ pubs, topics, subs, qos, payload: 64 }, rate, warmup, duration, pids, mode === 'single' ? null : etcd.child.pid);
            const row: P2pRow = {
              mode, qos, round, deliveredPerS: r.deliveredInWindow / r.windowS, lost: r.sent - r.skipped - r.delivered, skipped: r.skipped,
              brokerUsPerMsg: (r.brokerCpuS * 1e6) / r.deliveredInWindow, resolutionUs: (2e6 / CLK) * pids.length / r.deliveredInWindow,
              etcdUsPerMsg: (r.etcdCpuS * 1e6) / r.deliveredInWindow, latency: r.latency,
            };
            rows.push(row);
            log(`  → ${Math.round(row.deliveredPerS)} msg/s, broker ${row.brokerUsPerMsg.toFixed(2)} µs/msg, etcd ${row.etcdUsPerMsg.toFixed(3)} µs/msg, p50 ${r.latency.p50} µs, p99 ${r.latency.p99} µs, lost ${row.lost}`);
            await closeAll([...pubs, ...subs]);
          } finally {
            await single?.stop();
          }
        }
      }
    }
  } finally {
    await Promise.all(cl.map((n) => n.stop()));
    await stopChild(etcd.child, 5000);
    rmSync(etcd.dir, { recursive: true, force: true });
  }
  const lines: string[] = [];
  const summ: Record<string, unknown> = {};
  lines.push(`## p2p across nodes: ${pairs} pairs, ${rate} msg/s, 64 B, ${warmup} s warm-up + ${duration} s measured, ${rounds} rounds, ${workers} worker(s) per node`);
  lines.push('');
  lines.push('| QoS | mode | delivered msg/s (median) | broker CPU µs/msg (median; all nodes) | etcd µs/msg | p50 µs | p99 µs | lost |');
  lines.push('| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const qos of qoss) {
    const med = (mode: P2pRow['mode'], f: (r: P2pRow) => number): number => median(rows.filter((r) => r.mode === mode && r.qos === qos).map(f));
    for (const mode of ['single', 'local', 'cross'] as const) {
      lines.push(`| ${qos} | ${mode} | ${fmt(med(mode, (r) => r.deliveredPerS), 0)} | ${fmt(med(mode, (r) => r.brokerUsPerMsg), 2)} (±${fmt(med(mode, (r) => r.resolutionUs), 2)}) | ${mode === 'single' ? '–' : fmt(med(mode, (r) => r.etcdUsPerMsg), 3)} | ${fmt(med(mode, (r) => r.latency.p50), 0)} | ${fmt(med(mode, (r) => r.latency.p99), 0)} | ${rows.filter((r) => r.mode === mode && r.qos === qos).reduce((s, r) => s + r.lost, 0)} |`);
    }
    const ratio = med('cross', (r) => r.brokerUsPerMsg) / med('single', (r) => r.brokerUsPerMsg);
    const ratioLocal = med('cross', (r) => r.brokerUsPerMsg) / med('local', (r) => r.brokerUsPerMsg);
    summ[`qos${qos}`] = { crossOverSingle: ratio, crossOverLocal: ratioLocal };
    lines.push('');
    lines.push(`QoS ${qos}: cross-node / single-node broker CPU per message **${fmt(ratio, 2)}×** (target ≤ 1.5×: ${ratio <= 1.5 ? 'met' : 'missed'}); cross / both-on-one-cluster-node ${fmt(ratioLocal, 2)}×.`);
    lines.push('');
  }
  return { rows, summary: summ, lines };
}

// ---------------------------------------------------------------- scenario: route propagation

async function propagation(argv: string[], workers: number): Promise<{ summary: Record<string, unknown>; lines: string[] }> {
  const samples = num(argv, '--samples', 100);
  const etcd = await startEtcd();
  const cl = await startCluster(etcd, 2, 1, workers, 'g');
  const [A, B, R] = cl as [BenchNode, BenchNode, BenchNode];
  const dirs: Array<[string, BenchNode, BenchNode]> = [['core → core (sub B, pub A)', B, A], ['replicant → core (sub R, pub A)', R, A], ['core → replicant (sub A, pub R)', A, R]];
  const out: Record<string, unknown> = {};
  const lines: string[] = [];
  lines.push(`## Route propagation: SUBSCRIBE on one node → first message from another node delivered, ${samples} samples per direction, ${workers} worker(s) per node`);
  lines.push('');
  lines.push('| direction | SUBACK p50 / p99 ms | matched on the publisher\'s node p50 / p99 / max ms | samples |');
  lines.push('| --- | ---: | ---: | ---: |');
  try {
    let d = 0;
    for (const [what, subNode, pubNode] of dirs) {
      d++;
      const sub = await mqttConnect(subNode.mqtt, `prop-s-${d}`);
      const pub = await mqttConnect(pubNode.mqtt, `prop-p-${d}`);
      const suback: number[] = [];
      const matched: number[] = [];
      for (let k = 0; k < samples; k++) {
        const topic = `prop/${d}/${k}`;
        const tpl = publishTemplate(4, topic, 0, 16, true, k);
        const base = nowNs();
        let first = -1;
        const got = new Promise<void>((resolve) => {
          sub.onPublish = (b, off) => {
            if (first < 0 && b.readUInt32BE(off + 8) === k) {
              first = b.readDoubleBE(off);
              resolve();
            }
          };
        });
        const timer = setInterval(() => {
          const buf = Buffer.from(tpl.buf);
          buf.writeDoubleBE(Number(nowNs() - base), tpl.payOff);
          pub.sock.write(buf);
        }, 1);
        const ack = sub.next(9, `${topic}: SUBACK`, 10_000).then(() => suback.push(Number(nowNs() - base) / 1e6));
        sub.sock.write(encodeSubscribe(4, 1, topic, 0));
        try {
          await withTimeout(Promise.all([got, ack]), 10_000, `${what}: first message on ${topic}`);
          matched.push(first / 1e6);
        } finally {
          clearInterval(timer);
        }
        await sleep(5 + (k % 7));
      }
      sub.onPublish = null;
      await closeAll([sub, pub]);
      const q = (xs: number[], p: number): number => {
        const s = [...xs].sort((a, b) => a - b);
        return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
      };
      out[what] = { subackP50: q(suback, 50), subackP99: q(suback, 99), p50: q(matched, 50), p99: q(matched, 99), max: Math.max(...matched), samples: matched.length };
      lines.push(`| ${what} | ${fmt(q(suback, 50), 1)} / ${fmt(q(suback, 99), 1)} | ${fmt(q(matched, 50), 1)} / ${fmt(q(matched, 99), 1)} / ${fmt(Math.max(...matched), 1)} | ${matched.length} |`);
      log(`propagation ${what}: p50 ${q(matched, 50).toFixed(1)} ms, p99 ${q(matched, 99).toFixed(1)} ms`);
    }
  } finally {
    await Promise.all(cl.map((n) => n.stop()));
    await stopChild(etcd.child, 5000);
    rmSync(etcd.dir, { recursive: true, force: true });
  }
  lines.push('');
  lines.push('Resolution: the publisher sends every ~1 ms (a 1 ms timer), so a figure is the route\'s arrival plus at most one interval.');
  lines.push('');
  return { summary: out, lines };
}

// ---------------------------------------------------------------- scenario: route writes (and the routes for bootstrap)

interface WriteResult {
  subs: number;
  seconds: number;
  perS: number;
  perSecond: number[];
  /** Full seconds before the first client finished: every client was writing (constant offered load). */
  steadySeconds: number;
  visibleS: number;
}

/**
 * `total` unique exact filters subscribed through `clients` clients spread over `on`, each
 * with `window` SUBSCRIBEs of `batch` filters in flight. Clients stay connected (their
 * routes stay); returned for closing.
 */
async function writeRoutes(on: BenchNode[], all: BenchNode[], total: number, clients: number, batch: number, window: number, tag: string): Promise<{ r: WriteResult; conns: Conn[] }> {
  const conns: Conn[] = [];
  for (let i = 0; i < clients; i++) conns.push(await mqttConnect(on[i % on.length]!.mqtt, `rw-${tag}-${i}`));
  const perClient = Math.ceil(total / clients);
  const buckets: number[] = [];
  const t0 = performance.now();
  let firstDone = Infinity;
  await Promise.all(conns.map(async (c, ci) => {
    let nextFilter = 0;
    let pid = 0;
    let inflight = 0;
    let wake: (() => void) | null = null;
    let failed: Error | null = null;
    const sizes = new Map<number, number>();
    c.onSuback = (ackPid, rc) => {
      if (rc >= 0x80) failed = new Error(`rw-${tag}-${ci}: SUBACK ${rc}`);
      inflight--;
      const n = sizes.get(ackPid) ?? 0;
      sizes.delete(ackPid);
      const sec = Math.floor((performance.now() - t0) / 1000);
      buckets[sec] = (buckets[sec] ?? 0) + n;
      wake?.();
    };
    const deadline = Date.now() + 600_000;
    while (nextFilter < perClient) {
      if (failed !== null) throw failed;
      if (Date.now() > deadline) throw new Error('route writes: not done within 600 s');
      if (inflight >= window) {
        await new Promise<void>((r) => (wake = r));
        wake = null;
        continue;
      }
      const fs: string[] = [];
      for (let k = 0; k < batch && nextFilter < perClient; k++) fs.push(`rw/${tag}/${ci}/${nextFilter++}`);
      pid = pid === 0xffff ? 1 : pid + 1;
      inflight++;
      sizes.set(pid, fs.length);
      c.sock.write(encodeSubscribeMany(4, pid, fs, 0));
    }
    // From here this client offers less than its window: the load thins out.
    firstDone = Math.min(firstDone, performance.now() - t0);
    while (inflight > 0) {
      await withTimeout(new Promise<void>((r) => (wake = r)), 60_000, `rw-${tag}-${ci}: last SUBACKs`);
      wake = null;
    }
    c.onSuback = null;
  }));
  const seconds = (performance.now() - t0) / 1000;
  // Every node holds the others' routes: remote counts on each node ≥ what the others wrote.
  const written = perClient * clients;
  const perNode = new Map<BenchNode, number>();
  conns.forEach((_, i) => perNode.set(on[i % on.length]!, (perNode.get(on[i % on.length]!) ?? 0) + perClient));
  let seen = '';
  await until(async () => {
    const got = await Promise.all(all.map((n) => n.remoteRoutes()));
    seen = all.map((n, i) => `${n.spec.name} ${got[i]}/${written - (perNode.get(n) ?? 0)}`).join(', ');
    return all.every((n, i) => got[i]! >= written - (perNode.get(n) ?? 0));
  }, 120_000, 'every node holding the other nodes\' routes').catch((e: Error) => {
    throw new Error(`${e.message} (remote routes held / expected: ${seen})`);
  });
  const visibleS = (performance.now() - t0) / 1000;
  const full = buckets.slice(0, Math.floor(seconds)).map((x) => x ?? 0);
  const steadySeconds = Math.min(full.length, Math.floor(firstDone / 1000));
  return { r: { subs: written, seconds, perS: written / seconds, perSecond: full, steadySeconds, visibleS }, conns };
}

async function routeWrites(argv: string[], workers: number): Promise<{ summary: Record<string, unknown>; lines: string[] }> {
  const subs = num(argv, '--subs', 600_000);
  const clients = num(argv, '--clients', 24);
  const batch = num(argv, '--batch', 100);
  const window = num(argv, '--window', 8);
  const etcd = await startEtcd();
  const cl = await startCluster(etcd, 2, 0, workers, 'w');
  let res: WriteResult;
  try {
    log(`route writes: ${subs} filters, ${clients} clients over 2 cores, ${batch} per SUBSCRIBE, ${window} in flight`);
    const e0 = ticksOf([etcd.child.pid]);
    const { r, conns } = await writeRoutes(cl, cl, subs, clients, batch, window, 'a');
    const etcdS = (ticksOf([etcd.child.pid]) - e0) / CLK;
    res = r;
    log(`  → ${Math.round(r.perS)} subscriptions/s acknowledged over ${r.seconds.toFixed(1)} s; all visible on every node after ${r.visibleS.toFixed(1)} s; etcd CPU ${etcdS.toFixed(1)} s`);
    await Promise.all(conns.map((c) => c.sock.destroy()));
  } finally {
    await Promise.all(cl.map((n) => n.stop()));
    await stopChild(etcd.child, 5000);
    rmSync(etcd.dir, { recursive: true, force: true });
  }
  const ps = res.perSecond;
  const steady = ps.slice(0, res.steadySeconds);
  const verdict = steady.length === 0 ? 'run too short to tell (no full second with every client writing)'
    : Math.min(...steady) >= 50_000 ? `met in every one of the ${steady.length} seconds with every client writing`
    : `missed: ${steady.filter((x) => x < 50_000).length} of the ${steady.length} seconds with every client writing were below`;
  const lines = [
    `## Cluster-wide route writes: ${res.subs} new exact filters by ${clients} clients over 2 cores (${batch} filters per SUBSCRIBE, ${window} in flight per client), ${workers} worker(s) per node`,
    '',
    `| acknowledged subscriptions/s (whole run) | slowest / median full second, every client writing | all on every node after | run |`,
    '| ---: | ---: | ---: | ---: |',
    `| **${fmt(res.perS, 0)}** | ${steady.length === 0 ? '–' : `${fmt(Math.min(...steady), 0)} / ${fmt(median(steady), 0)}`} | ${fmt(res.visibleS, 1)} s | ${fmt(res.seconds, 1)} s |`,
    '',
    `Per second: ${ps.map((x, i) => (i < res.steadySeconds ? fmt(x, 0) : `(${fmt(x, 0)})`)).join(', ')}; in parentheses the seconds after the first client had sent its last SUBSCRIBE (the offered load thins out). Target ≥ 50,000/s sustained: ${verdict}.`,
    '',
  ];
  return { summary: { ...res }, lines };
}

// ---------------------------------------------------------------- scenario: replicant bootstrap

async function bootstrap(argv: string[], workers: number): Promise<{ summary: Record<string, unknown>; lines: string[] }> {
  const sizes = ints(argv, '--routes', '100000,1000000').sort((a, b) => a - b);
  const etcd = await startEtcd();
  const cl = await startCluster(etcd, 1, 0, workers, 'b');
  const A = cl[0]!;
  const rows: Array<{ routes: number; connectedMs: number; bootstrappedMs: number; logMs: number; runningMs: number; visibleMs: number }> = [];
  const conns: Conn[] = [];
  try {
    let have = 0;
    for (const n of sizes) {
      log(`bootstrap: writing routes on the core up to ${n}`);
      const { conns: cs } = await writeRoutes([A], [A], n - have, 20, 500, 8, `b${n}`);
      conns.push(...cs);
      have = n;
      const R = new BenchNode({ role: 'replicant', name: `br${n}`, seeds: [A.clusterAddress], workers, logLevel: 'info' }, ['cluster.core_connected', 'cluster.shard_bootstrapped', 'cluster.bootstrap_progress']);
      const started = R.start();
      await started;
      const runningMs = performance.now() - R.spawnedAt;
      await until(async () => R.events.some((e) => e.line['msg'] === 'cluster.shard_bootstrapped' && e.line['shard'] === 'routes'), 120_000, 'routes shard bootstrapped');
      const ev = R.events.find((e) => e.line['msg'] === 'cluster.shard_bootstrapped' && e.line['shard'] === 'routes')!;
      await until(async () => (await R.remoteRoutes()) >= n, 120_000, `${n} remote routes on the replicant`);
      const visibleMs = performance.now() - R.spawnedAt;
      const progress = R.events.filter((e) => e.line['msg'] === 'cluster.bootstrap_progress' && e.line['shard'] === 'routes').length;
      const connected = R.events.find((e) => e.line['msg'] === 'cluster.core_connected');
      const connectedMs = connected === undefined ? NaN : connected.at - R.spawnedAt;
      rows.push({ routes: n, connectedMs, bootstrappedMs: ev.at - R.spawnedAt, logMs: Number(ev.line['ms']), runningMs, visibleMs });
      log(`  → ${n} routes: core connected ${Math.round(connectedMs)} ms after spawn, bootstrapped ${Math.round(ev.at - R.spawnedAt)} ms (shard ${ev.line['ms']} ms, ${progress} progress lines), /status 200 after ${Math.round(runningMs)} ms, all in its trie after ${Math.round(visibleMs)} ms`);
      await R.stop();
    }
  } finally {
    for (const c of conns) c.sock.destroy();
    await Promise.all(cl.map((n) => n.stop()));
    await stopChild(etcd.child, 5000);
    rmSync(etcd.dir, { recursive: true, force: true });
  }
  const lines = [
    `## Replicant bootstrap: a replicant joins a core that holds N routes, ${workers} worker(s) per node`,
    '',
    '| routes | spawn → core connected | spawn → routes shard bootstrapped | of which the shard transfer (its log) | spawn → /status 200 | spawn → all routes in its trie |',
    '| ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map((r) => `| ${fmt(r.routes, 0)} | ${fmt(r.connectedMs, 0)} ms | ${fmt(r.bootstrappedMs, 0)} ms | ${fmt(r.logMs, 0)} ms | ${fmt(r.runningMs, 0)} ms | ${fmt(r.visibleMs, 0)} ms |`),
    '',
  ];
  const big = rows.find((r) => r.routes >= 1_000_000);
  if (big) lines.push(`1M routes within 5 s: ${big.visibleMs <= 5000 ? 'met' : 'missed'} (${fmt(big.visibleMs / 1000, 2)} s from spawn to every route in the trie).`, '');
  return { summary: { rows }, lines };
}

// ---------------------------------------------------------------- scenario: fan-out over nodes

async function fanout(argv: string[], workers: number): Promise<{ summary: Record<string, unknown>; lines: string[] }> {
  const nsubs = num(argv, '--fan-subs', 400);
  const rate = num(argv, '--fan-rate', 500);
  const nodesN = num(argv, '--fan-nodes', 4);
  const duration = num(argv, '--duration', 10);
  const warmup = num(argv, '--warmup', 2);
  const rows: Array<{ mode: string; deliveredPerS: number; usPerDelivery: number; p50: number; p99: number; lost: number }> = [];
  const run = async (mode: string, nodes: BenchNode[], etcdPid: number | null): Promise<void> => {
    const topic = `fan/${mode}`;
    const subs = await Promise.all(Array.from({ length: nsubs }, (_, i) => mqttConnect(nodes[i % nodes.length]!.mqtt, `fs-${mode}-${i}`)));
    await eachLimited(subs.map((c, i) => ({ c, i })), 32, ({ c, i }) => subscribe(c, topic, 0, `fs-${mode}-${i}`));
    const pub = await mqttConnect(nodes[0]!.mqtt, `fp-${mode}`);
    if (nodes.length > 1) await routed(nodes[0]!, topic, nodes.length - 1);
    log(`fanout ${mode}: 1 publisher → ${nsubs} subscribers on ${nodes.length} node(s), ${rate} msg/s`);
    const r = await runLoad({ pubs: [pub], topics: [topic], subs, qos: 0, payload: 64 }, rate, warmup, duration, nodes.map((n) => n.pid), etcdPid);
    const row = {
      mode, deliveredPerS: r.deliveredInWindow / r.windowS, usPerDelivery: (r.brokerCpuS * 1e6) / r.deliveredInWindow,
      p50: r.latency.p50, p99: r.latency.p99, lost: (r.sent - r.skipped) * nsubs - r.delivered,
    };
    rows.push(row);
    log(`  → ${Math.round(row.deliveredPerS)} deliveries/s, ${row.usPerDelivery.toFixed(2)} µs/delivery (all nodes), p50 ${row.p50} µs, p99 ${row.p99} µs, lost ${row.lost}`);
    await closeAll([pub, ...subs]);
  };
  const single = await new BenchNode({ role: 'none', name: 'fsingle', workers }).start();
  try {
    await run('single', [single], null);
  } finally {
    await single.stop();
  }
  const etcd = await startEtcd();
  const cores = Math.min(2, nodesN);
  const cl = await startCluster(etcd, cores, nodesN - cores, workers, 'f');
  try {
    await run(`${nodesN}-nodes`, cl, etcd.child.pid);
  } finally {
    await Promise.all(cl.map((n) => n.stop()));
    await stopChild(etcd.child, 5000);
    rmSync(etcd.dir, { recursive: true, force: true });
  }
  const lines = [
    `## Fan-out: 1 publisher at ${rate} msg/s → ${nsubs} subscribers (QoS 0, 64 B), on one node vs spread over ${nodesN} nodes (${cores} cores), ${workers} worker(s) per node, ${warmup}+${duration} s`,
    '',
    '| placement | deliveries/s | broker CPU µs/delivery (all nodes) | p50 µs | p99 µs | lost |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map((r) => `| ${r.mode} | ${fmt(r.deliveredPerS, 0)} | ${fmt(r.usPerDelivery, 2)} | ${fmt(r.p50, 0)} | ${fmt(r.p99, 0)} | ${r.lost} |`),
    '',
  ];
  return { summary: { rows }, lines };
}

// ---------------------------------------------------------------- main

function fmt(n: number, digits: number): string {
  return Number.isFinite(n) ? n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : 'n/a';
}

/** --set PATH=VALUE options as the nodes' FLEETMQ_ environment (cluster.forward_flush_ms → FLEETMQ_CLUSTER__FORWARD_FLUSH_MS). */
const NODE_SETTINGS: Record<string, string> = {};

function readSettings(argv: readonly string[]): void {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] !== '--set') continue;
    const kv = argv[i + 1] ?? '';
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new Error(`--set: expected PATH=VALUE, got "${kv}"`);
    NODE_SETTINGS['FLEETMQ_' + kv.slice(0, eq).toUpperCase().split('.').join('__')] = kv.slice(eq + 1);
  }
}

async function main(argv: string[]): Promise<number> {
  readSettings(argv);
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write('usage: node bench/dist/cluster.js [--scenario p2p,propagation,route-writes,bootstrap,fanout] [--workers 1] [--json FILE] (see the top of bench/src/cluster.ts)\n');
    return 0;
  }
  const scenarios = list(argv, '--scenario', SCENARIOS.join(','));
  for (const s of scenarios) if (!(SCENARIOS as readonly string[]).includes(s)) throw new Error(`--scenario: unknown ${s} (one of ${SCENARIOS.join(', ')})`);
  const workers = num(argv, '--workers', 1);
  const ji = argv.indexOf('--json');
  const json = ji >= 0 ? argv[ji + 1] ?? null : null;
  installSignalHandlers(() => undefined);
  const machine = { cores: cpus().length, cpu: cpus()[0]?.model ?? '?', node: process.version, clkTck: CLK };
  const doc: Record<string, unknown> = { command: `node bench/dist/cluster.js ${argv.join(' ')}`.trim(), machine, started: new Date().toISOString() };
  const out: string[] = [`# Cluster benchmarks (${new Date().toISOString().slice(0, 10)})`, '', `Node ${machine.node}, ${machine.cores} CPU (${machine.cpu}); every node, etcd and the load share the cores.`, ''];
  const runs: Record<Scenario, (a: string[], w: number) => Promise<{ summary: Record<string, unknown>; lines: string[] }>> = {
    p2p, propagation, 'route-writes': routeWrites, bootstrap, fanout,
  };
  let failed = 0;
  for (const s of scenarios as Scenario[]) {
    try {
      const r = await runs[s](argv, workers);
      doc[s] = r;
      out.push(...r.lines);
    } catch (e) {
      failed++;
      log(`${s} FAILED: ${(e as Error).stack ?? (e as Error).message}`);
      out.push(`## ${s}: **failed**: ${(e as Error).message.split('\n')[0]}`, '');
      doc[s] = { error: (e as Error).message };
    }
  }
  process.stdout.write(`${out.join('\n')}\n`);
  if (json !== null) writeFileSync(json, `${JSON.stringify(doc, null, 2)}\n`);
  await stopAll(3000);
  return failed > 0 ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  async (e: unknown) => {
    process.stderr.write(`cluster-bench: ${e instanceof Error ? e.message : String(e)}\n`);
    await stopAll(2000);
    process.exit(2);
  },
);
