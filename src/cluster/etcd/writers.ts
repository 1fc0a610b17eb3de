// What a core writes to etcd, each writer one transaction at a time in order, retried with
// backoff while etcd does not answer (the writes queue meanwhile: docs/cluster.md, "When
// etcd is lost"):
//
//  - RouteLog: one node incarnation's route changes, as numbered log entries on the
//    node's lease; compacted into a base now and then so that a reader replays little.
//  - KvWriter: puts and deletes of one prefix (retained messages, config, auth), batched
//    into transactions of at most 100 operations and TXN_BYTES; the last write of a key in a
//    batch wins. A single put too large for one etcd request is refused (counted, logged),
//    never retried: it would hold back every later write of the prefix.
//  - SessionRegistry: who owns each client id; a claim is a transaction that compares the
//    key's revision with the one last seen, so two nodes never both own a session.
import type { Etcd3 } from 'etcd3';
import type { Logger } from '../../log/logger.js';
import { encodeOps } from '../kv-codec.js';
import { incPrefix, routeBaseKey, routeLogKey, type SessionOwner } from '../keys.js';
import type { KvOp } from '../shard.js';
import { isUnavailable, num } from './client.js';
import { MAX_PUT_BYTES, OP_OVERHEAD } from './limits.js';

export { ETCD_REQUEST_BYTES, MAX_PUT_BYTES } from './limits.js';

/** etcd's default limit is 128 operations per transaction. */
const TXN_OPS = 100;
/** Bytes of one base chunk (etcd's request limit is 1.5 MiB). */
const BASE_CHUNK_BYTES = 512 * 1024;
/** A KvWriter transaction holds puts of at most this many bytes (keys and values), unless one put alone is larger. */
export const TXN_BYTES = 512 * 1024;

export interface WriterHealth {
  /** A write failed because etcd did not answer (cleared by the next success). */
  onUnavailable(e: unknown): void;
  onAvailable(): void;
}

async function retrying<T>(
  what: string, log: Logger, health: WriterHealth, stopped: () => boolean, f: () => Promise<T>,
  /** Errors not to retry (thrown to the caller). */
  final: (e: unknown) => boolean = () => false,
): Promise<T> {
  let delay = 50;
  for (;;) {
    try {
      const r = await f();
      health.onAvailable();
      return r;
    } catch (e) {
      if (stopped() || final(e)) throw e;
      if (!isUnavailable(e)) log.error('cluster.etcd_write_failed', { what, error: (e as Error).message, detail: 'retrying' });
      else health.onUnavailable(e);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 2_000);
    }
  }
}

// ---------------------------------------------------------------------------------- routes

/** A route log is compacted once it holds this many entries since its base (or routes / 2048, if more). */
export const COMPACT_MIN_ENTRIES = 256;

export class RouteLog {
  private chain: Promise<unknown> = Promise.resolve();
  private stopped = false;
  /** Log entries written since the last base. */
  entriesSinceBase = 0;
  /** A compaction is on its way (or waiting for the watch to catch up with its entry). */
  compacting = false;
  private baseSeq = 0;

  constructor(
    private readonly client: Etcd3,
    private readonly cluster: string,
    readonly node: string,
    readonly inc: string,
    private lease: string,
    private readonly log: Logger,
    private readonly health: WriterHealth,
  ) {}

  setLease(lease: string): void {
    this.lease = lease;
  }

  /** Writes entry `seq` (ops on route keys); resolves with its revision once committed. */
  append(seq: number, ops: readonly KvOp[] | Buffer): Promise<number> {
    const value = Buffer.isBuffer(ops) ? ops : encodeOps(ops);
    const key = routeLogKey(this.cluster, this.node, this.inc, seq);
    const run = this.chain.then(() =>
      retrying('route log', this.log, this.health, () => this.stopped, async () => {
        const r = await this.client.kv.put({ key: Buffer.from(key), value, lease: this.lease });
        this.entriesSinceBase++;
        return num(r.header.revision);
      }));
    this.chain = run.catch(() => undefined);
    return run;
  }

  /**
   * Writes every route of the incarnation as the base after entry `seq`, then deletes the
   * entries and bases it replaces. Readers use a base only once its `end` key exists.
   */
  compact(seq: number, routes: Iterable<string>, valueOf?: (route: string) => Buffer): Promise<void> {
    const run = this.chain.then(async () => {
      const chunks: Buffer[] = [];
      let cur: KvOp[] = [];
      let bytes = 0;
      const empty = Buffer.alloc(0);
      for (const r of routes) {
        const v = valueOf?.(r) ?? empty;
        cur.push({ k: r, v });
        bytes += r.length + v.length + 8;
        if (bytes >= BASE_CHUNK_BYTES) {
          chunks.push(encodeOps(cur));
          cur = [];
          bytes = 0;
        }
      }
      if (cur.length > 0 || chunks.length === 0) chunks.push(encodeOps(cur));
      const puts = chunks.map((v, i) => ({ key: routeBaseKey(this.cluster, this.node, this.inc, seq, i), v }));
      puts.push({ key: routeBaseKey(this.cluster, this.node, this.inc, seq, 'end'), v: empty });
      for (const p of puts) {
        await retrying('route base', this.log, this.health, () => this.stopped, () =>
          this.client.kv.put({ key: Buffer.from(p.key), value: p.v, lease: this.lease }));
      }
      // Older entries and bases: everything under l/ up to seq, and b/ before seq.
      const pre = incPrefix(this.cluster, this.node, this.inc);
      await retrying('route compaction', this.log, this.health, () => this.stopped, () => this.client.kv.deleteRange({
        key: Buffer.from(pre + 'l/'), range_end: Buffer.from(routeLogKey(this.cluster, this.node, this.inc, seq + 1)),
      }));
      // Always: a replicant's log is written by whichever core serves it, and the RouteLog of
      // a core it moved to does not know the bases the previous one wrote.
      await retrying('route compaction', this.log, this.health, () => this.stopped, () => this.client.kv.deleteRange({
        key: Buffer.from(pre + 'b/'), range_end: Buffer.from(routeBaseKey(this.cluster, this.node, this.inc, seq, 0)),
      }));
      this.baseSeq = seq;
      this.entriesSinceBase = 0;
      this.log.debug('cluster.routes_compacted', { node: this.node, seq, chunks: chunks.length });
    });
    this.chain = run.catch(() => undefined);
    return run;
  }

  stop(): void {
    this.stopped = true;
  }
}

// ------------------------------------------------------------------------------ key-values

interface Pending {
  v: Buffer | null;
  lease: string | undefined;
  done: ((rev: number) => void)[];
}

export interface KvWriterLimits {
  /** Bytes of puts per transaction (default TXN_BYTES). */
  txnBytes?: number;
  /** The largest put (default MAX_PUT_BYTES); a larger one is refused. */
  maxPutBytes?: number;
}

/** etcd refused a request as too large (its --max-request-bytes is below our limits). */
const isTooLarge = (e: unknown): boolean => /request is too large|message larger than max/i.test((e as Error | undefined)?.message ?? '');

export class KvWriter {
  private pending = new Map<string, Pending>();
  private running = false;
  private stopped = false;
  private timer: NodeJS.Timeout | null = null;
  private readonly txnBytes: number;
  private readonly maxPutBytes: number;
  /** Puts refused as too large for etcd (each resolved with revision 0). */
  refused = 0;

  constructor(
    private readonly client: Etcd3,
    private readonly prefix: string,
    private readonly batchMs: number,
    private readonly log: Logger,
    private readonly health: WriterHealth,
    /** What the keys are, in logs ("topic" for retained messages). */
    private readonly keyName = 'key',
    limits: KvWriterLimits = {},
  ) {
    this.txnBytes = limits.txnBytes ?? TXN_BYTES;
    this.maxPutBytes = limits.maxPutBytes ?? MAX_PUT_BYTES;
  }

  /** Bytes `key` = `v` adds to a transaction. */
  private opBytes(key: string, v: Buffer | null): number {
    return Buffer.byteLength(this.prefix) + Buffer.byteLength(key) + (v?.length ?? 0) + OP_OVERHEAD;
  }

  private refuse(key: string, bytes: number, p: Pending): void {
    this.refused++;
    this.log.warn('cluster.write_too_large', {
      prefix: this.prefix, [this.keyName]: key, bytes, limit: this.maxPutBytes, refused: this.refused,
      detail: 'dropped: larger than one etcd request may be',
    });
    for (const f of p.done) f(0);
  }

  /**
   * Sets (or with null deletes) prefix + key; resolves with the revision that holds it, or
   * with 0 when the put was refused as too large for etcd (nothing written).
   */
  set(key: string, v: Buffer | null, lease?: string): Promise<number> {
    return new Promise((resolve) => {
      if (v !== null && this.opBytes(key, v) > this.maxPutBytes) {
        // Refused at once; an earlier queued write of the key stays queued (it is older).
        this.refuse(key, this.opBytes(key, v), { v, lease, done: [resolve] });
        return;
      }
      const p = this.pending.get(key);
      if (p) {
        p.v = v;
        p.lease = lease;
        p.done.push(resolve);
      } else this.pending.set(key, { v, lease, done: [resolve] });
      this.kick();
    });
  }

  get queued(): number {
    return this.pending.size;
  }

  private kick(): void {
    if (this.running || this.timer !== null) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.run();
    }, this.batchMs);
  }

  private async run(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.pending.size > 0 && !this.stopped) {
        // In queue order, up to TXN_OPS operations and txnBytes (at least one operation).
        const batch: [string, Pending][] = [];
        let bytes = 0;
        for (const e of this.pending) {
          const b = this.opBytes(e[0], e[1].v);
          if (batch.length > 0 && bytes + b > this.txnBytes) break;
          batch.push(e);
          bytes += b;
          if (batch.length >= TXN_OPS) break;
        }
        for (const [k] of batch) this.pending.delete(k);
        await this.write(batch);
      }
    } finally {
      this.running = false;
      if (this.pending.size > 0 && !this.stopped) this.kick();
    }
  }

  /**
   * One transaction; retried while etcd does not answer. When etcd says the request is too
   * large (it runs with a lower --max-request-bytes), the batch goes again in halves, and a
   * single put it refuses is dropped as too large.
   */
  private async write(batch: [string, Pending][]): Promise<void> {
    let rev: number;
    try {
      rev = await retrying(`writes under ${this.prefix}`, this.log, this.health, () => this.stopped, async () => {
        try {
          const r = await this.client.kv.txn({
            compare: [],
            success: batch.map(([k, p]) => p.v === null
              ? { request_delete_range: { key: Buffer.from(this.prefix + k) } }
              : { request_put: { key: Buffer.from(this.prefix + k), value: p.v, ...(p.lease ? { lease: p.lease } : {}) } }),
            failure: [],
          });
          return num(r.header.revision);
        } catch (e) {
          if (isTooLarge(e)) throw new TooLarge((e as Error).message);
          throw e;
        }
      }, (e) => e instanceof TooLarge);
    } catch (e) {
      if (!(e instanceof TooLarge)) throw e;
      if (batch.length > 1) {
        const half = Math.ceil(batch.length / 2);
        await this.write(batch.slice(0, half));
        await this.write(batch.slice(half));
        return;
      }
      const [k, p] = batch[0]!;
      this.refuse(k, this.opBytes(k, p.v), p);
      return;
    }
    for (const [, p] of batch) for (const f of p.done) f(rev);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }
}

/** etcd's "request is too large", not to be retried as it is. */
class TooLarge extends Error {}

// -------------------------------------------------------------------------------- sessions

export interface ClaimResult {
  /** The revision of the claim: the session's epoch (0: not claimed, `prev` owns it). */
  epoch: number;
  /** Who owned it before (null: nobody). */
  prev: SessionOwner | null;
}

interface ClaimReq {
  id: string;
  owner: SessionOwner;
  lease: string | undefined;
  /** Only if nobody else owns it (absent, or already this node's): a re-claim after a lost lease. */
  keep: boolean;
  resolve: (r: ClaimResult) => void;
}

interface ReleaseReq {
  id: string;
  epoch: number;
  resolve: (released: boolean) => void;
}

/**
 * Claims go in transactions of up to 100: "if every key's mod revision is what we last saw,
 * put them all". When one of them changed meanwhile, the answer carries the current values,
 * the view is updated and the batch tried again. A client id waits while an earlier claim
 * of it is in flight, so claims of one id are ordered.
 */
export class SessionRegistry {
  /**
   * What our own transactions saw that the sessions shard may not show yet: client id →
   * [mod revision (0 = absent), owner, as of revision]. An entry goes once the shard has
   * applied a change of the key at or after "as of" (observe).
   */
  private readonly seen = new Map<string, [number, SessionOwner | null, number]>();
  private queue: (ClaimReq | ReleaseReq)[] = [];
  private readonly busy = new Set<string>();
  private inFlight = 0;
  private stopped = false;
  /** Transactions sent, and how many had to be retried (for stats). */
  txns = 0;
  conflicts = 0;

  constructor(
    private readonly client: Etcd3,
    private readonly prefix: string,
    private readonly log: Logger,
    private readonly health: WriterHealth,
    /** The sessions shard's view of a client id: [mod revision, owner], or null when absent. */
    private readonly shardView: (id: string) => [number, SessionOwner] | null,
    private readonly maxInFlight = 4,
  ) {}

  /** The sessions shard applied a change of `id` at `rev`: our own notes up to there are stale. */
  observe(id: string, rev: number): void {
    const cur = this.seen.get(id);
    if (cur && rev >= cur[2]) this.seen.delete(id);
  }

  private view(id: string): [number, SessionOwner | null] {
    const s = this.seen.get(id);
    if (s) return [s[0], s[1]];
    return this.shardView(id) ?? [0, null];
  }

  claim(id: string, owner: SessionOwner, lease: string | undefined, keep = false): Promise<ClaimResult> {
    return new Promise((resolve) => {
      this.queue.push({ id, owner, lease, keep, resolve });
      this.pump();
    });
  }

  /** Deletes the key if it is still at `epoch` (nobody claimed it since). */
  release(id: string, epoch: number): Promise<boolean> {
    return new Promise((resolve) => {
      this.queue.push({ id, epoch, resolve });
      this.pump();
    });
  }

  get queued(): number {
    return this.queue.length;
  }

  private pump(): void {
    while (this.inFlight < this.maxInFlight && this.queue.length > 0 && !this.stopped) {
      const batch: (ClaimReq | ReleaseReq)[] = [];
      const rest: (ClaimReq | ReleaseReq)[] = [];
      const inBatch = new Set<string>();
      for (const r of this.queue) {
        if (batch.length < TXN_OPS && !this.busy.has(r.id) && !inBatch.has(r.id)) {
          batch.push(r);
          inBatch.add(r.id);
        } else rest.push(r);
      }
      if (batch.length === 0) return;
      this.queue = rest;
      for (const id of inBatch) this.busy.add(id);
      this.inFlight++;
      void this.run(batch).finally(() => {
        this.inFlight--;
        for (const id of inBatch) this.busy.delete(id);
        this.pump();
      });
    }
  }

  private async run(batch: (ClaimReq | ReleaseReq)[]): Promise<void> {
    let todo = batch;
    while (todo.length > 0 && !this.stopped) {
      // A keeping claim of a key another node owns now is answered without a write.
      todo = todo.filter((r) => {
        if (!('owner' in r) || !r.keep) return true;
        const cur = this.view(r.id)[1];
        if (cur === null || cur.node === r.owner.node) return true;
        r.resolve({ epoch: 0, prev: cur });
        return false;
      });
      if (todo.length === 0) return;
      // What each key holds as far as we know, taken before the transaction: our own write
      // may reach the shard (through the watch) before the transaction's answer does.
      const views = todo.map((r) => this.view(r.id));
      const compare = todo.map((r, i) => {
        const want = 'owner' in r ? views[i]![0] : r.epoch;
        return { key: Buffer.from(this.prefix + r.id), target: 'Mod' as const, result: 'Equal' as const, mod_revision: want };
      });
      const success = todo.map((r) => 'owner' in r
        ? { request_put: { key: Buffer.from(this.prefix + r.id), value: Buffer.from(JSON.stringify(r.owner)), ...(r.lease ? { lease: r.lease } : {}) } }
        : { request_delete_range: { key: Buffer.from(this.prefix + r.id) } });
      const failure = todo.map((r) => ({ request_range: { key: Buffer.from(this.prefix + r.id) } }));
      this.txns++;
      const res = await retrying('session registry', this.log, this.health, () => this.stopped, () =>
        this.client.kv.txn({ compare, success, failure }));
      const rev = num(res.header.revision);
      if (res.succeeded) {
        for (const [i, r] of todo.entries()) {
          if ('owner' in r) {
            const prev = views[i]![1];
            // Noted only until the shard shows it (it may already).
            if (this.shardView(r.id)?.[0] !== rev) this.seen.set(r.id, [rev, r.owner, rev]);
            else this.seen.delete(r.id);
            r.resolve({ epoch: rev, prev });
          } else {
            if (this.shardView(r.id) !== null) this.seen.set(r.id, [0, null, rev]);
            else this.seen.delete(r.id);
            r.resolve(true);
          }
        }
        return;
      }
      // Someone changed a key: learn the current values and try again; a release whose
      // key moved on is done (nothing of ours to delete).
      this.conflicts++;
      const next: (ClaimReq | ReleaseReq)[] = [];
      todo.forEach((r, i) => {
        const kv = res.responses[i]?.response_range?.kvs[0];
        const mod = kv ? num(kv.mod_revision) : 0;
        let owner: SessionOwner | null = null;
        if (kv) {
          try {
            owner = JSON.parse(kv.value.toString('utf8')) as SessionOwner;
          } catch {
            owner = null;
          }
        }
        if ((this.shardView(r.id)?.[0] ?? 0) !== mod) this.seen.set(r.id, [mod, owner, rev]);
        else this.seen.delete(r.id);
        if ('owner' in r) next.push(r);
        else if (mod === r.epoch) next.push(r);
        else r.resolve(false);
      });
      todo = next;
    }
  }

  stop(): void {
    this.stopped = true;
  }
}
