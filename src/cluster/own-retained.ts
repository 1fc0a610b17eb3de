// This node's own retained writes on their way to etcd (docs/cluster.md, "Retained messages").
// A retained PUBLISH is in every worker of its node at once. Until the write comes back, what
// the retained shard shows of that topic is older than it (the shard applies etcd's changes
// in revision order) and must not replace it in the workers: otherwise a clear and a set at
// once on one node show the topic cleared until the set comes back from etcd.
//
// Per topic, the newest own write: its seq (the origin in the value), whether it clears, and,
// once etcd answered, its revision. A change of the topic is then
//  - below that revision: older, skipped;
//  - at or above it: ours or newer, applied, and the write is done;
//  - while the revision is not known yet: our put (by its origin) is applied and ends it; a
//    delete while our write is a clear is applied (it shows what ours will); anything else is
//    skipped. The watch may outrun the transaction's answer, so a skipped change may have been
//    newer: when etcd answers and the shard already passed the write's revision, the shard's
//    value of the topic goes to the workers again.
// A write etcd never took (refused, failed) ends at once, and the shard's value goes back.
import type { RetainedOrigin } from './retained-codec.js';

interface OwnWrite {
  seq: number;
  clear: boolean;
  /** etcd's revision of the write, 0 until it answered. */
  rev: number;
  /** A change was skipped while rev was 0. */
  skipped: boolean;
}

export class OwnRetained {
  private readonly writes = new Map<string, OwnWrite>();
  /** Topics whose write has a revision the shard had not reached when etcd answered. */
  private readonly waiting = new Set<string>();

  constructor(private readonly self: string) {}

  get size(): number {
    return this.writes.size;
  }

  /** This node wrote `topic` (a clear when `clear`) with retained sequence number `seq`. */
  wrote(topic: string, seq: number, clear: boolean): void {
    this.writes.set(topic, { seq, clear, rev: 0, skipped: false });
    this.waiting.delete(topic);
  }

  /**
   * etcd answered the write `seq` of `topic` with revision `rev` (0: never written) while the
   * shard stands at `shardRev`. True when the shard's value of the topic must go to the
   * workers again.
   */
  written(topic: string, seq: number, rev: number, shardRev: number): boolean {
    const w = this.writes.get(topic);
    if (!w || w.seq !== seq) return false; // a newer write of the topic followed
    if (rev === 0 || shardRev >= rev) {
      this.end(topic);
      return rev === 0 || w.skipped;
    }
    w.rev = rev;
    w.skipped = false; // every change seen so far is below rev
    this.waiting.add(topic);
    return false;
  }

  /** A change of `topic` at `rev` (`origin`: of a put, null for a delete): whether to apply it. */
  change(topic: string, rev: number, origin: RetainedOrigin | null): boolean {
    const w = this.writes.get(topic);
    if (!w) return true;
    if (w.rev !== 0) {
      if (rev < w.rev) return false;
      this.end(topic);
      return true;
    }
    if (origin !== null && origin.node === this.self && origin.seq === w.seq) {
      this.end(topic);
      return true;
    }
    if (origin === null && w.clear) return true;
    w.skipped = true;
    return false;
  }

  /** The shard applied everything up to `rev`: writes at or below it are done. */
  reached(rev: number): void {
    for (const t of this.waiting) if (this.writes.get(t)!.rev <= rev) this.end(t);
  }

  private end(topic: string): void {
    this.writes.delete(topic);
    this.waiting.delete(topic);
  }
}
