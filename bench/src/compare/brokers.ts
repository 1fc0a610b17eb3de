// The three brokers compared, each started on its own free loopback port with a config
// written here (and recorded in the result). Settings are made alike where the brokers
// allow it: QoS 1/2 in-flight 32 per client, queue limit 1000 per client, TCP_NODELAY,
// no persistence, anonymous clients, quiet logs, no $SYS publishing.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { sh } from './procfs.js';

/** Repository root (bench/dist/compare/brokers.js → ../../../). */
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const MOSQUITTO = process.env['MOSQUITTO_BIN'] ?? '/usr/sbin/mosquitto';

export type BrokerName = 'fleetmq' | 'mosquitto' | 'aedes';
export const BROKERS: readonly BrokerName[] = ['fleetmq', 'mosquitto', 'aedes'];

export interface ScenarioInfo {
  scenario: string;
  /** MQTT protocol level given to the generator (-V): 3 = 3.1, 4 = 3.1.1, 5 = 5.0. */
  V: number;
  /** Topic template (-t), when given. */
  topic: string | null;
}

export interface Prepared {
  cmd: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  ports: Record<string, number>;
  mqtt_port: number;
  config_path: string;
  config_text: string;
  /** How this broker decides it is ready: a TCP connect to the MQTT port, or a line on stdout. */
  ready: { kind: 'tcp' } | { kind: 'line'; match: string };
}

export interface BrokerSpec {
  name: BrokerName;
  /** A reason when the broker cannot run the scenario (recorded as `unsupported`), else null. */
  unsupported(s: ScenarioInfo): string | null;
  version(): string;
  /** What each alike-setting maps to for this broker, and what it cannot match. */
  settings: Record<string, string>;
  /** `persistence`: null, or fleetmq's durability.sync mode ("batch" | "always"); the peers then persist as they can. */
  prepare(dir: string, runLabel: string, opts: { workers: number | null; persistence: string | null }): Promise<Prepared>;
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

/** The environment without FLEETMQ_* variables, so the caller's shell cannot change a broker's config. */
export function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('FLEETMQ_')) env[k] = v;
  return env;
}

const IN_FLIGHT = 32;
const QUEUE_LIMIT = 1000;

const fleetmq: BrokerSpec = {
  name: 'fleetmq',
  unsupported: () => null,
  version() {
    const main = join(ROOT, 'dist/src/cli/main.js');
    if (!existsSync(main)) return 'not built (dist/src/cli/main.js missing)';
    return sh(process.execPath, [main, '--version']).replace(/^fleetmq\s+/, '') || 'unknown';
  },
  settings: {
    inflight: `mqtt.max_inflight ${IN_FLIGHT}, mqtt.receive_maximum ${IN_FLIGHT}`,
    queue: `mqtt.max_queued_messages ${QUEUE_LIMIT} (QoS 0 queued too: mqtt.queue_qos0 true, drop_oldest)`,
    nagle: 'TCP_NODELAY always on (src/transport/tcp.ts)',
    persistence: 'durability.sync none, or the --persistence mode',
    anonymous: 'auth.allow_anonymous true',
    logs: 'log.level warn (JSON lines on stderr)',
    sys: 'mqtt.sys_interval_ms 0 ($SYS off)',
    other: 'ws and http listeners on their own free loopback ports; FLEETMQ_* environment variables removed',
  },
  async prepare(dir, runLabel, opts) {
    const mqtt = await freePort();
    const ws = await freePort();
    const http = await freePort();
    const config = {
      // A data dir per run: a durable node would otherwise read back the previous run's sessions.
      node: { name: 'fleetmq-bench', data_dir: join(dir, `data-${runLabel}`), shutdown_timeout_ms: 2000 },
      log: { level: 'warn' },
      listeners: { bind: '127.0.0.1', mqtt_port: mqtt, mqtts_port: 0, ws_port: ws, wss_port: 0, http_port: http },
      mqtt: {
        max_inflight: IN_FLIGHT,
        receive_maximum: IN_FLIGHT,
        max_queued_messages: QUEUE_LIMIT,
        queue_qos0: true,
        sys_interval_ms: 0,
      },
      auth: { allow_anonymous: true, password_file: null, acl_file: null },
      durability: { sync: opts.persistence ?? 'none' },
    };
    const path = join(dir, `fleetmq-${runLabel}.json`);
    const text = JSON.stringify(config, null, 2) + '\n';
    writeFileSync(path, text);
    const args = [join(ROOT, 'dist/src/cli/main.js'), 'start', '--config', path];
    if (opts.workers !== null) args.push('--workers', String(opts.workers));
    return {
      cmd: process.execPath, args, env: cleanEnv(),
      ports: { mqtt, ws, http }, mqtt_port: mqtt,
      config_path: path, config_text: text, ready: { kind: 'tcp' },
    };
  },
};

const mosquitto: BrokerSpec = {
  name: 'mosquitto',
  unsupported: () => null,
  version() {
    const out = sh(MOSQUITTO, ['-h']);
    const m = /mosquitto version (\S+)/.exec(out);
    return m?.[1] ?? (out.split('\n')[0] || 'unknown');
  },
  settings: {
    inflight: `max_inflight_messages ${IN_FLIGHT}`,
    queue: `max_queued_messages ${QUEUE_LIMIT}`,
    nagle: 'set_tcp_nodelay true',
    persistence: 'persistence false',
    anonymous: 'allow_anonymous true',
    logs: 'log_dest stderr, log_type error',
    sys: 'sys_interval 0 ($SYS off)',
  },
  async prepare(dir, runLabel, opts) {
    const port = await freePort();
    const text = [
      '# written by bench/compare (fleetmq); one run of a comparison',
      'per_listener_settings false',
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      `max_inflight_messages ${IN_FLIGHT}`,
      `max_queued_messages ${QUEUE_LIMIT}`,
      ...(opts.persistence !== null ? ['persistence true', `persistence_location ${dir}/`, `persistence_file mosquitto-${runLabel}.db`] : ['persistence false']),
      'set_tcp_nodelay true',
      'sys_interval 0',
      'log_dest stderr',
      'log_type error',
      '',
    ].join('\n');
    const path = join(dir, `mosquitto-${runLabel}.conf`);
    writeFileSync(path, text);
    return {
      cmd: MOSQUITTO, args: ['-c', path], env: { ...process.env },
      ports: { mqtt: port }, mqtt_port: port,
      config_path: path, config_text: text, ready: { kind: 'tcp' },
    };
  },
};

/** aedes/package.json as Node resolves it from bench/ (the workspace's dependency, hoisted to the root node_modules); null when not installed. */
export function aedesPackageJson(): string | null {
  let entry: string;
  try {
    // aedes' `exports` do not list package.json: resolve its entry point and walk up.
    entry = createRequire(import.meta.url).resolve('aedes');
  } catch {
    return null;
  }
  for (let dir = dirname(entry); dir !== dirname(dir); dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'aedes') return pkg;
  }
  return null;
}

function aedesVersion(): string {
  const path = aedesPackageJson();
  if (path === null) return 'not installed (npm ci)';
  const pkg = JSON.parse(readFileSync(path, 'utf8')) as { version?: string };
  return pkg.version ?? 'unknown';
}

const aedes: BrokerSpec = {
  name: 'aedes',
  unsupported(s) {
    if (s.V === 5) return 'Aedes has no MQTT 5.0 (it refuses protocol level 5)';
    if (s.scenario === 'fanin-shared' || (s.topic ?? '').startsWith('$share/')) return 'Aedes has no shared subscriptions ($share/...)';
    return null;
  },
  version: aedesVersion,
  settings: {
    inflight: 'no setting: Aedes has no outbound in-flight limit per client (it sends every matching message at once)',
    queue: `queueLimit ${QUEUE_LIMIT} (Aedes applies it to packets queued while a client is connecting)`,
    nagle: 'socket.setNoDelay(true) on node:net (bench/src/peers/aedes-server.ts)',
    persistence: 'aedes-persistence in memory (the default; nothing on disk)',
    anonymous: 'default authenticate (accepts everyone)',
    logs: 'ready line on stdout, errors on stderr',
    sys: 'heartbeatInterval 3600000 (its $SYS heartbeat once an hour)',
  },
  async prepare(dir, runLabel) {
    const port = await freePort();
    const config = { host: '127.0.0.1', port, queueLimit: QUEUE_LIMIT, heartbeatInterval: 3_600_000, concurrency: 100, noDelay: true };
    const path = join(dir, `aedes-${runLabel}.json`);
    const text = JSON.stringify(config, null, 2) + '\n';
    writeFileSync(path, text);
    return {
      cmd: process.execPath,
      args: [join(ROOT, 'bench/dist/peers/aedes-server.js'), '--config', path],
      env: { ...process.env },
      ports: { mqtt: port }, mqtt_port: port,
      config_path: path, config_text: text, ready: { kind: 'line', match: '"aedes.ready"' },
    };
  },
};

export const SPECS: Record<BrokerName, BrokerSpec> = { fleetmq, mosquitto, aedes };
