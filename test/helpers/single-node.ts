// A single fleetmq node (no --role) as its own process, for tests that kill it (-9) and
// start it again on the same data dir and ports. Stopped by the test's `after`.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { freePort } from './broker.js';
import { CLI_MAIN, cleanEnv } from './cli.js';

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

export class SingleNode {
  proc: ChildProcess | null = null;
  readonly logs: string[] = [];
  mqttPort = 0;
  httpPort = 0;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> = Promise.resolve({ code: null, signal: null });

  constructor(readonly args: readonly string[], readonly dataDir = mkdtempSync(join(tmpdir(), 'fleetmq-single-')), readonly env: Record<string, string> = {}) {}

  spawn(): void {
    const args = [
      CLI_MAIN, 'start', '--bind', '127.0.0.1', '--mqtt-port', String(this.mqttPort), '--http-port', String(this.httpPort),
      '--ws-port', '0', '--mqtts-port', '0', '--wss-port', '0', '--data-dir', this.dataDir, '--log-level', 'info', ...this.args,
    ];
    const p = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv({ FLEETMQ_MQTT__SYS_INTERVAL_MS: '0', ...this.env }) });
    this.proc = p;
    live.add(p);
    let partial = '';
    const onData = (d: Buffer): void => {
      const lines = (partial + d.toString('utf8')).split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) if (l.trim() !== '') this.logs.push(l);
    };
    p.stdout!.on('data', onData);
    p.stderr!.on('data', onData);
    this.exited = new Promise((resolve) => p.once('exit', (code, signal) => {
      live.delete(p);
      resolve({ code, signal });
    }));
  }

  /** Starts (ports picked once) and waits until GET /status answers 200. */
  async start(timeoutMs = 20_000): Promise<this> {
    if (this.mqttPort === 0) {
      this.mqttPort = await freePort();
      this.httpPort = await freePort();
    }
    this.spawn();
    let exit: unknown = null;
    void this.exited.then((e) => (exit = e));
    const until = Date.now() + timeoutMs;
    while (Date.now() < until) {
      if (exit !== null) throw new Error(`node exited ${JSON.stringify(exit)}:\n${this.logs.slice(-20).join('\n')}`);
      try {
        const r = await fetch(`http://127.0.0.1:${this.httpPort}/status`, { signal: AbortSignal.timeout(1000) });
        if (r.status === 200) return this;
      } catch {
        /* not yet */
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`node not running after ${timeoutMs} ms:\n${this.logs.slice(-20).join('\n')}`);
  }

  async kill(): Promise<void> {
    this.proc?.kill('SIGKILL');
    await this.exited;
  }

  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    this.proc?.kill('SIGTERM');
    return this.exited;
  }

  lines(msg: string): Record<string, unknown>[] {
    return this.logs.filter((l) => l.includes(`"${msg}"`)).map((l) => JSON.parse(l) as Record<string, unknown>).filter((o) => o['msg'] === msg);
  }
}

/** Nodes made here are killed after the test file. */
export function useSingleNodes(): { make(args: readonly string[], dataDir?: string, env?: Record<string, string>): SingleNode } {
  const made: SingleNode[] = [];
  after(async () => {
    for (const n of made) if (n.proc && n.proc.exitCode === null && n.proc.signalCode === null) await n.kill();
  });
  return {
    make(args, dataDir, env) {
      const n = new SingleNode(args, dataDir, env);
      made.push(n);
      return n;
    },
  };
}
