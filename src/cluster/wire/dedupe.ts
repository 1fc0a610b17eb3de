// The highest sequence number delivered per forward sender, shared by a node's worker threads
// (a sender that reconnects may land on another worker of the receiving node, which must
// still recognise the resent messages). Open addressing over a SharedArrayBuffer:
//   entry = [hash hi (u32), hash lo (u32), seq (i64)] = 16 bytes
// A key is identified by its 64-bit hash (two independent 32-bit FNV-style hashes): with
// E live keys, two of them collide with probability about E² / 2^65, negligible for the few
// thousand (peer node × worker × incarnation) keys a node sees. The seq only grows
// (compare-and-swap), so two workers recording the same sender cannot lower it.

const ENTRY = 16;
const PROBES = 64;

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

export class DedupeTable {
  private readonly u32: Int32Array;
  private readonly i64: BigInt64Array;
  private readonly entries: number;

  static bytes(entries = 4096): number {
    return entries * ENTRY;
  }

  constructor(sab: SharedArrayBuffer) {
    this.u32 = new Int32Array(sab);
    this.i64 = new BigInt64Array(sab);
    this.entries = Math.floor(sab.byteLength / ENTRY);
  }

  private find(key: string, create: boolean): number {
    const a = h1(key) | 0;
    const b = h2(key) | 0;
    for (let i = 0; i < PROBES; i++) {
      const e = ((a >>> 0) + i) % this.entries;
      const w = e * 4;
      const cur = Atomics.load(this.u32, w);
      if (cur === a && Atomics.load(this.u32, w + 1) === b) return e;
      if (cur === 0) {
        if (!create) return -1;
        // Claim the entry: the first word decides between two threads.
        const prev = Atomics.compareExchange(this.u32, w, 0, a);
        if (prev === 0) {
          Atomics.store(this.u32, w + 1, b);
          return e;
        }
        if (prev === a && Atomics.load(this.u32, w + 1) === b) return e;
      }
    }
    return -1;
  }

  /** Highest seq recorded for `key` (0 when none). */
  get(key: string): number {
    const e = this.find(key, false);
    return e < 0 ? 0 : Number(Atomics.load(this.i64, e * 2 + 1));
  }

  /** Records `seq` for `key` unless a higher one is there; false when the table is full. */
  set(key: string, seq: number): boolean {
    const e = this.find(key, true);
    if (e < 0) return false;
    const s = BigInt(seq);
    for (;;) {
      const cur = Atomics.load(this.i64, e * 2 + 1);
      if (cur >= s) return true;
      if (Atomics.compareExchange(this.i64, e * 2 + 1, cur, s) === cur) return true;
    }
  }
}
