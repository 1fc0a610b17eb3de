// A supervised local etcd member ("managed" mode, bare metal): a core starts its own etcd
// 3.4 process on its own ports and data directory, re-logs etcd's zap lines through the
// node's Logger, restarts it with backoff when it dies, and stops it with the node.
//
//   starting ──healthy──▶ running ──exits──▶ restarting ──healthy──▶ running
//      │                                        │ (too many restarts in a minute)
//      └─exits / times out─▶ failed ◀───────────┘
//   any ──stop() / killNow()──▶ stopped
//
// A restart is a plain start on the same data directory: once `<dataDir>/member` exists,
// etcd ignores the --initial-cluster* flags and rejoins with what it stored. Membership
// changes (joining a running cluster, leaving it) are in members.ts.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsc, mkdirSync, statSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { get as httpsGet } from 'node:https';
import { etcdCredentials, etcdScheme, etcdTls } from './tls.js';
import { createServer, isIP, isIPv6 } from 'node:net';
import { delimiter, join } from 'node:path';
import type { LogFields, Logger } from '../../log/logger.js';

export const DEFAULT_ETCD_BINARY = '/usr/bin/etcd';
/** etcd's largest recommended quota (its default is 2 GiB). */
export const DEFAULT_QUOTA_BACKEND_BYTES = 8 * 1024 ** 3;
export const DEFAULT_AUTO_COMPACTION: AutoCompaction = { mode: 'periodic', retention: '1h' };
export const DEFAULT_START_TIMEOUT_MS = 30_000;
/** Lines of etcd output kept for error messages. */
export const LOG_TAIL_LINES = 50;

export type ManagedEtcdState = 'starting' | 'running' | 'restarting' | 'stopped' | 'failed';

export type ManagedEtcdErrorCode =
  | 'ETCD_BAD_OPTIONS'
  | 'ETCD_BINARY_MISSING'
  | 'ETCD_BAD_DATA_DIR'
  | 'ETCD_PORT_IN_USE'
  | 'ETCD_START_FAILED'
  | 'ETCD_START_TIMEOUT'
  | 'ETCD_STOPPED'
  | 'ETCD_MEMBER_REMOVED'
  // members.ts
  | 'ETCD_DATA_DIR_IN_USE'
  | 'ETCD_MEMBER_EXISTS'
  | 'ETCD_MEMBER_NOT_FOUND'
  | 'ETCD_MEMBER_OP_FAILED';

/** Every error of this module and members.ts: a stable `code`, and etcd's last lines when they help. */
export class ManagedEtcdError extends Error {
  override readonly name = 'ManagedEtcdError';
  constructor(
    readonly code: ManagedEtcdErrorCode,
    message: string,
    /** etcd's last output lines (raw), for start and exit errors. */
    readonly logTail: readonly string[] = [],
    /** The port concerned (ETCD_PORT_IN_USE). */
    readonly port?: number,
  ) {
    super(message);
  }
}

export interface AutoCompaction {
  mode: 'periodic' | 'revision';
  /** etcd's --auto-compaction-retention: a duration ('1h', '30m') for periodic, a revision count for revision. */
  retention: string;
}

export interface ManagedEtcdOptions {
  /** etcd member name (also its name in --initial-cluster): no '=', ',' or spaces. */
  name: string;
  /** The member's data directory, e.g. <node data-dir>/etcd (made if missing, mode 0700). */
  dataDir: string;
  /** IP address to listen on and advertise (etcd binds IPs, not host names). */
  host: string;
  clientPort: number;
  peerPort: number;
  /** --initial-cluster-token: use the fleetmq cluster name. */
  clusterToken: string;
  /** etcd's "name=peerURL,…" (default: this member alone). Ignored by etcd once the data dir holds a member. */
  initialCluster?: string;
  clusterState: 'new' | 'existing';
  /** Default /usr/bin/etcd (Debian etcd-server); a bare name is looked up in PATH. */
  binary?: string;
  log: Logger;
  /** Default 8 GiB. */
  quotaBackendBytes?: number;
  /** Default periodic, 1h; null disables auto compaction. */
  autoCompaction?: AutoCompaction | null;
  /** More etcd flags (e.g. --heartbeat-interval); flags this module sets itself are refused. */
  extraArgs?: readonly string[];
  /** Bound of the wait for the first healthy answer (default 30 s). */
  startTimeoutMs?: number;
  /**
   * Whether startManagedEtcd waits until the member is healthy (default true). A member
   * of a cluster without quorum is not healthy: to bootstrap 3 members, start each with
   * false, then await waitHealthy() on all.
   */
  waitHealthy?: boolean;
  /** Restarts allowed within any 60 s; one more and the state is `failed` (default 5). */
  maxRestartsPerMinute?: number;
  /** First restart delay (default 500 ms), doubled per restart of the last minute up to restartMaxMs. */
  restartInitialMs?: number;
  /** Default 10 s. */
  restartMaxMs?: number;
}

export interface ManagedEtcd {
  readonly name: string;
  readonly dataDir: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly state: ManagedEtcdState;
  /** pid of the current etcd process (undefined while none runs). */
  readonly pid: number | undefined;
  /** Unexpected exits restarted so far. */
  readonly restarts: number;
  /** Why the state became `failed` (null otherwise). */
  readonly error: ManagedEtcdError | null;
  /** Calls `fn` on every state change; returns the unsubscribe function. */
  onState(fn: (state: ManagedEtcdState, prev: ManagedEtcdState) => void): () => void;
  /**
   * Resolves when the member runs and GET /health answers {"health":"true"}; rejects with
   * ETCD_START_TIMEOUT after `timeoutMs` (default startTimeoutMs), with ETCD_START_FAILED
   * (or ETCD_PORT_IN_USE) when etcd exits during its start, ETCD_STOPPED after stop().
   */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** One GET /health (bounded by `timeoutMs`, default 1 s). */
  healthy(timeoutMs?: number): Promise<boolean>;
  /** etcd's last output lines (raw), oldest first. */
  logTail(): string[];
  /** SIGTERM, then SIGKILL after `timeoutMs`; resolves when the process is gone. No restart after. */
  stop(timeoutMs?: number): Promise<void>;
  /** SIGKILL now, synchronously (a process 'exit' handler). No restart after. */
  killNow(): void;
}

/** The etcd flags this module sets (refused in extraArgs). */
const MANAGED_FLAGS = [
  'name', 'data-dir', 'listen-client-urls', 'advertise-client-urls', 'listen-peer-urls',
  'initial-advertise-peer-urls', 'initial-cluster', 'initial-cluster-state', 'initial-cluster-token',
  'quota-backend-bytes', 'auto-compaction-mode', 'auto-compaction-retention', 'logger', 'log-outputs',
  'config-file', 'cert-file', 'key-file', 'trusted-ca-file', 'client-cert-auth', 'peer-cert-file',
  'peer-key-file', 'peer-trusted-ca-file', 'peer-client-cert-auth',
];

/** A URL of this thread's etcd (https with cluster.tls: see tls.ts). */
export function etcdUrl(host: string, port: number): string {
  return `${etcdScheme()}://${isIPv6(host) ? `[${host}]` : host}:${port}`;
}

/** With etcd TLS: https for clients and peers, each asked for a certificate signed by the CA. */
function tlsArgs(): string[] {
  const t = etcdTls();
  if (!t) return [];
  return [
    `--cert-file=${t.cert}`, `--key-file=${t.key}`, `--trusted-ca-file=${t.ca}`, '--client-cert-auth',
    `--peer-cert-file=${t.cert}`, `--peer-key-file=${t.key}`, `--peer-trusted-ca-file=${t.ca}`, '--peer-client-cert-auth',
  ];
}

/** Checked options and the etcd command line (resolveOptions, preflight). */
export interface ResolvedManagedEtcd {
  name: string;
  dataDir: string;
  host: string;
  clientPort: number;
  peerPort: number;
  binary: string;
  clientUrl: string;
  peerUrl: string;
  args: string[];
  startTimeoutMs: number;
  waitHealthy: boolean;
  maxRestartsPerMinute: number;
  restartInitialMs: number;
  restartMaxMs: number;
  log: Logger;
}

const bad = (msg: string): ManagedEtcdError => new ManagedEtcdError('ETCD_BAD_OPTIONS', `managed etcd: ${msg}`);

function isPort(p: unknown): p is number {
  return typeof p === 'number' && Number.isInteger(p) && p >= 1 && p <= 65535;
}

function posInt(v: number | undefined, dflt: number, what: string, min = 1): number {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v < min) throw bad(`${what} must be an integer >= ${min} (got ${v})`);
  return v;
}

/** Validates the options (sync, no I/O) and builds etcd's command line. */
export function resolveOptions(o: ManagedEtcdOptions): ResolvedManagedEtcd {
  if (typeof o.name !== 'string' || !/^[A-Za-z0-9._@:-]{1,128}$/.test(o.name)) {
    throw bad(`name must be 1..128 characters of A-Z a-z 0-9 . _ @ : - (got ${JSON.stringify(o.name)})`);
  }
  if (typeof o.dataDir !== 'string' || o.dataDir === '') throw bad('dataDir is required');
  if (typeof o.host !== 'string' || isIP(o.host) === 0) throw bad(`host must be an IP address (got ${JSON.stringify(o.host)}): etcd binds IPs, not names`);
  if (!isPort(o.clientPort)) throw bad(`clientPort must be a port 1..65535 (got ${o.clientPort})`);
  if (!isPort(o.peerPort)) throw bad(`peerPort must be a port 1..65535 (got ${o.peerPort})`);
  if (o.clientPort === o.peerPort) throw bad(`clientPort and peerPort are both ${o.clientPort}`);
  if (typeof o.clusterToken !== 'string' || o.clusterToken === '') throw bad('clusterToken is required (the fleetmq cluster name)');
  if (o.clusterState !== 'new' && o.clusterState !== 'existing') throw bad(`clusterState must be "new" or "existing" (got ${JSON.stringify(o.clusterState)})`);
  if (!o.log) throw bad('log (a Logger) is required');
  const quota = o.quotaBackendBytes ?? DEFAULT_QUOTA_BACKEND_BYTES;
  if (!Number.isSafeInteger(quota) || quota < 0) throw bad(`quotaBackendBytes must be an integer >= 0 (got ${quota})`);
  const ac = o.autoCompaction === undefined ? DEFAULT_AUTO_COMPACTION : o.autoCompaction;
  if (ac !== null && ((ac.mode !== 'periodic' && ac.mode !== 'revision') || !/^[0-9][0-9a-z.]*$/.test(ac.retention))) {
    throw bad(`autoCompaction must be { mode: "periodic" | "revision", retention: "1h" | "1000" … } (got ${JSON.stringify(ac)})`);
  }
  const extra = [...(o.extraArgs ?? [])];
  for (const a of extra) {
    const flag = /^--?([a-z0-9-]+)/.exec(a)?.[1];
    if (flag !== undefined && MANAGED_FLAGS.includes(flag)) throw bad(`extraArgs may not set --${flag}: startManagedEtcd sets it`);
  }

  const clientUrl = etcdUrl(o.host, o.clientPort);
  const peerUrl = etcdUrl(o.host, o.peerPort);
  const initialCluster = o.initialCluster ?? `${o.name}=${peerUrl}`;
  if (!initialCluster.split(',').some((e) => e === `${o.name}=${peerUrl}`)) {
    throw bad(`initialCluster "${initialCluster}" does not hold this member (${o.name}=${peerUrl})`);
  }
  const args = [
    `--name=${o.name}`,
    `--data-dir=${o.dataDir}`,
    `--listen-client-urls=${clientUrl}`,
    `--advertise-client-urls=${clientUrl}`,
    `--listen-peer-urls=${peerUrl}`,
    `--initial-advertise-peer-urls=${peerUrl}`,
    `--initial-cluster=${initialCluster}`,
    `--initial-cluster-state=${o.clusterState}`,
    `--initial-cluster-token=${o.clusterToken}`,
    `--quota-backend-bytes=${quota}`,
    `--auto-compaction-mode=${ac?.mode ?? 'periodic'}`,
    `--auto-compaction-retention=${ac?.retention ?? '0'}`,
    '--logger=zap',
    '--log-outputs=stderr',
    ...tlsArgs(),
    ...extra,
  ];
  return {
    name: o.name,
    dataDir: o.dataDir,
    host: o.host,
    clientPort: o.clientPort,
    peerPort: o.peerPort,
    binary: o.binary ?? DEFAULT_ETCD_BINARY,
    clientUrl,
    peerUrl,
    args,
    startTimeoutMs: posInt(o.startTimeoutMs, DEFAULT_START_TIMEOUT_MS, 'startTimeoutMs'),
    waitHealthy: o.waitHealthy ?? true,
    maxRestartsPerMinute: posInt(o.maxRestartsPerMinute, 5, 'maxRestartsPerMinute', 0),
    restartInitialMs: posInt(o.restartInitialMs, 500, 'restartInitialMs'),
    restartMaxMs: posInt(o.restartMaxMs, 10_000, 'restartMaxMs'),
    log: o.log.child({ etcd_member: o.name }),
  };
}

/** The absolute path of `binary` (a bare name is looked up in PATH), or ETCD_BINARY_MISSING. */
export function checkBinary(binary: string): string {
  const candidates = binary.includes('/')
    ? [binary]
    : (process.env['PATH'] ?? '').split(delimiter).filter(Boolean).map((d) => join(d, binary));
  for (const c of candidates) {
    try {
      if (!statSync(c).isFile()) continue;
      accessSync(c, fsc.X_OK);
      return c;
    } catch {
      // try the next one
    }
  }
  throw missingBinary(binary);
}

function missingBinary(binary: string): ManagedEtcdError {
  return new ManagedEtcdError(
    'ETCD_BINARY_MISSING',
    `etcd binary not found or not executable: ${binary}. Install etcd 3.4 (Debian/Ubuntu: apt-get install -y etcd-server) or set cluster.etcd.binary to its path`,
  );
}

/** Makes the data directory if needed (0700, as etcd wants) and checks it is a writable directory. */
export function checkDataDir(dataDir: string): void {
  const badDir = (why: string) => new ManagedEtcdError('ETCD_BAD_DATA_DIR', `etcd data dir ${dataDir}: ${why}`);
  let st;
  try {
    st = statSync(dataDir, { throwIfNoEntry: false });
    if (!st) mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    else if (!st.isDirectory()) throw badDir('exists and is not a directory');
    accessSync(dataDir, fsc.W_OK | fsc.X_OK);
  } catch (e) {
    if (e instanceof ManagedEtcdError) throw e;
    throw badDir(`cannot be made or written (${(e as Error).message})`);
  }
  const member = statSync(join(dataDir, 'member'), { throwIfNoEntry: false });
  if (member && !member.isDirectory()) throw badDir('holds a "member" that is not a directory');
}

/** Whether the data directory holds an etcd member (then etcd restarts it, ignoring --initial-cluster*). */
export function hasMember(dataDir: string): boolean {
  return statSync(join(dataDir, 'member'), { throwIfNoEntry: false })?.isDirectory() ?? false;
}

/** Rejects with ETCD_PORT_IN_USE when host:port cannot be bound (checked before etcd is spawned). */
export function checkPortFree(host: string, port: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EADDRINUSE') {
        reject(new ManagedEtcdError('ETCD_PORT_IN_USE', `etcd ${what} port ${port} on ${host} is already in use (another etcd or process listens there)`, [], port));
      } else if (e.code === 'EADDRNOTAVAIL') {
        reject(bad(`host ${host} is not an address of this machine (${what} port ${port})`));
      } else {
        reject(bad(`cannot bind the ${what} port ${host}:${port}: ${e.code ?? e.message}`));
      }
    });
    s.listen({ host, port, exclusive: true }, () => s.close(() => resolve()));
  });
}

/** Every check that needs no etcd process: options, binary, data dir, both ports. */
export async function preflight(o: ManagedEtcdOptions): Promise<ResolvedManagedEtcd> {
  const r = resolveOptions(o);
  r.binary = checkBinary(r.binary);
  checkDataDir(r.dataDir);
  await checkPortFree(r.host, r.clientPort, 'client');
  await checkPortFree(r.host, r.peerPort, 'peer');
  return r;
}

/** One GET <clientUrl>/health: true when it answers {"health":"true"} within `timeoutMs`. */
export function probeHealth(clientUrl: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    let done = false;
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.destroy();
      resolve(ok);
    };
    const t = clientUrl.startsWith('https:') ? etcdCredentials() : undefined;
    const onRes = (res: import('node:http').IncomingMessage): void => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
        if (body.length > 4096) finish(false);
      });
      res.on('end', () => {
        try {
          finish((JSON.parse(body) as { health?: unknown }).health === 'true');
        } catch {
          finish(false);
        }
      });
      res.on('error', () => finish(false));
    };
    const req = t
      ? httpsGet(`${clientUrl}/health`, { agent: false, ca: t.rootCertificate, cert: t.certChain, key: t.privateKey }, onRes)
      : httpGet(`${clientUrl}/health`, { agent: false }, onRes);
    req.on('error', () => finish(false));
    const timer = setTimeout(() => finish(false), timeoutMs);
  });
}

// ------------------------------------------------------------------ etcd's own log lines

/** zap fields worth carrying into our log line (as etcd_<name with _>). */
const USEFUL_FIELDS = ['caller', 'error', 'address', 'local-member-id', 'remote-peer-id', 'cluster-id', 'took', 'data-dir', 'request', 'expected-duration'];
/**
 * Lines etcd 3.4 prints at warn for routine events (every start, a peer stream opening, its
 * own streams closing on stop): logged at debug. A peer lost ("lost TCP streaming
 * connection", "peer became inactive") stays a warning.
 */
const BENIGN_WARNINGS = new Set([
  'simple token is not cryptographically signed',
  'established TCP streaming connection with remote peer',
  'closed TCP streaming connection with remote peer',
  'stopped TCP streaming connection with remote peer',
]);
const ADDR_IN_USE = /listen tcp (\S+?):(\d+): bind: address already in use/;
const REMOVED = /permanently removed from the cluster|the member has been removed/;
const MAX_LINE = 16 * 1024;

interface ZapLine {
  level?: unknown;
  msg?: unknown;
  [k: string]: unknown;
}

/** Splits a stream into lines (bounded: a line longer than MAX_LINE is cut). */
class LineSplitter {
  private rest = '';
  constructor(private readonly onLine: (line: string) => void) {}
  push(chunk: string): void {
    const parts = (this.rest + chunk).split('\n');
    this.rest = parts.pop() ?? '';
    if (this.rest.length > MAX_LINE) {
      parts.push(this.rest.slice(0, MAX_LINE));
      this.rest = '';
    }
    for (const p of parts) if (p.trim() !== '') this.onLine(p.length > MAX_LINE ? p.slice(0, MAX_LINE) : p);
  }
  end(): void {
    if (this.rest.trim() !== '') this.onLine(this.rest);
    this.rest = '';
  }
}

/** "level msg: error" of a raw line, for error messages. */
export function summarizeLine(line: string): string {
  try {
    const z = JSON.parse(line) as ZapLine;
    const err = typeof z.error === 'string' ? `: ${z.error}` : '';
    return `${String(z.level)} ${String(z.msg)}${err}`;
  } catch {
    return line;
  }
}

function summarizeTail(lines: readonly string[], n = 6): string {
  if (lines.length === 0) return ' (etcd printed nothing)';
  return '; last etcd lines: ' + lines.slice(-n).map(summarizeLine).join(' | ');
}

// ------------------------------------------------------------------ the supervisor

interface Waiter {
  resolve: () => void;
  reject: (e: Error) => void;
}

/** Every supervisor of this process that has not stopped or failed (for killAllManagedEtcd). */
const live = new Set<Supervisor>();

/**
 * SIGKILLs every managed etcd of this process that still runs or starts, synchronously:
 * for a process 'exit' handler, which cannot wait (and may run while a start is pending,
 * before the caller holds the ManagedEtcd). Returns how many were killed.
 */
export function killAllManagedEtcd(): number {
  const all = [...live];
  for (const s of all) s.killNow();
  return all.length;
}

class Supervisor implements ManagedEtcd {
  readonly name: string;
  readonly dataDir: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  private st: ManagedEtcdState = 'starting';
  private child: ChildProcess | null = null;
  /** Bumped per spawn: callbacks of an older process do nothing. */
  private gen = 0;
  private nRestarts = 0;
  /** When the restarts of the last minute happened (ms). */
  private restartTimes: number[] = [];
  private restartTimer: NodeJS.Timeout | null = null;
  private stopping = false;
  private failure: ManagedEtcdError | null = null;
  private tail: string[] = [];
  /** "address already in use" seen in this process's output. */
  private portInUse: number | null = null;
  private removed = false;
  private readonly listeners = new Set<(s: ManagedEtcdState, p: ManagedEtcdState) => void>();
  private readonly waiters = new Set<Waiter>();
  private readonly exitWaiters = new Set<() => void>();
  private readonly log: Logger;

  constructor(private readonly r: ResolvedManagedEtcd) {
    this.name = r.name;
    this.dataDir = r.dataDir;
    this.clientUrl = r.clientUrl;
    this.peerUrl = r.peerUrl;
    this.log = r.log;
    live.add(this);
  }

  get state(): ManagedEtcdState {
    return this.st;
  }
  get pid(): number | undefined {
    return this.child?.pid;
  }
  get restarts(): number {
    return this.nRestarts;
  }
  get error(): ManagedEtcdError | null {
    return this.failure;
  }

  onState(fn: (state: ManagedEtcdState, prev: ManagedEtcdState) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  logTail(): string[] {
    return [...this.tail];
  }

  healthy(timeoutMs = 1000): Promise<boolean> {
    return probeHealth(this.clientUrl, timeoutMs);
  }

  waitHealthy(timeoutMs = this.r.startTimeoutMs): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const end = Date.now() + timeoutMs;
      let settled = false;
      const w: Waiter = {
        resolve: () => {
          if (settled) return;
          settled = true;
          cleanup();
          resolve();
        },
        reject: (e) => {
          if (settled) return;
          settled = true;
          cleanup();
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        w.reject(new ManagedEtcdError(
          'ETCD_START_TIMEOUT',
          `etcd member ${this.name} (${this.clientUrl}) not healthy after ${timeoutMs} ms (state ${this.st}; a member of a cluster without quorum stays unhealthy)${summarizeTail(this.tail)}`,
          this.tail.slice(),
        ));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.waiters.delete(w);
      };
      if (this.st === 'failed') return w.reject(this.failure ?? this.stoppedError());
      if (this.st === 'stopped') return w.reject(this.stoppedError());
      if (this.st === 'running') {
        // Running once does not mean healthy now (a peer may have gone): ask.
        void (async () => {
          while (!settled && Date.now() < end && this.st === 'running') {
            if (await probeHealth(this.clientUrl, Math.min(1000, Math.max(1, end - Date.now())))) return w.resolve();
            await delay(100);
          }
          if (!settled && this.st !== 'running') this.waiters.add(w);
        })();
        return;
      }
      this.waiters.add(w);
    });
  }

  async stop(timeoutMs = 10_000): Promise<void> {
    this.stopping = true;
    this.clearRestart();
    const child = this.child;
    if (!child || !alive(child)) {
      this.settleStopped();
      return;
    }
    const gone = this.exited();
    this.log.info('etcd.stopping', { pid: child.pid, timeout_ms: timeoutMs });
    child.kill('SIGTERM');
    if (!(await within(gone, timeoutMs))) {
      this.log.warn('etcd.stop_timeout', { pid: child.pid, timeout_ms: timeoutMs, action: 'SIGKILL' });
      child.kill('SIGKILL');
      if (!(await within(gone, 5000))) this.log.error('etcd.kill_timeout', { pid: child.pid });
    }
    this.settleStopped();
  }

  killNow(): void {
    this.stopping = true;
    this.clearRestart();
    const child = this.child;
    if (child && alive(child)) child.kill('SIGKILL');
    this.settleStopped();
  }

  // -------------------------------------------------------------- internals

  private stoppedError(): ManagedEtcdError {
    return new ManagedEtcdError('ETCD_STOPPED', `etcd member ${this.name} was stopped`, this.tail.slice());
  }

  /** After stop()/killNow() (also from `failed`: `error` still says why it had failed). */
  private settleStopped(): void {
    this.setState('stopped');
    this.rejectWaiters(this.stoppedError());
  }

  private setState(s: ManagedEtcdState): void {
    const prev = this.st;
    if (prev === s) return;
    this.st = s;
    if (s === 'stopped' || s === 'failed') live.delete(this);
    for (const fn of [...this.listeners]) {
      try {
        fn(s, prev);
      } catch (e) {
        this.log.error('etcd.state_listener_failed', { error: e });
      }
    }
  }

  private rejectWaiters(e: Error): void {
    for (const w of [...this.waiters]) w.reject(e);
  }

  private exited(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.child || !alive(this.child)) return resolve();
      this.exitWaiters.add(resolve);
    });
  }

  private clearRestart(): void {
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
  }

  /** Spawns etcd (the first start, or a restart). */
  spawnEtcd(): void {
    const gen = ++this.gen;
    this.tail = [];
    this.portInUse = null;
    this.removed = false;
    const env: NodeJS.ProcessEnv = {};
    // etcd reads ETCD_* variables as flags: the command line alone says how it runs.
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('ETCD_') || k === 'ETCD_UNSUPPORTED_ARCH') env[k] = v;
    if (process.arch === 'arm64' && env['ETCD_UNSUPPORTED_ARCH'] === undefined) env['ETCD_UNSUPPORTED_ARCH'] = 'arm64';
    const child = spawn(this.r.binary, this.r.args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    this.child = child;
    let spawnError: NodeJS.ErrnoException | null = null;
    const lines = new LineSplitter((l) => this.onLine(gen, l));
    child.stdout!.setEncoding('utf8').on('data', (d: string) => lines.push(d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => lines.push(d));
    child.once('error', (e: NodeJS.ErrnoException) => {
      spawnError = e;
    });
    child.once('spawn', () => {
      this.log.info('etcd.spawned', { pid: child.pid, client_url: this.clientUrl, peer_url: this.peerUrl, restart: this.nRestarts });
      void this.watchHealth(gen);
    });
    child.once('close', (code, signal) => {
      lines.end();
      for (const w of [...this.exitWaiters]) w();
      this.exitWaiters.clear();
      if (gen !== this.gen) return;
      this.child = null;
      this.onExit(code, signal, spawnError);
    });
  }

  private onLine(gen: number, line: string): void {
    if (gen !== this.gen) return;
    this.tail.push(line.length > 2000 ? line.slice(0, 2000) : line);
    if (this.tail.length > LOG_TAIL_LINES) this.tail.shift();
    const m = ADDR_IN_USE.exec(line);
    if (m) this.portInUse = Number(m[2]);
    if (REMOVED.test(line)) this.removed = true;
    let z: ZapLine | null = null;
    if (line.startsWith('{')) {
      try {
        z = JSON.parse(line) as ZapLine;
      } catch {
        z = null;
      }
    }
    if (!z) {
      this.log.debug('etcd.log', { etcd_level: 'text', etcd_msg: line });
      return;
    }
    const level = typeof z.level === 'string' ? z.level : 'info';
    const msg = typeof z.msg === 'string' ? z.msg : '';
    const fields: LogFields = { etcd_level: level, etcd_msg: msg };
    for (const k of USEFUL_FIELDS) {
      const v = z[k];
      if (v === undefined) continue;
      fields['etcd_' + k.replace(/-/g, '_')] = typeof v === 'string' && v.length > 500 ? v.slice(0, 500) : v;
    }
    if (level === 'warn' && !BENIGN_WARNINGS.has(msg)) this.log.warn('etcd.log', fields);
    else if (level === 'error' || level === 'dpanic' || level === 'panic' || level === 'fatal') this.log.error('etcd.log', fields);
    else this.log.debug('etcd.log', fields);
  }

  /** Polls /health while this process starts (or restarts) until it answers healthy. */
  private async watchHealth(gen: number): Promise<void> {
    const started = Date.now();
    let warned = false;
    while (gen === this.gen && !this.stopping && (this.st === 'starting' || this.st === 'restarting')) {
      if (await probeHealth(this.clientUrl, 1000)) {
        if (gen !== this.gen || this.stopping) return;
        const was = this.st;
        this.setState('running');
        const ms = Date.now() - started;
        if (was === 'restarting') this.log.info('etcd.restarted', { pid: this.pid, restarts: this.nRestarts, healthy_ms: ms });
        else this.log.info('etcd.healthy', { pid: this.pid, client_url: this.clientUrl, healthy_ms: ms });
        for (const w of [...this.waiters]) w.resolve();
        return;
      }
      if (!warned && this.st === 'restarting' && Date.now() - started > this.r.startTimeoutMs) {
        warned = true;
        this.log.warn('etcd.unhealthy', { pid: this.pid, since_ms: Date.now() - started, hint: 'a restarted member needs a quorum of its cluster' });
      }
      // Fast at first (a start takes ~1 s), then at most once a second.
      await delay(Date.now() - started < 5000 ? 50 : 1000);
    }
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null, spawnError: NodeJS.ErrnoException | null): void {
    if (this.stopping) {
      this.log.info('etcd.stopped', { code, signal });
      this.settleStopped();
      return;
    }
    const tail = this.tail.slice();
    const fields = { code, signal, last_lines: tail.slice(-10).map(summarizeLine) };
    if (spawnError) {
      const e = spawnError.code === 'ENOENT' || spawnError.code === 'EACCES'
        ? missingBinary(this.r.binary)
        : new ManagedEtcdError('ETCD_START_FAILED', `etcd member ${this.name}: cannot run ${this.r.binary}: ${spawnError.message}`);
      return this.fail(e, fields);
    }
    if (this.removed) {
      return this.fail(new ManagedEtcdError(
        'ETCD_MEMBER_REMOVED',
        `etcd member ${this.name} was removed from its cluster and exited; its data dir ${this.dataDir} must be emptied before it joins again${summarizeTail(tail)}`,
        tail,
      ), fields);
    }
    if (this.st === 'starting') {
      const e = this.portInUse !== null
        ? new ManagedEtcdError('ETCD_PORT_IN_USE', `etcd member ${this.name}: port ${this.portInUse} is already in use${summarizeTail(tail)}`, tail, this.portInUse)
        : new ManagedEtcdError('ETCD_START_FAILED', `etcd member ${this.name} exited during its start (code ${code}, signal ${signal})${summarizeTail(tail)}`, tail);
      return this.fail(e, fields);
    }
    // running or restarting: supervise.
    this.log.error('etcd.exited', { ...fields, state: this.st, restarts: this.nRestarts });
    const now = Date.now();
    this.restartTimes = this.restartTimes.filter((t) => now - t < 60_000);
    if (this.restartTimes.length >= this.r.maxRestartsPerMinute) {
      return this.fail(new ManagedEtcdError(
        'ETCD_START_FAILED',
        `etcd member ${this.name} exited ${this.restartTimes.length + 1} times within a minute: giving up (code ${code}, signal ${signal})${summarizeTail(tail)}`,
        tail,
      ), fields);
    }
    const wait = Math.min(this.r.restartInitialMs * 2 ** this.restartTimes.length, this.r.restartMaxMs);
    this.restartTimes.push(now);
    this.setState('restarting');
    this.log.warn('etcd.restart_scheduled', { in_ms: wait, restarts: this.nRestarts + 1 });
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (this.stopping) return;
      this.nRestarts++;
      this.spawnEtcd();
    }, wait);
  }

  private fail(e: ManagedEtcdError, fields: LogFields): void {
    this.failure = e;
    // Removal is usually deliberate (leaveManagedEtcd, an operator): not an error of this node.
    if (e.code === 'ETCD_MEMBER_REMOVED') this.log.warn('etcd.removed', { ...fields, code: e.code, error: e.message });
    else this.log.error('etcd.failed', { ...fields, code: e.code, error: e.message });
    this.setState('failed');
    this.rejectWaiters(e);
  }
}

function alive(c: ChildProcess): boolean {
  return c.exitCode === null && c.signalCode === null;
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** true when `p` settles within `ms`. */
async function within(p: Promise<void>, ms: number): Promise<boolean> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((r) => (t = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([p.then(() => true), timeout]);
  } finally {
    clearTimeout(t);
  }
}

/**
 * Starts a supervised etcd member: checks the options, the binary, the data dir and both
 * ports, spawns etcd, and (unless `waitHealthy: false`) waits until it is healthy. On a
 * start timeout the process is stopped before the promise rejects.
 */
export async function startManagedEtcd(opts: ManagedEtcdOptions): Promise<ManagedEtcd> {
  const r = await preflight(opts);
  r.log.info('etcd.starting', {
    binary: r.binary, data_dir: r.dataDir, client_url: r.clientUrl, peer_url: r.peerUrl,
    cluster_state: opts.clusterState, restart_of_member: hasMember(r.dataDir),
  });
  const s = new Supervisor(r);
  s.spawnEtcd();
  if (!r.waitHealthy) return s;
  try {
    await s.waitHealthy(r.startTimeoutMs);
  } catch (e) {
    await s.stop(2000);
    throw e;
  }
  return s;
}
