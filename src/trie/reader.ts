// A reader of the shared route trie: matches topic names without locks, retries or messages.
// One per thread (it owns a reader slot in the heap header). See writer.ts for the scheme and
// docs/trie.md for the memory-ordering rules the loads below rely on.
import type { TrieBuffers } from './writer.js';
import {
  E_KEY, E_MASK, E_NEXT, E_ROUTE, H_GEN, H_HEAP_WORDS, H_LAYOUT, H_MAGIC, H_MAX_READERS,
  H_READERS_HI, H_ROOT, H_STRTAB, K_CAP, K_EXT, K_SLOTS, KIDS_EXT, LAYOUT_VERSION, MAGIC, N_HMASK, N_KIDS,
  N_MASK, N_PLUS, PTR_MASK, R_COUNTER, R_STATE, READER_BASE, READER_STRIDE, S_CHARS, S_TAG, SLOT_TAG, T_CAP, T_SLOTS,
  kidSlot,
} from './layout.js';

/** A shared-subscription group whose filter matched. */
export interface TrieGroupMatch {
  readonly group: string;
  /** The group's route id (0 until the owner sets one). */
  readonly route: number;
  /** Local workers holding members of the group. */
  readonly mask: number;
}

/** Result of a match. Shared by the cache: treat as immutable. */
export interface TrieMatch {
  /** Local workers (bit w = worker w) with a non-shared subscription matching the topic. */
  readonly mask: number;
  /** Route ids (non-zero) of matching non-shared filters, each once, in no particular order. */
  readonly routes: readonly number[];
  /** Matching shared groups, one entry per (group, filter). */
  readonly groups: readonly TrieGroupMatch[];
}

export interface TrieReaderOptions {
  /** Entries of the per-reader match cache (topic → result); 0 disables it. Default 4096. */
  cacheSize?: number;
}

export interface TrieReaderStats {
  slot: number;
  matches: number;
  cacheHits: number;
  /** Times the cache was emptied because the generation moved. */
  cacheInvalidations: number;
  /** Times the reader mapped a larger heap. */
  refreshes: number;
  /** Matches restarted because they met memory past the mapped size (after a refresh). */
  restarts: number;
}

const NO_ROUTES: readonly number[] = Object.freeze([]);
const NO_GROUPS: readonly TrieGroupMatch[] = Object.freeze([]);
/** Thrown inside a match when a pointer leads past the mapped heap; the match restarts. */
const STALE = new Error('trie heap grew');

export class TrieReader {
  readonly slot: number;
  private readonly sab: SharedArrayBuffer;
  private i32: Int32Array;
  private u8: Uint8Array;
  private u16: Uint16Array;
  private words: number;
  private readonly root: number;
  private readonly counter: number;
  private closed = false;

  private readonly cacheSize: number;
  private readonly cache = new Map<string, TrieMatch>();
  private cacheGen = -1;

  // Scratch of one match.
  private starts: Int32Array = new Int32Array(64);
  private ids: Int32Array = new Int32Array(64);
  private stack: Int32Array = new Int32Array(256);
  private topic = '';
  private tab = 0;
  private routes: number[] | null = null;
  private groups: TrieGroupMatch[] | null = null;

  private nMatches = 0;
  private nHits = 0;
  private nInval = 0;
  private nRefresh = 0;
  private nRestart = 0;

  constructor(buffers: TrieBuffers, opts: TrieReaderOptions = {}) {
    this.sab = buffers.heap;
    const hdr = new Int32Array(this.sab, 0, 8);
    if (Atomics.load(hdr, H_MAGIC) !== MAGIC || Atomics.load(hdr, H_LAYOUT) !== LAYOUT_VERSION) {
      throw new Error('not a trie heap of this layout version');
    }
    this.words = Atomics.load(hdr, H_HEAP_WORDS);
    if (this.words * 4 > this.sab.byteLength) throw new Error('trie heap arrived shorter than its header says (not growable here?)');
    this.i32 = new Int32Array(this.sab, 0, this.words);
    this.u8 = new Uint8Array(this.sab, 0, this.words * 4);
    this.u16 = new Uint16Array(this.sab, 0, this.words * 2);
    this.root = Atomics.load(this.i32, H_ROOT);
    this.cacheSize = opts.cacheSize ?? 4096;
    // Claim a slot: 0 → 1 on its state word, then raise the high-water mark.
    const max = Atomics.load(this.i32, H_MAX_READERS);
    let slot = -1;
    for (let i = 0; i < max; i++) {
      if (Atomics.compareExchange(this.i32, READER_BASE + i * READER_STRIDE + R_STATE, 0, 1) === 0) {
        slot = i;
        break;
      }
    }
    if (slot < 0) throw new Error(`all ${max} trie reader slots are taken`);
    this.slot = slot;
    this.counter = READER_BASE + slot * READER_STRIDE + R_COUNTER;
    for (;;) {
      const hi = Atomics.load(this.i32, H_READERS_HI);
      if (hi > slot || Atomics.compareExchange(this.i32, H_READERS_HI, hi, slot + 1) === hi) break;
    }
  }

  /** Workers and routes whose filters match `topic` (a valid topic name). */
  match(topic: string): TrieMatch {
    if (this.closed) throw new Error('trie reader closed');
    this.nMatches++;
    if (this.cacheSize > 0) {
      // The generation is read before the walk: an entry filled under generation g reflects
      // at least every change that came before g, and is dropped once g moves.
      const gen = Atomics.load(this.i32, H_GEN);
      if (gen !== this.cacheGen) {
        if (this.cache.size !== 0) {
          this.cache.clear();
          this.nInval++;
        }
        this.cacheGen = gen;
      }
      const hit = this.cache.get(topic);
      if (hit !== undefined) {
        this.nHits++;
        return hit;
      }
      const r = this.compute(topic);
      if (this.cache.size >= this.cacheSize) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(topic, r);
      return r;
    }
    return this.compute(topic);
  }

  stats(): TrieReaderStats {
    return {
      slot: this.slot,
      matches: this.nMatches,
      cacheHits: this.nHits,
      cacheInvalidations: this.nInval,
      refreshes: this.nRefresh,
      restarts: this.nRestart,
    };
  }

  /** Current generation (changes whenever a match result may have changed). */
  generation(): number {
    return Atomics.load(this.i32, H_GEN);
  }

  /** Gives the slot back. The reader must not be used afterwards. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.cache.clear();
    Atomics.store(this.i32, READER_BASE + this.slot * READER_STRIDE + R_STATE, 0);
  }

  private compute(topic: string): TrieMatch {
    const ctr = this.counter;
    // Enter: the counter becomes odd. Sequentially consistent, so the writer either sees it
    // odd when it closes a batch of retired blocks, or this walk starts after the unlinking
    // stores of that batch and cannot reach its blocks.
    Atomics.add(this.i32, ctr, 1);
    try {
      // No size check up front: a match that meets memory past the mapped views (the heap
      // grew) throws and restarts on fresh views, once per growth.
      for (;;) {
        try {
          return this.walk(topic);
        } catch (e) {
          // A block published after our last refresh lies past the mapped views: Atomics
          // throw RangeError, plain reads are checked and throw STALE. Map more, start over.
          if ((e !== STALE && !(e instanceof RangeError)) || !this.refresh()) throw e;
          this.nRestart++;
        }
      }
    } finally {
      Atomics.add(this.i32, ctr, 1); // leave: even again
    }
  }

  /** Maps the heap up to its published size; false when it had not grown. */
  private refresh(): boolean {
    const words = Atomics.load(this.i32, H_HEAP_WORDS);
    if (words <= this.words) return false;
    // The writer stores H_HEAP_WORDS after grow() returns, so the buffer is at least this long.
    this.words = words;
    this.i32 = new Int32Array(this.sab, 0, words);
    this.u8 = new Uint8Array(this.sab, 0, words * 4);
    this.u16 = new Uint16Array(this.sab, 0, words * 2);
    this.nRefresh++;
    return true;
  }

  private walk(topic: string): TrieMatch {
    // Level boundaries: level i is topic[starts[i], starts[i + 1] - 1).
    const len = topic.length;
    let n = 0;
    let starts = this.starts;
    starts[0] = 0;
    for (let i = 0; i < len; i++) {
      if (topic.charCodeAt(i) === 47 /* / */) {
        n++;
        if (n + 1 >= starts.length) starts = this.growScratch(n + 2);
        starts[n] = i + 1;
      }
    }
    n++;
    starts[n] = len + 1;
    if (this.stack.length < 2 * n + 4) this.stack = new Int32Array(4 * n + 8);
    this.ids.fill(-1, 0, n); // -1: not looked up yet; 0: not interned; else the string id
    this.topic = topic;
    this.tab = 0;
    let mask = 0;
    this.routes = null;
    this.groups = null;

    const dollar = len > 0 && topic.charCodeAt(0) === 36; // [MQTT-4.7.2-1]
    const a = this.i32; // views change only between walks (compute's catch)
    const stack = this.stack;
    let sp = 0;
    let node = this.root;
    let depth = 0;
    // Depth first: the literal child is followed at once, a '+' child waits on the stack.
    for (;;) {
      const wild = depth !== 0 || !dollar;
      // '#' below this node matches the rest, the parent level included [MQTT-4.7.1-2].
      if (wild) mask |= Atomics.load(a, node + N_HMASK);
      const kw = Atomics.load(a, node + N_KIDS);
      const kb = kw & PTR_MASK;
      if ((kw & KIDS_EXT) !== 0) {
        // The writer stores K_EXT before it sets the flag; the list may be empty again.
        const ext = Atomics.load(a, kb + K_EXT);
        if (ext !== 0) this.collect(ext, wild, depth === n);
      }
      let next = 0;
      if (depth === n) {
        mask |= Atomics.load(a, node + N_MASK);
      } else {
        if (wild) {
          const p = Atomics.load(a, node + N_PLUS);
          if (p !== 0) {
            stack[sp++] = p;
            stack[sp++] = depth + 1;
          }
        }
        if (kb !== 0) {
          // K_CAP is constant for the block's life: a plain read after the acquiring load of kb.
          if (kb >= this.words) throw STALE;
          const cap = a[kb + K_CAP]!;
          const id = cap === 0 ? 0 : this.level(depth);
          if (id !== 0) {
            const m = cap - 1;
            let j = kidSlot(id, m);
            for (let k = 0; k < cap; k++) {
              const w = kb + K_SLOTS + 2 * j;
              const l = Atomics.load(a, w); // the level id is stored after the child word
              if (l === id) {
                next = Atomics.load(a, w + 1);
                break;
              }
              if (l === 0) break;
              j = (j + 1) & m;
            }
          }
        }
      }
      if (next !== 0) {
        node = next;
        depth++;
      } else if (sp !== 0) {
        depth = stack[--sp]!;
        node = stack[--sp]!;
      } else {
        break;
      }
    }
    const routes = this.routes ?? NO_ROUTES;
    const groups = this.groups ?? NO_GROUPS;
    return { mask: mask >>> 0, routes, groups };
  }

  /** The extension list of a node: route ids and shared groups ending here or at its '#'. */
  private collect(ext: number, wild: boolean, atEnd: boolean): void {
    for (let r = ext; r !== 0; r = Atomics.load(this.i32, r + E_NEXT)) {
      if (r + E_ROUTE >= this.words) throw STALE;
      const key = this.i32[r + E_KEY]!; // constant for the record's life
      if ((key & 1) !== 0 ? !wild : !atEnd) continue;
      const route = Atomics.load(this.i32, r + E_ROUTE);
      const gid = key >>> 1;
      if (gid === 0) {
        if (route !== 0) (this.routes ??= []).push(route);
      } else {
        const m = Atomics.load(this.i32, r + E_MASK);
        if (m !== 0 || route !== 0) (this.groups ??= []).push({ group: this.text(gid), route, mask: m >>> 0 });
      }
    }
  }

  /** String id of level i (0 when the level is in no filter), looked up once per match. */
  private level(i: number): number {
    const memo = this.ids[i]!;
    if (memo !== -1) return memo;
    const topic = this.topic;
    const s = this.starts[i]!;
    const e = this.starts[i + 1]! - 1;
    let h = 0x811c9dc5;
    let wide = 0;
    for (let k = s; k < e; k++) {
      const c = topic.charCodeAt(k);
      if (c > 0xff) wide = 1;
      h = Math.imul(h ^ c, 0x01000193);
    }
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    const len = e - s;
    const tag = ((len << 16) | ((h >>> 16) & 0xfffe) | wide) | 0;
    let tab = this.tab;
    if (tab === 0) tab = this.tab = Atomics.load(this.i32, H_STRTAB);
    if (tab >= this.words) throw STALE;
    const a = this.i32;
    const cap = a[tab + T_CAP]!; // constant for the block's life
    const m = cap - 1;
    let j = h & m;
    let found = 0;
    const st = h & SLOT_TAG;
    for (let k = 0; k < cap; k++) {
      const v = Atomics.load(a, tab + T_SLOTS + j);
      if (v === 0) break;
      // A string record is immutable from before its id was stored until it is freed, which
      // waits for this match to end: plain reads are enough after the load of its id.
      if (v !== -1 && (v & SLOT_TAG) === st) {
        const id = v & PTR_MASK;
        if (id + S_CHARS >= this.words) throw STALE;
        if (a[id + S_TAG] === tag && this.same(id, s, e, wide)) {
          found = id;
          break;
        }
      }
      j = (j + 1) & m;
    }
    this.ids[i] = found;
    return found;
  }

  private same(id: number, s: number, e: number, wide: number): boolean {
    const topic = this.topic;
    if (wide !== 0) {
      const b = (id + S_CHARS) * 2 - s;
      if (b + e > this.u16.length) throw STALE;
      const u = this.u16;
      for (let k = s; k < e; k++) if (u[b + k] !== topic.charCodeAt(k)) return false;
    } else {
      const b = (id + S_CHARS) * 4 - s;
      if (b + e > this.u8.length) throw STALE;
      const u = this.u8;
      for (let k = s; k < e; k++) if (u[b + k] !== topic.charCodeAt(k)) return false;
    }
    return true;
  }

  /** Decodes a string record (group names). */
  private text(id: number): string {
    if (id + S_CHARS >= this.words) throw STALE;
    const tag = this.i32[id + S_TAG]!;
    const len = tag >>> 16;
    let out = '';
    if ((tag & 1) !== 0) {
      const b = (id + S_CHARS) * 2;
      if (b + len > this.u16.length) throw STALE;
      for (let k = 0; k < len; k++) out += String.fromCharCode(this.u16[b + k]!);
    } else {
      const b = (id + S_CHARS) * 4;
      if (b + len > this.u8.length) throw STALE;
      for (let k = 0; k < len; k++) out += String.fromCharCode(this.u8[b + k]!);
    }
    return out;
  }

  private growScratch(n: number): Int32Array {
    const size = Math.max(n, this.starts.length * 2);
    const s = new Int32Array(size);
    s.set(this.starts);
    this.starts = s;
    this.ids = new Int32Array(size);
    return s;
  }
}
