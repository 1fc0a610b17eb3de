// Embedded defaults: the broker runs with no config file at all. Every option is
// described (type, range, meaning) in the schema in ./load.ts, from which
// docs/config.md's option table is generated.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism, hostname } from 'node:os';
import type { Config } from './types.js';

/** File descriptors kept back from max_connections for files, cluster peers, logs, etc. */
export const FD_RESERVE = 256;
/** max_connections never defaults below this, even with a tiny open-file limit. */
export const MIN_DEFAULT_CONNECTIONS = 64;
/** Used when the open-file limit cannot be read (or is "unlimited"). */
const FALLBACK_FD_LIMIT = 1024;

let cachedLimit: number | undefined;

/**
 * The process's open-file soft limit (RLIMIT_NOFILE), read once: /proc/self/limits on
 * Linux, else `sh -c 'ulimit -n'`, else 1024. Note that Node raises its own soft limit
 * to the hard limit at start-up, so this is the effective value for this process.
 */
export function openFileLimit(): number {
  if (cachedLimit !== undefined) return cachedLimit;
  cachedLimit = readProcLimit() ?? readUlimit() ?? FALLBACK_FD_LIMIT;
  return cachedLimit;
}

function readProcLimit(): number | undefined {
  try {
    const text = readFileSync('/proc/self/limits', 'utf8');
    const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(text);
    return m ? parseLimit(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

function readUlimit(): number | undefined {
  try {
    const out = execFileSync('sh', ['-c', 'ulimit -n'], { encoding: 'utf8', timeout: 2000, stdio: ['ignore', 'pipe', 'ignore'] });
    return parseLimit(out.trim());
  } catch {
    return undefined;
  }
}

function parseLimit(s: string | undefined): number | undefined {
  if (s === undefined || !/^\d+$/.test(s)) return undefined; // "unlimited" → fallback
  const n = Number(s);
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

/** Default max_connections for an open-file limit: limit - FD_RESERVE, at least MIN_DEFAULT_CONNECTIONS. */
export function defaultMaxConnections(limit: number = openFileLimit()): number {
  return Math.max(MIN_DEFAULT_CONNECTIONS, limit - FD_RESERVE);
}

export const DEFAULTS: Config = deepFreeze({
  node: {
    name: `fleetmq@${hostname()}`,
    data_dir: './data',
    allow_uws_fallback: false,
    max_connections: defaultMaxConnections(),
    workers: Math.min(availableParallelism(), 31),
    shutdown_timeout_ms: 5000,
  },
  log: { level: 'info' },
  listeners: {
    bind: '0.0.0.0',
    mqtt_port: 1883,
    mqtts_port: 8883,
    ws_port: 8083,
    wss_port: 8084,
    ws_path: '/mqtt',
    http_port: 18083,
    tls: {
      cert: null,
      key: null,
      ca: null,
      request_cert: false,
      cn_as_username: false,
    },
  },
  mqtt: {
    max_packet_size: 1048576,
    max_topic_alias: 65535,
    receive_maximum: 32,
    max_inflight: 32,
    max_qos: 2,
    retain_available: true,
    wildcard_subscription_available: true,
    shared_subscription_available: true,
    max_topic_levels: 128,
    max_topic_length: 65535,
    max_subscriptions: 0,
    max_queued_messages: 1000,
    queue_qos0: true,
    queue_overflow: 'drop_oldest',
    max_keepalive: 0,
    connect_timeout_ms: 10000,
    max_session_expiry: 4294967295,
    shared_strategy: 'round_robin',
    deny_subscribe: [],
    sys_interval_ms: 10000,
    max_write_buffer: 4 * 1024 * 1024,
  },
  auth: {
    allow_anonymous: true,
    password_file: null,
    acl_file: null,
    acl_default: 'allow',
    hash_threads: 1,
  },
  cluster: {
    role: 'none',
    name: 'fleetmq',
    cookie: null,
    cookie_file: null,
    port: 4370,
    forward_port: 5370,
    advertise: null,
    seeds: [],
    discovery: 'static',
    dns_name: null,
    dns_refresh_ms: 10_000,
    dns_server: null,
    dns_port: 0,
    etcd: {
      endpoints: [],
      managed: false,
      client_port: 2379,
      peer_port: 2380,
      binary: '/usr/bin/etcd',
    },
    lease_ttl_s: 10,
    tls: false,
    forward_max_bytes: 8 * 1024 * 1024,
    forward_flush_ms: 1,
    write_batch_ms: 2,
    lag_warn_ms: 1000,
    claim_timeout_ms: 2000,
    route_commit_timeout_ms: 10_000,
  },
  durability: {
    sync: 'batch',
    batch_ms: 10,
  },
});

/** DEFAULTS is shared: freeze it so a stray mutation throws instead of leaking into every later load. */
function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}
