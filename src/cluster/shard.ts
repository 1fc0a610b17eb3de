// A replicated shard (RLOG, docs/cluster.md): an ordered log of key-value changes whose
// clock is etcd's revision, and the state those changes build. A core builds it from etcd
// (a range read at revision R, then a watch from R + 1); a replicant from a core (a
// snapshot at R, then the changes after R). Both then apply the same changes in the same
// order, so every node ends with the same state at the same revision.
//
// A shard keeps the recent changes (bounded by count and bytes) so that a replicant that
// reconnects, to this core or to another, resumes from its last revision instead of
// bootstrapping again; `changesSince(rev)` says whether the log still reaches back there.

/** The shards, in the order a replicant bootstraps them (membership first: it names the peers). */
export const SHARDS = ['nodes', 'routes', 'sessions', 'retained', 'config', 'auth'] as const;
export type ShardName = (typeof SHARDS)[number];

export function shardId(name: ShardName): number {
  return SHARDS.indexOf(name);
}

export function shardName(id: number): ShardName | undefined {
  return SHARDS[id];
}

/** One key set (value) or deleted (null). */
export interface KvOp {
  readonly k: string;
  readonly v: Buffer | null;
}

/** Every op of one etcd revision for one shard. */
export interface ShardChange {
  readonly rev: number;
  /** When the source saw it (ms since epoch): lag in seconds is measured against it. */
  readonly ts: number;
  readonly ops: readonly KvOp[];
  /** A part of a first bootstrap (ShardState.loadPart): only sets of keys that were absent. */
  readonly load?: true;
}

export type ShardListener = (change: ShardChange, before: ReadonlyMap<string, Buffer>) => void;

export interface ShardLogLimits {
  /** Changes kept for resumption (default 100,000). */
  maxChanges: number;
  /** Bytes of keys and values kept for resumption (default 64 MiB). */
  maxBytes: number;
}

const NOTHING_BEFORE: ReadonlyMap<string, Buffer> = new Map();

const DEFAULT_LIMITS: ShardLogLimits = { maxChanges: 100_000, maxBytes: 64 * 1024 * 1024 };

function changeBytes(c: ShardChange): number {
  let n = 16;
  for (const op of c.ops) n += op.k.length + (op.v?.length ?? 0) + 16;
  return n;
}

export class ShardState {
  readonly data = new Map<string, Buffer>();
  /** Revision of the last change applied (or of the snapshot), 0 before any. */
  rev = 0;
  /** ts of the last change applied. */
  ts = 0;
  /** Every change with rev > logFrom is in `log` (logFrom = the bootstrap revision at first). */
  private logFrom = 0;
  private readonly log: ShardChange[] = [];
  private logHead = 0;
  private logBytes = 0;
  private readonly listeners: ShardListener[] = [];
  /** Revision the source is known to have reached (for lag); >= rev. */
  sourceRev = 0;
  /** Since when (ms) the replica is behind its source; 0 while it is current. */
  private behindSince = 0;
  /** A bootstrap is in progress (replicant): changes are not applied until it ends. */
  bootstrapping = false;
  readonly limits: ShardLogLimits;

  constructor(readonly name: ShardName, limits: Partial<ShardLogLimits> = {}) {
    this.limits = { ...DEFAULT_LIMITS, ...limits };
  }

  /** Called after every applied change with the change and the values the keys had before it. */
  onChange(fn: ShardListener): void {
    this.listeners.push(fn);
  }

  /**
   * Replaces the whole state by a snapshot at `rev` (bootstrap). Listeners see it as one
   * change: sets for every key of the snapshot, deletes for every key it lacks.
   */
  reset(entries: Iterable<readonly [string, Buffer]>, rev: number, ts = Date.now()): void {
    const ops: KvOp[] = [];
    let before: Map<string, Buffer>;
    if (this.data.size === 0) {
      // First bootstrap (the usual case, and the big one): every entry is a set, nothing was before.
      before = new Map();
      for (const [k, v] of entries) this.addNew(k, v, ops);
    } else {
      const next = new Map<string, Buffer>();
      for (const [k, v] of entries) next.set(k, v);
      for (const k of this.data.keys()) if (!next.has(k)) ops.push({ k, v: null });
      for (const [k, v] of next) {
        const old = this.data.get(k);
        if (old === undefined || !old.equals(v)) ops.push({ k, v });
      }
      before = new Map<string, Buffer>();
      for (const op of ops) {
        const old = this.data.get(op.k);
        if (old !== undefined) before.set(op.k, old);
      }
      this.data.clear();
      for (const [k, v] of next) this.data.set(k, v);
    }
    this.loadedAt(rev, ts);
    if (ops.length > 0) for (const f of this.listeners) f({ rev, ts, ops }, before);
  }

  /**
   * A first bootstrap in pieces (the shard must be empty; a replicant applies each batch of
   * its snapshot as it arrives, so that decoding overlaps the transfer): the sets of one
   * batch, seen by listeners as a change with nothing before. `loadedAt` ends it.
   */
  loadPart(ops: readonly KvOp[]): void {
    const sets: KvOp[] = [];
    for (const op of ops) if (op.v !== null) this.addNew(op.k, op.v, sets);
    if (sets.length > 0) for (const f of this.listeners) f({ rev: this.rev, ts: Date.now(), ops: sets, load: true }, NOTHING_BEFORE);
  }

  /** Sets `k` (during a bootstrap) and records the set in `ops` when the key is new. */
  private addNew(k: string, v: Buffer, ops: KvOp[]): void {
    const n: number = this.data.size;
    this.data.set(k, v);
    if (this.data.size !== n) ops.push({ k, v });
  }

  /** The shard now stands at snapshot revision `rev` (the end of reset, or of a bootstrap by loadPart). */
  loadedAt(rev: number, ts = Date.now()): void {
    this.rev = rev;
    this.ts = ts;
    this.sourceRev = Math.max(this.sourceRev, rev);
    this.trackLag();
    this.logFrom = rev;
    this.log.length = 0;
    this.logHead = 0;
    this.logBytes = 0;
  }

  /** Applies one change (its rev must be above the current one; older ones are ignored). */
  apply(change: ShardChange): boolean {
    if (change.rev <= this.rev) return false;
    const before = new Map<string, Buffer>();
    for (const op of change.ops) {
      const old = this.data.get(op.k);
      if (old !== undefined && !before.has(op.k)) before.set(op.k, old);
      if (op.v === null) this.data.delete(op.k);
      else this.data.set(op.k, op.v);
    }
    this.rev = change.rev;
    this.ts = change.ts;
    if (this.sourceRev < change.rev) this.sourceRev = change.rev;
    this.trackLag();
    this.append(change);
    for (const f of this.listeners) f(change, before);
    return true;
  }

  /** The source reached `rev` (progress without a change for this shard). */
  progress(rev: number): void {
    if (rev > this.sourceRev) this.sourceRev = rev;
    this.trackLag();
  }

  /**
   * Everything of this shard up to `rev` has been applied (the source says no change of
   * this shard lies between the last one and `rev`): the replica is current up to there.
   */
  caughtUp(rev: number): void {
    if (rev > this.sourceRev) this.sourceRev = rev;
    if (rev > this.rev && !this.bootstrapping) this.rev = rev;
    this.trackLag();
  }

  private trackLag(): void {
    if (this.sourceRev > this.rev) {
      if (this.behindSince === 0) this.behindSince = Date.now();
    } else this.behindSince = 0;
  }

  private append(c: ShardChange): void {
    this.log.push(c);
    this.logBytes += changeBytes(c);
    while (this.log.length - this.logHead > this.limits.maxChanges || (this.logBytes > this.limits.maxBytes && this.log.length - this.logHead > 1)) {
      const old = this.log[this.logHead++]!;
      this.logBytes -= changeBytes(old);
      this.logFrom = old.rev;
    }
    // Compact the array now and then instead of shifting on every trim.
    if (this.logHead > 4096 && this.logHead * 2 > this.log.length) {
      this.log.splice(0, this.logHead);
      this.logHead = 0;
    }
  }

  /**
   * The changes after `rev`, oldest first, or null when the log no longer reaches back to
   * `rev` (the caller then sends a snapshot). `rev` >= this.rev gives [].
   */
  changesSince(rev: number): ShardChange[] | null {
    if (rev >= this.rev) return [];
    if (rev < this.logFrom) return null;
    const out: ShardChange[] = [];
    for (let i = this.logHead; i < this.log.length; i++) {
      const c = this.log[i]!;
      if (c.rev > rev) out.push(c);
    }
    return out;
  }

  /** Lag behind the source: revisions and milliseconds. */
  lag(now = Date.now()): { revisions: number; ms: number } {
    const revisions = Math.max(0, this.sourceRev - this.rev);
    return { revisions, ms: this.behindSince === 0 ? 0 : Math.max(0, now - this.behindSince) };
  }

  stats(): { name: ShardName; revision: number; keys: number; logChanges: number; logFrom: number } {
    return { name: this.name, revision: this.rev, keys: this.data.size, logChanges: this.log.length - this.logHead, logFrom: this.logFrom };
  }
}
