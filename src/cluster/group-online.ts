// Online members of shared groups on other nodes (docs/cluster.md, "Shared subscriptions"):
// each node writes its own count as the value of its `$share/<group>/<filter>` route key
// (u32 big-endian); the replication thread reads it from the routes shard and tells every
// worker, which weights its choice of node by it. A count is a hint: a stale one only skews
// the balance for a moment (the node set itself comes from the trie).

/** The value a node writes for a shared route key: its online members of the group. */
export function encodeOnline(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(Math.max(0, Math.min(n, 0xffffffff)), 0);
  return b;
}

/** A shared route key's value: the count, or -1 (empty: written by a node that counts none). */
export function decodeOnline(v: Buffer): number {
  return v.length === 4 ? v.readUInt32BE(0) : -1;
}

/** [route id, group, slot, online (-1: forget)] */
export type GroupOnlineEntry = [number, string, number, number];

/** A worker's copy: (route id, group) → slot → online members. */
export class GroupOnline {
  private readonly groups = new Map<string, Map<number, number>>();

  apply(entries: readonly GroupOnlineEntry[]): void {
    for (const [route, group, slot, n] of entries) {
      const key = `${route}\u0000${group}`;
      let m = this.groups.get(key);
      if (n < 0) {
        if (m?.delete(slot) && m.size === 0) this.groups.delete(key);
        continue;
      }
      if (!m) this.groups.set(key, (m = new Map()));
      m.set(slot, n);
    }
  }

  /** -1 when unknown. */
  online(route: number, group: string, slot: number): number {
    return this.groups.get(`${route}\u0000${group}`)?.get(slot) ?? -1;
  }
}
