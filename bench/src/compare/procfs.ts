// Readers for /proc (Linux): a broker's CPU ticks and peak RSS, and the machine's
// description recorded with every comparison.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import * as os from 'node:os';

/** Clock ticks per second of /proc/<pid>/stat utime/stime (`getconf CLK_TCK`, usually 100). */
export function clockTicks(): number {
  try {
    const v = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 5000 }).trim());
    if (Number.isInteger(v) && v > 0) return v;
  } catch {
    // fall through
  }
  return 100;
}

interface StatLine {
  ppid: number;
  utime: number;
  stime: number;
}

/** Fields of /proc/<pid>/stat, or null when the process is gone. */
function readStat(pid: number): StatLine | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) is in parentheses and may hold spaces; count from the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] = state (field 3), rest[1] = ppid (4), rest[11] = utime (14), rest[12] = stime (15).
  const ppid = Number(rest[1]);
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return null;
  return { ppid, utime, stime };
}

/** `pid` and every process below it (so a broker that forks workers is counted whole). */
export function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  let entries: string[] = [];
  try {
    entries = readdirSync('/proc');
  } catch {
    return [pid];
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const st = readStat(Number(e));
    if (!st) continue;
    const list = children.get(st.ppid);
    if (list) list.push(Number(e));
    else children.set(st.ppid, [Number(e)]);
  }
  const out: number[] = [];
  const todo = [pid];
  while (todo.length > 0 && out.length < 10_000) {
    const p = todo.pop() as number;
    out.push(p);
    for (const c of children.get(p) ?? []) todo.push(c);
  }
  return out;
}

export interface CpuSample {
  /** utime + stime in clock ticks, summed over the process tree. */
  ticks: number;
  utime: number;
  stime: number;
  /** Monotonic wall time of the sample, ms. */
  at_ms: number;
  pids: number;
}

/** utime + stime of `pid` and its descendants, or null when `pid` is gone. */
export function sampleCpu(pid: number, tree = true): CpuSample | null {
  const at = performance.now();
  const root = readStat(pid);
  if (!root) return null;
  let utime = root.utime;
  let stime = root.stime;
  let pids = 1;
  if (tree) {
    for (const p of processTree(pid)) {
      if (p === pid) continue;
      const st = readStat(p);
      if (!st) continue;
      utime += st.utime;
      stime += st.stime;
      pids++;
    }
  }
  return { ticks: utime + stime, utime, stime, at_ms: at, pids };
}

/** A `kB` field of /proc/<pid>/status (e.g. VmHWM, VmRSS) in bytes, or null. */
export function statusBytes(pid: number, field: 'VmHWM' | 'VmRSS'): number | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return null;
  }
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  return m ? Number(m[1]) * 1024 : null;
}

/** Peak RSS (VmHWM) summed over the process tree of `pid`, bytes; null when gone. */
export function peakRss(pid: number): number | null {
  const root = statusBytes(pid, 'VmHWM');
  if (root === null) return null;
  let sum = root;
  for (const p of processTree(pid)) if (p !== pid) sum += statusBytes(p, 'VmHWM') ?? 0;
  return sum;
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  // A zombie still answers kill(0); look at its state.
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return text.slice(text.lastIndexOf(')') + 2, text.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

export interface MachineInfo {
  hostname: string;
  cores: number;
  cpu_model: string;
  memory_bytes: number;
  kernel: string;
  os: string;
  arch: string;
  node: string;
  clk_tck: number;
  open_files_limit: string;
  loadavg_at_start: number[];
}

function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch (e) {
    const out = (e as { stdout?: string }).stdout;
    return typeof out === 'string' ? out.trim() : '';
  }
}

export function machineInfo(): MachineInfo {
  let osName = `${os.type()} ${os.release()}`;
  try {
    const m = /^PRETTY_NAME="?([^"\n]*)"?/m.exec(readFileSync('/etc/os-release', 'utf8'));
    if (m?.[1]) osName = m[1];
  } catch {
    // keep uname
  }
  const cpus = os.cpus();
  return {
    hostname: os.hostname(),
    cores: os.availableParallelism?.() ?? cpus.length,
    cpu_model: cpus[0]?.model.trim() ?? 'unknown',
    memory_bytes: os.totalmem(),
    kernel: `${os.type()} ${os.release()}`,
    os: osName,
    arch: process.arch,
    node: process.version,
    clk_tck: clockTicks(),
    open_files_limit: sh('sh', ['-c', 'ulimit -n']),
    loadavg_at_start: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
}

export { sh };
