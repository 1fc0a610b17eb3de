// Graceful shutdown of the real `fleetmq` process (dist/src/cli/main.js) on SIGTERM and
// SIGINT, and GET /status while it runs and while it stops.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import type { Readable } from 'node:stream';
import mqtt, { type MqttClient } from 'mqtt';
import mqttPacket, { type IDisconnectPacket, type Packet } from 'mqtt-packet';
import { canConnect, freePort } from './helpers/broker.js';
import { CLI_MAIN, cleanEnv } from './helpers/cli.js';
import { RawClient } from './helpers/raw-client.js';
import { tempDir } from './helpers/tmp.js';

const EXIT_BOUND_MS = 8000;

const tmp = tempDir('fleetmq-shutdown-');

// ---------------------------------------------------------------- process harness

interface Cli {
  child: ChildProcessByStdio<null, null, Readable>;
  name: string;
  mqttPort: number;
  httpPort: number;
  wsPort: number;
  lines: Record<string, unknown>[];
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const running = new Set<Cli>();
after(() => {
  // A test that failed half-way must not leave its node behind.
  for (const c of running) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
});

let seq = 0;
async function startCli(shutdownTimeoutMs = 5000): Promise<Cli> {
  const [mqttPort, httpPort, wsPort] = [await freePort(), await freePort(), await freePort()];
  const name = `shutdown-${process.pid}-${++seq}`;
  const cfgPath = tmp.file(`${name}.json`);
  writeFileSync(cfgPath, JSON.stringify({
    node: { name, data_dir: tmp.path, shutdown_timeout_ms: shutdownTimeoutMs },
    log: { level: 'info' },
    listeners: { bind: '127.0.0.1', mqtt_port: mqttPort, http_port: httpPort, ws_port: wsPort, mqtts_port: 0, wss_port: 0 },
    mqtt: { sys_interval_ms: 0 },
  }));
  const child = spawn(process.execPath, [CLI_MAIN, 'start', '--config', cfgPath], {
    cwd: tmp.path, env: cleanEnv(), stdio: ['ignore', 'ignore', 'pipe'],
  });
  let text = '';
  let partial = '';
  const lines: Record<string, unknown>[] = [];
  let onLine: (() => void) | null = null;
  child.stderr.on('data', (d: Buffer) => {
    text += d.toString();
    partial += d.toString();
    let i;
    while ((i = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, i);
      partial = partial.slice(i + 1);
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        lines.push({ msg: 'non-json', line });
      }
      onLine?.();
    }
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.once('exit', (code, signal) => r({ code, signal })));
  const cli: Cli = { child, name, mqttPort, httpPort, wsPort, lines, stderr: () => text, exited };
  running.add(cli);
  // Ready once the node logs node.running (every listener is up by then).
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no node.running within 15 s:\n${text}`)), 15_000);
    const check = () => {
      if (lines.some((l) => l['msg'] === 'node.running')) {
        clearTimeout(timer);
        onLine = null;
        resolve();
      }
    };
    onLine = check;
    void exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`node exited (${String(code)}) before node.running:\n${text}`));
    });
    check();
  });
  return cli;
}

/** Resolves with the exit status, or rejects after `ms`. */
function exitWithin(cli: Cli, ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`process still running ${ms} ms after the signal:\n${cli.stderr()}`)), ms);
    void cli.exited.then((x) => {
      clearTimeout(t);
      resolve(x);
    });
  });
}

async function getStatus(cli: Cli): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`http://127.0.0.1:${cli.httpPort}/status`, { signal: AbortSignal.timeout(3000) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** A real client that remembers whether the server sent DISCONNECT and whether it closed. */
async function mqttjs(url: string, v: 4 | 5, clientId: string): Promise<{ c: MqttClient; disconnects: IDisconnectPacket[]; closed: Promise<void> }> {
  const c = await mqtt.connectAsync(url, {
    protocolVersion: v, clientId, clean: true, reconnectPeriod: 0, connectTimeout: 3000, keepalive: 60,
  });
  const disconnects: IDisconnectPacket[] = [];
  c.on('disconnect', (p) => disconnects.push(p));
  c.on('error', () => undefined);
  const closed = new Promise<void>((r) => c.once('close', () => r()));
  return { c, disconnects, closed };
}

function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms);
    p.then((x) => {
      clearTimeout(t);
      resolve(x);
    }, (e: unknown) => {
      clearTimeout(t);
      reject(e instanceof Error ? e : new Error(String(e)));
    });
  });
}

/** Opens a connection that completes CONNECT and then never closes its side (half-open). */
function stubbornClient(port: number, v: 4 | 5): Promise<{ sock: net.Socket; packets: Packet[]; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection({ port, host: '127.0.0.1', allowHalfOpen: true });
    const parser = mqttPacket.parser({ protocolVersion: v });
    const packets: Packet[] = [];
    const closed = new Promise<void>((r) => sock.once('close', () => r()));
    const timer = setTimeout(() => reject(new Error('stubborn client: no CONNACK')), 3000);
    parser.on('packet', (p: Packet) => {
      packets.push(p);
      if (p.cmd === 'connack') {
        clearTimeout(timer);
        resolve({ sock, packets, closed });
      }
    });
    sock.on('data', (d) => parser.parse(d));
    sock.on('error', () => undefined);
    sock.on('end', () => undefined); // the server's FIN: do not end our side
    sock.once('connect', () => {
      sock.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: v, clean: true, clientId: `stubborn-${v}`, keepalive: 0 } as Packet, { protocolVersion: v }));
    });
  });
}

// ---------------------------------------------------------------- tests

describe('fleetmq start: GET /status and graceful shutdown of the real process', () => {
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    test(`[v5 MQTT-3.14.2-1 0x8B, v3.1.1 §2.2.1 DISCONNECT is client-to-server] ${sig}: 5.0 clients get DISCONNECT 0x8B, 3.1.1 clients a plain close, exit 0, then connections are refused`, { timeout: 30_000 }, async () => {
      const cli = await startCli();

      // Running: 200 with the node's name and no clients yet.
      const s0 = await getStatus(cli);
      assert.equal(s0.status, 200);
      assert.equal(s0.body['node'], cli.name);
      assert.equal(s0.body['status'], 'running');
      assert.equal(typeof s0.body['uptime_s'], 'number');
      assert.ok((s0.body['uptime_s'] as number) >= 0);
      assert.equal(s0.body['connections'], 0);

      const tcp = `mqtt://127.0.0.1:${cli.mqttPort}`;
      const m5 = await mqttjs(tcp, 5, `sd-mqttjs5-${sig}`);
      const m4 = await mqttjs(tcp, 4, `sd-mqttjs4-${sig}`);
      const w5 = await mqttjs(`ws://127.0.0.1:${cli.wsPort}/mqtt`, 5, `sd-ws5-${sig}`);
      const r5 = (await RawClient.connected(cli.mqttPort, 5, { clientId: `sd-raw5-${sig}` } as Partial<Packet>)).c;
      const r4 = (await RawClient.connected(cli.mqttPort, 4, { clientId: `sd-raw4-${sig}` } as Partial<Packet>)).c;
      try {
        const s1 = await getStatus(cli);
        assert.equal(s1.status, 200);
        assert.equal(s1.body['connections'], 5, 'connections counts the connected clients');

        const raw5 = r5.drainUntilClose(EXIT_BOUND_MS);
        const raw4 = r4.drainUntilClose(EXIT_BOUND_MS);
        const t0 = Date.now();
        cli.child.kill(sig);

        // 5.0: exactly DISCONNECT 0x8B (Server shutting down), then the close.
        const got5 = await raw5;
        assert.deepEqual(got5.map((p) => p.cmd), ['disconnect']);
        assert.equal((got5[0] as IDisconnectPacket).reasonCode, 0x8b);
        // 3.1.1 has no server DISCONNECT: the connection is just closed.
        assert.deepEqual((await raw4).map((p) => p.cmd), []);
        // The real clients see the same.
        await bounded(m5.closed, EXIT_BOUND_MS, 'MQTT.js 5.0 client close');
        await bounded(m4.closed, EXIT_BOUND_MS, 'MQTT.js 3.1.1 client close');
        await bounded(w5.closed, EXIT_BOUND_MS, 'MQTT.js 5.0 WebSocket client close');
        assert.deepEqual(m5.disconnects.map((p) => p.reasonCode), [0x8b]);
        assert.deepEqual(w5.disconnects.map((p) => p.reasonCode), [0x8b], 'over WebSocket too');
        assert.deepEqual(m4.disconnects, []);

        const { code, signal } = await exitWithin(cli, EXIT_BOUND_MS - (Date.now() - t0));
        assert.equal(signal, null, cli.stderr());
        assert.equal(code, 0, cli.stderr());
        const msgs = cli.lines.map((l) => l['msg']);
        assert.ok(cli.lines.some((l) => l['msg'] === 'node.signal' && l['signal'] === sig), cli.stderr());
        assert.ok(msgs.includes('node.stopping') && msgs.includes('node.stopped'), cli.stderr());
        assert.ok(msgs.indexOf('node.stopping') < msgs.indexOf('node.stopped'));
        assert.equal(cli.lines.filter((l) => l['level'] === 'error').length, 0, cli.stderr());

        // Gone: MQTT and HTTP refuse connections.
        assert.equal(await canConnect(cli.mqttPort), false, 'MQTT port still accepts connections');
        assert.equal(await canConnect(cli.httpPort), false, 'HTTP port still accepts connections');
        assert.equal(await canConnect(cli.wsPort), false, 'WebSocket port still accepts connections');
      } finally {
        r5.destroy();
        r4.destroy();
        m5.c.end(true);
        m4.c.end(true);
        w5.c.end(true);
      }
    });
  }

  test('[v5 MQTT-3.14.2-1 0x8B] while stopping: /status answers 503 "stopping" and new MQTT connections get no CONNACK; exit 0 once a client that does not close is cut off', { timeout: 30_000 }, async () => {
    const cli = await startCli(5000);
    // A 5.0 client that ignores the server's FIN keeps the node in its stopping phase.
    const stubborn = await stubbornClient(cli.mqttPort, 5);
    try {
      const s0 = await getStatus(cli);
      assert.equal(s0.status, 200);
      assert.equal(s0.body['connections'], 1);

      const t0 = Date.now();
      cli.child.kill('SIGTERM');
      // The stubborn client gets its DISCONNECT 0x8B but keeps its side open.
      const end = Date.now() + 3000;
      while (!stubborn.packets.some((p) => p.cmd === 'disconnect')) {
        assert.ok(Date.now() < end, 'no DISCONNECT for the stubborn client');
        await new Promise((r) => setTimeout(r, 10));
      }
      const d = stubborn.packets.find((p) => p.cmd === 'disconnect') as IDisconnectPacket;
      assert.equal(d.reasonCode, 0x8b);

      const s1 = await getStatus(cli);
      assert.equal(s1.status, 503);
      assert.equal(s1.body['status'], 'stopping');
      assert.equal(s1.body['node'], cli.name);

      // A newcomer: refused at TCP level or closed without any packet (no CONNACK).
      let late: RawClient | null = null;
      try {
        late = await RawClient.open(cli.mqttPort, 4);
      } catch {
        late = null; // ECONNREFUSED: also a refusal
      }
      if (late) {
        late.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'sd-late', keepalive: 0 } as Packet);
        assert.deepEqual((await late.drainUntilClose(3000)).map((p) => p.cmd), []);
      }
      assert.equal(cli.child.exitCode, null, 'the node should still be stopping here');

      const { code } = await exitWithin(cli, EXIT_BOUND_MS - (Date.now() - t0));
      assert.equal(code, 0, cli.stderr());
      // The server's side is gone: writing now draws a reset (then EPIPE), which closes ours.
      let isClosed = false;
      void stubborn.closed.then(() => (isClosed = true));
      for (const deadline = Date.now() + 3000; !isClosed;) {
        assert.ok(Date.now() < deadline, 'the stubborn socket is still open on the server side');
        if (!stubborn.sock.destroyed) stubborn.sock.write(Buffer.from([0xc0, 0x00]));
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(await canConnect(cli.mqttPort), false);
    } finally {
      stubborn.sock.destroy();
    }
  });

  test('[v5 MQTT-3.14.2-1 0x8B] a second signal while stopping forces exit 1 without waiting', { timeout: 30_000 }, async () => {
    // shutdown_timeout_ms long: only the second signal can end the wait early.
    const cli = await startCli(20_000);
    const stubborn = await stubbornClient(cli.mqttPort, 5);
    try {
      cli.child.kill('SIGTERM');
      const end = Date.now() + 3000;
      while (!cli.lines.some((l) => l['msg'] === 'node.stopping')) {
        assert.ok(Date.now() < end, 'no node.stopping after SIGTERM');
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal(cli.child.exitCode, null);
      cli.child.kill('SIGINT');
      const { code } = await exitWithin(cli, 3000);
      assert.equal(code, 1, cli.stderr());
      assert.ok(cli.lines.some((l) => l['msg'] === 'node.stop_forced' && l['signal'] === 'SIGINT'), cli.stderr());
    } finally {
      stubborn.sock.destroy();
    }
  });
});
