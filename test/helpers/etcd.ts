// Real etcd clusters for tests: n members of /usr/bin/etcd on free loopback ports with
// temporary data dirs, started through startManagedEtcd (so the managed mode is exercised
// by every test that needs an etcd).
//
// Speed: the members run with --heartbeat-interval=50 --election-timeout=500 (etcd's
// defaults are 100 / 1000), so that a first election and a re-election after a kill take
// about half a second; and their data dirs are under /dev/shm when it exists (no fsync
// cost; FLEETMQ_TEST_ETCD_DIR overrides the parent directory).
//
// Cleanup: call `after(() => cluster.stop())` in the describe that starts a cluster, or use
// useEtcdCluster() which registers it (as tempDir() does). As a last resort every member and
// every process passed to trackEtcd() is SIGKILLed on process 'exit', and on SIGTERM/SIGINT
// (then the signal is raised again so the process still ends as it would have).
import { after, before } from 'node:test';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Logger } from '../../src/log/logger.js';
import { killAllManagedEtcd, startManagedEtcd, type ManagedEtcd, type ManagedEtcdOptions } from '../../src/cluster/etcd/managed.js';
import { etcdClient } from '../../src/cluster/etcd/client.js';
import { freePort } from './broker.js';

/** etcd flags of test members: a faster heartbeat and election than etcd's defaults. */
export const TEST_ETCD_ARGS: readonly string[] = ['--heartbeat-interval=50', '--election-timeout=500'];

export interface EtcdClusterMember {
  readonly name: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly dataDir: string;
  readonly clientPort: number;
  readonly peerPort: number;
  /** pid of the running etcd (undefined while killed). */
  readonly pid: number | undefined;
  /** The supervisor of the running process (replaced by start(i)). */
  readonly etcd: ManagedEtcd;
}

export interface EtcdCluster {
  /** Client URLs of every member. */
  readonly endpoints: string[];
  readonly members: EtcdClusterMember[];
  /** The --initial-cluster-token (and the name given). */
  readonly token: string;
  /** JSON log lines of every member (etcd's re-logged lines, supervision events). */
  readonly logs: string[];
  /**
   * Index of the leader as the running members see it (each asked at its own client URL),
   * or undefined while they have none among them (e.g. just after the leader was killed).
   */
  leader(): Promise<number | undefined>;
  /** Waits (bounded by `timeoutMs`, default 10 s) until the running members agree on a running leader. */
  waitLeader(timeoutMs?: number): Promise<number>;
  /** SIGKILLs member i (no supervisor restart); resolves when the process is gone. */
  kill(i: number): Promise<void>;
  /** Starts member i again on the same ports and data dir; resolves when it is healthy. */
  start(i: number): Promise<void>;
  /** Stops every member (SIGKILL: see stopAll) and removes the temp dirs. */
  stop(): Promise<void>;
}

// ------------------------------------------------------------------ last-resort cleanup

const tracked = new Set<ManagedEtcd>();
/** Temp dirs to remove if the process ends before their owner removed them (they may be in /dev/shm: memory). */
const tempRoots = new Set<string>();
let hooked = false;

function killAll(): void {
  for (const m of tracked) m.killNow();
  tracked.clear();
  // Also the members whose start is still pending (no ManagedEtcd handed out yet).
  killAllManagedEtcd();
  for (const d of tempRoots) rmSync(d, { recursive: true, force: true });
  tempRoots.clear();
}

function hookProcess(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', killAll);
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.once(sig, () => {
      killAll();
      process.kill(process.pid, sig);
    });
  }
}

// Installed on import: a test may be terminated while its first member is still starting.
hookProcess();

/** Kills `m` with SIGKILL if the test process exits or is terminated while it runs. */
export function trackEtcd<T extends ManagedEtcd>(m: T): T {
  hookProcess();
  tracked.add(m);
  m.onState((s) => {
    if (s === 'stopped' || s === 'failed') tracked.delete(m);
  });
  return m;
}

// ------------------------------------------------------------------ helpers

/** The parent of test data dirs: FLEETMQ_TEST_ETCD_DIR, else /dev/shm, else the OS temp dir. */
export function etcdTestRoot(): string {
  return process.env['FLEETMQ_TEST_ETCD_DIR'] ?? (existsSync('/dev/shm') ? '/dev/shm' : tmpdir());
}

/**
 * A fresh directory for etcd data dirs under etcdTestRoot(); removed by `remove()`, or on
 * process exit / SIGTERM if the test never got there.
 */
export function etcdTempDir(prefix = 'fleetmq-etcd-'): { path: string; remove(): void } {
  const path = mkdtempSync(join(etcdTestRoot(), prefix));
  tempRoots.add(path);
  return {
    path,
    remove() {
      tempRoots.delete(path);
      rmSync(path, { recursive: true, force: true });
    },
  };
}

/** A Logger collecting into `logs` (and printing when FLEETMQ_TEST_LOG is set). */
export function testLogger(logs: string[], base: Record<string, unknown> = {}): Logger {
  return new Logger('debug', base, (line) => {
    logs.push(line);
    if (logs.length > 20_000) logs.splice(0, 10_000);
    if (process.env['FLEETMQ_TEST_LOG']) process.stderr.write(line + '\n');
  });
}

/** `count` distinct free loopback ports. */
export async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  for (let tries = 0; ports.size < count; tries++) {
    if (tries > count * 20) throw new Error('cannot find free ports');
    ports.add(await freePort());
  }
  return [...ports];
}

// ------------------------------------------------------------------ the harness

let seq = 0;

/**
 * Starts an n-member etcd cluster (a real one: n members bootstrapped together) on free
 * loopback ports and waits until every member is healthy (bounded: startTimeoutMs, 30 s).
 * On failure every member started so far is stopped and the temp dir removed.
 */
export async function startEtcdCluster(
  n: number,
  opts: { name?: string; extraArgs?: readonly string[]; startTimeoutMs?: number } = {},
): Promise<EtcdCluster> {
  if (!Number.isInteger(n) || n < 1) throw new Error(`startEtcdCluster: n must be >= 1 (got ${n})`);
  hookProcess();
  const token = opts.name ?? `fleetmq-test-${process.pid}-${++seq}`;
  const tmp = etcdTempDir();
  const root = tmp.path;
  const logs: string[] = [];
  const log = testLogger(logs, { cluster: token });
  const ports = await freePorts(2 * n);
  const specs = Array.from({ length: n }, (_, i) => ({
    name: `m${i}`,
    clientPort: ports[2 * i]!,
    peerPort: ports[2 * i + 1]!,
    dataDir: join(root, `m${i}`),
  }));
  const initialCluster = specs.map((s) => `${s.name}=http://127.0.0.1:${s.peerPort}`).join(',');
  const optionsOf = (i: number): ManagedEtcdOptions => {
    const s = specs[i]!;
    return {
      name: s.name,
      dataDir: s.dataDir,
      host: '127.0.0.1',
      clientPort: s.clientPort,
      peerPort: s.peerPort,
      clusterToken: token,
      initialCluster,
      clusterState: 'new',
      log,
      extraArgs: [...TEST_ETCD_ARGS, ...(opts.extraArgs ?? [])],
      startTimeoutMs: opts.startTimeoutMs ?? 30_000,
      // A member alone is not healthy until a quorum is up: wait for them together below.
      waitHealthy: false,
    };
  };

  const running: ManagedEtcd[] = [];
  // Teardown SIGKILLs: the data is thrown away, and a graceful stop of every member at once
  // makes the leader wait ~5 s for a leadership transfer that cannot happen any more.
  const stopAll = async () => {
    await Promise.all(running.map(async (m) => {
      m.killNow();
      await m.stop(5000); // resolves once the process is gone
    }));
    tmp.remove();
  };
  try {
    for (let i = 0; i < n; i++) running.push(trackEtcd(await startManagedEtcd(optionsOf(i))));
    await Promise.all(running.map((m) => m.waitHealthy(opts.startTimeoutMs ?? 30_000)));
  } catch (e) {
    await stopAll();
    throw e;
  }

  const members: EtcdClusterMember[] = specs.map((s, i) => ({
    name: s.name,
    clientUrl: `http://127.0.0.1:${s.clientPort}`,
    peerUrl: `http://127.0.0.1:${s.peerPort}`,
    dataDir: s.dataDir,
    clientPort: s.clientPort,
    peerPort: s.peerPort,
    get pid() {
      return running[i]!.pid;
    },
    get etcd() {
      return running[i]!;
    },
  }));
  const at = (i: number): ManagedEtcd => {
    const m = running[i];
    if (!m) throw new Error(`no etcd member ${i} (the cluster has ${n})`);
    return m;
  };
  let stopped = false;
  const leader = async (): Promise<number | undefined> => {
    const up = members.map((_, i) => i).filter((i) => running[i]!.state === 'running');
    const seen = await Promise.all(up.map(async (i) => {
      const c = etcdClient([members[i]!.clientUrl]);
      try {
        const st = await c.maintenance.status();
        return { i, self: st.header.member_id, leader: st.leader };
      } catch {
        return null;
      } finally {
        c.close();
      }
    }));
    const ok = seen.filter((x) => x !== null);
    if (ok.length !== up.length || ok.length === 0) return undefined;
    const first = ok[0]!.leader;
    if (!ok.every((x) => x.leader === first)) return undefined;
    return ok.find((x) => x.self === first)?.i;
  };
  return {
    leader,
    async waitLeader(timeoutMs = 10_000) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const l = await leader();
        if (l !== undefined) return l;
        if (Date.now() > end) throw new Error(`etcd cluster ${token}: no leader among the running members after ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    endpoints: members.map((m) => m.clientUrl),
    members,
    token,
    logs,
    async kill(i) {
      const m = at(i);
      m.killNow();
      await m.stop(5000); // resolves once the SIGKILLed process is gone
    },
    async start(i) {
      const m = at(i);
      if (m.state !== 'stopped' && m.state !== 'failed') throw new Error(`etcd member ${i} is ${m.state}`);
      // The data dir holds the member: etcd ignores the initial-cluster flags and rejoins.
      const next = trackEtcd(await startManagedEtcd({ ...optionsOf(i), waitHealthy: true }));
      running[i] = next;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopAll();
    },
  };
}

/**
 * An etcd cluster for a describe block: started in `before`, stopped (and its dirs
 * removed) in `after`, even when a test failed. Read `.cluster` inside tests.
 */
export function useEtcdCluster(n: number, opts: { name?: string; extraArgs?: readonly string[] } = {}): { readonly cluster: EtcdCluster } {
  let c: EtcdCluster | null = null;
  before(async () => {
    c = await startEtcdCluster(n, opts);
  });
  after(async () => {
    await c?.stop();
  });
  return {
    get cluster(): EtcdCluster {
      if (!c) throw new Error('the etcd cluster is not started (used outside its describe?)');
      return c;
    },
  };
}
