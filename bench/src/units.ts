// Units a controller drives: worker threads of this process (a piscina pool, one task per
// thread for the whole run) and child processes (multi-process runs).
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { addEncoded, newHist, type Histogram } from './hist.js';
import type { Options } from './options.js';
import { splitWorkers, type Slice } from './plan.js';
import { addCounters, zeroCounters, type Counters, type Down, type UnitResult, type Up } from './proto.js';
import type { WorkerTask } from './worker.js';

export interface Unit {
  readonly name: string;
  /** The unit runs publishers (for -L accounting). */
  readonly hasPubs: boolean;
  onMessage: (m: Up) => void;
  send(m: Down): void;
  /** Resolves with the unit's result, or null if it failed (reason in `failure`). */
  readonly done: Promise<UnitResult | null>;
  failure: string | null;
  kill(): void;
}

class WorkerUnit implements Unit {
  onMessage: (m: Up) => void = () => {};
  failure: string | null = null;
  readonly done: Promise<UnitResult | null>;

  constructor(
    readonly name: string,
    readonly hasPubs: boolean,
    private readonly port: MessagePort,
    result: Promise<UnitResult>,
  ) {
    port.on('message', (m: Up) => this.onMessage(m));
    this.done = result.then(
      (r) => r,
      (e: unknown) => {
        this.failure = `${name} failed: ${e instanceof Error ? e.message : String(e)}`;
        return null;
      },
    );
    void this.done.finally(() => port.close());
  }

  send(m: Down): void {
    this.port.postMessage(m);
  }

  kill(): void {
    this.port.close();
  }
}

/** The worker threads of one process, sharing receipt counters and the -L budget. */
export class LocalGroup {
  readonly units: Unit[] = [];
  /** Int32: [0] -L budget left; [1 + k] deliveries received from publisher slice.pubs.first + k. */
  readonly shared: Int32Array;
  private readonly pool: Piscina<WorkerTask, UnitResult>;

  constructor(o: Options, readonly slice: Slice, base: bigint, wBase: number, wTotal: number | null, limit: number, relay: boolean) {
    const parts = splitWorkers(o, slice);
    const sab = new SharedArrayBuffer(4 * (1 + slice.pubs.count));
    this.shared = new Int32Array(sab);
    this.shared[0] = limit;
    this.pool = new Piscina<WorkerTask, UnitResult>({
      filename: new URL('./worker.js', import.meta.url).href,
      minThreads: parts.length,
      maxThreads: parts.length,
      idleTimeout: 60_000,
      concurrentTasksPerWorker: 1,
      useAtomics: false,
    });
    parts.forEach((part, k) => {
      const { port1, port2 } = new MessageChannel();
      const task: WorkerTask = {
        port: port2, o, slice: part, wIndex: wBase + k, wTotal: wTotal ?? parts.length, base: String(base),
        procPubs: slice.pubs, sab, limited: limit >= 0, relay,
      };
      const result = this.pool.run(task, { transferList: [port2] as never }); // piscina derives TransferList from @types/node oddly
      this.units.push(new WorkerUnit(`worker ${wBase + k}`, part.pubs.count > 0, port1, result));
    });
  }

  /** Receipts from other processes for this process's publishers. */
  addReceipts(d: number[]): void {
    for (let j = 0; j + 1 < d.length; j += 2) {
      const k = d[j]! - this.slice.pubs.first;
      if (k >= 0 && k < this.slice.pubs.count) Atomics.add(this.shared, 1 + k, d[j + 1]!);
    }
  }

  destroy(): Promise<void> {
    return this.pool.destroy();
  }
}

const CLI = fileURLToPath(new URL('./cli.js', import.meta.url));

/** A child process running part of the clients (`cli.js ... --child JSON`). */
export class ChildUnit implements Unit {
  onMessage: (m: Up) => void = () => {};
  onStderr: (line: string) => void = () => {};
  failure: string | null = null;
  readonly done: Promise<UnitResult | null>;
  private readonly proc: ChildProcess;

  constructor(
    readonly name: string,
    readonly hasPubs: boolean,
    args: string[],
  ) {
    this.proc = fork(CLI, args, { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    let stdout = '';
    let errBuf = '';
    this.proc.stdout!.setEncoding('utf8');
    this.proc.stdout!.on('data', (d: string) => (stdout += d));
    this.proc.stderr!.setEncoding('utf8');
    this.proc.stderr!.on('data', (d: string) => {
      errBuf += d;
      let nl: number;
      while ((nl = errBuf.indexOf('\n')) >= 0) {
        const line = errBuf.slice(0, nl).trim();
        errBuf = errBuf.slice(nl + 1);
        if (line) this.onStderr(`${name}: ${line}`);
      }
    });
    this.proc.on('message', (m: Up) => this.onMessage(m));
    this.done = new Promise((resolve) => {
      this.proc.on('error', (e) => {
        this.failure = `${name}: ${e.message}`;
      });
      this.proc.on('close', (code, signal) => {
        const last = stdout.trim().split('\n').pop() ?? '';
        try {
          const r = JSON.parse(last) as UnitResult;
          if (r && typeof r === 'object' && r.c) {
            resolve(r);
            return;
          }
        } catch {
          // fall through
        }
        this.failure ??= `${name} exited (${signal ?? `code ${code}`}) without a result`;
        resolve(null);
      });
    });
  }

  send(m: Down): void {
    if (this.proc.connected) this.proc.send(m);
  }

  kill(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

export interface Merged {
  c: Counters;
  hist: Histogram;
  chist: Histogram;
  errors: Map<string, number>;
  cpu: { user: number; system: number };
}

/** Adds unit results; a unit without a result contributes its last counters (`fallback`). */
export function mergeResults(results: Array<UnitResult | null>, fallback: Array<Counters | undefined>): Merged {
  let c = zeroCounters();
  const hist = newHist();
  const chist = newHist();
  const errors = new Map<string, number>();
  const cpu = { user: 0, system: 0 };
  results.forEach((r, k) => {
    if (!r) {
      const f = fallback[k];
      if (f) c = addCounters(c, f);
      return;
    }
    c = addCounters(c, r.c);
    addEncoded(hist, r.hist);
    addEncoded(chist, r.chist);
    for (const [m, n] of r.errors) errors.set(m, (errors.get(m) ?? 0) + n);
    if (r.cpu) {
      cpu.user += r.cpu.user;
      cpu.system += r.cpu.system;
    }
  });
  return { c, hist, chist, errors, cpu };
}

/** Waits for `arrive` from every unit still alive. */
export class Barrier {
  private readonly waiting: Set<Unit>;
  private resolve!: () => void;
  readonly promise: Promise<void>;

  constructor(units: Unit[]) {
    this.waiting = new Set(units);
    this.promise = new Promise((r) => (this.resolve = r));
    if (this.waiting.size === 0) this.resolve();
  }

  arrive(u: Unit): void {
    this.waiting.delete(u);
    if (this.waiting.size === 0) this.resolve();
  }

  release(): void {
    this.resolve();
  }
}
