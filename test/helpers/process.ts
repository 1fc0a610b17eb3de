// Child processes with a bounded lifetime: command line tools the tests run
// (mosquitto clients, `fleetmq passwd`).
import { spawn, type ChildProcess } from 'node:child_process';

export interface Run { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }
export interface Proc { proc: ChildProcess; done: Promise<Run> }

const live = new Set<ChildProcess>();

/**
 * Spawns `cmd`, collecting its output; SIGKILLed after `timeoutMs` so that no wait is
 * unbounded (SIGKILL: mosquitto 2.0.11 clients can deadlock in their own SIGTERM/SIGALRM
 * handlers). `input` is written to its stdin, which is closed at once either way.
 */
export function spawnBounded(cmd: string, args: string[], opts: { timeoutMs?: number; input?: string } = {}): Proc {
  const proc = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], timeout: opts.timeoutMs ?? 8000, killSignal: 'SIGKILL' });
  live.add(proc);
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  proc.stdin!.on('error', () => undefined); // the tool may exit without reading its input
  proc.stdin!.end(opts.input ?? '');
  const done = new Promise<Run>((resolve, reject) => {
    proc.once('error', reject);
    proc.once('close', (code, signal) => {
      live.delete(proc);
      resolve({ code, signal, stdout, stderr });
    });
  });
  return { proc, done };
}

/** `spawnBounded` to completion. */
export function runBounded(cmd: string, args: string[], timeoutMs?: number): Promise<Run> {
  return spawnBounded(cmd, args, { timeoutMs }).done;
}

/** SIGKILLs every process started here that is still running (for an `after` hook). */
export function killRunning(): void {
  for (const p of live) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
}
