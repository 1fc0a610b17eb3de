// Test harness: a real fleetmq node in this process on free loopback ports.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createConnection, createServer } from 'node:net';
import { DEFAULTS } from '../../src/config/defaults.js';
import type { Config } from '../../src/config/types.js';
import { Logger } from '../../src/log/logger.js';
import { startNode, type RunningNode } from '../../src/runtime/node.js';
import type { NodeProbe } from '../../src/runtime/probe.js';

export type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? (T[K] extends unknown[] ? T[K] : DeepPartial<T[K]>) : T[K] };

/** A node on free loopback ports, with its probe (counters, sessions, clients …) at hand. */
export interface TestBroker extends NodeProbe {
  node: RunningNode;
  cfg: Config;
  port: number;
  wsPort: number;
  httpPort: number;
  mqttsPort: number;
  wssPort: number;
  url: string;
  logs: string[];
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

function merge(target: Record<string, unknown>, src: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(src)) {
    if (v && typeof v === 'object' && !Array.isArray(v) && !Buffer.isBuffer(v)) {
      merge(target[k] as Record<string, unknown>, v as Record<string, unknown>);
    } else target[k] = v;
  }
}

export async function startBroker(overrides: DeepPartial<Config> = {}): Promise<TestBroker> {
  const cfg = structuredClone(DEFAULTS) as Config;
  cfg.node.name = 'test@local';
  cfg.listeners.bind = '127.0.0.1';
  cfg.listeners.mqtt_port = await freePort();
  cfg.listeners.ws_port = await freePort();
  cfg.listeners.http_port = await freePort();
  cfg.listeners.mqtts_port = 0;
  cfg.listeners.wss_port = 0;
  cfg.mqtt.sys_interval_ms = 0;
  // Its own data dir (the store of a durable node), removed when it stops.
  cfg.node.data_dir = mkdtempSync(join(tmpdir(), 'fleetmq-broker-'));
  // The suite runs at FLEETMQ_TEST_WORKERS worker threads (default 1; the test/w4 copies use 4).
  cfg.node.workers = Number(process.env['FLEETMQ_TEST_WORKERS'] ?? 1);
  merge(cfg as unknown as Record<string, unknown>, overrides as Record<string, unknown>);
  if (cfg.listeners.tls.cert) {
    if (!overrides.listeners?.mqtts_port) cfg.listeners.mqtts_port = await freePort();
    if (!overrides.listeners?.wss_port) cfg.listeners.wss_port = await freePort();
  }
  const logs: string[] = [];
  const level = (process.env['FLEETMQ_TEST_LOG'] as Config['log']['level'] | undefined) ?? 'debug';
  const log = new Logger(level, { node: cfg.node.name }, (line) => {
    logs.push(line);
    if (process.env['FLEETMQ_TEST_LOG']) process.stderr.write(line + '\n');
  });
  const node = await startNode(cfg, log);
  const l = cfg.listeners;
  return {
    ...node.probe,
    node, cfg, logs,
    port: l.mqtt_port, wsPort: l.ws_port, httpPort: l.http_port, mqttsPort: l.mqtts_port, wssPort: l.wss_port,
    url: `mqtt://127.0.0.1:${l.mqtt_port}`,
    stop: async () => {
      await node.stop('test');
      rmSync(cfg.node.data_dir, { recursive: true, force: true });
    },
  };
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `cond` (sync or async) until it holds or the time runs out (then throws with `what`). */
export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/**
 * Polls `read` until it returns `expected` (state held by another worker may settle after
 * the wire event the test saw); fails with the last value.
 */
export async function settles<T>(read: () => T | Promise<T>, expected: T, what: string): Promise<void> {
  let last: T | undefined;
  try {
    await waitFor(async () => (last = await read()) === expected, what);
  } catch (e) {
    assert.equal(last, expected, `${what} (${String(e)})`);
    throw e;
  }
}

/** Whether the node holds a session for `id` (on any worker). */
export async function stored(b: TestBroker, id: string): Promise<boolean> {
  return (await b.session(id)) !== null;
}

/** Length of a session's queue; undefined without a session. */
export async function queued(b: TestBroker, id: string): Promise<number | undefined> {
  return (await b.session(id))?.queue.length;
}

/** true when a TCP connection to 127.0.0.1:`port` is accepted (within 2 s), false otherwise. */
export function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection({ port, host: '127.0.0.1' });
    c.setTimeout(2000, () => {
      c.destroy();
      resolve(false);
    });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}
