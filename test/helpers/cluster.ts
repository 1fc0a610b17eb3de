// fleetmq nodes of a cluster as child processes (`node dist/src/cli/main.js start --role …`)
// on free loopback ports, each with its own data dir. Every node a test starts is stopped
// by the test: useNodes() registers an `after` hook that SIGKILLs what is still running,
// and a process 'exit' handler does the same as a last resort.
import { after } from 'node:test';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI_MAIN, cleanEnv } from './cli.js';
import { freePort } from './broker.js';
import { inbox, uid, type Clients } from './clients.js';

export const TEST_COOKIE = 'test-cookie-of-the-suite';

export interface NodeSpec {
  role: 'core' | 'replicant';
  /** NAME part of NAME@127.0.0.1 (unique per test file: the process id is added). */
  name: string;
  etcd?: readonly string[];
  managed?: boolean;
  seeds?: readonly string[];
  workers?: number;
  cookie?: string;
  clusterName?: string;
  /** More `start` flags. */
  args?: readonly string[];
  /** FLEETMQ_* overrides (config options). */
  env?: Record<string, string>;
  leaseTtl?: number;
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

let seq = 0;

export class ClusterNode {
  proc: ChildProcess | null = null;
  readonly logs: string[] = [];
  private partial = '';
  exited!: Promise<Exit>;
  readonly name: string;
  readonly dataDir: string;
  mqttPort = 0;
  wsPort = 0;
  httpPort = 0;
  clusterPort = 0;
  forwardPort = 0;
  etcdClientPort = 0;
  etcdPeerPort = 0;

  constructor(readonly spec: NodeSpec) {
    this.name = `${spec.name}-${process.pid}-${++seq}@127.0.0.1`;
    this.dataDir = mkdtempSync(join(tmpdir(), 'fleetmq-node-'));
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.mqttPort}`;
  }

  get clusterAddress(): string {
    return `127.0.0.1:${this.clusterPort}`;
  }

  /** Picks ports (once) and spawns the node; resolves with it running (GET /status 200), or rejects with its log. */
  async start(timeoutMs = 30_000): Promise<this> {
    const fresh = this.mqttPort === 0;
    for (let attempt = 1; ; attempt++) {
      await this.pickPorts();
      const logged = this.logs.length;
      this.spawn();
      try {
        await this.waitRunning(timeoutMs);
        return this;
      } catch (e) {
        // A port picked here was taken between the pick and the bind (by another test's
        // process, or an outgoing connection's ephemeral port): pick again, twice at most.
        // (A managed etcd member's port reports ETCD_PORT_IN_USE.)
        const inUse = this.logs.slice(logged).some((l) => l.includes('"node.start_failed"') && (l.includes('EADDRINUSE') || l.includes('ETCD_PORT_IN_USE')));
        if (!fresh || !inUse || attempt >= 3) throw e;
        this.mqttPort = 0;
      }
    }
  }

  /** Picks the node's ports (once), e.g. to name it as a seed before it runs. */
  async pickPorts(): Promise<void> {
    if (this.mqttPort !== 0) return;
    const got = new Set<number>();
    while (got.size < (this.spec.managed ? 7 : 5)) got.add(await freePort());
    [this.mqttPort, this.wsPort, this.httpPort, this.clusterPort, this.forwardPort, this.etcdClientPort = 0, this.etcdPeerPort = 0] = [...got] as number[] as [number, number, number, number, number, number?, number?];
  }

  /** Spawns without waiting (for nodes expected to fail at start). */
  spawn(): void {
    const s = this.spec;
    const args = [
      CLI_MAIN, 'start', '--role', s.role, '--node-name', this.name, '--bind', '127.0.0.1',
      '--mqtt-port', String(this.mqttPort), '--ws-port', String(this.wsPort), '--http-port', String(this.httpPort),
      '--mqtts-port', '0', '--wss-port', '0',
      '--cluster-port', String(this.clusterPort), '--forward-port', String(this.forwardPort),
      '--cluster-cookie', s.cookie ?? TEST_COOKIE, '--cluster-name', s.clusterName ?? `t${process.pid}`,
      '--workers', String(s.workers ?? 2), '--data-dir', this.dataDir, '--log-level', s.logLevel ?? (process.env['FLEETMQ_TEST_NODE_LOG'] as NodeSpec['logLevel'] | undefined) ?? 'info',
      '--lease-ttl', String(s.leaseTtl ?? 4),
    ];
    if (s.etcd) args.push('--etcd', s.etcd.join(','));
    if (s.managed) args.push('--etcd-managed', '--etcd-client-port', String(this.etcdClientPort), '--etcd-peer-port', String(this.etcdPeerPort));
    if (s.seeds && s.seeds.length > 0) args.push('--seeds', s.seeds.join(','));
    args.push(...(s.args ?? []));
    const proc = spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: cleanEnv({ FLEETMQ_MQTT__SYS_INTERVAL_MS: '0', ...(s.env ?? {}) }),
    });
    this.proc = proc;
    live.add(proc);
    const onData = (d: Buffer): void => {
      const lines = (this.partial + d.toString('utf8')).split('\n');
      this.partial = lines.pop() ?? '';
      for (const l of lines) if (l.trim() !== '') this.logs.push(l);
      if (process.env['FLEETMQ_TEST_LOG']) process.stderr.write(d);
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    this.exited = new Promise((resolve) => proc.once('exit', (code, signal) => {
      live.delete(proc);
      resolve({ code, signal });
    }));
  }

  get running(): boolean {
    return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async waitRunning(timeoutMs = 30_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    let exit: Exit | null = null;
    void this.exited.then((e) => (exit = e));
    while (Date.now() < until) {
      if (exit !== null) throw new Error(`${this.name} exited (${JSON.stringify(exit)}) before it ran:\n${this.tail()}`);
      try {
        const r = await fetch(`http://127.0.0.1:${this.httpPort}/status`, { signal: AbortSignal.timeout(1000) });
        if (r.status === 200) return;
      } catch {
        /* not yet */
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${this.name} not running after ${timeoutMs} ms:\n${this.tail()}`);
  }

  tail(n = 40): string {
    return this.logs.slice(-n).join('\n');
  }

  /** Log lines (parsed) whose msg is `msg`. */
  lines(msg: string): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    for (const l of this.logs) {
      if (!l.includes(`"${msg}"`)) continue;
      try {
        const o = JSON.parse(l) as Record<string, unknown>;
        if (o['msg'] === msg) out.push(o);
      } catch {
        /* not JSON */
      }
    }
    return out;
  }

  async get(path: string): Promise<{ status: number; body: unknown }> {
    const r = await fetch(`http://127.0.0.1:${this.httpPort}${path}`, { signal: AbortSignal.timeout(10_000) });
    const text = await r.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      /* not JSON */
    }
    return { status: r.status, body };
  }

  async post(path: string, body: unknown): Promise<{ status: number; body: unknown }> {
    const r = await fetch(`http://127.0.0.1:${this.httpPort}${path}`, {
      method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' }, signal: AbortSignal.timeout(40_000),
    });
    const text = await r.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      /* not JSON */
    }
    return { status: r.status, body: parsed };
  }

  async status(): Promise<Record<string, unknown>> {
    return (await this.get('/status')).body as Record<string, unknown>;
  }

  /** SIGKILL (a crash); resolves once the process is gone. */
  async kill(): Promise<Exit> {
    if (!this.running) return this.exited;
    this.proc!.kill('SIGKILL');
    return this.exited;
  }

  /** SIGTERM, then SIGKILL after `timeoutMs`; resolves with the exit. */
  async stop(timeoutMs = 15_000): Promise<Exit> {
    if (!this.running) return this.exited;
    this.proc!.kill('SIGTERM');
    const t = setTimeout(() => this.proc?.kill('SIGKILL'), timeoutMs);
    const e = await this.exited;
    clearTimeout(t);
    return e;
  }

  /** Starts the node again (same ports, same data dir). */
  async restart(timeoutMs?: number): Promise<void> {
    if (this.running) await this.stop();
    await this.start(timeoutMs);
  }

  remove(): void {
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/**
 * Nodes stopped and removed after the enclosing describe, even when a test failed: SIGTERM
 * (so that a managed node stops its etcd member too), SIGKILL after 10 s.
 */
export function useNodes(): { node(spec: NodeSpec): ClusterNode; start(spec: NodeSpec): Promise<ClusterNode>; all: ClusterNode[] } {
  const all: ClusterNode[] = [];
  after(async () => {
    await Promise.all(all.map((n) => n.stop(10_000)));
    for (const n of all) n.remove();
  });
  return {
    all,
    node(spec) {
      const n = new ClusterNode(spec);
      all.push(n);
      return n;
    },
    async start(spec) {
      const n = new ClusterNode(spec);
      all.push(n);
      return n.start();
    },
  };
}

/** Polls `cond` every 50 ms until it holds (then resolves) or `timeoutMs` passes (then throws naming `what`). */
export async function eventually(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The nodes (names) `on` routes `topic` to (GET /api/v1/routes). */
export async function routesOf(on: ClusterNode, topic: string): Promise<string[]> {
  return ((await on.get(`/api/v1/routes?topic=${encodeURIComponent(topic)}`)).body as { nodes: string[] }).nodes;
}

/** Waits until `on` routes `topic` to `to`. */
export async function routed(on: ClusterNode, topic: string, to: ClusterNode, timeoutMs = 10_000): Promise<void> {
  await eventually(async () => (await routesOf(on, topic)).includes(to.name), `${on.name} routing ${topic} to ${to.name}`, timeoutMs);
}

/** The core a replicant streams from (/status), null while it has none or does not answer. */
export async function coreOf(n: ClusterNode): Promise<string | null> {
  try {
    return ((await n.status())['cluster'] as { core?: string | null }).core ?? null;
  } catch {
    return null;
  }
}

/** A subscriber on `to`, a QoS 1 message from `from`: it arrives. */
export async function passes(from: ClusterNode, to: ClusterNode, clients: Clients, label: string): Promise<void> {
  const topic = `pass/${process.pid}/${label}`;
  const sub = await clients.mqtt(to.url, { protocolVersion: 5, clientId: uid('ms') });
  const got = inbox(sub);
  await sub.subscribeAsync(topic, { qos: 1 });
  await routed(from, topic, to);
  const pub = await clients.mqtt(from.url, { protocolVersion: 5, clientId: uid('mp') });
  await pub.publishAsync(topic, label, { qos: 1 });
  await eventually(() => got.length === 1, `${label}: the message from ${from.name} on ${to.name}`);
  await sub.endAsync();
  await pub.endAsync();
}
