// Every process the comparison starts is registered here and stopped at the end, on
// errors and on SIGINT / SIGTERM / SIGHUP. Children run in their own process group
// (detached), so that a generator's or broker's own helper processes stop with it.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

export interface Child {
  name: string;
  proc: ChildProcess;
  pid: number;
  /** Resolves once the process has exited (code, signal). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exit: { code: number | null; signal: NodeJS.Signals | null } | null;
}

const live = new Set<Child>();
let stopping = false;

/** True once a signal asked everything to stop: no new process may start. */
export function isStopping(): boolean {
  return stopping;
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

export function startChild(name: string, cmd: string, args: string[], opts: SpawnOptions = {}): Child {
  if (stopping) throw new Error('stopping: no new process is started');
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts, detached: true });
  if (proc.pid === undefined) {
    // spawn failed synchronously (ENOENT is reported via 'error'); make a dead child.
    const child: Child = {
      name, proc, pid: -1, exit: { code: 127, signal: null },
      exited: Promise.resolve({ code: 127, signal: null }),
    };
    proc.on('error', () => undefined);
    return child;
  }
  const child = { name, proc, pid: proc.pid, exit: null } as Child;
  child.exited = new Promise((resolve) => {
    proc.on('error', () => undefined);
    proc.on('exit', (code, signal) => {
      child.exit = { code, signal };
      live.delete(child);
      resolve(child.exit);
    });
  });
  live.add(child);
  return child;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the process has exited. */
export async function stopChild(child: Child, graceMs = 5000, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.pid < 0) return;
  if (child.exit) {
    killGroup(child.pid, 'SIGKILL'); // leftovers of its group, if any
    return;
  }
  killGroup(child.pid, signal);
  killGroup(child.pid, 'SIGCONT'); // a stopped (SIGSTOP) process acts on the signal only when continued
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([
    child.exited.then(() => false),
    new Promise<boolean>((r) => { timer = setTimeout(() => r(true), graceMs); }),
  ]);
  clearTimeout(timer);
  if (timedOut) {
    killGroup(child.pid, 'SIGKILL');
    await child.exited;
  } else {
    killGroup(child.pid, 'SIGKILL');
  }
}

export async function stopAll(graceMs = 3000): Promise<void> {
  await Promise.all([...live].map((c) => stopChild(c, graceMs)));
}

/** Synchronous last resort (process 'exit'): SIGKILL every group still registered. */
export function killAllNow(): void {
  for (const c of live) killGroup(c.pid, 'SIGKILL');
}

let installed = false;
/** On SIGINT / SIGTERM / SIGHUP: stop every child, run `onSignal`, exit 130 / 143. */
export function installSignalHandlers(onSignal: (sig: NodeJS.Signals) => Promise<void> | void): void {
  if (installed) return;
  installed = true;
  process.on('exit', killAllNow);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      if (stopping) {
        killAllNow();
        process.exit(sig === 'SIGINT' ? 130 : 143);
      }
      stopping = true;
      process.stderr.write(`\ncompare: ${sig} received, stopping every process started...\n`);
      void (async () => {
        try {
          await stopAll(2000);
          await onSignal(sig);
        } finally {
          killAllNow();
          process.exit(sig === 'SIGINT' ? 130 : 143);
        }
      })();
    });
  }
}

export function liveChildren(): Child[] {
  return [...live];
}
