// This node's routes as the cluster sees them (docs/cluster.md, "Route writes"): a route
// key (filter, or $share/<group>/<filter>) is in the cluster while any local worker holds
// it. Changes are gathered for `batchMs` and written as one numbered log entry (a core
// writes it to etcd itself, a replicant sends it to its core), one entry in flight at a
// time so that entries commit in order.
//
// It also tells each worker how far its route operations are in the cluster: a SUBACK
// waits until its route is committed (acknowledged by etcd through a core), so an op
// depends on the batch that carries its key's change, or on none when the node-level set
// did not change (another worker already holds the key) and no batch with the key is on its
// way. `committed(w)` is the highest op seq of worker w whose dependencies are all committed.
import type { KvOp } from './shard.js';
import { encodeOnline } from './group-online.js';

export type BatchWriter = (seq: number, ops: KvOp[]) => Promise<void>;

interface Waiting {
  seq: number;
  /** Flush round this op waits for (0: none). */
  batch: number;
}

const EMPTY = Buffer.alloc(0);
/** Ops per log entry at most (an entry stays well under etcd's 1.5 MiB request limit). */
export const MAX_BATCH_OPS = 4_096;

function isShared(key: string): boolean {
  return key.startsWith('$share/') || key.startsWith('$queue/');
}

export class NodeRoutes {
  /** Local references (one per worker holding the key). */
  private readonly refs = new Map<string, number>();
  /** What the log says (after every batch created so far). */
  readonly sent = new Set<string>();
  /** Shared-group keys: online members on this node (the key's value), and what the log says. */
  private readonly online = new Map<string, number>();
  private readonly sentOnline = new Map<string, number>();
  /** Keys whose node-level presence changed since the last batch. */
  private readonly dirty = new Set<string>();
  /** Flush round that last carried (or will carry) each key, while not yet committed. */
  private readonly lastBatch = new Map<string, number>();
  private readonly waiting: Waiting[][];
  private readonly committedOp: number[];
  /** Next log entry number. */
  private nextSeq: number;
  /**
   * Flush rounds: a round writes every key dirty when it starts, in one or more log
   * entries; ops wait for rounds. Rounds commit in order.
   */
  private nextRound = 1;
  private committedBatch = 0;
  private timer: NodeJS.Timeout | null = null;
  private writing = false;
  batchesWritten = 0;
  opsWritten = 0;

  constructor(
    workers: number,
    private writer: BatchWriter,
    private readonly batchMs: number,
    /** Worker w's ops up to seq are committed. */
    private readonly onCommitted: (w: number, seq: number) => void,
    /** After each log entry is committed (a core compacts its log from here). */
    private afterBatch?: (seq: number) => void,
    firstSeq = 1,
  ) {
    this.waiting = Array.from({ length: workers }, () => []);
    this.committedOp = new Array<number>(workers).fill(0);
    this.nextSeq = firstSeq;
  }

  get lastSeq(): number {
    return this.nextSeq - 1;
  }

  get size(): number {
    return this.refs.size;
  }

  /** Route changes not committed yet: waiting for a log entry, and carried by the entries being written. */
  get uncommitted(): number {
    return this.dirty.size + this.lastBatch.size;
  }

  /** Whether a log entry is being written now (one at a time). */
  get entryInFlight(): boolean {
    return this.writing;
  }

  /** Worker w's op `seq`: +1 / -1 on `key`, or 0 for an op that does not touch the cluster. */
  change(w: number, seq: number, key: string | null, d: 1 | -1 | 0): void {
    let batch = 0;
    if (key !== null && d !== 0) {
      const n = (this.refs.get(key) ?? 0) + d;
      if (n > 0) this.refs.set(key, n);
      else this.refs.delete(key);
      if ((d === 1 && n === 1) || (d === -1 && n === 0)) {
        this.dirty.add(key);
        this.kick();
      }
    }
    if (key !== null) {
      if (this.dirty.has(key)) batch = this.nextRound;
      else batch = this.lastBatch.get(key) ?? 0;
    }
    const q = this.waiting[w]!;
    if (batch <= this.committedBatch && q.length === 0) this.commitOp(w, seq);
    else q.push({ seq, batch });
  }

  /**
   * This node now has `n` online members of shared group `key`: the key's value changes
   * (other nodes weight their choice of node by it). Written with the next batch while the
   * key is held; an op waits for nothing on account of it.
   */
  setOnline(key: string, n: number): void {
    if ((this.online.get(key) ?? 0) === n) return;
    if (n > 0) this.online.set(key, n);
    else this.online.delete(key);
    if (this.refs.has(key) && (this.sentOnline.get(key) ?? 0) !== n) {
      this.dirty.add(key);
      this.kick();
    }
  }

  /** The value route key `key` gets: empty, or a shared key's online count. */
  private valueOf(key: string): Buffer {
    return isShared(key) ? encodeOnline(this.online.get(key) ?? 0) : EMPTY;
  }

  /** The value of `key` as the log says (for a base). */
  sentValueOf(key: string): Buffer {
    return isShared(key) ? encodeOnline(this.sentOnline.get(key) ?? 0) : EMPTY;
  }

  private commitOp(w: number, seq: number): void {
    this.committedOp[w] = seq;
    this.onCommitted(w, seq);
  }

  committed(w: number): number {
    return this.committedOp[w] ?? 0;
  }

  private kick(): void {
    if (this.timer !== null || this.writing) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.flush();
    }, this.batchMs);
  }

  /** Writes that failed and were tried again. */
  writeRetries = 0;

  /** Writes what changed as log entries, one at a time. */
  private async flush(): Promise<void> {
    if (this.writing) return;
    this.writing = true;
    try {
      while (this.dirty.size > 0) {
        const round = this.nextRound++;
        const ops: KvOp[] = [];
        for (const key of this.dirty) {
          const want = this.refs.has(key);
          const shared = isShared(key);
          const n = shared ? this.online.get(key) ?? 0 : 0;
          if (want !== this.sent.has(key) || (want && shared && n !== (this.sentOnline.get(key) ?? -1))) {
            ops.push({ k: key, v: want ? this.valueOf(key) : null });
          }
          if (want) this.sent.add(key);
          else this.sent.delete(key);
          if (want && shared) this.sentOnline.set(key, n);
          else this.sentOnline.delete(key);
        }
        this.dirty.clear();
        for (const op of ops) this.lastBatch.set(op.k, round);
        for (let i = 0; i < ops.length; i += MAX_BATCH_OPS) {
          const entry = ops.slice(i, i + MAX_BATCH_OPS);
          const seq = this.nextSeq++;
          // A refused or failed write is tried again (same seq, same ops) until it lands:
          // the routes of this batch are already counted as sent, so dropping it would
          // lose them, and a rejection here would escape through kick()'s `void`.
          for (let delay = 100; ; delay = Math.min(delay * 2, 2000)) {
            try {
              await this.writer(seq, entry);
              break;
            } catch {
              this.writeRetries++;
              await new Promise<void>((r) => setTimeout(r, delay).unref());
            }
          }
          this.batchesWritten++;
          this.opsWritten += entry.length;
          this.afterBatch?.(seq);
        }
        this.batchCommitted(round, ops);
      }
    } finally {
      this.writing = false;
    }
  }

  private batchCommitted(seq: number, ops: KvOp[]): void {
    this.committedBatch = seq;
    for (const op of ops) if (this.lastBatch.get(op.k) === seq) this.lastBatch.delete(op.k);
    for (let w = 0; w < this.waiting.length; w++) {
      const q = this.waiting[w]!;
      let last = -1;
      let i = 0;
      while (i < q.length && q[i]!.batch <= seq) last = q[i++]!.seq;
      if (i > 0) {
        q.splice(0, i);
        this.commitOp(w, last);
      }
    }
  }

  /**
   * Everything again from `firstSeq` under a new writer (a new incarnation after a lost
   * lease): every key held now goes out in fresh entries.
   */
  rewriteAll(writer: BatchWriter, firstSeq = 1): void {
    this.writer = writer;
    this.sent.clear();
    this.sentOnline.clear();
    this.nextSeq = firstSeq;
    for (const k of this.refs.keys()) this.dirty.add(k);
    this.kick();
  }

  /**
   * From now on nothing is written: every change counts as committed at once (a core that
   * stops: its lease revoke removes its routes from etcd in one call).
   */
  discard(): void {
    this.writer = async () => undefined;
    this.afterBatch = undefined;
  }

  /** A worker died: its ops will not be waited for. */
  dropWorker(w: number): void {
    this.waiting[w] = [];
  }

  keys(): IterableIterator<string> {
    return this.refs.keys();
  }
}
