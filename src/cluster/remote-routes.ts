// Applies the routes shard to this node's route trie: for every route key (filter, or
// $share/<group>/<filter>), the set of other nodes that hold it. The local node's own
// routes are in the shard too (they come back from etcd) and are skipped: local routing
// uses the workers' bits.
import { splitRouteShardKey } from './keys.js';
import type { ShardChange } from './shard.js';

export interface RemoteRouteTarget {
  /** The nodes (slots) other than this one that hold `routeKey` now (empty: none). */
  setRemote(routeKey: string, slots: readonly number[]): void;
}

export class RemoteRoutes {
  /** route key → node slot → incarnations of that node holding it. */
  private readonly holders = new Map<string, Map<number, number>>();
  changes = 0;

  constructor(
    private readonly self: string,
    private readonly slotOf: (node: string) => number,
    private readonly target: RemoteRouteTarget,
  ) {}

  apply(change: ShardChange, before: ReadonlyMap<string, Buffer>): void {
    const touched = new Set<string>();
    for (const op of change.ops) {
      const p = splitRouteShardKey(op.k);
      if (!p || p.node === this.self) continue;
      const had = before.has(op.k);
      const has = op.v !== null;
      if (had === has) continue;
      const slot = this.slotOf(p.node);
      if (slot < 0) continue;
      let m = this.holders.get(p.route);
      if (!m) this.holders.set(p.route, (m = new Map()));
      const n = (m.get(slot) ?? 0) + (has ? 1 : -1);
      if (n > 0) m.set(slot, n);
      else m.delete(slot);
      if (m.size === 0) this.holders.delete(p.route);
      touched.add(p.route);
    }
    for (const route of touched) {
      this.changes++;
      this.target.setRemote(route, [...(this.holders.get(route)?.keys() ?? [])]);
    }
  }

  /** Forgets every remote route (the node left the cluster). */
  clear(): void {
    for (const route of this.holders.keys()) this.target.setRemote(route, []);
    this.holders.clear();
  }

  /** Remote holders of a route key (for tests and the API). */
  nodesOf(routeKey: string): number[] {
    return [...(this.holders.get(routeKey)?.keys() ?? [])];
  }

  get routes(): number {
    return this.holders.size;
  }
}
