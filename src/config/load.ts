// Configuration loading and validation, driven by one table of option specs (OPTIONS).
//
// Precedence, lowest to highest:
//   DEFAULTS  <-  JSON config file  <-  FLEETMQ_* environment variables  <-  CLI flags
//
// The config file is JSON with the same nesting as Config; every key is optional.
// Environment overrides are FLEETMQ_<SECTION>__<KEY> (double underscore between levels),
// e.g. FLEETMQ_MQTT__MAX_PACKET_SIZE=65536, FLEETMQ_LISTENERS__TLS__CERT=/x.pem,
// FLEETMQ_MQTT__DENY_SUBSCRIBE=a/b,c/d. docs/config.md's option table is generated from
// OPTIONS by renderOptionsMarkdown() (test/config.test.ts checks it is up to date).
import { accessSync, constants as fsConstants, readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import type { CliStartOptions } from '../cli/args.js';
import { DEFAULTS, FD_RESERVE, MIN_DEFAULT_CONNECTIONS, openFileLimit } from './defaults.js';
import type { Config } from './types.js';

export class ConfigError extends Error {
  readonly code = 'FLEETMQ_CONFIG';
  /** One entry per problem found; `message` is them joined with "; ". */
  readonly problems: string[];
  constructor(problems: string[] | string) {
    const list = Array.isArray(problems) ? problems : [problems];
    super(list.join('; '));
    this.name = 'ConfigError';
    this.problems = list;
  }
}

// ---------------------------------------------------------------------------------------
// Option table

/** Every leaf path of Config ("mqtt.max_packet_size", "listeners.tls.cert", ...). */
type LeafPaths<T> = {
  [K in keyof T & string]: T[K] extends unknown[] ? K : T[K] extends object ? `${K}.${LeafPaths<T[K]>}` : K;
}[keyof T & string];
export type ConfigPath = LeafPaths<Config>;

export type OptionType =
  | { kind: 'int'; min: number; max: number }
  | { kind: 'bool' }
  | { kind: 'enum'; values: readonly string[] }
  /** Free-form string; `check` returns true when valid, `expect` says what is expected. */
  | { kind: 'string'; expect: string; check: (s: string) => boolean }
  /** null, or the path of a file that must exist and be readable. */
  | { kind: 'file' }
  /** Array of strings; in env / CLI form a comma-separated list. */
  | { kind: 'list'; expect: string; check: (s: string) => boolean }
  /** null, or a string that `check` accepts (an empty string in env / CLI form is null). */
  | { kind: 'optString'; expect: string; check: (s: string) => boolean };

export interface OptionSpec {
  path: ConfigPath;
  type: OptionType;
  /** What the option means (Markdown; one paragraph). */
  doc: string;
  /** Shown instead of the value in DEFAULTS when that depends on the host. */
  defaultDoc?: string;
  /** Shown instead of the type when its range depends on the host. */
  typeDoc?: string;
  /** A secret: error messages never show its value. */
  secret?: boolean;
  /** Command-line flag of `fleetmq start` setting this option, and its CliStartOptions key. */
  cli?: { flag: `--${string}`; key: Exclude<keyof CliStartOptions, 'config'> };
}

const U16 = 65535;
const U32 = 4294967295;
const I32 = 2147483647;

const int = (min: number, max: number): OptionType => ({ kind: 'int', min, max });
const bool: OptionType = { kind: 'bool' };
const file: OptionType = { kind: 'file' };
const port = int(0, U16);
/** The route trie keeps a worker set as one 31-bit mask. */
export const MAX_WORKERS = 31;
const nonEmpty: OptionType = { kind: 'string', expect: 'a non-empty string', check: (s) => s.length > 0 };
const enumOf = (...values: string[]): OptionType => ({ kind: 'enum', values });
/** IP, IP:port or [IPv6]:port (what Resolver.setServers takes). */
const dnsServer = (s: string): boolean => {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(s) ?? /^([^:]+):(\d{1,5})$/.exec(s);
  if (m) return isIP(m[1]!) !== 0 && Number(m[2]) >= 1 && Number(m[2]) <= 65535;
  return isIP(s) !== 0;
};
const hostName = (s: string): boolean => isIP(s) !== 0 || /^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/.test(s);
/** host:port, host an IP ([v6] in brackets) or a DNS name, port 1..65535. */
export function isHostPort(s: string): boolean {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[^\s:[\]]+):(\d{1,5})$/.exec(s);
  if (!m) return false;
  const host = m[1]!.startsWith('[') ? m[1]!.slice(1, -1) : m[1]!;
  const port = Number(m[2]);
  return port >= 1 && port <= U16 && (m[1]!.startsWith('[') ? isIP(host) === 6 : hostName(host));
}
const isEtcdUrl = (s: string): boolean => /^https?:\/\/(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}\/?$/.test(s);

const fdLimit = openFileLimit();

export const OPTIONS: readonly OptionSpec[] = [
  // node
  {
    path: 'node.name',
    type: { kind: 'string', expect: '1..255 printable ASCII characters without spaces', check: (s) => /^[\x21-\x7e]{1,255}$/.test(s) },
    doc: 'Name of this node; every log line carries it in the `node` field.',
    defaultDoc: '`"fleetmq@<hostname>"`',
    cli: { flag: '--node-name', key: 'nodeName' },
  },
  {
    path: 'node.data_dir',
    type: nonEmpty,
    doc: 'Directory for node state on disk: the store (`store/`, see `durability.sync`), a managed etcd member (`etcd/`), a replicant\'s `cluster.json`.',
    cli: { flag: '--data-dir', key: 'dataDir' },
  },
  {
    path: 'node.allow_uws_fallback',
    type: bool,
    doc: 'Start even when the uWebSockets.js native binary cannot be loaded, using a slower pure-JavaScript path. When `false` such a node refuses to start (`UWS_NATIVE_UNAVAILABLE`).',
  },
  {
    path: 'node.max_connections',
    type: int(1, Math.max(fdLimit, MIN_DEFAULT_CONNECTIONS)),
    typeDoc: 'integer 1..open-file limit',
    doc: `Client connections accepted at once, over all listeners; more are refused. At most the process's open-file limit (${FD_RESERVE} descriptors are left for files and peers by default).`,
    defaultDoc: `open-file soft limit − ${FD_RESERVE}, at least ${MIN_DEFAULT_CONNECTIONS}`,
  },
  {
    path: 'node.workers',
    type: int(0, MAX_WORKERS),
    typeDoc: `integer 0..${MAX_WORKERS}`,
    doc: 'Connection worker threads. Each owns a share of the client connections and their sessions; the main thread supervises and serves HTTP, one more thread writes the shared route trie (docs/workers.md). `0` runs the whole broker on the main thread (no worker threads).',
    defaultDoc: 'available parallelism (cores), at most ' + MAX_WORKERS,
    cli: { flag: '--workers', key: 'workers' },
  },
  {
    path: 'node.shutdown_timeout_ms',
    type: int(0, 3_600_000),
    doc: 'Time allowed for a graceful stop on SIGTERM / SIGINT. If stopping takes longer than this plus 1 s the process exits with code 1.',
  },
  // log
  {
    path: 'log.level',
    type: enumOf('debug', 'info', 'warn', 'error'),
    doc: 'Lowest level logged. Logs are JSON lines on stderr.',
    cli: { flag: '--log-level', key: 'logLevel' },
  },
  // listeners
  {
    path: 'listeners.bind',
    type: {
      kind: 'string',
      expect: 'an IP address or host name',
      check: (s) => isIP(s) !== 0 || /^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/.test(s),
    },
    doc: 'Address every listener binds to: `0.0.0.0` = all IPv4 interfaces, `::` = all interfaces, `127.0.0.1` = local only.',
    cli: { flag: '--bind', key: 'bind' },
  },
  { path: 'listeners.mqtt_port', type: port, doc: 'MQTT over TCP. `0` disables the listener.', cli: { flag: '--mqtt-port', key: 'mqttPort' } },
  {
    path: 'listeners.mqtts_port',
    type: port,
    doc: 'MQTT over TLS. Listens only when `listeners.tls.cert` and `listeners.tls.key` are set; otherwise the effective value is `0` (disabled).',
    cli: { flag: '--mqtts-port', key: 'mqttsPort' },
  },
  { path: 'listeners.ws_port', type: port, doc: 'MQTT over WebSocket, at `listeners.ws_path`. `0` disables.', cli: { flag: '--ws-port', key: 'wsPort' } },
  {
    path: 'listeners.wss_port',
    type: port,
    doc: 'MQTT over secure WebSocket. Like `mqtts_port`, effective only when the TLS certificate and key are set.',
    cli: { flag: '--wss-port', key: 'wssPort' },
  },
  {
    path: 'listeners.ws_path',
    type: { kind: 'string', expect: 'a URL path starting with "/"', check: (s) => /^\/[^\s?#]*$/.test(s) },
    doc: 'URL path of the WebSocket endpoint (WS and WSS).',
  },
  { path: 'listeners.http_port', type: port, doc: 'HTTP management endpoint. `0` disables.', cli: { flag: '--http-port', key: 'httpPort' } },
  { path: 'listeners.tls.cert', type: file, doc: 'PEM certificate (chain) file for MQTTS and WSS.' },
  { path: 'listeners.tls.key', type: file, doc: 'PEM private key file for `cert`. Required when `cert` is set, and vice versa.' },
  { path: 'listeners.tls.ca', type: file, doc: 'PEM CA bundle that client certificates are verified against. Required by `request_cert`.' },
  { path: 'listeners.tls.request_cert', type: bool, doc: 'Ask TLS clients for a certificate, verified against `ca`. Requires `ca`.' },
  { path: 'listeners.tls.cn_as_username', type: bool, doc: "Use the client certificate's Common Name as the username. Requires `request_cert`." },
  // mqtt
  {
    path: 'mqtt.max_packet_size',
    type: int(2, 268435455),
    doc: 'Largest packet accepted from or sent to a client, in bytes (whole packet). Advertised to 5.0 clients as Maximum Packet Size.',
  },
  { path: 'mqtt.max_topic_alias', type: int(0, U16), doc: 'Topic Alias Maximum advertised to 5.0 clients (`0` = clients may not use topic aliases).' },
  { path: 'mqtt.receive_maximum', type: int(1, U16), doc: 'Receive Maximum advertised to 5.0 clients: QoS 1/2 PUBLISH packets a client may have unacknowledged towards the broker.' },
  { path: 'mqtt.max_inflight', type: int(1, U16), doc: 'Outbound QoS 1/2 messages in flight per client when the client sets no Receive Maximum (always for 3.1.1 clients).' },
  { path: 'mqtt.max_qos', type: int(0, 2), doc: 'Highest QoS the broker supports (5.0 Maximum QoS).' },
  { path: 'mqtt.retain_available', type: bool, doc: 'Whether retained messages are supported (5.0 Retain Available).' },
  { path: 'mqtt.wildcard_subscription_available', type: bool, doc: 'Whether subscriptions may use `+` and `#`.' },
  { path: 'mqtt.shared_subscription_available', type: bool, doc: 'Whether `$share/<group>/<filter>` subscriptions are supported.' },
  { path: 'mqtt.max_topic_levels', type: int(1, U16), doc: 'Most `/`-separated levels in a topic name or filter.' },
  { path: 'mqtt.max_topic_length', type: int(1, U16), doc: 'Longest topic name or filter, in bytes (UTF-8).' },
  { path: 'mqtt.max_subscriptions', type: int(0, I32), doc: 'Subscriptions per client (`0` = unlimited).' },
  { path: 'mqtt.max_queued_messages', type: int(1, I32), doc: 'Messages queued per session while the client is offline or its in-flight window is full.' },
  { path: 'mqtt.queue_qos0', type: bool, doc: 'Whether QoS 0 messages are queued too.' },
  { path: 'mqtt.queue_overflow', type: enumOf('drop_oldest', 'drop_new'), doc: 'Which message is dropped when a session queue is full.' },
  {
    path: 'mqtt.max_keepalive',
    type: int(0, U16),
    doc: 'Server Keep Alive in seconds: `0` accepts any client keep alive; otherwise the maximum (told to 5.0 clients in CONNACK).',
  },
  { path: 'mqtt.connect_timeout_ms', type: int(1, 3_600_000), doc: 'Time a new connection has to send CONNECT before it is closed.' },
  {
    path: 'mqtt.max_session_expiry',
    type: int(0, U32),
    doc: 'Upper bound on the Session Expiry Interval, in seconds. `4294967295` (0xFFFFFFFF) means a session may never expire.',
  },
  {
    path: 'mqtt.shared_strategy',
    type: enumOf('round_robin', 'random', 'sticky', 'hash_clientid', 'hash_topic', 'local'),
    doc: 'How a message for a shared subscription picks one member of the group. In a cluster the choice is made among the nodes holding members first (weighted by each node\'s online members, in node-name order, so that hash strategies agree on every node), then among the members of that node; `local` prefers members on the publisher\'s node and round-robins among them, going to another node only when the publisher\'s node has none.',
  },
  {
    path: 'mqtt.deny_subscribe',
    type: { kind: 'list', expect: 'a valid topic filter', check: isTopicFilter },
    doc: 'Topic filters refused at SUBSCRIBE with reason code 0x80 (exact filter strings). In environment variables: comma-separated.',
  },
  { path: 'mqtt.sys_interval_ms', type: int(0, 86_400_000), doc: 'Period of `$SYS` topic publishing, in ms (`0` = off).' },
  { path: 'mqtt.max_write_buffer', type: int(1, I32), doc: "Bytes buffered for one client's socket before the drop policy applies." },
  // auth
  { path: 'auth.allow_anonymous', type: bool, doc: 'Accept clients that connect without a username (and, when there is no password file, clients whose username cannot be checked).' },
  { path: 'auth.password_file', type: file, doc: 'Password file (users and password hashes), managed with `fleetmq passwd`. When set, a client that sends a username must send its password.' },
  { path: 'auth.acl_file', type: file, doc: 'Topic access rules file. `null` = no ACL: every client may publish and subscribe to every topic.' },
  { path: 'auth.acl_default', type: enumOf('allow', 'deny'), doc: 'Decision when no rule of the ACL file matches.' },
  { path: 'auth.hash_threads', type: int(1, 64), doc: 'Worker threads for password hashing.' },
  // cluster
  {
    path: 'cluster.role',
    type: enumOf('none', 'core', 'replicant'),
    doc: '`none`: a single node (no etcd, no peers). `core`: holds the cluster\'s consistent metadata in etcd (`cluster.etcd`). `replicant`: streams a full read copy of it from a core and sends its writes to one (`cluster.seeds`); no etcd client. See docs/cluster.md.',
    cli: { flag: '--role', key: 'role' },
  },
  {
    path: 'cluster.name',
    type: { kind: 'string', expect: '1..64 characters of A-Z a-z 0-9 _ . -', check: (s) => /^[A-Za-z0-9_.-]{1,64}$/.test(s) },
    doc: 'Cluster name: every node of a cluster has the same one (a peer with another is refused); it prefixes the cluster\'s etcd keys (`/fleetmq/<name>/`).',
    cli: { flag: '--cluster-name', key: 'clusterName' },
  },
  {
    path: 'cluster.cookie',
    type: { kind: 'optString', expect: 'null or a string of 8..1024 characters', check: (s) => s.length >= 8 && s.length <= 1024 },
    secret: true,
    doc: 'Shared secret of the cluster (like Erlang\'s cookie): every inter-node connection proves it knows it with an HMAC challenge, in both directions; it never crosses the wire. Required (or `cookie_file`) when `role` is not `none`.',
    cli: { flag: '--cluster-cookie', key: 'clusterCookie' },
  },
  { path: 'cluster.cookie_file', type: file, doc: 'File whose first line is the cookie (instead of `cookie`, which a command line would show to `ps`).' },
  { path: 'cluster.port', type: int(1, U16), doc: 'Cluster port: RLOG replication and metadata requests between nodes. Binds `listeners.bind`.', cli: { flag: '--cluster-port', key: 'clusterPort' } },
  { path: 'cluster.forward_port', type: int(1, U16), doc: 'Forward port: messages between nodes (a pool of connections, one per worker thread and peer). Binds `listeners.bind`.', cli: { flag: '--forward-port', key: 'forwardPort' } },
  {
    path: 'cluster.advertise',
    type: { kind: 'optString', expect: 'null or an IP address or host name', check: hostName },
    doc: 'Host or IP address that other nodes use to reach this node\'s cluster and forward ports. `null` = the host part of `node.name` (`NAME@HOST`).',
    cli: { flag: '--advertise', key: 'advertise' },
  },
  {
    path: 'cluster.seeds',
    type: { kind: 'list', expect: 'host:port of a core\'s cluster port', check: isHostPort },
    doc: 'Cores to contact (their cluster ports): where a replicant starts streaming, and the cluster a new managed core joins. A replicant learns the other cores from the first one it reaches.',
    cli: { flag: '--seeds', key: 'seeds' },
  },
  {
    path: 'cluster.discovery',
    type: enumOf('static', 'dns', 'etcd'),
    doc: 'How a node finds cores: `static` (`seeds`), `dns` (the SRV, else A/AAAA records of `dns_name`, re-resolved every `dns_refresh_ms`; A records use `dns_port`, default `cluster.port`; asked of `dns_server` when set), `etcd` (cores only: cores always find each other through etcd).',
    cli: { flag: '--discovery', key: 'discovery' },
  },
  {
    path: 'cluster.dns_name',
    type: { kind: 'optString', expect: 'null or a DNS name', check: hostName },
    doc: 'DNS name listing the cores, for `discovery` = `dns`.',
    cli: { flag: '--dns-name', key: 'dnsName' },
  },
  { path: 'cluster.dns_refresh_ms', type: int(1000, 3_600_000), doc: 'How often `dns_name` is resolved again.' },
  {
    path: 'cluster.dns_server',
    type: { kind: 'optString', expect: 'null or IP[:port] / [IPv6]:port of a DNS server', check: dnsServer },
    doc: 'DNS server asked for `dns_name` (SRV, then A/AAAA; SRV targets are resolved through it too). `null` = the system\'s resolver (and, for A/AAAA, the system\'s name lookup, /etc/hosts included).',
  },
  { path: 'cluster.dns_port', type: port, doc: 'Cluster port of the cores that `dns_name`\'s A/AAAA records name (SRV records carry their own). `0` = `cluster.port`.' },
  {
    path: 'cluster.etcd.endpoints',
    type: { kind: 'list', expect: 'an etcd client URL http(s)://HOST:PORT', check: isEtcdUrl },
    doc: 'Client URLs of an etcd cluster that the user runs (Kubernetes, an existing cluster). Cores only; exclusive with `managed`.',
    cli: { flag: '--etcd', key: 'etcd' },
  },
  {
    path: 'cluster.etcd.managed',
    type: bool,
    doc: 'The core starts, supervises and stops its own etcd member (`binary`, data under `<node.data_dir>/etcd`, on `client_port` / `peer_port`); a core with `seeds` joins their etcd cluster (member add). Cores only.',
    cli: { flag: '--etcd-managed', key: 'etcdManaged' },
  },
  { path: 'cluster.etcd.client_port', type: int(1, U16), doc: 'Client port of the managed etcd member.', cli: { flag: '--etcd-client-port', key: 'etcdClientPort' } },
  { path: 'cluster.etcd.peer_port', type: int(1, U16), doc: 'Peer port of the managed etcd member.', cli: { flag: '--etcd-peer-port', key: 'etcdPeerPort' } },
  { path: 'cluster.etcd.binary', type: nonEmpty, doc: 'The etcd binary of a managed member (Debian `etcd-server`).' },
  {
    path: 'cluster.lease_ttl_s',
    type: int(2, 300),
    doc: 'TTL of each node\'s etcd lease, in seconds. Every entry a node owns hangs on it: a node silent this long is `stopped` and its non-persistent routes and sessions disappear.',
    cli: { flag: '--lease-ttl', key: 'leaseTtl' },
  },
  // durability
  {
    path: 'durability.sync',
    type: enumOf('batch', 'always', 'none'),
    doc: 'Persistent sessions (their subscriptions, QoS 1/2 messages queued or in flight, inbound QoS 2 ids), wills and, outside a cluster, retained messages are kept in the store under `<node.data_dir>/store` (LMDB) and survive a crash: `batch` group-commits every `batch_ms`, `always` commits each event-loop turn; PUBACK / PUBREC / SUBACK follow the commit of what their packet wrote. `none` keeps everything in memory only (docs/durability.md).',
    cli: { flag: '--durability', key: 'durability' },
  },
  { path: 'durability.batch_ms', type: int(1, 1000), doc: 'With `sync: "batch"`, writes are gathered this long (milliseconds) into one transaction.' },
  { path: 'cluster.tls', type: bool, doc: 'Inter-node connections over TLS with the node\'s certificate (`listeners.tls.cert`, `key`; peers verified against `listeners.tls.ca`); also etcd\'s: a managed member on mutual TLS for clients and peers, https:// external endpoints dialled with the node\'s certificate.' },
  { path: 'cluster.forward_max_bytes', type: int(65536, I32), doc: 'Bytes (unsent plus unacknowledged) that one worker thread keeps for one peer before its publishers are paused; QoS 0 beyond it is dropped (counted).' },
  { path: 'cluster.forward_flush_ms', type: int(0, 100), doc: 'Messages for another node are gathered this long (milliseconds) into one write on each forward connection (frames past 64 KiB go at once); 0 writes once per event-loop turn. At modest rates a loop turn holds one message, so the default millisecond saves most of a write per message (benchmark.md, cross-node p2p) for at most that much more latency.' },
  { path: 'cluster.write_batch_ms', type: int(0, 1000), doc: 'Route and retained-message changes are gathered this long before one etcd transaction takes them.' },
  { path: 'cluster.claim_timeout_ms', type: int(1, 600_000), doc: 'A CONNECT waits at most this long for the etcd transaction that makes this node the owner of its client id; then it connects on what this node knows and the claim goes on (if another node turns out to own the id, that node ends its copy). Only while etcd does not answer does this matter.' },
  { path: 'cluster.route_commit_timeout_ms', type: int(100, 600_000), doc: 'A SUBACK waits at most this long for the new subscriptions\' routes to be committed to the routes shard (so that a message published anywhere after the SUBACK reaches them); past it (etcd lost) those subscriptions are undone and refused with 0x80, logged `mqtt.subscribe_not_committed`.' },
  { path: 'cluster.lag_warn_ms', type: int(1, 3_600_000), doc: 'A shard replica further behind its source than this is logged (`cluster.shard_lag`).' },
];

const SPEC_BY_PATH = new Map<string, OptionSpec>(OPTIONS.map((o) => [o.path, o]));
/** Non-leaf paths ("listeners", "listeners.tls", ...). */
const SECTIONS = new Set<string>();
for (const o of OPTIONS) {
  const parts = o.path.split('.');
  for (let i = 1; i < parts.length; i++) SECTIONS.add(parts.slice(0, i).join('.'));
}
const TOP_SECTIONS = [...SECTIONS].filter((s) => !s.includes('.'));

/** Environment variable that overrides an option: listeners.tls.cert → FLEETMQ_LISTENERS__TLS__CERT. */
export function envName(path: string): string {
  return 'FLEETMQ_' + path.split('.').join('__').toUpperCase();
}

export function getOption(path: string): OptionSpec | undefined {
  return SPEC_BY_PATH.get(path);
}

// ---------------------------------------------------------------------------------------
// Checking one value

/** "an integer 0..65535", "true or false", ... */
export function describeType(t: OptionType): string {
  switch (t.kind) {
    case 'int':
      return `an integer ${t.min}..${t.max}`;
    case 'bool':
      return 'true or false';
    case 'enum':
      return 'one of ' + t.values.map((v) => JSON.stringify(v)).join(', ');
    case 'string':
      return t.expect;
    case 'file':
      return 'null or a file path';
    case 'list':
      return `an array of strings, each ${t.expect}`;
    case 'optString':
      return t.expect;
  }
}

/** Short rendering of a bad value for an error message. */
export function showValue(v: unknown, secret = false): string {
  if (secret && typeof v === 'string') return `a string of ${v.length} characters`;
  if (v === undefined) return 'nothing';
  const s = typeof v === 'number' && !Number.isFinite(v) ? String(v) : JSON.stringify(v) ?? String(v);
  return s.length > 80 ? s.slice(0, 77) + '...' : s;
}

/**
 * Checks a value against an option's type and range. Returns null when valid, else the
 * problem without the option name ("expected an integer 0..65535, got \"abc\"").
 * File existence is checked separately (checkFile).
 */
export function checkValue(spec: OptionSpec, v: unknown): string | null {
  const t = spec.type;
  const bad = (): string => `expected ${describeType(t)}, got ${showValue(v, spec.secret)}`;
  switch (t.kind) {
    case 'int':
      return typeof v === 'number' && Number.isInteger(v) && v >= t.min && v <= t.max ? null : bad();
    case 'bool':
      return typeof v === 'boolean' ? null : bad();
    case 'enum':
      return typeof v === 'string' && t.values.includes(v) ? null : bad();
    case 'string':
      return typeof v === 'string' && t.check(v) ? null : bad();
    case 'file':
      return v === null || (typeof v === 'string' && v.length > 0) ? null : bad();
    case 'list': {
      if (!Array.isArray(v)) return bad();
      for (let i = 0; i < v.length; i++) {
        const item: unknown = v[i];
        if (typeof item !== 'string' || !t.check(item)) return `item ${i}: expected ${t.expect}, got ${showValue(item)}`;
      }
      return null;
    }
    case 'optString':
      return v === null || (typeof v === 'string' && t.check(v)) ? null : bad();
  }
}

/**
 * Converts the string form of a value (environment variable, CLI flag) to the option's
 * type. Strings that do not convert are returned unchanged, so checkValue reports them.
 */
export function fromString(spec: OptionSpec, raw: string): unknown {
  switch (spec.type.kind) {
    case 'int':
      return /^-?\d+$/.test(raw.trim()) ? Number(raw.trim()) : raw;
    case 'bool':
      return raw === 'true' ? true : raw === 'false' ? false : raw;
    case 'file':
    case 'optString':
      return raw === '' ? null : raw;
    case 'list':
      return raw
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s.length > 0);
    case 'enum':
    case 'string':
      return raw;
  }
}

/** null when `path` is an existing, readable regular file; else the problem. */
function checkFile(path: string): string | null {
  try {
    const st = statSync(path);
    if (!st.isFile()) return `${JSON.stringify(path)} is not a regular file`;
    accessSync(path, fsConstants.R_OK);
    return null;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (code ?? String(e));
    return `cannot read file ${JSON.stringify(path)}: ${why}`;
  }
}

/** MQTT topic filter syntax: non-empty, no U+0000, `#` only as the whole last level, `+` only as a whole level. */
function isTopicFilter(f: string): boolean {
  if (f.length === 0 || f.includes('\u0000') || Buffer.byteLength(f, 'utf8') > U16) return false;
  const levels = f.split('/');
  return levels.every((l, i) => (l.includes('#') ? l === '#' && i === levels.length - 1 : !l.includes('+') || l === '+'));
}

// ---------------------------------------------------------------------------------------
// Loading

export interface LoadOptions {
  /** Parsed `fleetmq start` flags (highest precedence). */
  argv: CliStartOptions;
  /** Environment: FLEETMQ_CONFIG and FLEETMQ_<SECTION>__<KEY> overrides. */
  env: NodeJS.ProcessEnv;
  /** Config file; takes precedence over argv.config and FLEETMQ_CONFIG. */
  file?: string;
  /** Told about settings that are accepted but have no effect (e.g. mqtts_port without a certificate). */
  onWarning?: (message: string) => void;
}

interface Setting {
  value: unknown;
  /** "" for defaults, else " (from ...)" appended to error messages. */
  from: string;
}

export function loadConfig(opts: LoadOptions): Config {
  const problems: string[] = [];
  const settings = new Map<string, Setting>();
  for (const o of OPTIONS) settings.set(o.path, { value: getPath(DEFAULTS, o.path), from: '' });

  // 1. Config file.
  const filePath = opts.file ?? opts.argv.config ?? (opts.env['FLEETMQ_CONFIG'] || undefined);
  if (filePath !== undefined) readConfigFile(filePath, settings, problems);

  // 2. Environment.
  for (const name of Object.keys(opts.env).sort()) {
    const raw = opts.env[name];
    if (raw === undefined || !name.toUpperCase().startsWith('FLEETMQ_')) continue;
    const rest = name.slice('FLEETMQ_'.length).toLowerCase();
    // Only names that start with a section (FLEETMQ_MQTT_..., FLEETMQ_AUTH_...) are options;
    // FLEETMQ_CONFIG and unrelated FLEETMQ_* variables are left alone.
    if (!TOP_SECTIONS.some((s) => rest.startsWith(s + '_'))) continue;
    const path = rest.split('__').join('.');
    const spec = SPEC_BY_PATH.get(path);
    if (!spec) {
      problems.push(`unknown option ${JSON.stringify(path)} (from environment variable ${name}${suggest(path)})`);
      continue;
    }
    settings.set(path, { value: fromString(spec, raw), from: ` (from environment variable ${name})` });
  }

  // 3. Command-line flags.
  for (const o of OPTIONS) {
    if (!o.cli) continue;
    const v = opts.argv[o.cli.key];
    if (v !== undefined) settings.set(o.path, { value: v, from: ` (from command-line flag ${o.cli.flag})` });
  }

  // 4. Each value on its own.
  for (const o of OPTIONS) {
    const s = settings.get(o.path);
    if (!s) continue;
    const p = checkValue(o, s.value);
    if (p !== null) {
      problems.push(`option ${JSON.stringify(o.path)}: ${p}${s.from}`);
      continue;
    }
    if (o.type.kind === 'file' && typeof s.value === 'string') {
      const fp = checkFile(s.value);
      if (fp !== null) problems.push(`option ${JSON.stringify(o.path)}: ${fp}${s.from}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);

  const cfg = structuredClone(DEFAULTS) as Config;
  for (const [path, s] of settings) setPath(cfg, path, structuredClone(s.value));

  // 5. Options that depend on each other.
  const tls = cfg.listeners.tls;
  const fromOf = (p: ConfigPath): string => settings.get(p)?.from ?? '';
  if (tls.cert !== null && tls.key === null) problems.push(`option "listeners.tls.key": required when listeners.tls.cert is set`);
  if (tls.key !== null && tls.cert === null) problems.push(`option "listeners.tls.cert": required when listeners.tls.key is set`);
  if (tls.request_cert && tls.ca === null)
    problems.push(`option "listeners.tls.request_cert": true requires listeners.tls.ca (the CA client certificates are verified against)${fromOf('listeners.tls.request_cert')}`);
  if (tls.cn_as_username && !tls.request_cert)
    problems.push(`option "listeners.tls.cn_as_username": true requires listeners.tls.request_cert = true${fromOf('listeners.tls.cn_as_username')}`);

  const tlsReady = tls.cert !== null && tls.key !== null;
  if (!tlsReady) {
    for (const p of ['listeners.mqtts_port', 'listeners.wss_port'] as const) {
      const s = settings.get(p);
      const name = p === 'listeners.mqtts_port' ? 'mqtts_port' : 'wss_port';
      if (s && s.from !== '' && s.value !== 0)
        opts.onWarning?.(`option ${JSON.stringify(p)} = ${showValue(s.value)}${s.from} has no effect: listeners.tls.cert and listeners.tls.key are not set`);
      cfg.listeners[name] = 0;
    }
    if (tls.request_cert) opts.onWarning?.('option "listeners.tls.request_cert" has no effect: no TLS listener (listeners.tls.cert and listeners.tls.key are not set)');
  }

  const ports: Array<[ConfigPath, number]> = [
    ['listeners.mqtt_port', cfg.listeners.mqtt_port],
    ['listeners.mqtts_port', cfg.listeners.mqtts_port],
    ['listeners.ws_port', cfg.listeners.ws_port],
    ['listeners.wss_port', cfg.listeners.wss_port],
    ['listeners.http_port', cfg.listeners.http_port],
  ];
  const seen = new Map<number, string>();
  for (const [p, n] of ports) {
    if (n === 0) continue;
    const other = seen.get(n);
    if (other !== undefined) problems.push(`option ${JSON.stringify(p)}: port ${n} is also used by ${other}${fromOf(p)}`);
    else seen.set(n, p);
  }

  checkCluster(cfg, fromOf, problems, seen);

  if (problems.length > 0) throw new ConfigError(problems);
  return cfg;
}

/** The cluster options that depend on each other and on the node's (docs/cluster.md). */
function checkCluster(cfg: Config, fromOf: (p: ConfigPath) => string, problems: string[], ports: Map<number, string>): void {
  const c = cfg.cluster;
  if (c.role === 'none') return;
  const role = `cluster.role = "${c.role}"${fromOf('cluster.role')}`;
  if (c.cookie !== null && c.cookie_file !== null) problems.push('option "cluster.cookie_file": set either cluster.cookie or cluster.cookie_file, not both');
  if (c.cookie_file !== null && checkFile(c.cookie_file) === null) {
    const line = readFileSync(c.cookie_file, 'utf8').split(/\r?\n/)[0]?.trim() ?? '';
    if (line.length < 8 || line.length > 1024) problems.push(`option "cluster.cookie_file": the first line of ${JSON.stringify(c.cookie_file)} must hold the cookie, 8..1024 characters (it has ${line.length})`);
    else c.cookie = line;
  }
  if (c.cookie === null && c.cookie_file === null) problems.push(`option "cluster.cookie": required when ${role} (or cluster.cookie_file)`);
  if (!/^[^@\s/]+@[^@\s/]+$/.test(cfg.node.name)) problems.push(`option "node.name": a clustered node is named NAME@HOST (no "/"), got ${JSON.stringify(cfg.node.name)}${fromOf('node.name')}`);
  if (cfg.node.workers === 0) problems.push(`option "node.workers": a clustered node needs worker threads (at least 1), not 0${fromOf('node.workers')}`);
  const host = c.advertise ?? cfg.node.name.slice(cfg.node.name.indexOf('@') + 1);
  if (c.advertise === null && !hostName(host)) problems.push(`option "cluster.advertise": required when the host part of node.name (${JSON.stringify(host)}) is not an IP address or host name`);
  if (c.port === c.forward_port) problems.push(`option "cluster.forward_port": port ${c.forward_port} is also cluster.port${fromOf('cluster.forward_port')}`);
  for (const [p, n] of [['cluster.port', c.port], ['cluster.forward_port', c.forward_port]] as const) {
    const other = ports.get(n);
    if (other !== undefined) problems.push(`option ${JSON.stringify(p)}: port ${n} is also used by ${other}${fromOf(p)}`);
  }
  const e = c.etcd;
  if (c.role === 'core') {
    if (e.managed && e.endpoints.length > 0) problems.push('option "cluster.etcd.managed": a core uses either its own managed etcd member or cluster.etcd.endpoints, not both');
    if (!e.managed && e.endpoints.length === 0) problems.push(`option "cluster.etcd.endpoints": a core needs etcd: set cluster.etcd.endpoints (--etcd URL) or cluster.etcd.managed (--etcd-managed)`);
    if (e.managed) {
      if (e.client_port === e.peer_port) problems.push('option "cluster.etcd.peer_port": must differ from cluster.etcd.client_port');
      for (const [p, n] of [['cluster.etcd.client_port', e.client_port], ['cluster.etcd.peer_port', e.peer_port]] as const) {
        const other = ports.get(n) ?? (n === c.port ? 'cluster.port' : n === c.forward_port ? 'cluster.forward_port' : undefined);
        if (other !== undefined) problems.push(`option ${JSON.stringify(p)}: port ${n} is also used by ${other}${fromOf(p)}`);
      }
    }
  } else {
    if (e.managed || e.endpoints.length > 0) problems.push('option "cluster.etcd": a replicant holds no etcd client (it streams from cores): remove cluster.etcd.endpoints / cluster.etcd.managed, or use cluster.role = "core"');
    if (c.discovery === 'etcd') problems.push('option "cluster.discovery": "etcd" is for cores; a replicant finds cores by "static" seeds or "dns"');
  }
  if (c.discovery === 'dns' && c.dns_name === null) problems.push('option "cluster.dns_name": required when cluster.discovery = "dns"');
  const tls = cfg.listeners.tls;
  if (c.tls && (tls.cert === null || tls.key === null || tls.ca === null)) problems.push('option "cluster.tls": true needs listeners.tls.cert, listeners.tls.key and listeners.tls.ca (peers are verified against the CA)');
}

function readConfigFile(path: string, settings: Map<string, Setting>, problems: string[]): void {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(`cannot read config file ${JSON.stringify(path)}: ${code === 'ENOENT' ? 'no such file' : (code ?? String(e))}`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`config file ${JSON.stringify(path)} is not valid JSON: ${(e as Error).message}`);
  }
  const from = ` (in config file ${path})`;
  if (!isPlainObject(doc)) throw new ConfigError(`config file ${JSON.stringify(path)}: expected a JSON object at the top level, got ${showValue(doc)}`);
  const walk = (obj: Record<string, unknown>, prefix: string): void => {
    for (const [k, v] of Object.entries(obj)) {
      const p = prefix === '' ? k : `${prefix}.${k}`;
      if (SPEC_BY_PATH.has(p)) settings.set(p, { value: v, from });
      else if (SECTIONS.has(p)) {
        if (isPlainObject(v)) walk(v, p);
        else problems.push(`option ${JSON.stringify(p)}: expected an object, got ${showValue(v)}${from}`);
      } else problems.push(`unknown option ${JSON.stringify(p)}${from.slice(0, -1)}${suggest(p)})`);
    }
  };
  walk(doc, '');
}

/** ", did you mean "mqtt.max_packet_size"?" for near misses (edit distance ≤ 2), else "". */
function suggest(path: string): string {
  let best: string | undefined;
  let bestD = 3;
  for (const p of [...SPEC_BY_PATH.keys(), ...SECTIONS]) {
    const d = editDistance(p, path);
    if (d < bestD) {
      bestD = d;
      best = p;
    }
  }
  return best === undefined ? '' : `; did you mean ${JSON.stringify(best)}?`;
}

function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 2) return 3;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost);
    }
    prev = cur;
  }
  return prev[b.length] ?? 3;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function getPath(obj: unknown, path: string): unknown {
  let cur: unknown = obj;
  for (const k of path.split('.')) cur = isPlainObject(cur) ? cur[k] : undefined;
  return cur;
}

function setPath(obj: object, path: string, value: unknown): void {
  const keys = path.split('.');
  const last = keys.pop() as string;
  let cur = obj as Record<string, unknown>;
  for (const k of keys) cur = cur[k] as Record<string, unknown>;
  cur[last] = value;
}

// ---------------------------------------------------------------------------------------
// Documentation

/** The option reference in docs/config.md (between the `options:begin/end` markers). */
export function renderOptionsMarkdown(): string {
  const out: string[] = [];
  let section = '';
  for (const o of OPTIONS) {
    const sec = o.path.split('.').slice(0, -1).join('.');
    if (sec !== section) {
      section = sec;
      out.push('', `### \`${sec}\``, '', '| Option | Type | Default | Meaning |', '| --- | --- | --- | --- |');
    }
    const def = o.defaultDoc ?? '`' + JSON.stringify(getPath(DEFAULTS, o.path)) + '`';
    const extra = [`Env \`${envName(o.path)}\``];
    if (o.cli) extra.push(`CLI \`${o.cli.flag}\``);
    const cell = (s: string): string => s.replace(/\|/g, '\\|');
    out.push(`| \`${o.path}\` | ${cell(o.typeDoc ?? docType(o.type))} | ${cell(def)} | ${cell(o.doc)} ${extra.join(', ')}. |`);
  }
  return out.join('\n').trimStart() + '\n';
}

function docType(t: OptionType): string {
  switch (t.kind) {
    case 'int':
      return `integer ${t.min}..${t.max}`;
    case 'bool':
      return 'boolean';
    case 'enum':
      return t.values.map((v) => `\`"${v}"\``).join(', ');
    case 'string':
      return t.expect;
    case 'file':
      return 'file path or `null`';
    case 'list':
      return `array of strings, each ${t.expect}`;
    case 'optString':
      return t.expect;
  }
}
