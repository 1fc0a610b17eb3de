#!/usr/bin/env node
// How evenly the real broker's worker threads share MQTT connections (issue 4,
// docs/accept.md). accept-spread.ts measured bare listeners; this starts fleetmq itself
// (`dist/src/cli/main.js start --workers N`) as a child process, opens MQTT connections from a
// second process and reads each worker's `connections` gauge from GET /api/v1/stats.
//
//   node bench/dist/broker-spread.js [--workers 2,4] [--conns 1000,10000] [--transport tcp,ws]
//                                    [--accept reuseport,shared-fd] [--rate 4000]
//                                    [--timeout-ms 180000] [--json FILE]
//
// Each list is a matrix axis (default: all of the above, but --accept reuseport only). --accept
// shared-fd starts the broker with FLEETMQ_REUSEPORT_ADDON naming a missing file, so that it
// takes its accept path without the addon (one listening socket shared by the workers);
// GET /status must then report that path. For each combination:
//   1. the broker starts on free loopback ports (MQTT, WS, HTTP; no TLS) with --log-level warn,
//      and is ready when GET /status answers 200;
//   2. a client process (this file with --client) opens --conns MQTT 3.1.1 connections
//      (CONNECT with a unique client id, clean session, keepalive 0; done at CONNACK 0) over
//      TCP or over WebSocket (`ws`, subprotocol "mqtt", path /mqtt), with at most 128
//      connecting at a time and at most --rate new ones per second, and holds them all;
//   3. GET /api/v1/stats is polled until the workers' `connections` add up to the number of
//      CONNACKs the client got (or 5 s), then read once more after the client confirms that
//      it still holds them;
//   4. teardown: the broker gets SIGTERM first (SIGKILL if it has not exited after 20 s), so
//      that TIME_WAIT stays on the broker's side of each connection and the client's
//      ephemeral ports (32768–60999 here) are free for the next run; then the client closes
//      whatever is left and exits (SIGKILL after 5 s).
// Every run is bounded by --timeout-ms. The broker's stderr is kept (last 64 KiB) and shown
// when it logged anything. Prints a Markdown table on stdout and progress on stderr; exits 1
// when a run failed (errors, refused connections, counts that do not add up).
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';
import { cpus, release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { freePort } from './compare/brokers.js';
import { getJson, ints, list, num } from './local.js';
import { encodeConnect } from './mqtt.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const BROKER_MAIN = join(ROOT, 'dist/src/cli/main.js');
const HOST = '127.0.0.1';
const WS_PATH = '/mqtt';
const require = createRequire(join(ROOT, 'package.json'));

type Transport = 'tcp' | 'ws';
const TRANSPORTS: readonly Transport[] = ['tcp', 'ws'];
type Accept = 'reuseport' | 'shared-fd';
const ACCEPTS: readonly Accept[] = ['reuseport', 'shared-fd'];

/** Connections in the middle of connecting (TCP connect or WS upgrade, then CONNECT → CONNACK). */
const MAX_IN_FLIGHT = 128;
/** One connection's connect + CONNACK must finish within this. */
const CONNECT_TIMEOUT_MS = 20_000;
/** How long the broker may take to come up (GET /status 200). */
const BROKER_READY_MS = 30_000;
/** SIGTERM → SIGKILL. The broker's own shutdown_timeout_ms defaults to 5 s. */
const BROKER_STOP_MS = 20_000;
const STDERR_KEEP = 64 * 1024;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- client process
interface ClientArgs {
  transport: Transport;
  port: number;
  conns: number;
  rate: number;
  tag: string;
}
type ToClient = { type: 'report' } | { type: 'close' };
interface ClientReport {
  /** CONNACK 0 received. */
  connacked: number;
  failed: number;
  /** CONNACK with a non-zero return code, by code. */
  refused: Record<string, number>;
  /** Connections that closed after their CONNACK (the broker dropped them). */
  lost: number;
  firstError: string | null;
  ms: number;
}
type FromClient = ({ type: 'done' } & ClientReport) | ({ type: 'report' } & ClientReport);

// The part of `ws` (a dependency of the mqtt devDependency, in the root node_modules) used here.
interface WsLike {
  on(ev: 'open', cb: () => void): void;
  on(ev: 'message', cb: (data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean) => void): void;
  on(ev: 'close', cb: () => void): void;
  on(ev: 'error', cb: (e: Error) => void): void;
  on(ev: 'unexpected-response', cb: (req: unknown, res: { statusCode?: number; resume(): void }) => void): void;
  send(data: Buffer): void;
  terminate(): void;
}
type WsCtor = new (
  url: string,
  protocols: string[],
  opts: { perMessageDeflate: boolean; handshakeTimeout: number; maxPayload: number },
) => WsLike;

/** Outcome of one connection attempt. */
type Attempt = { ok: true } | { ok: false; refusedCode: number | null; error: string };

async function clientMain(a: ClientArgs): Promise<void> {
  const WebSocket = a.transport === 'ws' ? (require('ws') as WsCtor) : null;
  const held: Array<() => void> = [];
  const rep: ClientReport = { connacked: 0, failed: 0, refused: {}, lost: 0, firstError: null, ms: 0 };
  let closing = false;
  const t0 = Date.now();

  // Resolves once per connection: at CONNACK, at a failure before it, or at the timeout.
  const openOne = (i: number): Promise<Attempt> =>
    new Promise<Attempt>((done) => {
      const connect = encodeConnect({ V: 4, clientId: `${a.tag}-${i}`, clean: true, keepalive: 0, username: null, password: null, sessionExpiry: 0 });
      let settled = false;
      let acked = false;
      let kill: () => void = () => {};
      const timer = setTimeout(() => finish({ ok: false, refusedCode: null, error: `no CONNACK within ${CONNECT_TIMEOUT_MS} ms` }), CONNECT_TIMEOUT_MS);
      const finish = (r: Attempt): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (r.ok) {
          acked = true;
          held.push(kill);
        } else kill();
        done(r);
      };
      let buf: Buffer = Buffer.alloc(0);
      // CONNACK (3.1.1): 0x20 0x02 <session present> <return code>.
      const onBytes = (chunk: Buffer): void => {
        if (settled) return;
        buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
        if (buf.length < 4) return;
        if (buf[0] !== 0x20 || buf[1] !== 0x02) {
          finish({ ok: false, refusedCode: null, error: `expected CONNACK, got bytes ${buf.subarray(0, 8).toString('hex')}` });
          return;
        }
        const rc = buf[3] ?? -1;
        finish(rc === 0 ? { ok: true } : { ok: false, refusedCode: rc, error: `CONNACK return code ${rc}` });
      };
      const onClose = (): void => {
        if (!settled) finish({ ok: false, refusedCode: null, error: 'closed before CONNACK' });
        else if (acked && !closing) rep.lost++;
      };
      if (WebSocket !== null) {
        const ws = new WebSocket(`ws://${HOST}:${a.port}${WS_PATH}`, ['mqtt'], { perMessageDeflate: false, handshakeTimeout: CONNECT_TIMEOUT_MS, maxPayload: 1 << 20 });
        kill = () => ws.terminate();
        ws.on('open', () => ws.send(connect));
        ws.on('message', (data) => onBytes(Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data)));
        ws.on('unexpected-response', (_req, res) => {
          res.resume();
          finish({ ok: false, refusedCode: null, error: `WebSocket upgrade refused: HTTP ${res.statusCode ?? '?'}` });
        });
        ws.on('error', (e) => finish({ ok: false, refusedCode: null, error: e.message }));
        ws.on('close', onClose);
      } else {
        const s = net.connect({ host: HOST, port: a.port, noDelay: true });
        kill = () => s.destroy();
        s.once('connect', () => s.write(connect));
        s.on('data', onBytes);
        s.on('error', (e) => finish({ ok: false, refusedCode: null, error: e.message }));
        s.on('close', onClose);
      }
    });

  const progress = setInterval(() => {
    process.stderr.write(`  client: ${rep.connacked} connected, ${rep.failed} failed (${((Date.now() - t0) / 1000).toFixed(1)} s)\n`);
  }, 2_000);
  let started = 0;
  const lanes: Promise<void>[] = [];
  for (let l = 0; l < MAX_IN_FLIGHT; l++) {
    lanes.push(
      (async () => {
        while (started < a.conns) {
          const i = started++;
          const wait = t0 + (i / a.rate) * 1000 - Date.now();
          if (wait > 0) await sleep(wait);
          const r = await openOne(i);
          if (r.ok) rep.connacked++;
          else {
            rep.failed++;
            rep.firstError ??= r.error;
            if (r.refusedCode !== null) rep.refused[String(r.refusedCode)] = (rep.refused[String(r.refusedCode)] ?? 0) + 1;
          }
        }
      })(),
    );
  }
  await Promise.all(lanes);
  clearInterval(progress);
  rep.ms = Date.now() - t0;
  const send = (m: FromClient): void => {
    process.send?.(m);
  };
  send({ type: 'done', ...rep });
  // Hold until the parent says so (or goes away).
  process.on('message', (m: ToClient) => {
    if (m.type === 'report') send({ type: 'report', ...rep });
    else {
      closing = true;
      for (const k of held) k();
      process.exit(0);
    }
  });
  process.on('disconnect', () => process.exit(0));
}

// ---------------------------------------------------------------- the broker
interface Broker {
  child: ChildProcess;
  http: number;
  mqtt: number;
  ws: number;
  /** The last STDERR_KEEP bytes of its log, how many bytes it wrote, and its lines by `msg`. */
  stderr(): { tail: string; bytes: number; msgs: Record<string, number> };
  exited(): { code: number | null; signal: string | null } | null;
}

function startBroker(workers: number, accept: Accept, ports: { mqtt: number; ws: number; http: number }): Broker {
  // No config file or FLEETMQ_* overrides from the environment: the flags and the defaults only.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('FLEETMQ_')));
  if (accept === 'shared-fd') env['FLEETMQ_REUSEPORT_ADDON'] = join(ROOT, 'native/reuseport/build/Release/absent-for-broker-spread.node');
  const child = spawn(
    process.execPath,
    [
      BROKER_MAIN, 'start',
      '--workers', String(workers),
      '--bind', HOST,
      '--mqtt-port', String(ports.mqtt),
      '--ws-port', String(ports.ws),
      '--http-port', String(ports.http),
      '--mqtts-port', '0',
      '--wss-port', '0',
      '--log-level', 'warn',
    ],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env },
  );
  let tail = '';
  let bytes = 0;
  let partial = '';
  const msgs: Record<string, number> = {};
  const keep = (d: Buffer): void => {
    const text = d.toString('utf8');
    bytes += d.length;
    tail += text;
    if (tail.length > STDERR_KEEP) tail = tail.slice(tail.length - STDERR_KEEP);
    // Count the JSON log lines by their `msg` (anything else by its first 60 characters).
    const lines = (partial + text).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      if (line.trim() === '') continue;
      let key = line.slice(0, 60);
      try {
        const m = (JSON.parse(line) as { msg?: unknown }).msg;
        if (typeof m === 'string') key = m;
      } catch {
        /* not a JSON log line */
      }
      msgs[key] = (msgs[key] ?? 0) + 1;
    }
  };
  // Log lines may go to either stream; both count as "the broker said something".
  child.stderr?.on('data', keep);
  child.stdout?.on('data', keep);
  let exit: { code: number | null; signal: string | null } | null = null;
  child.once('exit', (code, signal) => (exit = { code, signal }));
  return { child, ...ports, stderr: () => ({ tail, bytes, msgs }), exited: () => exit };
}


async function waitReady(b: Broker): Promise<void> {
  const until = Date.now() + BROKER_READY_MS;
  let last = 'no answer';
  while (Date.now() < until) {
    const ex = b.exited();
    if (ex !== null) throw new Error(`broker exited (${ex.code ?? ex.signal}) before it was ready`);
    try {
      const r = await getJson(b.http, '/status');
      if (r.status === 200) return;
      last = `HTTP ${r.status}`;
    } catch (e) {
      last = (e as Error).message;
    }
    await sleep(100);
  }
  throw new Error(`broker not ready after ${BROKER_READY_MS} ms (GET /status: ${last})`);
}

interface WorkerRow {
  id: number;
  state: string;
  restarts: number;
  connections: number;
  connectionsOpen: number;
}

async function workerRows(b: Broker): Promise<WorkerRow[]> {
  const r = await getJson(b.http, '/api/v1/stats');
  if (r.status !== 200) throw new Error(`GET /api/v1/stats: HTTP ${r.status}`);
  const ws = (r.body as { workers?: unknown }).workers;
  if (!Array.isArray(ws)) throw new Error('GET /api/v1/stats: no workers array');
  return ws.map((w: Partial<WorkerRow>, i) => ({
    id: typeof w.id === 'number' ? w.id : i,
    state: String(w.state),
    restarts: Number(w.restarts),
    connections: Number(w.connections),
    connectionsOpen: Number(w.connectionsOpen),
  }));
}

async function stopBroker(b: Broker): Promise<{ ms: number; how: string }> {
  const t0 = Date.now();
  const ex0 = b.exited();
  if (ex0 !== null) return { ms: 0, how: `had exited (${ex0.code ?? ex0.signal})` };
  const exited = new Promise<void>((r) => b.child.once('exit', () => r()));
  b.child.kill('SIGTERM');
  await Promise.race([exited, sleep(BROKER_STOP_MS)]);
  if (b.exited() === null) {
    b.child.kill('SIGKILL');
    await Promise.race([exited, sleep(5_000)]);
    return { ms: Date.now() - t0, how: `SIGKILL after ${BROKER_STOP_MS} ms` };
  }
  const ex = b.exited();
  return { ms: Date.now() - t0, how: `SIGTERM → exit ${ex?.code ?? ex?.signal ?? '?'}` };
}

// ---------------------------------------------------------------- one run
interface RunResult {
  workers: number;
  accept: Accept;
  transport: Transport;
  conns: number;
  /** Per worker `connections` (past CONNACK) from GET /api/v1/stats, in worker order. */
  counts: number[];
  /** Per worker `connectionsOpen` (accepted sockets not yet closed). */
  open: number[];
  restarts: number;
  ratio: number | null;
  /** Sum of `counts` equals the client's CONNACK count. */
  sumMatches: boolean;
  client: ClientReport | null;
  /** Lost connections seen by the client after the final stats read. */
  lostAtEnd: number;
  brokerStop: string;
  brokerStopMs: number;
  brokerStderrBytes: number;
  /** The broker's log lines by `msg` (at --log-level warn). */
  brokerLog: Record<string, number>;
  brokerStderrTail: string;
  error: string | null;
}


/** Three distinct free ports (a port just closed may come back from the next bind(0)). */
async function freePorts(): Promise<{ mqtt: number; ws: number; http: number }> {
  const got = new Set<number>();
  while (got.size < 3) got.add(await freePort());
  const [mqtt = 0, ws = 0, http = 0] = [...got];
  return { mqtt, ws, http };
}

function askClient(c: ChildProcess, type: FromClient['type'], timeoutMs: number): Promise<FromClient> {
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`client did not answer ${type} in ${timeoutMs} ms`));
    }, timeoutMs);
    const onMsg = (m: FromClient): void => {
      if (m.type !== type) return;
      cleanup();
      resolvePromise(m);
    };
    const onExit = (code: number | null, sig: string | null): void => {
      cleanup();
      reject(new Error(`client exited (${code ?? sig}) before its ${type}`));
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      c.off('message', onMsg);
      c.off('exit', onExit);
    };
    c.on('message', onMsg);
    c.once('exit', onExit);
  });
}

async function runOne(workers: number, accept: Accept, transport: Transport, conns: number, rate: number, timeoutMs: number): Promise<RunResult> {
  const res: RunResult = {
    workers, accept, transport, conns, counts: [], open: [], restarts: 0, ratio: null, sumMatches: false, client: null, lostAtEnd: 0,
    brokerStop: '', brokerStopMs: 0, brokerStderrBytes: 0, brokerLog: {}, brokerStderrTail: '', error: null,
  };
  const label = `${workers} workers, ${accept}, ${transport}, ${conns} conns`;
  const say = (s: string): void => {
    process.stderr.write(`[${label}] ${s}\n`);
  };
  let broker: Broker | null = null;
  let client: ChildProcess | null = null;
  let timedOut = false;
  const deadline = setTimeout(() => {
    timedOut = true;
    res.error ??= `timed out after ${timeoutMs} ms`;
    say(res.error);
    // Unblocks whatever waits on the client; the broker is stopped in finally.
    client?.kill('SIGKILL');
  }, timeoutMs);
  try {
    const ports = await freePorts();
    broker = startBroker(workers, accept, ports);
    const b = broker;
    await waitReady(b);
    const st = (await getJson(b.http, '/status')).body as { accept?: unknown };
    if (st.accept !== accept) throw new Error(`GET /status says accept ${String(st.accept)}, expected ${accept}`);
    say(`broker up (pid ${b.child.pid ?? '?'}; mqtt ${b.mqtt}, ws ${b.ws}, http ${b.http})`);
    if (timedOut) throw new Error(res.error ?? 'timed out');
    const port = transport === 'ws' ? b.ws : b.mqtt;
    const tag = `spread-${process.pid}-${workers}-${transport}-${conns}`;
    client = spawn(
      process.execPath,
      [fileURLToPath(import.meta.url), '--client', '--transport', transport, '--port', String(port), '--conns', String(conns), '--rate', String(rate), '--tag', tag],
      { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
    );
    const done = await askClient(client, 'done', timeoutMs);
    res.client = done;
    say(`client: ${done.connacked} connected, ${done.failed} failed in ${(done.ms / 1000).toFixed(1)} s${done.firstError !== null ? ` (first failure: ${done.firstError})` : ''}`);
    // The gauges are written by the workers as they handle CONNECT; the client may see the
    // last CONNACKs a moment before the main thread reads every worker's slot.
    const until = Date.now() + 5_000;
    let rows = await workerRows(b);
    while (rows.reduce((s, w) => s + w.connections, 0) !== done.connacked && Date.now() < until) {
      await sleep(100);
      rows = await workerRows(b);
    }
    // Once more after the client confirms it still holds everything it had.
    const reported = askClient(client, 'report', 10_000);
    client.send({ type: 'report' } satisfies ToClient);
    const again = await reported;
    rows = await workerRows(b);
    res.lostAtEnd = again.lost;
    res.counts = rows.map((w) => w.connections);
    res.open = rows.map((w) => w.connectionsOpen);
    res.restarts = rows.reduce((s, w) => s + w.restarts, 0);
    const notRunning = rows.filter((w) => w.state !== 'running').map((w) => `worker ${w.id} ${w.state}`);
    if (notRunning.length > 0) res.error ??= notRunning.join(', ');
    const sum = res.counts.reduce((s, n) => s + n, 0);
    res.sumMatches = sum === again.connacked - again.lost;
    if (!res.sumMatches) res.error ??= `workers' connections add up to ${sum}, client holds ${again.connacked - again.lost}`;
    const max = Math.max(...res.counts);
    const min = Math.min(...res.counts);
    res.ratio = res.counts.length === 0 ? null : min === 0 ? Infinity : max / min;
    say(`per worker ${res.counts.join(' / ')} → max/min ${fmtRatio(res.ratio)}`);
  } catch (e) {
    if (!timedOut) {
      res.error ??= (e as Error).message;
      say(`error: ${res.error}`);
    }
  } finally {
    clearTimeout(deadline);
    // Broker first: TIME_WAIT then stays on the broker's side (see the header).
    if (broker !== null) {
      const st = await stopBroker(broker);
      res.brokerStop = st.how;
      res.brokerStopMs = st.ms;
      const se = broker.stderr();
      res.brokerStderrBytes = se.bytes;
      res.brokerStderrTail = se.tail;
      res.brokerLog = se.msgs;
      say(`broker stopped: ${st.how} in ${(st.ms / 1000).toFixed(1)} s; log lines ${JSON.stringify(se.msgs)}`);
      if (!st.how.startsWith('SIGTERM → exit 0')) res.error ??= `broker stop: ${st.how}`;
    }
    if (client !== null && client.exitCode === null && client.signalCode === null) {
      const c = client;
      const exited = new Promise((r) => c.once('exit', r));
      if (c.connected) c.send({ type: 'close' } satisfies ToClient);
      await Promise.race([exited, sleep(5_000)]);
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }
  }
  return res;
}

// ---------------------------------------------------------------- main
function fmtRatio(r: number | null): string {
  return r === null ? 'n/a' : Number.isFinite(r) ? r.toFixed(3) : '∞';
}


async function main(argv: string[]): Promise<void> {
  if (argv.includes('--client')) {
    const t = list(argv, '--transport', 'tcp')[0];
    await clientMain({
      transport: t === 'ws' ? 'ws' : 'tcp',
      port: num(argv, '--port', 1),
      conns: num(argv, '--conns', 1),
      rate: num(argv, '--rate', 4000),
      tag: list(argv, '--tag', `spread-${process.pid}`)[0] ?? 'spread',
    });
    return;
  }
  if (argv.includes('--help')) {
    console.log('node bench/dist/broker-spread.js [--workers 2,4] [--conns 1000,10000] [--transport tcp,ws] [--accept reuseport,shared-fd] [--rate 4000] [--timeout-ms 180000] [--json FILE]');
    return;
  }
  const transports = list(argv, '--transport', TRANSPORTS.join(',')) as Transport[];
  for (const t of transports) if (!TRANSPORTS.includes(t)) throw new Error(`--transport: unknown ${t} (${TRANSPORTS.join(', ')})`);
  const accepts = list(argv, '--accept', 'reuseport') as Accept[];
  for (const a of accepts) if (!ACCEPTS.includes(a)) throw new Error(`--accept: unknown ${a} (${ACCEPTS.join(', ')})`);
  const workerCounts = ints(argv, '--workers', '2,4');
  const connCounts = ints(argv, '--conns', '1000,10000');
  const rate = num(argv, '--rate', 4000);
  const timeoutMs = num(argv, '--timeout-ms', 180_000);
  const jsonIdx = argv.indexOf('--json');
  const jsonFile = jsonIdx >= 0 ? argv[jsonIdx + 1] : undefined;
  if (jsonIdx >= 0 && jsonFile === undefined) throw new Error('--json needs a file name');

  const started = new Date().toISOString();
  const machine = `Node ${process.version}, Linux ${release()}, ${cpus().length} CPU (${cpus()[0]?.model ?? '?'})`;
  console.log(`# broker connection spread: ${machine}, client rate ${rate}/s\n`);
  console.log('| workers | accept | transport | conns | per worker (connections) | max/min | sum = held | opened | failed | connect s | broker stop |');
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  const results: RunResult[] = [];
  let bad = false;
  for (const workers of workerCounts) {
    for (const accept of accepts) for (const transport of transports) {
      for (const conns of connCounts) {
        const r = await runOne(workers, accept, transport, conns, rate, timeoutMs);
        results.push(r);
        const c = r.client;
        const failed = c === null ? 'n/a' : String(c.failed);
        const refused = c !== null && Object.keys(c.refused).length > 0 ? ` refused ${JSON.stringify(c.refused)}` : '';
        const err = r.error !== null ? ` **error: ${r.error}**` : c?.firstError != null ? ` (first failure: ${c.firstError})` : '';
        if (r.error !== null || (c?.failed ?? 1) > 0 || r.lostAtEnd > 0) bad = true;
        console.log(
          `| ${workers} | ${accept} | ${transport} | ${conns} | ${r.counts.join(' / ')} | ${fmtRatio(r.ratio)} | ${r.sumMatches ? 'yes' : 'NO'} | ${c?.connacked ?? 0} | ${failed}${refused}${err} | ${c === null ? 'n/a' : (c.ms / 1000).toFixed(1)} | ${(r.brokerStopMs / 1000).toFixed(1)} s |`,
        );
        // At warn level, a broker without a password file always logs auth.anonymous_allowed
        // once per worker (and, on the shared-fd path, accept.reuseport_unavailable once);
        // anything else is shown.
        const expected = ['auth.anonymous_allowed', ...(accept === 'shared-fd' ? ['accept.reuseport_unavailable'] : [])];
        if (Object.keys(r.brokerLog).some((k) => !expected.includes(k)) || r.error !== null) {
          process.stderr.write(`[${workers} workers, ${accept}, ${transport}, ${conns} conns] broker log (last ${Math.min(r.brokerStderrBytes, STDERR_KEEP)} of ${r.brokerStderrBytes} bytes):\n`);
          const lines = r.brokerStderrTail.trimEnd().split('\n');
          process.stderr.write(`${lines.slice(-40).join('\n')}\n`);
        }
      }
    }
  }
  if (jsonFile !== undefined) {
    writeFileSync(jsonFile, `${JSON.stringify({ tool: 'broker-spread', started_at: started, machine, rate, timeout_ms: timeoutMs, runs: results }, null, 2)}\n`);
    process.stderr.write(`wrote ${jsonFile}\n`);
  }
  if (bad) process.exitCode = 1;
}

main(process.argv.slice(2)).catch((e: unknown): void => {
  console.error(e);
  process.exit(2);
});
