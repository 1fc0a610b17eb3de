// The single writer of the shared route trie (layout in layout.ts, rules in docs/trie.md).
//
// Concurrency scheme: read-copy-update with grace periods. Readers never lock, never retry
// and never wait. Every word a reader may read while the writer changes it is written with
// Atomics.store (sequentially consistent) and read with Atomics.load, and each such word is
// meaningful on its own (a mask, a child pointer, a slot's level id), so there is no
// multi-word state a reader could see half-done. A block is filled with plain stores while
// no reader can reach it, then published with one Atomics.store of its pointer. A block that
// is unlinked is "retired", not freed: it goes back to a free list only after every reader
// that was inside a match when it was unlinked has left that match (its counter changed).
// Tables that must grow or shrink are rebuilt into a new block and swapped in (copy-on-write).
import { parseShare, validateTopicFilter } from '../protocol/topic.js';
import { createGrowable, type GrowableSharedArrayBuffer } from './heap.js';
import {
  E_KEY, E_MASK, E_NEXT, E_ROUTE, EMPTY, EXT_WORDS, H_GEN, H_HEAP_WORDS, H_LAYOUT, H_MAGIC,
  H_MAX_READERS, H_READER_BASE, H_READERS_HI, H_ROOT, H_STRTAB, K_CAP, K_EXT, K_LIVE, K_SLOTS,
  K_TOMBS, KIDS_EXT, LAYOUT_VERSION, MAGIC, MAX_LEVEL_UNITS, N_HMASK, N_KIDS, N_MASK, N_PLUS, NODE_WORDS, PTR_MASK,
  R_COUNTER, R_STATE, READER_BASE, READER_STRIDE, S_CHARS, S_REFS, S_TAG, SLOT_TAG, T_CAP, T_LIVE, T_SLOTS,
  T_TOMBS, TOMB, hashLevel, headerWords, kidSlot, kidsWords, stringTag, stringWords, tableWords,
} from './layout.js';

export interface TrieOptions {
  /** Bytes committed at start (default 256 KiB). */
  initialBytes?: number;
  /** Bytes reserved (address space only, committed as the heap grows); default 1 GiB, at most 2 GiB. */
  maxBytes?: number;
  /** Reader slots (default 64). A reader thread holds one while it lives. */
  maxReaders?: number;
  /** Smallest heap growth step (default 1 MiB; the step is also at least 1/8 of the heap). */
  growBytes?: number;
}

/** What a reader thread needs; structured-cloneable (postMessage / workerData). */
export interface TrieBuffers {
  readonly heap: SharedArrayBuffer;
}

export interface TrieWriterStats {
  /** Terminals (plain filters and shared groups) with at least one local worker. */
  filters: number;
  /** (terminal, worker) pairs: set bits. */
  subscriptions: number;
  /** insert() calls not yet matched by remove(): the sum of all reference counts. */
  references: number;
  /** Extension records holding a route id or a shared group. */
  extensions: number;
  nodes: number;
  /** Interned level strings (levels and group names). */
  strings: number;
  /** Committed shared memory (the SharedArrayBuffer's byteLength). */
  heapBytes: number;
  /** Reserved maximum. */
  maxBytes: number;
  /** In live blocks, the header included. */
  usedBytes: number;
  /** On free lists, ready for reuse. */
  freeBytes: number;
  /** Retired, waiting for a grace period. */
  limboBytes: number;
  /** Never handed out yet (committed above the bump pointer). */
  untouchedBytes: number;
  /** Writer-private bookkeeping that grows with the data: reference counts above 1 (estimate). */
  privateBytes: number;
  generation: number;
  /** Claimed reader slots. */
  readers: number;
  grows: number;
  /** Table rebuilds (copy-on-write grow / shrink / purge of tombstones). */
  rebuilds: number;
  /** Free-list merges run before a growth (see alloc). */
  defrags: number;
}

/** Words in the smallest-size-class range; larger blocks go to the large free list. */
const SMALL_MAX = 64;
const MIN_TABLE = 64;
/** Rough V8 cost of one Map entry with a number key and value (for privateBytes). */
const MAP_ENTRY_BYTES = 40;

interface Batch {
  /** (ptr, words) pairs to free. */
  items: number[];
  /** (counter word, value) pairs of readers that were inside a match when the batch closed. */
  snap: number[];
}

/** Smallest power of two >= n (n >= 1). */
function pow2(n: number): number {
  return n <= 1 ? 1 : 2 ** Math.ceil(Math.log2(n));
}

/** Entries a kids table of `cap` slots may hold (live + tombstones). Tiny tables may be full. */
function kidsLimit(cap: number): number {
  return cap <= 4 ? cap : (cap >>> 2) * 3;
}

/** Slots for a kids table that must hold `n` live entries. */
function kidsCapFor(n: number): number {
  let cap = pow2(n);
  while (kidsLimit(cap) < n) cap *= 2;
  return cap;
}

function tableCapFor(n: number): number {
  let cap = MIN_TABLE;
  while ((cap >>> 2) * 3 < n) cap *= 2;
  return cap;
}

export class TrieWriter {
  private readonly sab: GrowableSharedArrayBuffer;
  // Fixed-length views; replaced after every grow. Never keep one in a local across alloc().
  private i32: Int32Array;
  private u8: Uint8Array;
  private u16: Uint16Array;
  private words: number;
  private readonly maxWords: number;
  private readonly growWords: number;
  private top: number;
  private readonly root: number;

  // Allocator: exact-size free lists for small blocks (intrusive: word 0 = next), an
  // address-ordered list of large free blocks (coalesced), and a carve region taken from
  // a large block to serve small requests when their list is empty.
  private readonly smallHeads = new Int32Array(SMALL_MAX + 1);
  private largeStart: number[] = [];
  private largeSize: number[] = [];
  private carve = 0;
  private carveEnd = 0;
  private freeWords = 0;
  private usedWords: number;

  // Reclamation.
  private limbo: number[] = [];
  private limboWords = 0;
  private readonly pending: Batch[] = [];

  /** Reference counts above 1, keyed by maskWordAddress * 32 + worker. */
  private readonly counts = new Map<number, number>();

  // Path of the last resolve(): pathNode[0] = root, pathNode[d] reached via pathVia[d - 1]
  // (-1 = the '+' child, else a level id).
  private pathNode: number[] = [];
  private pathVia: number[] = [];
  private depth = 0;
  private tNode = 0;
  private tHash = false;
  private tExt = 0;
  private lastWide = false;

  private nFilters = 0;
  private nSubs = 0;
  private nRefs = 0;
  private nExt = 0;
  private nNodes = 0;
  private nStrings = 0;
  private nGrows = 0;
  private nRebuilds = 0;
  private nDefrags = 0;
  private defragAt = 1 << 16;
  private changed = false;

  constructor(opts: TrieOptions = {}) {
    const maxReaders = opts.maxReaders ?? 64;
    if (!Number.isInteger(maxReaders) || maxReaders < 1 || maxReaders > 1024) throw new RangeError('maxReaders must be 1..1024');
    const maxBytes = Math.min(opts.maxBytes ?? 2 ** 30, 2 ** 31 - 4096) & ~4095;
    const hdr = headerWords(maxReaders);
    const minWords = hdr + NODE_WORDS + tableWords(MIN_TABLE);
    const initial = Math.max(((opts.initialBytes ?? 1 << 18) + 4095) & ~4095, (minWords * 4 + 4095) & ~4095);
    if (initial > maxBytes) throw new RangeError('initialBytes above maxBytes');
    this.sab = createGrowable(initial, maxBytes);
    this.words = initial >>> 2;
    this.maxWords = maxBytes >>> 2;
    this.growWords = Math.max(1024, Math.floor((opts.growBytes ?? 1 << 20) / 4));
    this.i32 = new Int32Array(this.sab, 0, this.words);
    this.u8 = new Uint8Array(this.sab, 0, this.words * 4);
    this.u16 = new Uint16Array(this.sab, 0, this.words * 2);
    const a = this.i32;
    a[H_MAGIC] = MAGIC;
    a[H_LAYOUT] = LAYOUT_VERSION;
    a[H_MAX_READERS] = maxReaders;
    a[H_READER_BASE] = READER_BASE;
    a[H_HEAP_WORDS] = this.words;
    this.top = hdr;
    this.usedWords = hdr;
    this.root = this.newNode();
    a[H_ROOT] = this.root;
    const tab = this.newTable(MIN_TABLE);
    a[H_STRTAB] = tab;
    this.pathNode.push(this.root);
    // Nothing is shared yet; the buffer reaches a reader through postMessage, which orders
    // these plain stores before anything the reader does.
  }

  /** The SharedArrayBuffers a TrieReader is built from (send them to reader threads). */
  buffers(): TrieBuffers {
    return { heap: this.sab };
  }

  /**
   * Adds one reference of `worker` (0..31) to `filter` (a topic filter, or a shared
   * subscription `$share/<group>/<filter>` / `$queue/<filter>`). Returns true when the
   * worker's bit for that filter was not set before (the first reference).
   */
  insert(filter: string, worker: number): boolean {
    checkWorker(worker);
    const addr = this.resolve(filter, true);
    const bit = 1 << worker;
    const m = this.i32[addr]!;
    this.nRefs++;
    if ((m & bit) !== 0) {
      const key = addr * 32 + worker;
      this.counts.set(key, (this.counts.get(key) ?? 1) + 1);
      this.endOp();
      return false;
    }
    if (m === 0) this.nFilters++;
    Atomics.store(this.i32, addr, m | bit); // publishes the bit (and any nodes made above)
    this.nSubs++;
    this.changed = true;
    this.endOp();
    return true;
  }

  /**
   * Drops one reference of `worker` to `filter`. Returns true when it was the last one (the
   * worker's bit is cleared); false when references remain or there was none.
   */
  remove(filter: string, worker: number): boolean {
    checkWorker(worker);
    const addr = this.resolve(filter, false);
    if (addr === 0) return false;
    const bit = 1 << worker;
    const m = this.i32[addr]!;
    if ((m & bit) === 0) return false;
    this.nRefs--;
    const key = addr * 32 + worker;
    const c = this.counts.get(key);
    if (c !== undefined) {
      if (c > 2) this.counts.set(key, c - 1);
      else this.counts.delete(key);
      this.endOp();
      return false;
    }
    Atomics.store(this.i32, addr, m & ~bit);
    this.nSubs--;
    if (m === bit) this.nFilters--;
    this.changed = true;
    if (this.tExt !== 0 && m === bit && this.i32[this.tExt + E_ROUTE] === 0) this.dropExt(this.tNode, this.tExt);
    this.prune();
    this.endOp();
    return true;
  }

  /** References `worker` holds on `filter` (0 when none). */
  count(filter: string, worker: number): number {
    checkWorker(worker);
    const addr = this.resolve(filter, false);
    if (addr === 0 || (this.i32[addr]! & (1 << worker)) === 0) return 0;
    return this.counts.get(addr * 32 + worker) ?? 1;
  }

  /**
   * Sets the route id of a plain or shared filter (0 clears it). A filter with a route id
   * matches even with no local worker: that is how remote nodes' subscriptions are carried.
   * Readers report the ids of matching filters; the owner maps an id to remote nodes or to
   * a shared group's members. Returns the route id the filter had before (0: none).
   */
  setRoute(filter: string, route: number): number {
    if (!Number.isInteger(route) || route < 0 || route > 0x7fffffff) throw new RangeError('route id must be 0..2^31-1');
    const addr = this.resolve(filter, route !== 0);
    if (addr === 0) return 0;
    let ext = this.tExt;
    if (ext === 0) {
      ext = this.findExt(this.tNode, this.tHash ? 1 : 0);
      if (ext === 0) {
        if (route === 0) return 0;
        ext = this.addExt(this.tNode, this.tHash ? 1 : 0, 0);
      }
    }
    const old = this.i32[ext + E_ROUTE]!;
    if (old === route) {
      this.endOp();
      return old;
    }
    Atomics.store(this.i32, ext + E_ROUTE, route);
    this.changed = true;
    if (route === 0) {
      if (this.tExt === 0 || this.i32[ext + E_MASK] === 0) this.dropExt(this.tNode, ext);
      this.prune();
    }
    this.endOp();
    return old;
  }

  /** Route id of a filter (0 when none). */
  route(filter: string): number {
    if (this.resolve(filter, false) === 0) return 0;
    const ext = this.tExt !== 0 ? this.tExt : this.findExt(this.tNode, this.tHash ? 1 : 0);
    return ext === 0 ? 0 : this.i32[ext + E_ROUTE]!;
  }

  /** Frees what the readers have finished with; returns the words still waiting. */
  reclaim(): number {
    this.closeBatch();
    this.poll();
    return this.limboWords;
  }

  /**
   * Frees a reader slot whose thread died (a reader that exits normally calls close()).
   * A slot left inside a match would hold back reclamation for ever.
   */
  releaseReader(slot: number): void {
    const max = this.i32[H_MAX_READERS]!;
    if (!Number.isInteger(slot) || slot < 0 || slot >= max) throw new RangeError('no such reader slot');
    const base = READER_BASE + slot * READER_STRIDE;
    const c = Atomics.load(this.i32, base + R_COUNTER);
    if ((c & 1) !== 0) Atomics.store(this.i32, base + R_COUNTER, c + 1);
    Atomics.store(this.i32, base + R_STATE, 0);
    this.poll();
  }

  stats(): TrieWriterStats {
    let readers = 0;
    const hi = Atomics.load(this.i32, H_READERS_HI);
    for (let i = 0; i < hi; i++) if (Atomics.load(this.i32, READER_BASE + i * READER_STRIDE + R_STATE) !== 0) readers++;
    return {
      filters: this.nFilters,
      subscriptions: this.nSubs,
      references: this.nRefs,
      extensions: this.nExt,
      nodes: this.nNodes,
      strings: this.nStrings,
      heapBytes: this.words * 4,
      maxBytes: this.maxWords * 4,
      usedBytes: this.usedWords * 4,
      freeBytes: this.freeWords * 4,
      limboBytes: this.limboWords * 4,
      untouchedBytes: (this.words - this.top) * 4,
      privateBytes: this.counts.size * MAP_ENTRY_BYTES,
      generation: Atomics.load(this.i32, H_GEN),
      readers,
      grows: this.nGrows,
      rebuilds: this.nRebuilds,
      defrags: this.nDefrags,
    };
  }

  // ---- Walking ------------------------------------------------------------------------------

  /**
   * Finds (create: makes) the terminal of `filter` and returns the address of its mask word,
   * or 0 when it does not exist (create false). Leaves the path in pathNode/pathVia/depth,
   * the last node in tNode, '#'-terminal in tHash and a shared group's record in tExt.
   */
  private resolve(filter: string, create: boolean): number {
    let s = filter;
    let group: string | null = null;
    if (filter.charCodeAt(0) === 36 && (filter.startsWith('$share/') || filter.startsWith('$queue/'))) {
      const p = parseShare(filter);
      if ('error' in p) throw new TypeError(`invalid filter ${JSON.stringify(filter)}: ${p.error}`);
      group = p.group;
      s = p.filter;
    } else {
      const err = validateTopicFilter(filter, 0, 0);
      if (err !== null) throw new TypeError(`invalid filter ${JSON.stringify(filter)}: ${err}`);
    }
    const n = s.length;
    let node = this.root;
    let depth = 0;
    let hash = false;
    let start = 0;
    for (;;) {
      let end = s.indexOf('/', start);
      if (end < 0) end = n;
      const c0 = s.charCodeAt(start);
      if (end - start === 1 && c0 === 35 /* # */) {
        hash = true;
        break;
      }
      let next: number;
      let via: number;
      if (end - start === 1 && c0 === 43 /* + */) {
        via = -1;
        next = this.i32[node + N_PLUS]!;
        if (next === 0) {
          if (!create) return 0;
          next = this.newNode();
          Atomics.store(this.i32, node + N_PLUS, next); // publish the (zeroed) node
        }
      } else {
        const h = this.hashScan(s, start, end);
        let id = this.findString(s, start, end, h, this.lastWide);
        if (id === 0) {
          if (!create) return 0;
          id = this.newString(s, start, end, h, this.lastWide);
        }
        via = id;
        next = this.kidGet(node, id);
        if (next === 0) {
          if (!create) return 0;
          next = this.newNode();
          this.kidAdd(node, id, next);
        }
      }
      this.pathVia[depth] = via;
      depth++;
      this.pathNode[depth] = next;
      node = next;
      if (end === n) break;
      start = end + 1;
    }
    this.depth = depth;
    this.tNode = node;
    this.tHash = hash;
    this.tExt = 0;
    if (group === null) return node + (hash ? N_HMASK : N_MASK);
    const h = this.hashScan(group, 0, group.length);
    let gid = this.findString(group, 0, group.length, h, this.lastWide);
    if (gid === 0) {
      if (!create) return 0;
      gid = this.newString(group, 0, group.length, h, this.lastWide);
    }
    const key = (gid << 1) | (hash ? 1 : 0);
    let ext = this.findExt(node, key);
    if (ext === 0) {
      if (!create) return 0;
      ext = this.addExt(node, key, gid);
    }
    this.tExt = ext;
    return ext + E_MASK;
  }

  /** Drops empty nodes bottom-up along the last resolve()'s path. */
  private prune(): void {
    for (let d = this.depth; d > 0; d--) {
      const node = this.pathNode[d]!;
      if (!this.nodeEmpty(node)) return;
      const parent = this.pathNode[d - 1]!;
      const via = this.pathVia[d - 1]!;
      if (via === -1) Atomics.store(this.i32, parent + N_PLUS, 0);
      else this.kidRemove(parent, via);
      const kb = this.i32[node + N_KIDS]! & PTR_MASK;
      if (kb !== 0) this.retire(kb, kidsWords(this.i32[kb + K_CAP]!));
      this.retire(node, NODE_WORDS);
      this.nNodes--;
    }
    this.tidyKids(this.root);
  }

  /** No subscription, route, group or child left. Also frees an empty kids block. */
  private nodeEmpty(node: number): boolean {
    const a = this.i32;
    if (a[node + N_MASK] !== 0 || a[node + N_HMASK] !== 0 || a[node + N_PLUS] !== 0) {
      this.tidyKids(node);
      return false;
    }
    const kb = a[node + N_KIDS]! & PTR_MASK;
    return kb === 0 || (a[kb + K_LIVE] === 0 && a[kb + K_EXT] === 0);
  }

  /** A kids block with no entry and no extension is unhooked and retired. */
  private tidyKids(node: number): void {
    const kb = this.i32[node + N_KIDS]! & PTR_MASK;
    if (kb !== 0 && this.i32[kb + K_LIVE] === 0 && this.i32[kb + K_EXT] === 0) {
      Atomics.store(this.i32, node + N_KIDS, 0);
      this.retire(kb, kidsWords(this.i32[kb + K_CAP]!));
    }
  }

  // ---- Kids tables (literal children) -------------------------------------------------------

  private kidGet(node: number, id: number): number {
    const a = this.i32;
    const kb = a[node + N_KIDS]! & PTR_MASK;
    if (kb === 0) return 0;
    const cap = a[kb + K_CAP]!;
    const m = cap - 1;
    let j = kidSlot(id, m);
    for (let k = 0; k < cap; k++) {
      const w = kb + K_SLOTS + 2 * j;
      const l = a[w]!;
      if (l === id) return a[w + 1]!;
      if (l === EMPTY) return 0;
      j = (j + 1) & m;
    }
    return 0;
  }

  private kidAdd(node: number, id: number, child: number): void {
    let kb = this.i32[node + N_KIDS]! & PTR_MASK;
    if (kb === 0) {
      kb = this.newKids(1, 0);
      this.putKid(kb, id, child); // plain stores: the block is not reachable yet
      this.i32[kb + K_LIVE] = 1;
      this.publishKids(node, kb);
    } else {
      const cap = this.i32[kb + K_CAP]!;
      const live = this.i32[kb + K_LIVE]!;
      if (live + this.i32[kb + K_TOMBS]! + 1 > kidsLimit(cap)) {
        kb = this.rebuildKids(node, kb, kidsCapFor(live + 1), id, child);
      } else {
        // In place: the child word first, then the level id that makes the slot findable.
        const m = cap - 1;
        let j = kidSlot(id, m);
        for (;;) {
          const w = kb + K_SLOTS + 2 * j;
          if (this.i32[w] === EMPTY) {
            Atomics.store(this.i32, w + 1, child);
            Atomics.store(this.i32, w, id);
            break;
          }
          j = (j + 1) & m;
        }
        this.i32[kb + K_LIVE] = live + 1;
      }
    }
    this.i32[id + S_REFS] = this.i32[id + S_REFS]! + 1;
  }

  private kidRemove(node: number, id: number): void {
    const a = this.i32;
    const kb = a[node + N_KIDS]! & PTR_MASK;
    const cap = a[kb + K_CAP]!;
    const m = cap - 1;
    let j = kidSlot(id, m);
    for (let k = 0; k < cap; k++) {
      const w = kb + K_SLOTS + 2 * j;
      if (a[w] === id) {
        // The child word stays: a reader that read the id before this store still gets the
        // (now retired, not yet freed) child. The slot is reused only by a rebuild.
        Atomics.store(a, w, TOMB);
        break;
      }
      j = (j + 1) & m;
    }
    const live = a[kb + K_LIVE]! - 1;
    a[kb + K_LIVE] = live;
    a[kb + K_TOMBS] = a[kb + K_TOMBS]! + 1;
    this.unrefString(id);
    if (live === 0 && this.i32[kb + K_EXT] === 0) {
      // Left for nodeEmpty()/tidyKids() of this node: it may still be non-empty otherwise.
      return;
    }
    if (cap >= 16 && live * 8 < cap) this.rebuildKids(node, kb, kidsCapFor(live), 0, 0);
  }

  /** Stores the node's kids pointer with KIDS_EXT set iff the block has an extension list. */
  private publishKids(node: number, kb: number): void {
    Atomics.store(this.i32, node + N_KIDS, kb | (this.i32[kb + K_EXT] !== 0 ? KIDS_EXT : 0));
  }

  private newKids(cap: number, ext: number): number {
    const kb = this.alloc(kidsWords(cap));
    const a = this.i32;
    a[kb + K_CAP] = cap;
    a[kb + K_EXT] = ext;
    a[kb + K_LIVE] = 0;
    a[kb + K_TOMBS] = 0;
    a.fill(0, kb + K_SLOTS, kb + K_SLOTS + 2 * cap);
    return kb;
  }

  /** Plain store into an unpublished block. */
  private putKid(kb: number, id: number, child: number): void {
    const a = this.i32;
    const m = a[kb + K_CAP]! - 1;
    let j = kidSlot(id, m);
    while (a[kb + K_SLOTS + 2 * j] !== EMPTY) j = (j + 1) & m;
    a[kb + K_SLOTS + 2 * j] = id;
    a[kb + K_SLOTS + 2 * j + 1] = child;
  }

  /** Copy-on-write: a new block with the live entries (plus one new one when id !== 0). */
  private rebuildKids(node: number, old: number, cap: number, id: number, child: number): number {
    const nb = this.newKids(cap, this.i32[old + K_EXT]!);
    const a = this.i32;
    const oldCap = a[old + K_CAP]!;
    let live = 0;
    for (let j = 0; j < oldCap; j++) {
      const w = old + K_SLOTS + 2 * j;
      const l = a[w]!;
      if (l !== EMPTY && l !== TOMB) {
        this.putKid(nb, l, a[w + 1]!);
        live++;
      }
    }
    if (id !== 0) {
      this.putKid(nb, id, child);
      live++;
    }
    a[nb + K_LIVE] = live;
    this.publishKids(node, nb); // readers switch here; the old block stays readable
    this.retire(old, kidsWords(oldCap));
    this.nRebuilds++;
    return nb;
  }

  // ---- Extension records (route ids, shared groups) -------------------------------------------

  private findExt(node: number, key: number): number {
    const kb = this.i32[node + N_KIDS]! & PTR_MASK;
    if (kb === 0) return 0;
    for (let r = this.i32[kb + K_EXT]!; r !== 0; r = this.i32[r + E_NEXT]!) {
      if (this.i32[r + E_KEY] === key) return r;
    }
    return 0;
  }

  /** A new record at the head of the node's list (makes a 0-slot kids block if needed). */
  private addExt(node: number, key: number, gid: number): number {
    const r = this.alloc(EXT_WORDS);
    let kb = this.i32[node + N_KIDS]! & PTR_MASK;
    const a = this.i32;
    a[r + E_NEXT] = kb === 0 ? 0 : a[kb + K_EXT]!;
    a[r + E_KEY] = key;
    a[r + E_MASK] = 0;
    a[r + E_ROUTE] = 0;
    if (kb === 0) {
      kb = this.newKids(0, r);
    } else {
      Atomics.store(a, kb + K_EXT, r);
    }
    this.publishKids(node, kb); // after K_EXT: a reader that sees the flag finds the list
    if (gid !== 0) this.i32[gid + S_REFS] = this.i32[gid + S_REFS]! + 1;
    this.nExt++;
    return r;
  }

  /** Unlinks and retires a record (readers on it still see its next pointer). */
  private dropExt(node: number, r: number): void {
    const a = this.i32;
    const kb = a[node + N_KIDS]! & PTR_MASK;
    const next = a[r + E_NEXT]!;
    if (a[kb + K_EXT] === r) {
      Atomics.store(a, kb + K_EXT, next);
    } else {
      let p = a[kb + K_EXT]!;
      while (a[p + E_NEXT] !== r) p = a[p + E_NEXT]!;
      Atomics.store(a, p + E_NEXT, next);
    }
    if (a[kb + K_EXT] === 0) this.publishKids(node, kb); // clears the flag
    const gid = a[r + E_KEY]! >>> 1;
    this.retire(r, EXT_WORDS);
    this.nExt--;
    if (gid !== 0) this.unrefString(gid);
  }

  // ---- Strings --------------------------------------------------------------------------------

  private hashScan(s: string, start: number, end: number): number {
    let wide = false;
    for (let i = start; i < end; i++) {
      if (s.charCodeAt(i) > 0xff) {
        wide = true;
        break;
      }
    }
    if (end - start > MAX_LEVEL_UNITS) throw new RangeError('topic level longer than 65535 code units');
    this.lastWide = wide;
    return hashLevel(s, start, end);
  }

  private findString(s: string, start: number, end: number, h: number, wide: boolean): number {
    const a = this.i32;
    const tab = a[H_STRTAB]!;
    const cap = a[tab + T_CAP]!;
    const m = cap - 1;
    const tag = stringTag(h, end - start, wide);
    let j = h & m;
    const st = h & SLOT_TAG;
    for (let k = 0; k < cap; k++) {
      const v = a[tab + T_SLOTS + j]!;
      if (v === EMPTY) return 0;
      if (v !== TOMB && (v & SLOT_TAG) === st) {
        const id = v & PTR_MASK;
        if (a[id + S_TAG] === tag && this.sameChars(id, s, start, end, wide)) return id;
      }
      j = (j + 1) & m;
    }
    return 0;
  }

  private sameChars(id: number, s: string, start: number, end: number, wide: boolean): boolean {
    if (wide) {
      const b = (id + S_CHARS) * 2 - start;
      const u = this.u16;
      for (let i = start; i < end; i++) if (u[b + i] !== s.charCodeAt(i)) return false;
    } else {
      const b = (id + S_CHARS) * 4 - start;
      const u = this.u8;
      for (let i = start; i < end; i++) if (u[b + i] !== s.charCodeAt(i)) return false;
    }
    return true;
  }

  private newString(s: string, start: number, end: number, h: number, wide: boolean): number {
    const len = end - start;
    const id = this.alloc(stringWords(len, wide));
    const a = this.i32;
    a[id + S_TAG] = stringTag(h, len, wide);
    a[id + S_REFS] = 0;
    if (wide) {
      const b = (id + S_CHARS) * 2 - start;
      for (let i = start; i < end; i++) this.u16[b + i] = s.charCodeAt(i);
    } else {
      const b = (id + S_CHARS) * 4 - start;
      for (let i = start; i < end; i++) this.u8[b + i] = s.charCodeAt(i);
    }
    // Into the table: the record is complete before its id is stored (the publication).
    let tab = a[H_STRTAB]!;
    if (a[tab + T_LIVE]! + a[tab + T_TOMBS]! + 1 > (a[tab + T_CAP]! >>> 2) * 3) {
      tab = this.rebuildTable(tableCapFor(a[tab + T_LIVE]! + 1));
    }
    const t = this.i32;
    const m = t[tab + T_CAP]! - 1;
    let j = h & m;
    while (t[tab + T_SLOTS + j] !== EMPTY) j = (j + 1) & m;
    Atomics.store(t, tab + T_SLOTS + j, id | (h & SLOT_TAG));
    t[tab + T_LIVE] = t[tab + T_LIVE]! + 1;
    this.nStrings++;
    return id;
  }

  /** Hash of a stored string (from its characters), for rebuilds and removal. */
  private storedHash(id: number): number {
    const tag = this.i32[id + S_TAG]!;
    const len = tag >>> 16;
    let h = 0x811c9dc5;
    if ((tag & 1) !== 0) {
      const b = (id + S_CHARS) * 2;
      for (let i = 0; i < len; i++) h = Math.imul(h ^ this.u16[b + i]!, 0x01000193);
    } else {
      const b = (id + S_CHARS) * 4;
      for (let i = 0; i < len; i++) h = Math.imul(h ^ this.u8[b + i]!, 0x01000193);
    }
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    return h;
  }

  private unrefString(id: number): void {
    const refs = this.i32[id + S_REFS]! - 1;
    this.i32[id + S_REFS] = refs;
    if (refs > 0) return;
    const a = this.i32;
    const tab = a[H_STRTAB]!;
    const m = a[tab + T_CAP]! - 1;
    let j = this.storedHash(id) & m;
    while ((a[tab + T_SLOTS + j]! & PTR_MASK) !== id) j = (j + 1) & m;
    Atomics.store(a, tab + T_SLOTS + j, TOMB);
    const live = a[tab + T_LIVE]! - 1;
    a[tab + T_LIVE] = live;
    a[tab + T_TOMBS] = a[tab + T_TOMBS]! + 1;
    const tag = a[id + S_TAG]!;
    this.retire(id, stringWords(tag >>> 16, (tag & 1) !== 0));
    this.nStrings--;
    const cap = m + 1;
    if (cap > MIN_TABLE && live * 8 < cap) this.rebuildTable(tableCapFor(live));
  }

  private newTable(cap: number): number {
    const tab = this.alloc(tableWords(cap));
    const a = this.i32;
    a[tab + T_CAP] = cap;
    a[tab + T_LIVE] = 0;
    a[tab + T_TOMBS] = 0;
    a[tab + 3] = 0;
    a.fill(0, tab + T_SLOTS, tab + T_SLOTS + cap);
    return tab;
  }

  /** Copy-on-write rebuild of the string table (grow, shrink or purge tombstones). */
  private rebuildTable(cap: number): number {
    const nt = this.newTable(cap);
    const a = this.i32;
    const old = a[H_STRTAB]!;
    const oldCap = a[old + T_CAP]!;
    const m = cap - 1;
    let live = 0;
    for (let i = 0; i < oldCap; i++) {
      const v = a[old + T_SLOTS + i]!;
      if (v === EMPTY || v === TOMB) continue;
      let j = this.storedHash(v & PTR_MASK) & m;
      while (a[nt + T_SLOTS + j] !== EMPTY) j = (j + 1) & m;
      a[nt + T_SLOTS + j] = v;
      live++;
    }
    a[nt + T_LIVE] = live;
    Atomics.store(a, H_STRTAB, nt);
    this.retire(old, tableWords(oldCap));
    this.nRebuilds++;
    return nt;
  }

  // ---- Nodes ---------------------------------------------------------------------------------

  private newNode(): number {
    const p = this.alloc(NODE_WORDS);
    const a = this.i32;
    a[p + N_MASK] = 0;
    a[p + N_HMASK] = 0;
    a[p + N_PLUS] = 0;
    a[p + N_KIDS] = 0;
    this.nNodes++;
    return p;
  }

  // ---- Operation end: generation, grace periods -----------------------------------------------

  private endOp(): void {
    if (this.changed) {
      // After the op's stores: a reader that sees the new generation sees the change, so a
      // cache entry filled under the old generation is dropped no later than that.
      Atomics.add(this.i32, H_GEN, 1);
      this.changed = false;
    }
    if (this.limbo.length !== 0) this.closeBatch();
    if (this.pending.length !== 0) this.poll();
    if (this.freeWords >= this.defragAt) {
      // Mass removals leave many small free blocks side by side: merge them (and give the
      // top of the heap back to the bump pointer) so later big tables find room. Amortised:
      // again only once the free space has doubled, and only when it is 1/4 of the heap.
      this.defrag();
      this.defragAt = Math.max(this.freeWords * 2, this.words >>> 2);
    }
  }

  private retire(p: number, n: number): void {
    this.limbo.push(p, n);
    this.limboWords += n;
    this.usedWords -= n;
  }

  /**
   * Closes the current batch: snapshots the counters of readers that are inside a match now
   * (odd). The unlinking stores came before this (sequentially consistent) scan, so a reader
   * whose counter was even here enters later and cannot reach the batch's blocks.
   */
  private closeBatch(): void {
    if (this.limbo.length === 0) return;
    const snap: number[] = [];
    const a = this.i32;
    const hi = Atomics.load(a, H_READERS_HI);
    for (let i = 0; i < hi; i++) {
      const base = READER_BASE + i * READER_STRIDE;
      if (Atomics.load(a, base + R_STATE) === 0) continue;
      const c = Atomics.load(a, base + R_COUNTER);
      if ((c & 1) !== 0) snap.push(base + R_COUNTER, c);
    }
    const items = this.limbo;
    this.limbo = [];
    if (snap.length === 0 && this.pending.length === 0) {
      this.freeItems(items);
      return;
    }
    this.pending.push({ items, snap });
  }

  /** Frees every batch whose readers have all moved on (in order). */
  private poll(): void {
    while (this.pending.length !== 0) {
      const b = this.pending[0]!;
      const snap = b.snap;
      for (let i = 0; i < snap.length; i += 2) {
        if (Atomics.load(this.i32, snap[i]!) === snap[i + 1]) return;
      }
      this.pending.shift();
      this.freeItems(b.items);
    }
  }

  private freeItems(items: number[]): void {
    for (let i = 0; i < items.length; i += 2) {
      const n = items[i + 1]!;
      this.limboWords -= n;
      this.free(items[i]!, n);
    }
  }

  // ---- Allocator ------------------------------------------------------------------------------

  private alloc(n: number): number {
    this.usedWords += n;
    let p = this.takeFree(n);
    if (p !== 0) return p;
    if (this.top + n > this.words) {
      // Before growing: when a good part of the heap is free but in pieces (small blocks
      // freed next to each other, e.g. after mass removals), merge neighbours and retry.
      if (this.freeWords >= n && this.freeWords * 16 >= this.words) {
        this.defrag();
        this.defragAt = Math.max(this.freeWords * 2, this.words >>> 2);
        p = this.takeFree(n);
        if (p !== 0) return p;
      }
      if (this.top + n > this.words) this.grow(this.top + n);
    }
    p = this.top;
    this.top += n;
    return p;
  }

  /** A block from the free lists or the carve region, or 0. */
  private takeFree(n: number): number {
    if (n > SMALL_MAX) return this.takeLarge(n);
    const h = this.smallHeads[n]!;
    if (h !== 0) {
      this.smallHeads[n] = this.i32[h]!;
      this.freeWords -= n;
      return h;
    }
    if (this.carve + n > this.carveEnd && !this.refillCarve(n)) return 0;
    const p = this.carve;
    this.carve += n;
    this.freeWords -= n;
    return p;
  }

  /**
   * Merges adjacent free blocks (all lists and the carve region), gives a run that ends at
   * the bump pointer back to it, and rebuilds the lists. O(F log F) in the free blocks; run
   * only before the heap would grow while at least 1/16 of it is free.
   */
  private defrag(): void {
    this.nDefrags++;
    this.dropCarve();
    let count = 0;
    for (let n = 1; n <= SMALL_MAX; n++) for (let p = this.smallHeads[n]!; p !== 0; p = this.i32[p]!) count++;
    // Small blocks as start * 128 + size (exact in a double: start < 2^29).
    const keys = new Float64Array(count);
    let k = 0;
    for (let n = 1; n <= SMALL_MAX; n++) {
      for (let p = this.smallHeads[n]!; p !== 0; p = this.i32[p]!) keys[k++] = p * 128 + n;
      this.smallHeads[n] = 0;
    }
    keys.sort();
    const ls = this.largeStart;
    const lz = this.largeSize;
    this.largeStart = [];
    this.largeSize = [];
    let runStart = -1;
    let runEnd = -1;
    const flush = (): void => {
      if (runStart < 0) return;
      const size = runEnd - runStart;
      if (runEnd === this.top) {
        this.top = runStart;
        this.freeWords -= size;
      } else if (size <= SMALL_MAX) {
        this.pushSmall(runStart, size);
      } else {
        this.largeStart.push(runStart);
        this.largeSize.push(size);
      }
    };
    const add = (p: number, size: number): void => {
      if (p === runEnd) {
        runEnd += size;
        return;
      }
      flush();
      runStart = p;
      runEnd = p + size;
    };
    let i = 0;
    let j = 0;
    while (i < count || j < ls.length) {
      const sp = i < count ? Math.floor(keys[i]! / 128) : Infinity;
      if (j < ls.length && ls[j]! < sp) {
        add(ls[j]!, lz[j]!);
        j++;
      } else {
        add(sp, keys[i]! - sp * 128);
        i++;
      }
    }
    flush();
  }

  /** Best fit among the large free blocks; the rest of the block stays free. */
  private takeLarge(n: number): number {
    const st = this.largeStart;
    const sz = this.largeSize;
    let best = -1;
    for (let i = 0; i < st.length; i++) {
      const s = sz[i]!;
      if (s >= n && (best < 0 || s < sz[best]!)) {
        best = i;
        if (s === n) break;
      }
    }
    if (best < 0) return 0;
    const p = st[best]!;
    const rest = sz[best]! - n;
    this.freeWords -= n;
    if (rest > SMALL_MAX) {
      st[best] = p + n;
      sz[best] = rest;
    } else {
      st.splice(best, 1);
      sz.splice(best, 1);
      if (rest > 0) this.pushSmall(p + n, rest);
    }
    return p;
  }

  /**
   * Makes the smallest large free block the carve region (returning the old region's rest):
   * small requests eat the small leftovers first and keep big blocks whole for tables.
   */
  private refillCarve(n: number): boolean {
    if (this.largeSize.length === 0) return false;
    this.dropCarve(); // may change the large list; its rest is < n
    const sz = this.largeSize;
    let best = -1;
    for (let i = 0; i < sz.length; i++) if (sz[i]! >= n && (best < 0 || sz[i]! < sz[best]!)) best = i;
    if (best < 0) return false;
    this.carve = this.largeStart[best]!;
    this.carveEnd = this.carve + sz[best]!;
    this.largeStart.splice(best, 1);
    sz.splice(best, 1);
    return true;
  }

  private dropCarve(): void {
    const rest = this.carveEnd - this.carve;
    const p = this.carve;
    this.carve = this.carveEnd = 0;
    if (rest > 0) {
      this.freeWords -= rest; // free() counts it again
      this.free(p, rest);
    }
  }

  private pushSmall(p: number, n: number): void {
    this.i32[p] = this.smallHeads[n]!;
    this.smallHeads[n] = p;
  }

  private free(p: number, n: number): void {
    this.freeWords += n;
    if (n <= SMALL_MAX) {
      this.pushSmall(p, n);
      return;
    }
    // Address-ordered insert with coalescing of neighbours.
    const st = this.largeStart;
    const sz = this.largeSize;
    let lo = 0;
    let hi = st.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (st[mid]! < p) lo = mid + 1;
      else hi = mid;
    }
    let start = p;
    let size = n;
    if (lo > 0 && st[lo - 1]! + sz[lo - 1]! === p) {
      lo--;
      start = st[lo]!;
      size += sz[lo]!;
      st.splice(lo, 1);
      sz.splice(lo, 1);
    }
    if (lo < st.length && start + size === st[lo]) {
      size += sz[lo]!;
      st.splice(lo, 1);
      sz.splice(lo, 1);
    }
    if (start + size === this.top) {
      // Back to the bump region.
      this.top = start;
      this.freeWords -= size;
      return;
    }
    st.splice(lo, 0, start);
    sz.splice(lo, 0, size);
  }

  private grow(needWords: number): void {
    let target = Math.max(needWords, this.words + (this.words >>> 3), this.words + this.growWords);
    target = Math.min(target, this.maxWords);
    if (target < needWords) throw new RangeError(`trie heap full (${this.maxWords * 4} bytes reserved)`);
    this.sab.grow(target * 4);
    this.words = target;
    this.i32 = new Int32Array(this.sab, 0, target);
    this.u8 = new Uint8Array(this.sab, 0, target * 4);
    this.u16 = new Uint16Array(this.sab, 0, target * 2);
    // After grow(): a reader that loads the new size can map it.
    Atomics.store(this.i32, H_HEAP_WORDS, target);
    this.nGrows++;
  }
}

function checkWorker(worker: number): void {
  if (!Number.isInteger(worker) || worker < 0 || worker > 31) throw new RangeError('worker must be 0..31');
}
