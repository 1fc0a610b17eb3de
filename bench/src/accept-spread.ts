#!/usr/bin/env node
// How evenly N worker threads of one process share the connections accepted on one port
// (issue 4, docs/accept.md). Prints a Markdown table: per-worker counts and max/min.
//
//   node bench/dist/accept-spread.js [--workers 2,4] [--conns 1000,10000]
//                                   [--mode fd-share,reuseport,uws] [--rate 4000]
//                                   [--timeout-ms 120000]
//
// Each list is a matrix axis (default: all of the above). Modes:
//   fd-share    one listening socket (made once by the main thread), adopted by every worker
//               with net.Server#listen({ fd }): every worker's epoll wakes, the first to
//               accept() wins
//   reuseport   every worker makes its own SO_REUSEPORT socket with the addon
//               (native/reuseport: `npm run build:reuseport`) and adopts it with
//               listen({ fd }); the kernel hashes connections over the group
//   uws         every worker runs a uWebSockets.js App listening on the port (uSockets sets
//               SO_REUSEPORT when LIBUS_LISTEN_EXCLUSIVE_PORT is not given); clients are
//               WebSocket clients (ws), counted at the WebSocket `open`
// The clients run in a separate process (this file with --client): they open --conns
// connections with at most 128 connecting at a time and at most --rate new ones per second,
// hold them all, and report; the workers then report their counts. Each run is bounded by
// --timeout-ms, and everything is torn down after it (workers first, so that TIME_WAIT stays
// on the server side and the client's ephemeral ports are not used up across runs).
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { freePort } from './compare/brokers.js';
import { list, num } from './local.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const ADDON = join(ROOT, 'native/reuseport/build/Release/reuseport.node');
const HOST = '127.0.0.1';
const require = createRequire(join(ROOT, 'package.json'));

type Mode = 'fd-share' | 'reuseport' | 'uws';
const MODES: readonly Mode[] = ['fd-share', 'reuseport', 'uws'];

interface Addon {
  listenReusePort(host: string, port: number, backlog: number): number;
  localPort(fd: number): number;
  closeFd(fd: number): void;
}
function loadAddon(): Addon {
  if (!existsSync(ADDON)) throw new Error(`${ADDON} is not built: run \`npm run build:reuseport\``);
  return require(ADDON) as Addon;
}

// The part of uWebSockets.js used here (loaded like src/transport/uws.ts loadUws: the binary
// for this platform / ABI, never the JS fallback).
interface UwsLike {
  App(): UwsAppLike;
  us_listen_socket_close(ls: unknown): void;
  us_socket_local_port(ls: unknown): number;
}
interface UwsAppLike {
  ws(pattern: string, behavior: { idleTimeout?: number; open?: () => void; close?: () => void }): UwsAppLike;
  listen(host: string, port: number, cb: (ls: unknown) => void): UwsAppLike;
  close?: () => void;
}
function loadUwsBinary(): UwsLike {
  const pkgDir = dirname(require.resolve('@trufflesuite/uws-js-unofficial/package.json'));
  const file = join(pkgDir, 'binaries', `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`);
  return require(file) as UwsLike;
}

// ---------------------------------------------------------------- worker thread
interface WorkerInit {
  mode: Mode;
  index: number;
  port: number;
  /** fd-share: the one listening fd made by the main thread. */
  fd: number;
}
type ToWorker = { type: 'count' } | { type: 'stop' };
type FromWorker = { type: 'ready'; port: number } | { type: 'count'; accepted: number; open: number } | { type: 'error'; message: string };

function workerMain(init: WorkerInit): void {
  const port0 = parentPort;
  if (port0 === null) return;
  let accepted = 0;
  let open = 0;
  let stop: () => void = () => {};
  const post = (m: FromWorker): void => port0.postMessage(m);
  try {
    if (init.mode === 'uws') {
      const uws = loadUwsBinary();
      const app = uws.App().ws('/*', {
        idleTimeout: 0,
        open: () => {
          accepted++;
          open++;
        },
        close: () => {
          open--;
        },
      });
      app.listen(HOST, init.port, (ls) => {
        if (!ls) {
          post({ type: 'error', message: `worker ${init.index}: uws listen ${HOST}:${init.port} failed` });
          return;
        }
        stop = () => {
          uws.us_listen_socket_close(ls);
          app.close?.();
        };
        post({ type: 'ready', port: uws.us_socket_local_port(ls) });
      });
    } else {
      const fd = init.mode === 'fd-share' ? init.fd : loadAddon().listenReusePort(HOST, init.port, 4096);
      const server = net.createServer({ pauseOnConnect: true }, (s) => {
        accepted++;
        open++;
        s.on('error', () => {});
        s.on('close', () => open--);
      });
      server.on('error', (e) => post({ type: 'error', message: `worker ${init.index}: ${e.message}` }));
      server.listen({ fd, backlog: 4096 }, () => {
        const addr = server.address();
        post({ type: 'ready', port: typeof addr === 'object' && addr !== null ? addr.port : init.port });
      });
      stop = () => server.close();
    }
  } catch (e) {
    post({ type: 'error', message: `worker ${init.index}: ${(e as Error).message}` });
  }
  port0.on('message', (m: ToWorker) => {
    if (m.type === 'count') post({ type: 'count', accepted, open });
    else {
      stop();
      process.exit(0);
    }
  });
}

// ---------------------------------------------------------------- client process
interface ClientArgs {
  port: number;
  conns: number;
  ws: boolean;
  rate: number;
}
type FromClient = { type: 'done'; opened: number; failed: number; firstError: string | null; ms: number };

interface WsLike {
  on(ev: 'open' | 'error' | 'close', cb: (e?: Error) => void): void;
  terminate(): void;
}
type WsCtor = new (url: string, opts: { perMessageDeflate: boolean; handshakeTimeout: number }) => WsLike;

async function clientMain(a: ClientArgs): Promise<void> {
  const WebSocket = a.ws ? (require('ws') as WsCtor) : null;
  const held: Array<{ close(): void }> = [];
  let opened = 0;
  let failed = 0;
  let firstError: string | null = null;
  const t0 = Date.now();
  const openOne = (): Promise<void> =>
    new Promise<void>((done) => {
      const fail = (e?: Error): void => {
        failed++;
        firstError ??= e?.message ?? 'closed before open';
        done();
      };
      if (WebSocket !== null) {
        const ws = new WebSocket(`ws://${HOST}:${a.port}/`, { perMessageDeflate: false, handshakeTimeout: 20_000 });
        let ok = false;
        ws.on('open', () => {
          ok = true;
          opened++;
          held.push({ close: () => ws.terminate() });
          done();
        });
        ws.on('error', (e) => {
          if (!ok) fail(e);
        });
      } else {
        const s = net.connect({ host: HOST, port: a.port });
        let ok = false;
        s.once('connect', () => {
          ok = true;
          opened++;
          held.push({ close: () => s.destroy() });
          done();
        });
        s.on('error', (e) => {
          if (!ok) fail(e);
        });
      }
    });
  const MAX_IN_FLIGHT = 128;
  let started = 0;
  const lanes: Promise<void>[] = [];
  for (let l = 0; l < MAX_IN_FLIGHT; l++) {
    lanes.push(
      (async () => {
        while (started < a.conns) {
          const due = t0 + (started / a.rate) * 1000;
          started++;
          const wait = due - Date.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
          await openOne();
        }
      })(),
    );
  }
  await Promise.all(lanes);
  const msg: FromClient = { type: 'done', opened, failed, firstError, ms: Date.now() - t0 };
  process.send?.(msg);
  // Hold until the parent says so (or goes away).
  process.on('message', () => {
    for (const h of held) h.close();
    process.exit(0);
  });
  process.on('disconnect', () => process.exit(0));
}

// ---------------------------------------------------------------- main
interface RunResult {
  mode: Mode;
  workers: number;
  conns: number;
  counts: number[];
  opened: number;
  failed: number;
  firstError: string | null;
  connectMs: number;
  error: string | null;
}

function ask<T extends FromWorker['type']>(w: Worker, type: T, timeoutMs: number): Promise<Extract<FromWorker, { type: T }>> {
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      w.off('message', on);
      reject(new Error(`worker did not answer ${type} in ${timeoutMs} ms`));
    }, timeoutMs);
    const on = (m: FromWorker): void => {
      if (m.type === 'error') {
        clearTimeout(timer);
        w.off('message', on);
        reject(new Error(m.message));
      } else if (m.type === type) {
        clearTimeout(timer);
        w.off('message', on);
        resolvePromise(m as Extract<FromWorker, { type: T }>);
      }
    };
    w.on('message', on);
  });
}

async function runOne(mode: Mode, workers: number, conns: number, rate: number, timeoutMs: number): Promise<RunResult> {
  const res: RunResult = { mode, workers, conns, counts: [], opened: 0, failed: 0, firstError: null, connectMs: 0, error: null };
  const ws: Worker[] = [];
  let client: ChildProcess | null = null;
  let sharedFd = -1;
  const deadline = setTimeout(() => {
    res.error = `timed out after ${timeoutMs} ms`;
    client?.kill('SIGKILL');
    for (const w of ws) void w.terminate();
  }, timeoutMs);
  try {
    let port = 0;
    if (mode === 'fd-share') {
      const addon = loadAddon();
      // A plain listening socket; SO_REUSEPORT on it changes nothing: it is one socket.
      sharedFd = addon.listenReusePort(HOST, 0, 4096);
      port = addon.localPort(sharedFd);
    } else if (mode === 'uws') {
      // uSockets sets SO_REUSEPORT only when the port is not 0: pick a free port first.
      port = await freePort();
    }
    // Worker 0 first (it may bind port 0), then the others on its port.
    for (let i = 0; i < workers; i++) {
      const w = new Worker(fileURLToPath(import.meta.url), { workerData: { mode, index: i, port, fd: sharedFd } satisfies WorkerInit });
      w.on('error', (e: Error) => (res.error ??= `worker ${i}: ${e.message}`));
      ws.push(w);
      const ready = await ask(w, 'ready', 10_000);
      if (port === 0) port = ready.port;
    }
    client = spawn(process.execPath, [fileURLToPath(import.meta.url), '--client', '--port', String(port), '--conns', String(conns), '--rate', String(rate), '--ws', mode === 'uws' ? '1' : '0'], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const c = client;
    const done = await new Promise<FromClient>((resolvePromise, reject) => {
      c.once('message', (m: FromClient) => resolvePromise(m));
      c.once('exit', (code, sig) => reject(new Error(`client exited (${code ?? sig}) before reporting`)));
    });
    res.opened = done.opened;
    res.failed = done.failed;
    res.firstError = done.firstError;
    res.connectMs = done.ms;
    // The last accepts / upgrades may trail the client's view by a little: wait until the
    // workers have counted every connection the client holds (or 5 s).
    const until = Date.now() + 5_000;
    for (;;) {
      const counts = await Promise.all(
        ws.map((w) => {
          const answer = ask(w, 'count', 5_000);
          w.postMessage({ type: 'count' } satisfies ToWorker);
          return answer;
        }),
      );
      res.counts = counts.map((x) => x.accepted);
      if (res.counts.reduce((s, n) => s + n, 0) >= done.opened || Date.now() > until) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (e) {
    res.error ??= (e as Error).message;
  } finally {
    clearTimeout(deadline);
    // Servers close first (TIME_WAIT on their side), then the client lets go.
    for (const w of ws) w.postMessage({ type: 'stop' } satisfies ToWorker);
    await Promise.all(ws.map((w) => Promise.race([new Promise((r) => w.once('exit', r)), new Promise((r) => setTimeout(r, 3_000))])));
    await Promise.all(ws.map((w) => w.terminate()));
    if (client !== null && client.exitCode === null) {
      const c = client;
      const exited = new Promise((r) => c.once('exit', r));
      if (c.connected) c.send('close');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))]);
      if (c.exitCode === null) c.kill('SIGKILL');
    }
    if (sharedFd >= 0) {
      try {
        loadAddon().closeFd(sharedFd);
      } catch {
        /* closed by a worker's server */
      }
    }
  }
  return res;
}



async function main(argv: string[]): Promise<void> {
  if (argv.includes('--client')) {
    await clientMain({ port: num(argv, '--port', 1), conns: num(argv, '--conns', 1), rate: num(argv, '--rate', 4000), ws: list(argv, '--ws', '0')[0] === '1' });
    return;
  }
  const modes = list(argv, '--mode', MODES.join(',')) as Mode[];
  for (const m of modes) if (!MODES.includes(m)) throw new Error(`--mode: unknown mode ${m} (${MODES.join(', ')})`);
  const workerCounts = list(argv, '--workers', '2,4').map(Number);
  const connCounts = list(argv, '--conns', '1000,10000').map(Number);
  const rate = num(argv, '--rate', 4000);
  const timeoutMs = num(argv, '--timeout-ms', 120_000);
  const rows: string[] = [];
  console.log(`# accept spread: Node ${process.version}, ${cpus().length} CPU (${cpus()[0]?.model ?? '?'}), client rate ${rate}/s\n`);
  console.log('| mode | workers | conns | per worker | max/min | opened | failed | connect s |');
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
  let bad = false;
  for (const mode of modes) {
    for (const workers of workerCounts) {
      for (const conns of connCounts) {
        const r = await runOne(mode, workers, conns, rate, timeoutMs);
        const max = Math.max(...r.counts);
        const min = Math.min(...r.counts);
        const ratio = r.counts.length === 0 ? 'n/a' : min === 0 ? '∞' : (max / min).toFixed(3);
        const err = r.error !== null ? ` **error: ${r.error}**` : r.firstError !== null ? ` (first failure: ${r.firstError})` : '';
        if (r.error !== null || r.failed > 0) bad = true;
        const row = `| ${mode} | ${workers} | ${conns} | ${r.counts.join(' / ')} | ${ratio} | ${r.opened} | ${r.failed}${err} | ${(r.connectMs / 1000).toFixed(1)} |`;
        rows.push(row);
        console.log(row);
      }
    }
  }
  if (bad) process.exitCode = 1;
}

if (isMainThread) {
  main(process.argv.slice(2)).catch((e: unknown): void => {
    console.error(e);
    process.exit(2);
  });
} else {
  workerMain(workerData as WorkerInit);
}
