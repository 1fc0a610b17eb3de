// The highest sequence number delivered per forward sender, shared by a node's worker threads
// (a sender that reconnects may land on another worker of the receiving node, which must
// still recognise the resent messages). Open addressing over a SharedArrayBuffer, i64 words:
//   header = [claims refused, entries reclaimed, 0, 0]                      = 32 bytes
//   entry  = [key: hash (48 bits) | last use (16 bits, s)] [tag (11 bits) | seq (53 bits)] [0]
//                                                                           = 24 bytes
// A key is identified by a 48-bit hash (FNV-style, two independent 32-bit halves): with E
// live keys, two of them collide with probability about E² / 2^49, negligible for the few
// thousand (peer node × worker × incarnation) keys a node sees. The tag is the hash's low 11
// bits: a seq word whose tag is not the key's is a previous owner's and reads as 0.
//
// Claims and reclamation (memory ordering): JS Atomics are sequentially consistent, and every
// change of an entry's owner is one compareExchange of its key word:
//  - a new key takes the first free entry of its probe window (0 → key | now); two workers
//    claiming one key at the same instant race on that one word, and the loser sees the
//    winner's key (no second entry for the key, no lost seq);
//  - entries never become free again, so a key's entry always lies before the first free
//    one of its window and a lookup may stop there;
//  - when the window is full, the entry used least recently, if unused for idleMs, is taken
//    over (old key | its last use → new key | now), and its seq word is reset to the new
//    key's tag and 0. The victim's key and seq word must have tags other than the new key's,
//    so neither the old seq nor a late write of the old owner can read as the new owner's.
//  - a writer commits by touching the key word (a compareExchange that sets the last use to
//    now, which changes a word idle for idleMs) after writing the seq: either the touch lands
//    first and the takeover's compareExchange fails, or the writer sees the new key and
//    records its seq again in an entry of its own (seqs only grow, so writing twice is safe).
// The seq only grows (compareExchange), so two workers recording one sender cannot lower it.

const HEADER = 4;
const ENTRY = 3;
const PROBES = 64;
const LU_BITS = 16n;
const LU_MASK = 0xffff;
const SEQ_BITS = 53n;
const SEQ_MASK = (1n << SEQ_BITS) - 1n;
const TAG_MASK = 0x7ffn;
/** An entry whose sender was not seen for this long may be taken over by a new sender. */
export const DEDUPE_IDLE_MS = 10 * 60_000;

function h1(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return (h >>> 0) | 1;
}

function h2(s: string): number {
  let h = 0x9747b28c;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x5bd1e995) ^ (h >>> 13);
  return h >>> 0;
}

interface Key {
  /** The 48-bit hash, shifted into the key word's high bits (never 0). */
  hash: bigint;
  tag: bigint;
  start: number;
}

const hashOf = (word: bigint): bigint => BigInt.asUintN(64, word) >> LU_BITS;
const tagOf = (word: bigint): bigint => BigInt.asUintN(64, word) >> SEQ_BITS;
const seqWord = (tag: bigint, seq: bigint): bigint => BigInt.asIntN(64, (tag << SEQ_BITS) | seq);

export interface DedupeOptions {
  idleMs?: number;
  now?: () => number;
}

export interface DedupeStats {
  entries: number;
  used: number;
  /** Keys that found no entry (their window full of senders seen within idleMs). */
  refused: number;
  /** Entries taken over from a sender not seen for idleMs. */
  reclaimed: number;
}

export class DedupeTable {
  private readonly i64: BigInt64Array;
  private readonly entries: number;
  private readonly idleUnits: number;
  private readonly now: () => number;

  static bytes(entries = 4096): number {
    return (HEADER + entries * ENTRY) * 8;
  }

  constructor(sab: SharedArrayBuffer, o: DedupeOptions = {}) {
    this.i64 = new BigInt64Array(sab, 0, Math.floor(sab.byteLength / 8));
    this.entries = Math.max(0, Math.floor((this.i64.length - HEADER) / ENTRY));
    // At most 2^16 - 1 s: ages are taken modulo 2^16 s (an entry idle for 18 h looks fresh
    // again for idleMs, which only delays its reclamation).
    this.idleUnits = Math.min(LU_MASK, Math.max(1, Math.ceil((o.idleMs ?? DEDUPE_IDLE_MS) / 1000)));
    this.now = o.now ?? Date.now;
  }

  private keyOf(key: string): Key {
    const a = h1(key) >>> 0;
    const b = h2(key);
    const hash = (BigInt(a) << 16n) | BigInt(b >>> 16);
    return { hash, tag: hash & TAG_MASK, start: a % Math.max(1, this.entries) };
  }

  private unit(): number {
    return Math.floor(this.now() / 1000) & LU_MASK;
  }

  private keyWord(k: Key, unit: number): bigint {
    return BigInt.asIntN(64, (k.hash << LU_BITS) | BigInt(unit));
  }

  /** The entry of `k`, or when `create` a claimed (or taken over) one; -1 when none. */
  private find(k: Key, create: boolean): number {
    for (let pass = 0; pass < PROBES; pass++) {
      const now = this.unit();
      let victim = -1;
      let victimWord = 0n;
      let oldest = this.idleUnits - 1;
      for (let i = 0; i < PROBES && i < this.entries; i++) {
        const e = (k.start + i) % this.entries;
        const w = HEADER + e * ENTRY;
        let cur = Atomics.load(this.i64, w);
        if (cur === 0n) {
          if (!create) return -1;
          cur = Atomics.compareExchange(this.i64, w, 0n, this.keyWord(k, now));
          if (cur === 0n) return e;
        }
        if (hashOf(cur) === k.hash) return e;
        if (!create) continue;
        const age = (now - Number(BigInt.asUintN(64, cur) & 0xffffn)) & LU_MASK;
        if (age > oldest && (hashOf(cur) & TAG_MASK) !== k.tag && tagOf(Atomics.load(this.i64, w + 1)) !== k.tag) {
          victim = e;
          victimWord = cur;
          oldest = age;
        }
      }
      if (victim < 0) return -1;
      const w = HEADER + victim * ENTRY;
      const prev = Atomics.compareExchange(this.i64, w, victimWord, this.keyWord(k, now));
      if (prev === victimWord) {
        for (;;) {
          const cur = Atomics.load(this.i64, w + 1);
          if (tagOf(cur) === k.tag) break; // a writer of the new key was first
          if (Atomics.compareExchange(this.i64, w + 1, cur, seqWord(k.tag, 0n)) === cur) break;
        }
        Atomics.add(this.i64, 1, 1n);
        return victim;
      }
      if (hashOf(prev) === k.hash) return victim;
      // The victim was used or taken meanwhile: look again.
    }
    return -1;
  }

  /** The seq `k` recorded in entry `e` (0 when the seq word is a previous owner's). */
  private seqAt(e: number, k: Key): bigint {
    const cur = Atomics.load(this.i64, HEADER + e * ENTRY + 1);
    return tagOf(cur) === k.tag ? cur & SEQ_MASK : 0n;
  }

  /** Sets the entry's last use to now; false when the entry is no longer `k`'s. */
  private touch(e: number, k: Key): boolean {
    const w = HEADER + e * ENTRY;
    const now = this.unit();
    for (;;) {
      const cur = Atomics.load(this.i64, w);
      if (hashOf(cur) !== k.hash) return false;
      if (Number(BigInt.asUintN(64, cur) & 0xffffn) === now) return true;
      if (Atomics.compareExchange(this.i64, w, cur, this.keyWord(k, now)) === cur) return true;
    }
  }

  /** Highest seq recorded for `key` (0 when none). */
  get(key: string): number {
    const k = this.keyOf(key);
    for (let tries = 0; tries < PROBES; tries++) {
      const e = this.find(k, false);
      if (e < 0) return 0;
      const seq = this.seqAt(e, k);
      if (this.touch(e, k)) return Number(seq);
    }
    return 0;
  }

  /** Records `seq` for `key` unless a higher one is there; false when no entry could be claimed. */
  set(key: string, seq: number): boolean {
    const k = this.keyOf(key);
    const s = BigInt(seq) & SEQ_MASK;
    for (let tries = 0; tries < PROBES; tries++) {
      const e = this.find(k, true);
      if (e < 0) break;
      const w = HEADER + e * ENTRY;
      for (;;) {
        const cur = Atomics.load(this.i64, w + 1);
        if (tagOf(cur) === k.tag && (cur & SEQ_MASK) >= s) break;
        // A foreign tag under our key: a fresh or taken-over entry, ours to write.
        if (hashOf(Atomics.load(this.i64, w)) !== k.hash) break;
        if (Atomics.compareExchange(this.i64, w + 1, cur, seqWord(k.tag, s)) === cur) break;
      }
      if (this.touch(e, k)) return true;
      // Taken over while we wrote: record it again, in an entry of our own.
    }
    Atomics.add(this.i64, 0, 1n);
    return false;
  }

  stats(): DedupeStats {
    let used = 0;
    for (let e = 0; e < this.entries; e++) if (Atomics.load(this.i64, HEADER + e * ENTRY) !== 0n) used++;
    return { entries: this.entries, used, refused: Number(Atomics.load(this.i64, 0)), reclaimed: Number(Atomics.load(this.i64, 1)) };
  }
}
