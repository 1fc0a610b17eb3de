// The cluster's members as the nodes shard says: live nodes (with their addresses) and
// members (which survive restarts, so a member without a live entry is "stopped"). Every
// node also gets a small slot number that the shared node sets use (node-sets.ts), stable
// while the node is known; the slot of a node long gone is given back (reclaim).
import type { MemberInfo, NodeInfo } from './keys.js';
import { MAX_NODES } from './node-sets.js';
import type { ShardChange, ShardState } from './shard.js';

/** A peer as the connection workers need it (forward channel). */
export interface Peer {
  slot: number;
  name: string;
  role: 'core' | 'replicant';
  incarnation: string;
  /** host:port of its forward port. */
  forward: string;
  /** host:port of its cluster port. */
  cluster: string;
}

export class Membership {
  readonly live = new Map<string, NodeInfo>();
  readonly members = new Map<string, MemberInfo>();
  private readonly slots = new Map<string, number>();
  private nextSlot = 0;
  /** Slots given back by reclaim(), used again before new ones. */
  private readonly freeSlots: number[] = [];
  /** Since when (ms) a name with a slot is neither live nor a member. */
  private readonly goneSince = new Map<string, number>();
  /** Slots reclaimed over this process's life. */
  slotsReclaimed = 0;
  private readonly listeners: (() => void)[] = [];

  constructor(readonly self: string) {
    this.slotOf(self);
  }

  /** The node's slot, given on first use (-1 past MAX_NODES). */
  slotOf(name: string): number {
    let s = this.slots.get(name);
    if (s === undefined) {
      const free = this.freeSlots.pop();
      if (free !== undefined) s = free;
      else if (this.nextSlot >= MAX_NODES) return -1;
      else s = this.nextSlot++;
      this.slots.set(name, s);
    }
    return s;
  }

  /**
   * Gives back the slots of nodes that have been gone (neither live nor a member) for
   * `quarantineMs` and that nothing uses any more (`inUse`: remote routes or node sets still
   * naming the slot), so that nodes coming and going under new names (autoscaled
   * replicants) do not use up the MAX_NODES slots. The quarantine outlasts the node sets'
   * own (a reader may still hold a freed set naming the slot for 2 s); a stale set read
   * after the slot was given to another node costs one needless forward there, which
   * matches nothing. Returns the names whose slots were given back.
   */
  reclaim(now: number, quarantineMs: number, inUse: (slot: number) => boolean): string[] {
    const out: string[] = [];
    for (const [name, slot] of this.slots) {
      if (name === this.self || this.live.has(name) || this.members.has(name)) {
        this.goneSince.delete(name);
        continue;
      }
      const since = this.goneSince.get(name);
      if (since === undefined) {
        this.goneSince.set(name, now);
        continue;
      }
      if (now - since < quarantineMs || inUse(slot)) continue;
      this.slots.delete(name);
      this.goneSince.delete(name);
      this.freeSlots.push(slot);
      this.slotsReclaimed++;
      out.push(name);
    }
    return out;
  }

  nameOf(slot: number): string | undefined {
    for (const [n, s] of this.slots) if (s === slot) return n;
    return undefined;
  }

  onChange(fn: () => void): void {
    this.listeners.push(fn);
  }

  attach(shard: ShardState): void {
    const load = (): void => {
      this.live.clear();
      this.members.clear();
      for (const [k, v] of shard.data) this.put(k, v);
    };
    load();
    shard.onChange((c: ShardChange) => {
      for (const op of c.ops) {
        if (op.v === null) {
          if (op.k.startsWith('live/')) this.live.delete(op.k.slice(5));
          else if (op.k.startsWith('member/')) this.members.delete(op.k.slice(7));
        } else this.put(op.k, op.v);
      }
      for (const f of this.listeners) f();
    });
  }

  private put(k: string, v: Buffer): void {
    try {
      if (k.startsWith('live/')) {
        const info = JSON.parse(v.toString('utf8')) as NodeInfo;
        this.live.set(k.slice(5), info);
        this.slotOf(info.name);
      } else if (k.startsWith('member/')) this.members.set(k.slice(7), JSON.parse(v.toString('utf8')) as MemberInfo);
    } catch {
      /* a malformed entry is skipped */
    }
  }

  /** Live nodes other than this one. */
  peers(): Peer[] {
    const out: Peer[] = [];
    for (const n of this.live.values()) {
      if (n.name === this.self) continue;
      const slot = this.slotOf(n.name);
      if (slot < 0) continue;
      out.push({ slot, name: n.name, role: n.role, incarnation: n.incarnation, forward: n.forward, cluster: n.cluster });
    }
    return out;
  }

  /** Live cores (for a replicant's choice of core), sorted by name. */
  cores(): NodeInfo[] {
    return [...this.live.values()].filter((n) => n.role === 'core').sort((a, b) => a.name.localeCompare(b.name));
  }
}
