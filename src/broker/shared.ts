// Picks one member of a shared-subscription group per message.
import type { SharedStrategy } from '../config/types.js';
import type { Subscription } from './subscription-index.js';

export class SharedDispatcher {
  private readonly rr = new Map<string, number>();
  private readonly sticky = new Map<string, string>();

  constructor(private readonly strategy: SharedStrategy) {}

  /**
   * `members` holds every subscription of the group; `usable` says whether a member can
   * take a message now (connected, or holding a persistent session). Returns null when
   * none can.
   */
  pick(
    groupKey: string, members: Map<string, Subscription>, topic: string, publisher: string,
    usable: (s: Subscription) => boolean, exclude?: string,
  ): Subscription | null {
    const list: Subscription[] = [];
    for (const s of members.values()) if (s.clientId !== exclude && usable(s)) list.push(s);
    if (list.length === 0) return null;
    if (list.length === 1) return list[0]!;
    switch (this.strategy) {
      case 'random':
        return list[Math.floor(Math.random() * list.length)]!;
      case 'local':
      case 'round_robin': {
        const n = (this.rr.get(groupKey) ?? -1) + 1;
        this.rr.set(groupKey, n % 1_000_000_000);
        return list[n % list.length]!;
      }
      case 'sticky': {
        const cur = this.sticky.get(groupKey);
        const found = cur !== undefined ? list.find((s) => s.clientId === cur) : undefined;
        if (found) return found;
        const chosen = list[Math.floor(Math.random() * list.length)]!;
        this.sticky.set(groupKey, chosen.clientId);
        return chosen;
      }
      case 'hash_clientid':
        return list[hash32(publisher) % list.length]!;
      case 'hash_topic':
        return list[hash32(topic) % list.length]!;
    }
  }

  /**
   * Worker-threaded node, first of two levels: which worker (of those holding members of
   * the group) serves this message; that worker then picks one of its members with pick().
   * `weights` (online members per worker, or null = equal) make the choice per member:
   * round robin over 1 + 2 members on two workers gives each member a third.
   * Round robin and sticky state are per publishing worker. `salt` gives a level its own
   * hash (the node level of a cluster), so that its choice does not decide the next level's.
   */
  pickWorker(
    groupKey: string, workers: readonly number[], weights: readonly number[] | null, topic: string, publisher: string, salt = '',
  ): number {
    let total = 0;
    if (weights) for (const x of weights) total += x;
    else total = workers.length;
    const at = (i: number): number => {
      if (!weights) return workers[i % workers.length]!;
      let k = i % total;
      for (let j = 0; j < workers.length; j++) {
        k -= weights[j]!;
        if (k < 0) return workers[j]!;
      }
      return workers[workers.length - 1]!;
    };
    switch (this.strategy) {
      case 'random':
        return at(Math.floor(Math.random() * total));
      case 'local':
      case 'round_robin': {
        const i = (this.rr.get(groupKey) ?? -1) + 1;
        this.rr.set(groupKey, i % 1_000_000_000);
        return at(i);
      }
      case 'sticky': {
        // NaN when unset: -1 is a candidate (a cluster's own node), not "none".
        const held = this.sticky.get(groupKey);
        const cur = held === undefined ? NaN : Number(held);
        const j = workers.indexOf(cur);
        if (j >= 0 && (!weights || weights[j]! > 0)) return cur;
        const w = at(Math.floor(Math.random() * total));
        this.sticky.set(groupKey, String(w));
        return w;
      }
      case 'hash_clientid':
        return at(hash32(salt + publisher));
      case 'hash_topic':
        return at(hash32(salt + topic));
    }
  }

  forgetGroup(groupKey: string): void {
    this.rr.delete(groupKey);
    this.sticky.delete(groupKey);
  }
}

/** FNV-1a over UTF-16 code units: cheap and stable for the same key. */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}
