// Applies the routes shard to this node's route trie: for every route key (filter, or
// $share/<group>/<filter>), the set of other nodes that hold it. The local node's own
// routes are in the shard too (they come back from etcd) and are skipped: local routing
// uses the workers' bits.
import type { ShardChange } from './shard.js';
import { decodeOnline } from './group-online.js';

export interface RemoteRouteTarget {
  /** The nodes (slots) other than this one that hold `routeKey` now (empty: none). */
  setRemote(routeKey: string, slots: readonly number[]): void;
  /** Shared route key: node `slot` has `online` members of the group online (-1: unknown, or gone). */
  setOnline?(routeKey: string, slot: number, online: number): void;
}

/**
 * Holders of one route key: most routes are held by one node once, kept as a number
 * (slot × HOLDER_COUNT + count) so that a million routes cost no million Maps; a route held
 * by several nodes (or by one node under two incarnations) gets a Map slot → count.
 */
type Holders = number | Map<number, number>;
const HOLDER_COUNT = 1 << 16;

export class RemoteRoutes {
  /** route key → holders (node slot → incarnations of that node holding it). */
  private readonly holders = new Map<string, Holders>();
  /** One reused array for the common single-holder call of setRemote (the target copies it). */
  private readonly one: number[] = [0];
  /** Routes each node slot holds (a slot with none can be given to another node). */
  private readonly perSlot = new Map<number, number>();
  changes = 0;

  constructor(
    private readonly self: string,
    private readonly slotOf: (node: string) => number,
    private readonly target: RemoteRouteTarget,
  ) {}

  apply(change: ShardChange, before: ReadonlyMap<string, Buffer>): void {
    // A first bootstrap (nothing held yet) touches every route it holds afterwards: no set of
    // touched keys then (a million of them cost as much as the holders map itself). A part of
    // a bootstrap only adds holders: each route is written as it grows (a reader sees a
    // subset of the final holders, never a route that flaps), again without a touched set.
    const fresh = this.holders.size === 0 && change.load !== true;
    const grow = change.load === true;
    const touched = new Set<string>();
    // Keys come grouped by node (<node>\0<inc>\0<route>): look its slot up once per run.
    let lastNode = '';
    let lastSlot = -1;
    for (const op of change.ops) {
      const k = op.k;
      const a = k.indexOf('\u0000');
      const b = a < 0 ? -1 : k.indexOf('\u0000', a + 1);
      if (b < 0) continue;
      if (a !== lastNode.length || !k.startsWith(lastNode)) {
        lastNode = k.slice(0, a);
        lastSlot = lastNode === this.self ? -1 : this.slotOf(lastNode);
      }
      const slot = lastSlot;
      if (slot < 0) continue; // this node's own routes, or a node without a slot
      const had = before.has(k);
      const has = op.v !== null;
      // A shared key's value is its node's count of online members (a put of a held key
      // changes only that).
      if (this.target.setOnline && (k.startsWith('$share/', b + 1) || k.startsWith('$queue/', b + 1)) && (has || had)) {
        this.target.setOnline(k.slice(b + 1), slot, has ? decodeOnline(op.v!) : -1);
      }
      if (had === has) continue;
      const route = k.slice(b + 1);
      this.bump(route, slot, has ? 1 : -1);
      if (grow) this.emit(route);
      else if (!fresh) touched.add(route);
    }
    if (grow) return;
    for (const route of fresh ? this.holders.keys() : touched) this.emit(route);
  }

  /** Writes the current holders of `route` to the target. */
  private emit(route: string): void {
    this.changes++;
    const h = this.holders.get(route);
    if (h === undefined) this.target.setRemote(route, []);
    else if (typeof h === 'number') {
      this.one[0] = Math.floor(h / HOLDER_COUNT);
      this.target.setRemote(route, this.one);
    } else this.target.setRemote(route, [...h.keys()]);
  }

  private slotHolds(slot: number, d: 1 | -1): void {
    const n = (this.perSlot.get(slot) ?? 0) + d;
    if (n > 0) this.perSlot.set(slot, n);
    else this.perSlot.delete(slot);
  }

  private bump(route: string, slot: number, d: 1 | -1): void {
    const h = this.holders.get(route);
    if (h === undefined) {
      if (d > 0) {
        this.holders.set(route, slot * HOLDER_COUNT + 1);
        this.slotHolds(slot, 1);
      }
      return;
    }
    if (typeof h === 'number') {
      const hs = Math.floor(h / HOLDER_COUNT);
      const n = h % HOLDER_COUNT;
      if (hs === slot) {
        if (n + d <= 0) {
          this.holders.delete(route);
          this.slotHolds(slot, -1);
        } else if (n + d < HOLDER_COUNT) this.holders.set(route, h + d);
        else this.holders.set(route, new Map([[slot, n + d]]));
        return;
      }
      if (d < 0) return;
      this.holders.set(route, new Map([[hs, n], [slot, 1]]));
      this.slotHolds(slot, 1);
      return;
    }
    const before = h.get(slot) ?? 0;
    const n = before + d;
    if (n > 0) h.set(slot, n);
    else h.delete(slot);
    if (before === 0 && n > 0) this.slotHolds(slot, 1);
    else if (before > 0 && n <= 0) this.slotHolds(slot, -1);
    if (h.size === 0) this.holders.delete(route);
    else if (h.size === 1) {
      const [[s1, n1]] = [...h] as [[number, number]];
      if (n1 < HOLDER_COUNT) this.holders.set(route, s1 * HOLDER_COUNT + n1);
    }
  }

  /** Forgets every remote route (the node left the cluster). */
  clear(): void {
    for (const route of this.holders.keys()) this.target.setRemote(route, []);
    this.holders.clear();
    this.perSlot.clear();
  }

  /** Whether any route is held by node `slot`. */
  holds(slot: number): boolean {
    return this.perSlot.has(slot);
  }

  /** Remote holders of a route key (for tests and the API). */
  nodesOf(routeKey: string): number[] {
    const h = this.holders.get(routeKey);
    if (h === undefined) return [];
    return typeof h === 'number' ? [Math.floor(h / HOLDER_COUNT)] : [...h.keys()];
  }

  get routes(): number {
    return this.holders.size;
  }
}
