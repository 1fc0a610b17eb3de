// A core builds each shard from etcd: a range read of the shard's prefix at one revision R
// (paginated, every page at R, so the snapshot is consistent), then a watch from R + 1.
// Events of one revision become one ShardChange, in revision order. If etcd compacted the
// history the watch needs, the shard is read again (a new snapshot) and the watch restarts.
//
// A decoder turns etcd keys and values into the shard's keys and values. Most shards map
// one etcd key to one shard key; the routes shard replays route log entries (see
// keys.ts and RoutesDecoder below). Tick keys (a core's heartbeat in every shard) are not
// data: they mark how far the shard is known to be current, and when.
import type { Etcd3, IKeyValue, IWatchResponse, Watcher } from 'etcd3';
import type { Logger } from '../../log/logger.js';
import { decodeOps } from '../kv-codec.js';
import { parseRouteKey, routeShardKey, shardPrefix, TICK } from '../keys.js';
import type { KvOp, ShardName, ShardState } from '../shard.js';
import { num } from './client.js';

const PAGE = 5_000;

export interface EtcdEvent {
  type: 'put' | 'delete';
  /** Key without the shard prefix. */
  key: string;
  value: Buffer;
  rev: number;
}

/** etcd keys and values → shard ops. */
export interface ShardDecoder {
  /** A consistent snapshot (every key of the prefix at one revision) → the shard's entries. */
  snapshot(kvs: EtcdEvent[]): Map<string, Buffer>;
  /** The events of one revision → ops (may be empty). */
  events(evs: EtcdEvent[]): KvOp[];
}

/** One etcd key = one shard key (nodes, sessions, retained, config, auth). */
export class PlainDecoder implements ShardDecoder {
  snapshot(kvs: EtcdEvent[]): Map<string, Buffer> {
    const m = new Map<string, Buffer>();
    for (const kv of kvs) m.set(kv.key, kv.value);
    return m;
  }

  events(evs: EtcdEvent[]): KvOp[] {
    return evs.map((e) => ({ k: e.key, v: e.type === 'put' ? e.value : null }));
  }
}

/**
 * Sessions: the owner JSON plus its epoch, the revision of the claim (the key's mod
 * revision), which a release compares against and a replicant cannot read from etcd.
 */
export class SessionsDecoder implements ShardDecoder {
  private withEpoch(e: EtcdEvent): Buffer {
    try {
      const o = JSON.parse(e.value.toString('utf8')) as Record<string, unknown>;
      return Buffer.from(JSON.stringify({ ...o, epoch: e.rev }));
    } catch {
      return Buffer.from(JSON.stringify({ node: '', inc: '', persistent: false, epoch: e.rev }));
    }
  }

  snapshot(kvs: EtcdEvent[]): Map<string, Buffer> {
    const m = new Map<string, Buffer>();
    for (const kv of kvs) m.set(kv.key, this.withEpoch(kv));
    return m;
  }

  events(evs: EtcdEvent[]): KvOp[] {
    return evs.map((e) => ({ k: e.key, v: e.type === 'put' ? this.withEpoch(e) : null }));
  }
}

/**
 * Routes: each node incarnation's routes are the log entries it wrote (applied in seq
 * order), or its newest complete base plus the entries after it. The incarnation's routes
 * go when its `alive` key goes (lease expiry, or the node leaving): the decoder remembers
 * which routes each incarnation holds so that it can emit their deletes.
 */
export class RoutesDecoder implements ShardDecoder {
  private readonly held = new Map<string, Set<string>>();
  /** Non-empty route values per incarnation (a shared key's online count, group-online.ts). */
  private readonly values = new Map<string, Map<string, Buffer>>();

  private setValue(id: string, route: string, v: Buffer | null): void {
    let m = this.values.get(id);
    if (v === null || v.length === 0) {
      if (m?.delete(route) && m.size === 0) this.values.delete(id);
      return;
    }
    if (!m) this.values.set(id, (m = new Map()));
    m.set(route, Buffer.from(v)); // a copy: not the whole log entry it came in
  }

  snapshot(kvs: EtcdEvent[]): Map<string, Buffer> {
    this.held.clear();
    this.values.clear();
    interface Inc { alive: boolean; logs: Map<number, Buffer>; bases: Map<number, { chunks: Map<number, Buffer>; end: boolean }> }
    const incs = new Map<string, Inc>();
    const inc = (node: string, i: string): Inc => {
      const id = `${node}\u0000${i}`;
      let x = incs.get(id);
      if (!x) incs.set(id, (x = { alive: false, logs: new Map(), bases: new Map() }));
      return x;
    };
    for (const kv of kvs) {
      const p = parseRouteKey(kv.key);
      if (!p) continue;
      const x = inc(p.node, p.inc);
      if (p.kind === 'alive') x.alive = true;
      else if (p.kind === 'log') x.logs.set(p.seq, kv.value);
      else {
        let b = x.bases.get(p.seq);
        if (!b) x.bases.set(p.seq, (b = { chunks: new Map(), end: false }));
        if (p.chunk === 'end') b.end = true;
        else b.chunks.set(p.chunk, kv.value);
      }
    }
    const out = new Map<string, Buffer>();
    const empty = Buffer.alloc(0);
    for (const [id, x] of incs) {
      if (!x.alive) continue; // going away (its lease expired while we read)
      const [node, i] = id.split('\u0000') as [string, string];
      const routes = new Set<string>();
      let from = 0;
      const complete = [...x.bases.entries()].filter(([, b]) => b.end).sort((a, b) => b[0] - a[0])[0];
      if (complete) {
        from = complete[0];
        for (const [, chunk] of [...complete[1].chunks.entries()].sort((a, b) => a[0] - b[0])) {
          for (const op of decodeOps(chunk)) {
            if (op.v === null) continue;
            routes.add(op.k);
            this.setValue(id, op.k, op.v);
          }
        }
      }
      for (const seq of [...x.logs.keys()].filter((s) => s > from).sort((a, b) => a - b)) {
        for (const op of decodeOps(x.logs.get(seq)!)) {
          if (op.v === null) routes.delete(op.k);
          else routes.add(op.k);
          this.setValue(id, op.k, op.v);
        }
      }
      this.held.set(id, routes);
      const vals = this.values.get(id);
      for (const r of routes) out.set(routeShardKey(node, i, r), vals?.get(r) ?? empty);
    }
    return out;
  }

  events(evs: EtcdEvent[]): KvOp[] {
    const ops: KvOp[] = [];
    const empty = Buffer.alloc(0);
    for (const e of evs) {
      const p = parseRouteKey(e.key);
      if (!p) continue;
      const id = `${p.node}\u0000${p.inc}`;
      if (p.kind === 'alive') {
        if (e.type === 'put') {
          if (!this.held.has(id)) this.held.set(id, new Set());
        } else {
          const routes = this.held.get(id);
          this.held.delete(id);
          this.values.delete(id);
          if (routes) for (const r of routes) ops.push({ k: routeShardKey(p.node, p.inc, r), v: null });
        }
        continue;
      }
      // Bases repeat what the log said; deleted entries and bases are compaction.
      if (p.kind !== 'log' || e.type !== 'put') continue;
      let routes = this.held.get(id);
      if (!routes) this.held.set(id, (routes = new Set()));
      for (const op of decodeOps(e.value)) {
        if (op.v === null) {
          this.setValue(id, op.k, null);
          if (routes.delete(op.k)) ops.push({ k: routeShardKey(p.node, p.inc, op.k), v: null });
        } else if (!routes.has(op.k)) {
          routes.add(op.k);
          this.setValue(id, op.k, op.v);
          ops.push({ k: routeShardKey(p.node, p.inc, op.k), v: op.v.length === 0 ? empty : op.v });
        } else if (!op.v.equals(this.values.get(id)?.get(op.k) ?? empty)) {
          // A held key's new value (a shared group's online count).
          this.setValue(id, op.k, op.v);
          ops.push({ k: routeShardKey(p.node, p.inc, op.k), v: op.v });
        }
      }
    }
    return ops;
  }

  /** Routes an incarnation holds (as the log says), for its writer's compaction. */
  routesOf(node: string, inc: string): ReadonlySet<string> | undefined {
    return this.held.get(`${node}\u0000${inc}`);
  }

  /** The value of one route of an incarnation (empty unless it carries one, as a shared key's count). */
  valueOf(node: string, inc: string, route: string): Buffer | undefined {
    return this.values.get(`${node}\u0000${inc}`)?.get(route);
  }
}

export interface SourceOptions {
  client: Etcd3;
  cluster: string;
  shard: ShardState;
  decoder: ShardDecoder;
  log: Logger;
  /** A tick of `node` at revision `rev`, written at `ts`. */
  onTick?: (node: string, rev: number, ts: number) => void;
}

function toEvent(kv: IKeyValue, type: 'put' | 'delete', prefixLen: number): EtcdEvent {
  return { type, key: kv.key.toString('utf8', prefixLen), value: kv.value, rev: num(kv.mod_revision) };
}

/** Bootstraps one shard from etcd and keeps it current from the watch. */
export class ShardSource {
  private watcher: Watcher | null = null;
  private stopped = false;
  private readonly prefix: string;
  private readonly prefixLen: number;
  /** Events of the revision being gathered (a watch response may end mid-revision? no: etcd sends whole revisions). */
  constructor(private readonly o: SourceOptions) {
    this.prefix = shardPrefix(o.cluster, o.shard.name);
    this.prefixLen = Buffer.byteLength(this.prefix);
  }

  get name(): ShardName {
    return this.o.shard.name;
  }

  /** Reads the shard (snapshot at one revision) and starts the watch after it. */
  async start(): Promise<number> {
    const rev = await this.bootstrap();
    await this.watchFrom(rev + 1);
    return rev;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const w = this.watcher;
    this.watcher = null;
    await w?.cancel().catch(() => undefined);
  }

  private async bootstrap(): Promise<number> {
    const { client, shard, decoder, log } = this.o;
    const t0 = Date.now();
    const kvs: EtcdEvent[] = [];
    const end = this.prefix.slice(0, -1) + String.fromCharCode(this.prefix.charCodeAt(this.prefix.length - 1) + 1);
    let key: Buffer = Buffer.from(this.prefix);
    let rev = 0;
    for (;;) {
      const res = await client.kv.range({ key, range_end: Buffer.from(end), limit: PAGE, ...(rev > 0 ? { revision: rev } : {}) });
      if (rev === 0) rev = num(res.header.revision);
      for (const kv of res.kvs) {
        const e = toEvent(kv, 'put', this.prefixLen);
        if (e.key.startsWith(TICK)) continue;
        kvs.push(e);
      }
      if (!res.more || res.kvs.length === 0) break;
      key = Buffer.concat([res.kvs[res.kvs.length - 1]!.key, Buffer.from([0])]);
    }
    shard.reset(decoder.snapshot(kvs), rev);
    log.info('cluster.shard_loaded', { shard: shard.name, revision: rev, keys: shard.data.size, etcd_keys: kvs.length, ms: Date.now() - t0 });
    return rev;
  }

  private async watchFrom(rev: number): Promise<void> {
    const { client, log } = this.o;
    const w = await client.watch().prefix(this.prefix).startRevision(String(rev)).create();
    if (this.stopped) {
      await w.cancel().catch(() => undefined);
      return;
    }
    this.watcher = w;
    w.on('data', (res: IWatchResponse) => this.onData(res));
    w.on('disconnected', (e: Error) => log.warn('cluster.watch_disconnected', { shard: this.name, error: e.message }));
    w.on('connected', () => log.debug('cluster.watch_connected', { shard: this.name }));
    w.on('error', (e: Error) => {
      // Canceled by etcd, usually because the revision we resume from was compacted.
      log.warn('cluster.watch_failed', { shard: this.name, error: e.message, detail: 'reading the shard again' });
      if (this.watcher === w) this.watcher = null;
      void this.restart();
    });
  }

  private async restart(): Promise<void> {
    let delay = 200;
    while (!this.stopped) {
      try {
        const rev = await this.bootstrap();
        await this.watchFrom(rev + 1);
        return;
      } catch (e) {
        this.o.log.warn('cluster.shard_reload_failed', { shard: this.name, error: (e as Error).message });
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 5_000);
      }
    }
  }

  private onData(res: IWatchResponse): void {
    const { shard, decoder } = this.o;
    // etcd sends the events of a revision together and revisions in order.
    let group: EtcdEvent[] = [];
    let groupRev = 0;
    const flush = (): void => {
      if (group.length === 0) return;
      const ops = decoder.events(group);
      if (ops.length > 0) shard.apply({ rev: groupRev, ts: Date.now(), ops });
      else shard.caughtUp(groupRev);
      group = [];
    };
    for (const ev of res.events) {
      const e = toEvent(ev.kv, ev.type === 'Put' ? 'put' : 'delete', this.prefixLen);
      if (e.rev <= shard.rev) continue; // replayed after a reconnect
      if (e.rev !== groupRev) {
        flush();
        groupRev = e.rev;
      }
      if (e.key.startsWith(TICK)) {
        if (e.type === 'put') {
          let ts = 0;
          try {
            ts = (JSON.parse(e.value.toString('utf8')) as { ts?: number }).ts ?? 0;
          } catch {
            /* a malformed tick is only a heartbeat */
          }
          this.o.onTick?.(e.key.slice(TICK.length), e.rev, ts);
        }
        continue;
      }
      group.push(e);
    }
    flush();
    // A tick at the end of a response: every event of this shard up to it was applied.
    const last = res.events[res.events.length - 1];
    if (last && num(last.kv.mod_revision) > shard.rev) shard.caughtUp(num(last.kv.mod_revision));
  }
}
