// Filter → subscribers, as a trie over topic levels. Wildcard children sit in their own
// fields beside the literal map (as in nats' sublist), so a match walks at most three
// branches per level. Single-threaded here; the worker-threaded node replaces it with the
// shared-memory trie (src/trie) behind the same operations.
import type { QoS } from '../protocol/codec.js';

export interface Subscription {
  readonly clientId: string;
  /** The filter as the client sent it, e.g. `$share/g/a/+` (the session's key). */
  readonly key: string;
  /** The topic filter proper, without any `$share/<group>/` prefix. */
  readonly filter: string;
  /** Shared-subscription group, or null. `$queue/f` is group `$queue`. */
  readonly group: string | null;
  qos: QoS;
  noLocal: boolean;
  retainAsPublished: boolean;
  retainHandling: 0 | 1 | 2;
  subscriptionId: number | undefined;
}

class TrieNode {
  readonly literal = new Map<string, TrieNode>();
  plus: TrieNode | null = null;
  hash: TrieNode | null = null;
  /** Non-shared subscriptions ending here, by client id. */
  subs: Map<string, Subscription> | null = null;
  /** Shared groups ending here: group → client id → subscription. */
  groups: Map<string, Map<string, Subscription>> | null = null;

  isEmpty(): boolean {
    return this.literal.size === 0 && this.plus === null && this.hash === null &&
      (this.subs === null || this.subs.size === 0) && (this.groups === null || this.groups.size === 0);
  }
}

export interface SharedMatch {
  readonly group: string;
  readonly filter: string;
  readonly members: Map<string, Subscription>;
}

export class SubscriptionIndex {
  private readonly root = new TrieNode();
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** Adds or replaces; returns true when the (client, key) pair is new. */
  add(sub: Subscription): boolean {
    let node = this.root;
    for (const level of sub.filter.split('/')) {
      if (level === '+') node = node.plus ??= new TrieNode();
      else if (level === '#') node = node.hash ??= new TrieNode();
      else {
        let next = node.literal.get(level);
        if (next === undefined) node.literal.set(level, (next = new TrieNode()));
        node = next;
      }
    }
    let bucket: Map<string, Subscription>;
    if (sub.group === null) bucket = node.subs ??= new Map();
    else {
      node.groups ??= new Map();
      let g = node.groups.get(sub.group);
      if (g === undefined) node.groups.set(sub.group, (g = new Map()));
      bucket = g;
    }
    const isNew = !bucket.has(sub.clientId);
    bucket.set(sub.clientId, sub);
    if (isNew) this.count++;
    return isNew;
  }

  remove(clientId: string, filter: string, group: string | null): boolean {
    const path: { node: TrieNode; level: string }[] = [];
    let node: TrieNode | null | undefined = this.root;
    for (const level of filter.split('/')) {
      path.push({ node, level });
      node = level === '+' ? node.plus : level === '#' ? node.hash : node.literal.get(level);
      if (!node) return false;
    }
    let removed = false;
    if (group === null) removed = node.subs?.delete(clientId) ?? false;
    else {
      const g = node.groups?.get(group);
      if (g) {
        removed = g.delete(clientId);
        if (g.size === 0) node.groups!.delete(group);
      }
    }
    if (!removed) return false;
    this.count--;
    // Prune empty nodes bottom-up so memory follows the live filter set.
    for (let i = path.length - 1; i >= 0 && node.isEmpty(); i--) {
      const { node: parent, level } = path[i]!;
      if (level === '+') parent.plus = null;
      else if (level === '#') parent.hash = null;
      else parent.literal.delete(level);
      node = parent;
    }
    return true;
  }

  /** Members of one shared group on one filter, or undefined. */
  groupMembers(filter: string, group: string): Map<string, Subscription> | undefined {
    let node: TrieNode | null | undefined = this.root;
    for (const level of filter.split('/')) {
      node = level === '+' ? node.plus : level === '#' ? node.hash : node.literal.get(level);
      if (!node) return undefined;
    }
    return node.groups?.get(group);
  }

  /**
   * Pushes every non-shared subscription (to `subs`, when given) and every shared group (to
   * `groups`) whose filter matches `topic`. A topic starting with `$` is not matched by a
   * filter whose first level is a wildcard [MQTT-4.7.2-1].
   */
  collect(topic: string, subs: Subscription[] | null, groups: SharedMatch[]): void {
    const levels = topic.split('/');
    this.gather(this.root, levels, 0, topic.charCodeAt(0) === 36 /* $ */, subs, groups);
  }

  private gather(node: TrieNode, levels: string[], i: number, dollar: boolean, subs: Subscription[] | null, groups: SharedMatch[]): void {
    const wild = !(dollar && i === 0);
    if (wild && node.hash) this.put(node.hash, subs, groups);
    if (i === levels.length) {
      this.put(node, subs, groups);
      return;
    }
    const next = node.literal.get(levels[i]!);
    if (next) this.gather(next, levels, i + 1, dollar, subs, groups);
    if (wild && node.plus) this.gather(node.plus, levels, i + 1, dollar, subs, groups);
  }

  private put(node: TrieNode, subs: Subscription[] | null, groups: SharedMatch[]): void {
    if (subs !== null && node.subs) for (const s of node.subs.values()) subs.push(s);
    if (node.groups) {
      for (const [group, members] of node.groups) {
        const first = members.values().next().value;
        if (first) groups.push({ group, filter: first.filter, members });
      }
    }
  }
}
