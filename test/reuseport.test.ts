// The SO_REUSEPORT addon (native/reuseport, src/transport/reuseport.ts; docs/accept.md):
// worker threads of one process each listen on the same port and all get connections; a
// port held without SO_REUSEPORT by another process is refused with EADDRINUSE.
// Builds the addon only when it is missing (the setup script normally has built it).
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { REUSEPORT_ADDON_PATH, listenReusePort, loadReusePort, probeExclusive } from '../src/transport/reuseport.js';
import { freePort } from './helpers/broker.js';

const HOST = '127.0.0.1';
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const MODULE = pathToFileURL(join(ROOT, 'dist/src/transport/reuseport.js')).href;
const T = { timeout: 20_000 };

// Worker thread: listens through src/transport/reuseport.ts and counts connections.
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const net = require('node:net');
let n = 0;
const server = net.createServer((s) => { n++; s.on('error', () => {}); });
import(workerData.module).then(async (m) => {
  const port = await m.listenReusePort(server, { name: 'test', bind: workerData.host, port: workerData.port });
  parentPort.postMessage({ type: 'ready', port });
}).catch((e) => parentPort.postMessage({ type: 'error', code: e.code, message: e.message }));
parentPort.on('message', (m) => {
  if (m === 'count') parentPort.postMessage({ type: 'count', n });
  else server.close(() => process.exit(0));
});
`;

type Msg = { type: 'ready'; port: number } | { type: 'count'; n: number } | { type: 'error'; code?: string; message: string };

function next(w: Worker, type: Msg['type']): Promise<Msg> {
  return new Promise((res, rej) => {
    const on = (m: Msg): void => {
      if (m.type === type || m.type === 'error') {
        w.off('message', on);
        if (m.type === 'error') rej(Object.assign(new Error(m.message), { code: m.code }));
        else res(m);
      }
    };
    w.on('message', on);
    w.once('error', rej);
  });
}

function startWorker(port: number): Worker {
  const w = new Worker(WORKER, { eval: true, workerData: { module: MODULE, host: HOST, port } });
  w.unref(); // a failed test must not keep the process alive
  return w;
}

async function stopWorkers(ws: Worker[]): Promise<void> {
  await Promise.all(ws.map(async (w) => {
    const exited = once(w, 'exit');
    w.postMessage('stop');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 2_000))]);
    await w.terminate();
  }));
}

before(() => {
  if (!existsSync(REUSEPORT_ADDON_PATH)) {
    execFileSync(process.execPath, [join(ROOT, 'scripts/build-addon.mjs'), '--strict'], { stdio: 'inherit', timeout: 180_000 });
  }
});

describe('reuseport addon', () => {
  test('two worker threads on one port both accept connections', T, async () => {
    const port = await freePort();
    await probeExclusive('test', HOST, port);
    const ws = [startWorker(port), startWorker(port)];
    try {
      // Listen for 'ready' before awaiting: a message with no listener is lost.
      const readies = ws.map((w) => next(w, 'ready'));
      for (const r of readies) assert.equal(((await r) as Extract<Msg, { type: 'ready' }>).port, port);
      const socks: net.Socket[] = [];
      try {
        for (let i = 0; i < 400; i += 50) {
          const batch = Array.from({ length: 50 }, () => new Promise<net.Socket>((res, rej) => {
            const s = net.connect(port, HOST, () => res(s));
            s.once('error', rej);
          }));
          socks.push(...(await Promise.all(batch)));
        }
        let counts: number[] = [];
        for (let tries = 0; tries < 50; tries++) {
          counts = await Promise.all(ws.map(async (w) => {
            const answer = next(w, 'count');
            w.postMessage('count');
            return ((await answer) as Extract<Msg, { type: 'count' }>).n;
          }));
          if (counts.reduce((a, b) => a + b, 0) === 400) break;
          await new Promise((r) => setTimeout(r, 50));
        }
        assert.equal(counts.reduce((a, b) => a + b, 0), 400, `counts ${counts.join('/')}`);
        for (const n of counts) assert.ok(n > 0, `each worker accepts: ${counts.join('/')}`);
        // The kernel's hash: far from the 160/40 of one shared fd (expected ±3σ ≈ 200±30).
        assert.ok(Math.max(...counts) / Math.min(...counts) < 1.6, `spread ${counts.join('/')}`);
      } finally {
        for (const s of socks) s.destroy();
      }
      // A second group member makes the exclusive probe fail: a second broker would not start.
      await assert.rejects(probeExclusive('test', HOST, port), { code: 'EADDRINUSE' });
    } finally {
      await stopWorkers(ws);
    }
  });

  test('a port held by another process without SO_REUSEPORT gives EADDRINUSE', T, async () => {
    const holder: ChildProcess = spawn(process.execPath, ['-e', `
      const s = require('node:net').createServer().listen({ host: '${HOST}', port: 0, exclusive: true }, () => {
        process.stdout.write(String(s.address().port) + '\\n');
      });
      process.stdin.on('end', () => process.exit(0)); process.stdin.resume();
    `], { stdio: ['pipe', 'pipe', 'inherit'] });
    try {
      const [line] = (await once(holder.stdout!, 'data')) as [Buffer];
      const port = Number(line.toString().trim());
      assert.ok(port > 0);
      const addon = loadReusePort();
      assert.throws(() => addon.listenReusePort(HOST, port, 16), { code: 'EADDRINUSE', syscall: 'bind' });
      const server = net.createServer();
      await assert.rejects(listenReusePort(server, { name: 'mqtt', bind: HOST, port }), (e: NodeJS.ErrnoException) => {
        assert.equal(e.code, 'EADDRINUSE');
        assert.match(e.message, /listener mqtt: port \d+ is already in use/);
        return true;
      });
      assert.equal(server.listening, false);
      // And in a worker thread too.
      const w = startWorker(port);
      try {
        await assert.rejects(next(w, 'ready'), { code: 'EADDRINUSE' });
      } finally {
        await stopWorkers([w]);
      }
    } finally {
      holder.stdin!.end();
      if (holder.exitCode === null) await Promise.race([once(holder, 'exit'), new Promise((r) => setTimeout(r, 2_000))]);
      if (holder.exitCode === null) holder.kill('SIGKILL');
    }
  });

  test('bad arguments and a missing addon are clear errors', () => {
    const addon = loadReusePort();
    assert.throws(() => addon.listenReusePort(HOST, 70_000, 16), RangeError);
    assert.throws(() => loadReusePort('/nonexistent/reuseport.node'), (e: NodeJS.ErrnoException) => {
      assert.equal(e.code, 'REUSEPORT_ADDON_UNAVAILABLE');
      assert.match(e.message, /does not exist; fix: install make, g\+\+ and python3 .*npm run build:reuseport/);
      return true;
    });
  });
});
