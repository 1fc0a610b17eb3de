// The cluster's members as the nodes shard says: live nodes (with their addresses) and
// members (which survive restarts, so a member without a live entry is "stopped"). Every
// node also gets a small slot number, stable while this process runs, that the shared
// node sets use (node-sets.ts).
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
  private readonly listeners: (() => void)[] = [];

  constructor(readonly self: string) {
    this.slotOf(self);
  }

  /** The node's slot, given on first use (-1 past MAX_NODES). */
  slotOf(name: string): number {
    let s = this.slots.get(name);
    if (s === undefined) {
      if (this.nextSlot >= MAX_NODES) return -1;
      s = this.nextSlot++;
      this.slots.set(name, s);
    }
    return s;
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
