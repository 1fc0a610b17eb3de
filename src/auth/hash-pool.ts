// Worker-thread pool for password verification, so scrypt (tens of ms, 16 MiB)
// never runs on the connection thread.
import { Piscina } from 'piscina';
import type { VerifyTask } from './hash-worker.js';

export interface HashPoolOptions {
  /** Maximum worker threads (auth.hash_threads); a positive integer. */
  threads: number;
  /** Workers kept alive while idle (default 0: start on demand). */
  minThreads?: 0 | 1;
  /** Idle worker lifetime in ms beyond minThreads (default 30 s). */
  idleTimeoutMs?: number;
}

export class HashPool {
  private readonly pool: Piscina<VerifyTask, boolean>;
  private destroyed: Promise<void> | null = null;

  constructor(opts: HashPoolOptions) {
    if (!Number.isInteger(opts.threads) || opts.threads < 1) {
      throw new RangeError(`auth.hash_threads must be a positive integer (got ${String(opts.threads)})`);
    }
    this.pool = new Piscina<VerifyTask, boolean>({
      filename: new URL('./hash-worker.js', import.meta.url).href,
      maxThreads: opts.threads,
      minThreads: opts.minThreads ?? 0,
      idleTimeout: opts.idleTimeoutMs ?? 30_000,
    });
  }

  /** Resolves true when the password matches; rejects if the pool is destroyed or a worker fails. */
  async verify(password: Uint8Array, encoded: string): Promise<boolean> {
    if (this.destroyed) throw new Error('hash pool destroyed');
    // Copy: a Buffer may be a view on a shared pool slab, which cloning would copy whole.
    const task: VerifyTask = { password: Uint8Array.from(password), encoded };
    return (await this.pool.run(task)) === true;
  }

  get threads(): number {
    return this.pool.threads.length;
  }

  /** Terminates the workers; pending verifications reject. Idempotent. */
  destroy(): Promise<void> {
    this.destroyed ??= this.pool.destroy();
    return this.destroyed;
  }
}
