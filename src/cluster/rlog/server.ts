// The core side of the RLOG (docs/cluster.md): streams every shard to the replicants that
// subscribe, and carries their writes to etcd. Each replicant gets, per shard, the changes
// after the revision it already has when this core's log still reaches back there, else a
// snapshot of the shard (in SNAP_BATCH pieces, with backpressure) and then the changes;
// then every change as it is applied here, each encoded once for all replicants.
//
// A replicant's lease is kept alive by the core it streams from; after a failover the next
// core takes the same lease over (or grants a new one when it expired).
import type { Logger } from '../../log/logger.js';
import type { EtcdStore } from '../etcd/store.js';
import { COMPACT_MIN_ENTRIES, type RouteLog } from '../etcd/writers.js';
import { encodeOps, readOps } from '../kv-codec.js';
import type { NodeInfo, SessionOwner } from '../keys.js';
import { SHARDS, shardId, shardName, type KvOp, type ShardChange, type ShardName, type ShardState } from '../shard.js';
import {
  F_CHANGE, F_PROGRESS, F_SNAP_BEGIN, F_SNAP_DATA, F_SNAP_END, json, parseJson,
  R_CLAIM, R_FORCE_LEAVE, R_KV, R_LEAVE, R_RELEASE, R_ROUTES, R_STOPPING, R_SUBSCRIBE, SNAP_BATCH, f64, type Link,
} from './protocol.js';

const EMPTY = Buffer.alloc(0);

interface Subscriber {
  link: Link;
  node: NodeInfo;
  lease: string;
  /** Per shard: still sending its snapshot (changes wait here meanwhile). */
  held: Map<ShardName, Buffer[]>;
  active: Set<ShardName>;
}

export interface RlogServiceOptions {
  store: EtcdStore;
  shards: Record<ShardName, ShardState>;
  self: string;
  leaseTtl: number;
  log: Logger;
}

export class RlogService {
  private readonly subs = new Map<Link, Subscriber>();
  /** Replicants by name: the link they stream on now. */
  readonly replicants = new Map<string, Subscriber>();
  private readonly progressTimer: NodeJS.Timeout;

  constructor(private readonly o: RlogServiceOptions) {
    for (const name of SHARDS) {
      const shard = o.shards[name];
      shard.onChange((c) => this.broadcast(name, c));
    }
    this.progressTimer = setInterval(() => {
      for (const name of SHARDS) this.progress(name);
    }, 1000);
    this.progressTimer.unref();
  }

  /** Number of replicants streaming from this core. */
  get count(): number {
    return this.replicants.size;
  }

  /** Handles a request on a cluster link; undefined when it is not an RLOG request. */
  handle(link: Link, kind: number, body: Buffer): Promise<Buffer> | undefined {
    switch (kind) {
      case R_SUBSCRIBE: return this.subscribe(link, body);
      case R_ROUTES: return this.routes(link, body);
      case R_CLAIM: return this.claim(link, body);
      case R_RELEASE: return this.release(body);
      case R_KV: return this.kv(link, body);
      case R_LEAVE: return this.leave(link);
      case R_STOPPING: return this.stopping(link);
      case R_FORCE_LEAVE: return this.forceLeave(body);
      default: return undefined;
    }
  }

  linkClosed(link: Link): void {
    const s = this.subs.get(link);
    if (!s) return;
    this.subs.delete(link);
    if (this.replicants.get(s.node.name) === s) {
      this.replicants.delete(s.node.name);
      // Not revoked: the replicant may be on its way to another core. If none takes the
      // lease over within its TTL, the replicant's entries go (it is stopped).
      this.o.store.leases.forget(s.lease);
      this.o.log.info('cluster.replicant_left', { replicant: s.node.name });
    }
  }

  private subscriber(link: Link): Subscriber {
    const s = this.subs.get(link);
    if (!s) throw Object.assign(new Error('not subscribed'), { code: 'CLUSTER_NOT_SUBSCRIBED' });
    return s;
  }

  private async subscribe(link: Link, body: Buffer): Promise<Buffer> {
    const { store, shards, log, leaseTtl } = this.o;
    const req = parseJson<{ node: NodeInfo; lease: string | null; shards: Partial<Record<ShardName, number | null>> }>(body);
    let lease = req.lease;
    if (lease !== null && (await store.leases.timeToLive(lease).catch(() => -1)) <= 0) lease = null;
    const reused = lease !== null;
    lease ??= await store.leases.grant(leaseTtl);
    const node: NodeInfo = { ...req.node, role: 'replicant', core: this.o.self };
    const old = this.replicants.get(node.name);
    if (old && old.link !== link) old.link.close('replicant connected again');
    const s: Subscriber = { link, node, lease, held: new Map(), active: new Set() };
    this.subs.set(link, s);
    this.replicants.set(node.name, s);
    const l = lease;
    store.leases.keep(l, leaseTtl, () => {
      log.warn('cluster.replicant_lease_lost', { replicant: node.name, lease: l });
      // Its entries are gone from etcd: reconnecting gets it a new lease, and it writes them again.
      if (this.replicants.get(node.name) === s) link.close('replicant lease lost');
    });
    await store.putNode(node, lease);
    log.info('cluster.replicant_joined', { replicant: node.name, lease, lease_reused: reused });
    // Streams start after the answer (the replicant must know its lease first).
    setImmediate(() => {
      for (const name of SHARDS) void this.startShard(s, name, req.shards[name] ?? null);
    });
    return json({ lease, core: this.o.self });
  }

  private async startShard(s: Subscriber, name: ShardName, from: number | null): Promise<void> {
    const shard = this.o.shards[name];
    const id = shardId(name);
    const since = from === null ? null : shard.changesSince(from);
    if (since !== null) {
      for (const c of since) s.link.send(F_CHANGE, encodeChange(id, c));
      s.active.add(name);
      this.progressTo(s, name);
      return;
    }
    // Snapshot: the entries as they are at rev, then the changes held meanwhile. The map is
    // read as it is sent (no copy of a million entries first). A change applied while it is
    // being read may show in the snapshot already; the replicant then applies that change
    // again, which is idempotent per key (a set of the same value, a delete of a key that is
    // not there), so it ends at the same state.
    const rev = shard.rev;
    const total = shard.data.size;
    s.held.set(name, []);
    s.active.add(name);
    const head = Buffer.allocUnsafe(13);
    head[0] = id;
    head.writeDoubleBE(rev, 1);
    head.writeUInt32BE(total, 9);
    s.link.send(F_SNAP_BEGIN, head);
    let sent = 0;
    const it = shard.data.entries();
    for (;;) {
      if (!this.subs.has(s.link)) return;
      const ops: KvOp[] = [];
      for (let r = it.next(); !r.done; r = it.next()) {
        ops.push({ k: r.value[0], v: r.value[1] });
        if (ops.length === SNAP_BATCH) break;
      }
      if (ops.length === 0) break;
      sent += ops.length;
      if (!s.link.send(F_SNAP_DATA, [Buffer.from([id]), encodeOps(ops)])) await s.link.drained();
    }
    const end = Buffer.allocUnsafe(9);
    end[0] = id;
    end.writeDoubleBE(rev, 1);
    s.link.send(F_SNAP_END, end);
    for (const frame of s.held.get(name) ?? []) s.link.send(F_CHANGE, frame);
    s.held.delete(name);
    this.o.log.debug('cluster.snapshot_sent', { replicant: s.node.name, shard: name, revision: rev, keys: sent });
  }

  private broadcast(name: ShardName, c: ShardChange): void {
    if (this.subs.size === 0) return;
    const frame = encodeChange(shardId(name), c);
    for (const s of this.subs.values()) {
      if (!s.active.has(name)) continue;
      const held = s.held.get(name);
      if (held) held.push(frame);
      else s.link.send(F_CHANGE, frame);
    }
  }

  private progress(name: ShardName): void {
    for (const s of this.subs.values()) if (s.active.has(name) && !s.held.has(name)) this.progressTo(s, name);
  }

  private progressTo(s: Subscriber, name: ShardName): void {
    const shard = this.o.shards[name];
    const b = Buffer.allocUnsafe(17);
    b[0] = shardId(name);
    b.writeDoubleBE(shard.rev, 1);
    b.writeDoubleBE(shard.sourceRev, 9);
    s.link.send(F_PROGRESS, b);
  }

  /** A shard just got a tick: tell every replicant how far it is. */
  ticked(name: ShardName): void {
    this.progress(name);
  }

  private async routes(link: Link, body: Buffer): Promise<Buffer> {
    const s = this.subscriber(link);
    const seq = body.readDoubleBE(0);
    const incLen = body.readUInt16BE(8);
    const inc = body.toString('utf8', 10, 10 + incLen);
    const ops = body.subarray(10 + incLen);
    const log = this.o.store.replicantRouteLog(s.node.name, inc, s.lease);
    const rev = await log.append(seq, Buffer.from(ops));
    this.maybeCompact(log, seq, rev);
    return f64(rev);
  }

  /**
   * Compacts a replicant's route log as a core compacts its own (agent.maybeCompact), from
   * what the routes shard says the incarnation holds. That view comes from the watch, so
   * the base waits until the shard has applied entry `seq` (revision `rev`); it may hold
   * later entries too, which readers then replay on top of it: each entry sets the presence
   * of its keys, so replaying one the base already holds changes nothing.
   */
  private maybeCompact(log: RouteLog, seq: number, rev: number): void {
    const { store, shards } = this.o;
    const held = store.routesDecoder.routesOf(log.node, log.inc)?.size ?? 0;
    if (log.compacting || log.entriesSinceBase < Math.max(COMPACT_MIN_ENTRIES, held / 2048)) return;
    log.compacting = true;
    const giveUp = Date.now() + 10_000;
    const run = (): void => {
      if (shards.routes.rev < rev) {
        if (Date.now() < giveUp) setTimeout(run, 20).unref();
        else log.compacting = false; // the next entry tries again
        return;
      }
      const routes = store.routesDecoder.routesOf(log.node, log.inc);
      if (routes === undefined) {
        log.compacting = false;
        return;
      }
      const list = [...routes];
      log.compact(seq, list, (r) => store.routesDecoder.valueOf(log.node, log.inc, r) ?? EMPTY).then(
        () => this.o.log.debug('cluster.replicant_routes_compacted', { replicant: log.node, seq, routes: list.length }),
        (e: Error) => this.o.log.warn('cluster.replicant_compaction_failed', { replicant: log.node, seq, error: e.message }),
      ).finally(() => {
        log.compacting = false;
      });
    };
    run();
  }

  private async claim(link: Link, body: Buffer): Promise<Buffer> {
    const s = this.subscriber(link);
    const req = parseJson<{ id: string; owner: SessionOwner; keep?: boolean }>(body);
    const r = await this.o.store.sessions.claim(req.id, req.owner, req.owner.persistent ? undefined : s.lease, req.keep === true);
    return json(r);
  }

  private async release(body: Buffer): Promise<Buffer> {
    const req = parseJson<{ id: string; epoch: number }>(body);
    return json({ released: await this.o.store.sessions.release(req.id, req.epoch) });
  }

  private async kv(link: Link, body: Buffer): Promise<Buffer> {
    this.subscriber(link);
    const name = shardName(body[0]!);
    const writer = name === 'retained' ? this.o.store.retained : name === 'config' ? this.o.store.config : name === 'auth' ? this.o.store.auth : null;
    if (writer === null) throw new Error(`shard ${String(name)} takes no writes from replicants`);
    const { ops } = readOps(body, 1);
    const revs = await Promise.all(ops.map((op) => writer.set(op.k, op.v)));
    return f64(Math.max(0, ...revs));
  }

  /**
   * The replicant on `link` is stopping (it stays a member, "stopped"): its lease goes now,
   * and with it its live entry, routes and non-persistent sessions, in one etcd call, instead
   * of a route removal per subscription and lease_ttl_s of routing to a node that is gone.
   */
  private async stopping(link: Link): Promise<Buffer> {
    const s = this.subscriber(link);
    this.subs.delete(link);
    if (this.replicants.get(s.node.name) === s) this.replicants.delete(s.node.name);
    await this.o.store.leases.revoke(s.lease);
    this.o.log.info('cluster.replicant_stopped', { replicant: s.node.name });
    return json({ ok: true });
  }

  /** The replicant on `link` leaves the cluster. */
  private async leave(link: Link): Promise<Buffer> {
    const s = this.subscriber(link);
    this.subs.delete(link);
    this.replicants.delete(s.node.name);
    await this.o.store.forceLeave(s.node.name, s.lease);
    this.o.log.warn('cluster.replicant_left_cluster', { replicant: s.node.name });
    return json({ ok: true });
  }

  private async forceLeave(body: Buffer): Promise<Buffer> {
    const { node } = parseJson<{ node: string }>(body);
    await this.o.store.forceLeave(node);
    return json({ ok: true });
  }

  stop(reason = 'core stopping'): void {
    clearInterval(this.progressTimer);
    for (const s of [...this.subs.values()]) s.link.close(reason);
  }
}

export function encodeChange(id: number, c: ShardChange): Buffer {
  const ops = encodeOps(c.ops);
  const b = Buffer.allocUnsafe(17 + ops.length);
  b[0] = id;
  b.writeDoubleBE(c.rev, 1);
  b.writeDoubleBE(c.ts, 9);
  ops.copy(b, 17);
  return b;
}
