// Transports and the management HTTP server, on real loopback sockets with ephemeral ports.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import WebSocket from 'ws';
import { Logger } from '../src/log/logger.js';
import { startHttp, type HttpRoute } from '../src/mgmt/http.js';
import { startTcpListener } from '../src/transport/tcp.js';
import { startTlsListener } from '../src/transport/tls.js';
import type { Listener, Transport, TransportHandlers } from '../src/transport/types.js';
import { loadUws } from '../src/transport/uws.js';
import { selectSubprotocol, startWsListener } from '../src/transport/ws.js';
import { freePort, sleep, waitFor as poll } from './helpers/broker.js';
import { selfSignedCert, signedCert } from './helpers/certs.js';
import { tempDir } from './helpers/tmp.js';
import { wsRefusal } from './helpers/ws.js';

const HOST = '127.0.0.1';
const T = { timeout: 20_000 };

const logLines: string[] = [];
const log = new Logger('debug', {}, (l) => logLines.push(l));
const { uws, native } = loadUws({ allowFallback: false, log });

const open: Listener[] = [];
function track(l: Listener): Listener {
  open.push(l);
  return l;
}
after(async () => {
  await Promise.all(open.map((l) => l.close()));
});

// ---------------------------------------------------------------- helpers

/** `poll` with this file's 5 s default. */
const waitFor = (cond: () => boolean, what: string, ms = 5000): Promise<void> => poll(cond, what, ms);

interface Accepted {
  t: Transport;
  data: Buffer[];
  closes: boolean[];
  drains: number;
}

/** onConnection that records everything; `echo` writes data back. */
function recorder(opts: { echo?: boolean; pause?: boolean } = {}): {
  accepted: Accepted[];
  onConnection: (t: Transport) => void;
} {
  const accepted: Accepted[] = [];
  return {
    accepted,
    onConnection: (t) => {
      const a: Accepted = { t, data: [], closes: [], drains: 0 };
      accepted.push(a);
      if (opts.pause) t.pauseReading();
      const h: TransportHandlers = {
        data: (c) => {
          a.data.push(c);
          if (opts.echo) t.write(c);
        },
        drain: () => {
          a.drains++;
        },
        close: (hadError) => {
          a.closes.push(hadError);
        },
      };
      t.setHandlers(h);
    },
  };
}

function readBytes(s: net.Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let got = 0;
    const onData = (c: Buffer): void => {
      parts.push(c);
      got += c.length;
      if (got >= n) {
        s.off('data', onData);
        resolve(Buffer.concat(parts));
      }
    };
    s.on('data', onData);
    s.once('error', reject);
  });
}

function wsConnect(url: string, protocols?: string[]): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const c = new WebSocket(url, protocols);
    c.once('open', () => resolve(c));
    c.once('error', reject);
  });
}

/**
 * Fill a transport whose peer does not read until write() returns false and no drain
 * follows (the kernel buffers are full; with TLS, write() can report false while the
 * encryption layer is merely behind, and drain then legitimately fires), then let the
 * peer read (`startReading`) and check drain fires exactly once and all bytes arrive.
 */
async function checkBackpressure(
  a: Accepted,
  hwm: number,
  startReading: () => void,
  received: () => number,
): Promise<void> {
  const chunk = Buffer.alloc(16 * 1024, 0x5a);
  let written = 0;
  let stuck = false;
  for (let round = 0; round < 200 && !stuck; round++) {
    a.drains = 0;
    let ok = true;
    // At least 1 MiB per round (the kernel buffers on loopback can take tens of MB).
    for (let i = 0; i < 100_000 && (ok || i < 64); i++) {
      ok = a.t.write(chunk);
      written += chunk.length;
    }
    assert.equal(ok, false, 'write() never returned false');
    assert.ok(a.t.bufferedBytes() > hwm, `bufferedBytes ${a.t.bufferedBytes()} should exceed ${hwm}`);
    await sleep(100);
    stuck = a.drains === 0;
  }
  assert.ok(stuck, 'drain kept firing although the peer does not read');
  assert.ok(a.t.bufferedBytes() > hwm);
  startReading();
  await waitFor(() => a.drains > 0, 'drain');
  assert.ok(a.t.bufferedBytes() <= hwm);
  assert.equal(a.t.write(Buffer.from('x')), true, 'write() accepts again after drain');
  written += 1;
  await waitFor(() => received() >= written, `all ${written} bytes at the peer`, 10_000);
  assert.equal(received(), written);
  assert.equal(a.drains, 1, 'drain fires once');
}

/** checkBackpressure towards the TCP / TLS client socket `c` (not reading yet) of the only accepted transport. */
async function checkSocketBackpressure(accepted: Accepted[], c: net.Socket, hwm: number): Promise<void> {
  c.pause();
  await waitFor(() => accepted.length === 1, 'accept');
  let received = 0;
  c.on('data', (d: Buffer) => (received += d.length));
  c.pause();
  await checkBackpressure(accepted[0]!, hwm, () => c.resume(), () => received);
  c.destroy();
}

// ---------------------------------------------------------------- uWS loading

describe('loadUws', () => {
  test('loads the native binary for this platform', () => {
    assert.equal(native, true);
    assert.equal(typeof uws.App, 'function');
    assert.equal(typeof uws.SSLApp, 'function');
  });

  test('a missing binary is UWS_NATIVE_UNAVAILABLE unless fallback is allowed', () => {
    const lines: string[] = [];
    const l = new Logger('info', {}, (x) => lines.push(x));
    const nativePath = '/nonexistent/uws_test.node';
    assert.throws(
      () => loadUws({ allowFallback: false, log: l, nativePath }),
      (e: NodeJS.ErrnoException) =>
        e.code === 'UWS_NATIVE_UNAVAILABLE' && e.message.includes('does not exist') && e.message.includes('allow_uws_fallback'),
    );
    const fb = loadUws({ allowFallback: true, log: l, nativePath });
    assert.equal(fb.native, false);
    assert.equal(typeof fb.uws.App, 'function');
    assert.equal(fb.uws.SSLApp, undefined, 'the fallback module is dist/index, not the native binary');
    assert.ok(lines.some((x) => JSON.parse(x).msg === 'uws.fallback' && JSON.parse(x).level === 'warn'));
  });

  test('a corrupt binary reports the load failure', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fleetmq-uws-'));
    try {
      const p = join(dir, 'bad.node');
      writeFileSync(p, 'not an ELF file');
      assert.throws(
        () => loadUws({ allowFallback: false, log, nativePath: p }),
        (e: NodeJS.ErrnoException) => e.code === 'UWS_NATIVE_UNAVAILABLE' && e.message.includes('failed to load'),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---------------------------------------------------------------- TCP

describe('tcp', () => {
  test('echo through the Transport interface; close handler once', T, async () => {
    const r = recorder({ echo: true });
    const l = track(await startTcpListener({ name: 'mqtt-t1', bind: HOST, port: 0, log, onConnection: r.onConnection }));
    assert.ok(l.port > 0);
    assert.equal(l.name, 'mqtt-t1');
    const c = net.connect(l.port, HOST);
    await once(c, 'connect');
    const reply = readBytes(c, 11);
    c.write('hello');
    c.write(' world');
    assert.equal((await reply).toString(), 'hello world');
    const a = r.accepted[0]!;
    assert.equal(a.t.kind, 'tcp');
    assert.equal(a.t.remoteAddress, HOST);
    assert.equal(a.t.certCommonName, null);
    c.end();
    await waitFor(() => a.closes.length > 0, 'close');
    await sleep(50);
    assert.deepEqual(a.closes, [false]);
    assert.equal(a.t.write(Buffer.from('late')), false, 'write after close is refused');
    await l.close();
  });

  test('a second listener on the same port fails with EADDRINUSE naming it', T, async () => {
    const r = recorder();
    const l = track(await startTcpListener({ name: 'mqtt-a', bind: HOST, port: 0, log, onConnection: r.onConnection }));
    await assert.rejects(
      startTcpListener({ name: 'mqtt-b', bind: HOST, port: l.port, log, onConnection: r.onConnection }),
      (e: NodeJS.ErrnoException) => e.code === 'EADDRINUSE' && e.message.includes('mqtt-b') && e.message.includes(String(l.port)),
    );
    await l.close();
  });

  test('backpressure: write() false when the peer does not read, drain once it does', T, async () => {
    const hwm = 32 * 1024;
    const r = recorder();
    const l = track(await startTcpListener({ name: 'mqtt-bp', bind: HOST, port: 0, log, onConnection: r.onConnection, highWaterMark: hwm }));
    await checkSocketBackpressure(r.accepted, net.connect(l.port, HOST), hwm);
    await l.close();
  });

  test('pauseReading holds data until resumeReading; end() flushes then closes', T, async () => {
    const r = recorder({ pause: true });
    const l = track(await startTcpListener({ name: 'mqtt-pr', bind: HOST, port: 0, log, onConnection: r.onConnection }));
    const c = net.connect(l.port, HOST);
    await once(c, 'connect');
    c.write('abc');
    await waitFor(() => r.accepted.length === 1, 'accept');
    await sleep(100);
    const a = r.accepted[0]!;
    assert.equal(a.data.length, 0, 'no data while paused');
    a.t.resumeReading();
    await waitFor(() => a.data.length > 0, 'data after resume');
    assert.equal(Buffer.concat(a.data).toString(), 'abc');

    const big = Buffer.alloc(1024 * 1024, 7);
    let got = 0;
    c.on('data', (d: Buffer) => (got += d.length));
    a.t.write(big);
    a.t.end();
    await once(c, 'end');
    assert.equal(got, big.length, 'everything written before end() arrives');
    c.end();
    await waitFor(() => a.closes.length === 1, 'close');
    await l.close();
  });

  test('Listener.close() closes open connections', T, async () => {
    const r = recorder();
    const l = track(await startTcpListener({ name: 'mqtt-cl', bind: HOST, port: 0, log, onConnection: r.onConnection }));
    const c = net.connect(l.port, HOST);
    c.on('error', () => {});
    await waitFor(() => r.accepted.length === 1, 'accept');
    const closed = once(c, 'close');
    await l.close();
    await closed;
    await waitFor(() => r.accepted[0]!.closes.length === 1, 'transport close');
  });
});

// ---------------------------------------------------------------- TLS

describe('tls', () => {
  const tmp = tempDir('fleetmq-tls-');
  const f = tmp.file;
  before(() => {
    // A self-signed server certificate; a CA (CN=fleetmq test CA) that signed only the client's.
    selfSignedCert(tmp.path, 'server', 'localhost');
    selfSignedCert(tmp.path, 'ca', 'fleetmq test CA');
    signedCert(tmp.path, 'client', 'device-42');
  });

  const connect = (port: number, extra: tls.ConnectionOptions = {}): tls.TLSSocket =>
    tls.connect({ host: HOST, port, servername: 'localhost', ca: [readPem(f('server.crt'))], ...extra });

  test('echo over TLS; no client certificate means certCommonName null', T, async () => {
    const r = recorder({ echo: true });
    const l = track(await startTlsListener({
      name: 'mqtts-t1', bind: HOST, port: 0, log, onConnection: r.onConnection, cert: f('server.crt'), key: f('server.key'),
    }));
    const c = connect(l.port);
    await once(c, 'secureConnect');
    assert.equal(c.authorized, true, String(c.authorizationError));
    const reply = readBytes(c, 4);
    c.write('ping');
    assert.equal((await reply).toString(), 'ping');
    const a = r.accepted[0]!;
    assert.equal(a.t.kind, 'tls');
    assert.equal(a.t.certCommonName, null);
    c.end();
    await waitFor(() => a.closes.length === 1, 'close');
    await l.close();
  });

  test('request_cert: verified client certificate CN; clients without one are refused', T, async () => {
    const r = recorder({ echo: true });
    const l = track(await startTlsListener({
      name: 'mqtts-m', bind: HOST, port: 0, log, onConnection: r.onConnection,
      cert: f('server.crt'), key: f('server.key'), ca: f('ca.crt'), requestCert: true,
    }));
    const c = connect(l.port, { cert: readPem(f('client.crt')), key: readPem(f('client.key')) });
    await once(c, 'secureConnect');
    const reply = readBytes(c, 2);
    c.write('hi');
    await reply;
    assert.equal(r.accepted.length, 1);
    assert.equal(r.accepted[0]!.t.certCommonName, 'device-42');
    c.destroy();

    // No certificate / a certificate from another CA: refused before onConnection.
    for (const extra of [{}, { cert: readPem(f('server.crt')), key: readPem(f('server.key')) }]) {
      const bad = connect(l.port, extra);
      const closed = new Promise((resolve) => bad.once('close', resolve));
      bad.on('error', () => {});
      bad.on('secureConnect', () => bad.write('x'));
      await closed;
    }
    await sleep(50);
    assert.equal(r.accepted.length, 1, 'unverified clients never reach onConnection');
    await l.close();
  });

  test('unreadable files and request_cert without ca are clear errors', T, async () => {
    const r = recorder();
    await assert.rejects(
      startTlsListener({ name: 'mqtts-e', bind: HOST, port: 0, log, onConnection: r.onConnection, cert: f('server.crt'), key: f('nope.key') }),
      (e: NodeJS.ErrnoException) =>
        e.code === 'TLS_FILE_UNREADABLE' && e.message.includes('listeners.tls.key') && e.message.includes('nope.key'),
    );
    await assert.rejects(
      startTlsListener({ name: 'mqtts-e', bind: HOST, port: 0, log, onConnection: r.onConnection, cert: f('server.crt'), key: f('ca.key') }),
      (e: NodeJS.ErrnoException) => e.code === 'TLS_CONFIG_INVALID',
    );
    await assert.rejects(
      startTlsListener({
        name: 'mqtts-e', bind: HOST, port: 0, log, onConnection: r.onConnection, cert: f('server.crt'), key: f('server.key'), requestCert: true,
      }),
      (e: NodeJS.ErrnoException) => e.code === 'TLS_CONFIG_INVALID' && e.message.includes('listeners.tls.ca'),
    );
  });

  test('WSS: echo over uws.SSLApp; unreadable files are clear errors', T, async () => {
    const r = recorder({ echo: true });
    const base = { uws, bind: HOST, port: 0, path: '/mqtt', maxPayloadLength: 65536, onConnection: r.onConnection, log };
    const l = track(await startWsListener({ ...base, name: 'wss-t', tls: { cert: f('server.crt'), key: f('server.key') } }));
    const c = new WebSocket(`wss://localhost:${l.port}/mqtt`, ['mqtt'], { ca: readPem(f('server.crt')) });
    await once(c, 'open');
    assert.equal(c.protocol, 'mqtt');
    const reply = once(c, 'message');
    c.send(Buffer.from([0xc0, 0x00]));
    const [m] = (await reply) as [Buffer];
    assert.deepEqual([...m], [0xc0, 0x00]);
    assert.equal(r.accepted[0]!.t.kind, 'wss');
    assert.equal(r.accepted[0]!.t.certCommonName, null);
    c.close();
    await waitFor(() => r.accepted[0]!.closes.length === 1, 'close');
    await l.close();
    await assert.rejects(
      startWsListener({ ...base, name: 'wss-e', tls: { cert: f('missing.crt'), key: f('server.key') } }),
      (e: NodeJS.ErrnoException) => e.code === 'TLS_FILE_UNREADABLE' && e.message.includes('wss-e') && e.message.includes('listeners.tls.cert'),
    );
    await assert.rejects(
      startWsListener({ ...base, name: 'wss-e', tls: { cert: f('server.crt'), key: f('ca.key') } }),
      (e: NodeJS.ErrnoException) => e.code === 'TLS_CONFIG_INVALID',
    );
  });

  test('backpressure over TLS', T, async () => {
    const hwm = 32 * 1024;
    const r = recorder();
    const l = track(await startTlsListener({
      name: 'mqtts-bp', bind: HOST, port: 0, log, onConnection: r.onConnection, cert: f('server.crt'), key: f('server.key'), highWaterMark: hwm,
    }));
    const c = connect(l.port);
    await once(c, 'secureConnect');
    await checkSocketBackpressure(r.accepted, c, hwm);
    await l.close();
  });
});

function readPem(p: string): Buffer {
  return readFileSync(p);
}

// ---------------------------------------------------------------- WebSocket

describe('ws', () => {
  const start = (name: string, onConnection: (t: Transport) => void, extra: { port?: number; highWaterMark?: number; maxPayloadLength?: number } = {}) =>
    startWsListener({
      name, uws, bind: HOST, port: extra.port ?? 0, path: '/mqtt', maxPayloadLength: extra.maxPayloadLength ?? 1024 * 1024,
      onConnection, log, ...(extra.highWaterMark !== undefined ? { highWaterMark: extra.highWaterMark } : {}),
    });

  test('selectSubprotocol', () => {
    assert.equal(selectSubprotocol('mqtt'), 'mqtt');
    assert.equal(selectSubprotocol('foo, MQTTv3.1 ,mqtt'), 'MQTTv3.1');
    assert.equal(selectSubprotocol('mqttv3.1.1'), 'mqttv3.1.1');
    assert.equal(selectSubprotocol(''), null);
    assert.equal(selectSubprotocol('mqttx, chat'), null);
  });

  test('subprotocol echoed; frames arrive in order as a byte stream; binary echo', T, async () => {
    const r = recorder();
    const l = track(await start('ws-t1', r.onConnection));
    assert.ok(l.port > 0);
    const c = await wsConnect(`ws://${HOST}:${l.port}/mqtt`, ['mqtt']);
    assert.equal(c.protocol, 'mqtt');
    await waitFor(() => r.accepted.length === 1, 'open');
    const a = r.accepted[0]!;
    assert.equal(a.t.kind, 'ws');
    assert.equal(a.t.remoteAddress, HOST);
    assert.equal(a.t.certCommonName, null);

    // One CONNECT packet split over three frames, then 200 distinct frames: each chunk must
    // keep its content after later frames arrived (uWS reuses its buffer).
    const connect = Buffer.from('101000044d5154540402003c0004abcd', 'hex');
    c.send(connect.subarray(0, 3));
    c.send(connect.subarray(3, 9));
    c.send(connect.subarray(9));
    const expected: Buffer[] = [connect.subarray(0, 3), connect.subarray(3, 9), connect.subarray(9)];
    for (let i = 0; i < 200; i++) {
      const b = Buffer.alloc(100 + i, i);
      expected.push(b);
      c.send(b);
    }
    await waitFor(() => a.data.length === expected.length, 'all frames');
    assert.equal(Buffer.concat(a.data.slice(0, 3)).toString('hex'), connect.toString('hex'));
    for (let i = 0; i < expected.length; i++) assert.ok(a.data[i]!.equals(expected[i]!), `chunk ${i}`);

    const replies: Buffer[] = [];
    c.on('message', (m: Buffer, isBinary: boolean) => {
      assert.equal(isBinary, true);
      replies.push(m);
    });
    const pooled = Buffer.from('xxxx-CONNACK-xxxx').subarray(5, 12); // a view with an offset
    assert.equal(a.t.write(pooled), true);
    assert.equal(a.t.write(Buffer.from([0x20, 0x02, 0x00, 0x00])), true);
    await waitFor(() => replies.length === 2, 'replies');
    assert.equal(replies[0]!.toString(), 'CONNACK');
    assert.deepEqual([...replies[1]!], [0x20, 0x02, 0x00, 0x00]);

    c.close(1000);
    await waitFor(() => a.closes.length > 0, 'close');
    await sleep(50);
    assert.deepEqual(a.closes, [false]);
    assert.equal(a.t.write(Buffer.from('late')), false);
    assert.equal(a.t.bufferedBytes(), 0);
    // Must not touch the closed uWS socket (this build throws, others crash): the
    // transport would log *_failed if it tried.
    a.t.end();
    a.t.destroy();
    a.t.write(Buffer.from('x'));
    assert.deepEqual(logLines.filter((x) => /"msg":"ws\.\w+_failed"/.test(x)), []);
    await l.close();
  });

  test('other MQTT subprotocols accepted; none, non-MQTT or a wrong path refused', T, async () => {
    const r = recorder();
    const l = track(await start('ws-sp', r.onConnection));
    const base = `ws://${HOST}:${l.port}`;
    for (const [offer, want] of [[['mqttv3.1'], 'mqttv3.1'], [['chat', 'mqttv3.1.1'], 'mqttv3.1.1']] as const) {
      const c = await wsConnect(`${base}/mqtt`, [...offer]);
      assert.equal(c.protocol, want);
      c.terminate();
    }
    assert.equal(await wsRefusal(`${base}/mqtt`), 400);
    assert.equal(await wsRefusal(`${base}/mqtt`, ['chat']), 400);
    assert.equal(await wsRefusal(`${base}/other`, ['mqtt']), 404);
    assert.equal(await wsRefusal(`${base}/`, ['mqtt']), 404);
    await waitFor(() => r.accepted.length === 2, 'two accepted');
    await l.close();
  });

  test('a text frame or an oversized frame closes the connection', T, async () => {
    const r = recorder();
    const l = track(await start('ws-bad', r.onConnection, { maxPayloadLength: 1024 }));
    const c1 = await wsConnect(`ws://${HOST}:${l.port}/mqtt`, ['mqtt']);
    c1.send('text frame');
    await once(c1, 'close');
    const c2 = await wsConnect(`ws://${HOST}:${l.port}/mqtt`, ['mqtt']);
    c2.send(Buffer.alloc(2048));
    await once(c2, 'close');
    await waitFor(() => r.accepted.every((a) => a.closes.length === 1) && r.accepted.length === 2, 'both closed');
    assert.equal(r.accepted.some((a) => a.data.length > 0), false, 'no data delivered');
    await l.close();
  });

  test('port in use: EADDRINUSE for a second WS listener and after a TCP listener', T, async () => {
    const r = recorder();
    const l = track(await start('ws-a', r.onConnection));
    await assert.rejects(start('ws-b', r.onConnection, { port: l.port }), (e: NodeJS.ErrnoException) =>
      e.code === 'EADDRINUSE' && e.message.includes('ws-b') && e.message.includes(String(l.port)));
    const tcp = track(await startTcpListener({ name: 'mqtt-x', bind: HOST, port: 0, log, onConnection: r.onConnection }));
    await assert.rejects(start('ws-c', r.onConnection, { port: tcp.port }), (e: NodeJS.ErrnoException) => e.code === 'EADDRINUSE');
    await assert.rejects(
      startTcpListener({ name: 'mqtt-y', bind: HOST, port: l.port, log, onConnection: r.onConnection }),
      (e: NodeJS.ErrnoException) => e.code === 'EADDRINUSE' && e.message.includes('mqtt-y'),
    );
    // The listener still works after the failed attempts.
    const c = await wsConnect(`ws://${HOST}:${l.port}/mqtt`, ['mqtt']);
    c.terminate();
    await tcp.close();
    await l.close();
  });

  test('another process cannot start on the same port (no silent SO_REUSEPORT)', T, async () => {
    // An explicit port: Linux does not share a port picked for port 0 even with
    // SO_REUSEPORT, so an ephemeral listener would not show the problem.
    const r = recorder();
    const l = track(await start('ws-p', r.onConnection, { port: await freePort() }));
    const wsModule = new URL('../src/transport/ws.js', import.meta.url).href;
    const uwsModule = new URL('../src/transport/uws.js', import.meta.url).href;
    const logModule = new URL('../src/log/logger.js', import.meta.url).href;
    const script = `
      const { startWsListener } = await import(${JSON.stringify(wsModule)});
      const { loadUws } = await import(${JSON.stringify(uwsModule)});
      const { Logger } = await import(${JSON.stringify(logModule)});
      const log = new Logger('error');
      const { uws } = loadUws({ allowFallback: false, log });
      try {
        const l = await startWsListener({ name: 'child', uws, bind: '${HOST}', port: ${l.port}, path: '/mqtt',
          maxPayloadLength: 1024, onConnection: () => {}, log });
        await l.close();
        process.stdout.write('LISTENING');
      } catch (e) { process.stdout.write('ERR ' + e.code); }`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const [code] = (await once(child, 'exit')) as [number];
    assert.equal(code, 0);
    assert.equal(out, 'ERR EADDRINUSE');
    await l.close();
  });

  test('backpressure: write() false while the client does not read, drain once it does', T, async () => {
    const hwm = 64 * 1024;
    const r = recorder();
    const l = track(await start('ws-bp', r.onConnection, { highWaterMark: hwm }));
    const c = await wsConnect(`ws://${HOST}:${l.port}/mqtt`, ['mqtt']);
    let received = 0;
    c.on('message', (m: Buffer) => (received += m.length));
    c.pause();
    await waitFor(() => r.accepted.length === 1, 'open');
    await checkBackpressure(r.accepted[0]!, hwm, () => c.resume(), () => received);
    c.terminate();
    await l.close();
  });

  test('pauseReading queues frames until resumeReading; end() flushes then closes with 1000', T, async () => {
    const r = recorder({ pause: true });
    const l = track(await start('ws-pr', r.onConnection));
    const c = await wsConnect(`ws://${HOST}:${l.port}/mqtt`, ['mqtt']);
    await waitFor(() => r.accepted.length === 1, 'open');
    const a = r.accepted[0]!;
    c.send(Buffer.from('one'));
    c.send(Buffer.from('two'));
    await sleep(100);
    assert.equal(a.data.length, 0, 'nothing delivered while paused');
    a.t.resumeReading();
    await waitFor(() => a.data.length === 2, 'queued frames');
    assert.equal(Buffer.concat(a.data).toString(), 'onetwo');
    c.send(Buffer.from('three'));
    await waitFor(() => a.data.length === 3, 'live frame');

    let got = 0;
    c.on('message', (m: Buffer) => (got += m.length));
    const closed = once(c, 'close');
    for (let i = 0; i < 32; i++) a.t.write(Buffer.alloc(64 * 1024, i));
    a.t.end();
    const [code] = (await closed) as [number];
    assert.equal(code, 1000);
    assert.equal(got, 32 * 64 * 1024, 'data written before end() arrives before the close');
    await waitFor(() => a.closes.length === 1, 'close handler');
    assert.deepEqual(a.closes, [false]);
    await l.close();
  });

  test('Listener.close() closes open WebSockets, close handler once', T, async () => {
    const r = recorder();
    const l = track(await start('ws-cl', r.onConnection));
    const c = await wsConnect(`ws://${HOST}:${l.port}/mqtt`, ['mqtt']);
    c.on('error', () => {});
    await waitFor(() => r.accepted.length === 1, 'open');
    const closed = once(c, 'close');
    await l.close();
    await closed;
    await waitFor(() => r.accepted[0]!.closes.length === 1, 'transport close');
    await sleep(20);
    assert.equal(r.accepted[0]!.closes.length, 1);
    await l.close(); // idempotent
    await assert.rejects(wsConnect(`ws://${HOST}:${l.port}/mqtt`, ['mqtt']));
  });
});

describe('JS fallback (allow_uws_fallback)', () => {
  test('WS echo, destroy() reports close, HTTP JSON still work', T, async () => {
    const fb = loadUws({ allowFallback: true, log, nativePath: '/nonexistent/uws.node' });
    assert.equal(fb.native, false);
    const r = recorder({ echo: true });
    const l = track(await startWsListener({
      name: 'ws-fb', uws: fb.uws, bind: HOST, port: 0, path: '/mqtt', maxPayloadLength: 65536, onConnection: r.onConnection, log,
    }));
    const c = await wsConnect(`ws://${HOST}:${l.port}/mqtt`, ['mqtt']);
    assert.equal(c.protocol, 'mqtt');
    const reply = once(c, 'message');
    c.send(Buffer.from([0xc0, 0x00]));
    assert.deepEqual([...((await reply) as [Buffer])[0]], [0xc0, 0x00]);
    const a = r.accepted[0]!;
    const closed = once(c, 'close');
    a.t.destroy();
    await closed;
    await waitFor(() => a.closes.length === 1, 'close handler');
    await l.close();

    const h = track(await startHttp({
      uws: fb.uws, bind: HOST, port: 0, log,
      routes: [{ method: 'get', path: '/status', handler: ({ query }) => ({ status: 200, body: { q: query.get('q') } }) }],
    }));
    const res = await fetch(`http://${HOST}:${h.port}/status`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { q: null });
    await h.close();
  });
});

// ---------------------------------------------------------------- HTTP

describe('http', () => {
  let slowResolved = false;
  const routes: HttpRoute[] = [
    { method: 'get', path: '/status', handler: () => ({ status: 200, body: { status: 'running', n: 1n } }) },
    {
      method: 'get', path: '/async',
      handler: async ({ query }) => {
        await sleep(20);
        return { status: 201, body: { q: query.get('q') } };
      },
    },
    {
      method: 'get', path: '/slow',
      handler: async () => {
        await sleep(200);
        slowResolved = true;
        return { status: 200, body: { late: true } };
      },
    },
    { method: 'post', path: '/echo', handler: ({ body }) => ({ status: 200, body: { len: body?.length ?? null, text: body?.toString() ?? null } }) },
    { method: 'delete', path: '/boom', handler: () => { throw new Error('boom'); } },
  ];

  test('JSON routes, async handlers, bodies, 404 / 405 / 500', T, async () => {
    const l = track(await startHttp({ uws, bind: HOST, port: 0, log, routes }));
    const base = `http://${HOST}:${l.port}`;
    let res = await fetch(`${base}/status`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /application\/json/);
    assert.deepEqual(await res.json(), { status: 'running', n: '1' });

    res = await fetch(`${base}/async?q=a%20b`);
    assert.equal(res.status, 201);
    assert.deepEqual(await res.json(), { q: 'a b' });

    const big = 'x'.repeat(200_000);
    res = await fetch(`${base}/echo`, { method: 'POST', body: big });
    assert.deepEqual(await res.json(), { len: big.length, text: big });
    res = await fetch(`${base}/echo`, { method: 'POST' });
    assert.deepEqual(await res.json(), { len: null, text: null });

    res = await fetch(`${base}/nope`);
    assert.equal(res.status, 404);
    assert.deepEqual(await res.json(), { error: 'not found' });
    res = await fetch(`${base}/status`, { method: 'POST', body: '{}' });
    assert.equal(res.status, 405);
    assert.equal(res.headers.get('allow'), 'GET');
    await res.arrayBuffer();
    res = await fetch(`${base}/boom`, { method: 'DELETE' });
    assert.equal(res.status, 500);
    await res.arrayBuffer();
    await l.close();
  });

  test('an aborted request is never answered; the server keeps working', T, async () => {
    const rejections: unknown[] = [];
    const onRejection = (e: unknown): void => {
      rejections.push(e);
    };
    process.on('unhandledRejection', onRejection);
    try {
      const l = track(await startHttp({ uws, bind: HOST, port: 0, log, routes }));
      const s = net.connect(l.port, HOST);
      await once(s, 'connect');
      s.write(`GET /slow HTTP/1.1\r\nHost: x\r\n\r\n`);
      await sleep(20);
      s.destroy();
      await waitFor(() => slowResolved, 'slow handler');
      await sleep(50);
      assert.deepEqual(rejections, [], 'writing to an aborted response');
      const res = await fetch(`http://${HOST}:${l.port}/status`);
      assert.equal(res.status, 200);
      await res.arrayBuffer();
      await l.close();
    } finally {
      process.off('unhandledRejection', onRejection);
    }
  });

  test('a second HTTP listener on the same port fails with EADDRINUSE', T, async () => {
    const l = track(await startHttp({ uws, bind: HOST, port: 0, log, routes, name: 'http-a' }));
    await assert.rejects(
      startHttp({ uws, bind: HOST, port: l.port, log, routes, name: 'http-b' }),
      (e: NodeJS.ErrnoException) => e.code === 'EADDRINUSE' && e.message.includes('http-b') && e.message.includes(String(l.port)),
    );
    await l.close();
  });
});
