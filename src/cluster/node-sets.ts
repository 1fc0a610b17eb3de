// Which remote nodes want a topic, in shared memory next to the route trie (docs/cluster.md,
// "Remote routes in the trie"). The replication thread writes, every connection worker
// reads, without locks:
//
//  - NodeSets: interned sets of node slots (a node slot is a small number the replication
//    thread gives each peer; at most MAX_NODES). A plain filter's trie route id is the id
//    of the set of nodes that subscribe to it. A set's words are written before its id is
//    published (the trie's Atomics.store of the route id), and never change while the id is
//    in use; a freed id is reused only after a quarantine, so that a reader that loaded the
//    id just before it was freed still reads the old set (a stale set costs at most one
//    needless forward: the receiving node matches again).
//  - GroupRemote: for a shared group (its trie route id is hash(group, filter)), the node
//    set holding members elsewhere. Open addressing on the route id; an entry also carries
//    a hash of the group name, which the reader checks, so two groups whose route ids
//    collide are told apart.

/** Peers one node can know (bits of a node set). */
export const MAX_NODES = 256;
export const SET_WORDS = MAX_NODES / 32;
/** Node sets that can exist at once (id 0 = the empty set). */
export const MAX_SETS = 32_768;
const QUARANTINE_MS = 2_000;
export const GROUP_ENTRIES = 65_536;
const GROUP_STRIDE = 4; // [route, group hash, set id, unused]
const GROUP_PROBES = 128;

export function nodeSetsBytes(): number {
  return MAX_SETS * SET_WORDS * 4;
}

export function groupRemoteBytes(): number {
  return GROUP_ENTRIES * GROUP_STRIDE * 4;
}

function groupHash(group: string): number {
  let h = 0x9747b28c;
  for (let i = 0; i < group.length; i++) h = Math.imul(h ^ group.charCodeAt(i), 0x5bd1e995);
  return (h ^ (h >>> 15)) | 1; // never 0 (0 marks an empty entry)
}

/** Writer side (the replication thread). */
export class NodeSetWriter {
  private readonly words: Int32Array;
  private readonly ids = new Map<string, number>();
  private readonly refs = new Int32Array(MAX_SETS);
  private readonly keys: (string | null)[] = new Array<string | null>(MAX_SETS).fill(null);
  private readonly free: number[] = [];
  private readonly quarantine: [number, number][] = [];
  private next = 1;
  /** slot → id of the set holding just that slot (0: none yet); the common case, without a key string. */
  private readonly single = new Int32Array(MAX_NODES);

  constructor(sab: SharedArrayBuffer) {
    this.words = new Int32Array(sab);
  }

  /** The id of the set `slots` (sorted or not), with one more reference; 0 for the empty set. */
  acquire(slots: readonly number[]): number {
    if (slots.length === 0) return 0;
    if (slots.length === 1) {
      const id = this.single[slots[0]!] ?? 0;
      if (id !== 0) {
        this.refs[id]!++;
        return id;
      }
    }
    const key = [...slots].sort((a, b) => a - b).join(',');
    let id = this.ids.get(key);
    if (id === undefined) {
      // Check the slots before taking an id: a refused set must not cost one.
      for (const s of slots) if (!Number.isInteger(s) || s < 0 || s >= MAX_NODES) throw new RangeError(`node slot ${s} out of range`);
      id = this.alloc();
      const base = id * SET_WORDS;
      for (let i = 0; i < SET_WORDS; i++) Atomics.store(this.words, base + i, 0);
      for (const s of slots) Atomics.or(this.words, base + (s >>> 5), 1 << (s & 31));
      this.ids.set(key, id);
      this.keys[id] = key;
      if (slots.length === 1) this.single[slots[0]!] = id;
    }
    this.refs[id]!++;
    return id;
  }

  release(id: number): void {
    if (id === 0) return;
    if (--this.refs[id]! > 0) return;
    const key = this.keys[id];
    if (key !== null && key !== undefined) {
      this.ids.delete(key);
      if (!key.includes(',')) this.single[Number(key)] = 0;
    }
    this.keys[id] = null;
    this.quarantine.push([id, Date.now() + QUARANTINE_MS]);
  }

  private alloc(): number {
    const now = Date.now();
    while (this.quarantine.length > 0 && this.quarantine[0]![1] <= now) this.free.push(this.quarantine.shift()![0]);
    const id = this.free.pop() ?? (this.next < MAX_SETS ? this.next++ : 0);
    if (id === 0) throw new RangeError(`more than ${MAX_SETS - 1} distinct sets of nodes`);
    return id;
  }

  get size(): number {
    return this.ids.size;
  }
}

/** Reader side: ORs set `id` into `acc` (SET_WORDS words). */
export function orNodeSet(words: Int32Array, id: number, acc: Int32Array): void {
  const base = id * SET_WORDS;
  for (let i = 0; i < SET_WORDS; i++) acc[i]! |= Atomics.load(words, base + i);
}

/** Calls `f(slot)` for every bit of `acc`. */
export function forEachSlot(acc: Int32Array, f: (slot: number) => void): void {
  for (let i = 0; i < SET_WORDS; i++) {
    let w = acc[i]!;
    while (w !== 0) {
      const low = w & -w;
      w ^= low;
      f(i * 32 + 31 - Math.clz32(low));
    }
  }
}

export class GroupRemoteWriter {
  private readonly t: Int32Array;
  full = false;

  constructor(sab: SharedArrayBuffer) {
    this.t = new Int32Array(sab);
  }

  /** Sets the remote node set of shared group (route id, group); returns false when the table is full. */
  set(route: number, group: string, setId: number): boolean {
    const gh = groupHash(group);
    for (let i = 0; i < GROUP_PROBES; i++) {
      const e = ((route + i) & (GROUP_ENTRIES - 1)) * GROUP_STRIDE;
      const r = this.t[e]!;
      if (r === route && this.t[e + 1] === gh) {
        Atomics.store(this.t, e + 2, setId);
        return true;
      }
      if (r === 0) {
        if (setId === 0) return true;
        // Fill the entry before its route id makes it findable.
        Atomics.store(this.t, e + 1, gh);
        Atomics.store(this.t, e + 2, setId);
        Atomics.store(this.t, e, route);
        return true;
      }
    }
    this.full = true;
    return false;
  }
}

/** Reader: the remote node set id of group (route, group), 0 when none. */
export function groupRemoteSet(t: Int32Array, route: number, group: string): number {
  const gh = groupHash(group);
  for (let i = 0; i < GROUP_PROBES; i++) {
    const e = ((route + i) & (GROUP_ENTRIES - 1)) * GROUP_STRIDE;
    const r = Atomics.load(t, e);
    if (r === 0) return 0;
    if (r === route && Atomics.load(t, e + 1) === gh) return Atomics.load(t, e + 2);
  }
  return 0;
}
