// A core's view of etcd (docs/cluster.md): its lease and registration, one source per shard
// (snapshot + watch), the writers, the replicants' leases, and whether etcd answers.
//
// Start-up fails (the node exits 1 with a clear message) when etcd does not answer at all;
// once running, a lost etcd only means that writes queue and are retried, that routing
// goes on from memory, and that /status says so. If the node's lease expired meanwhile,
// the store registers again under a new lease and incarnation and tells the owner
// (onReregistered), which writes its routes again.
import { randomBytes } from 'node:crypto';
import type { Etcd3 } from 'etcd3';
import type { Logger } from '../../log/logger.js';
import {
  clusterPrefix, incPrefix, liveKey, memberKey, routeAliveKey, shardPrefix, tickKey,
  type MemberInfo, type NodeInfo, type SessionOwner,
} from '../keys.js';
import { SHARDS, type ShardName, type ShardState } from '../shard.js';
import { CALL_TIMEOUT_MS, etcdClient, num } from './client.js';
import { LeaseKeeper } from './leases.js';
import { PlainDecoder, RoutesDecoder, SessionsDecoder, ShardSource, type ShardDecoder } from './source.js';
import { KvWriter, RouteLog, SessionRegistry, type WriterHealth } from './writers.js';

export type EtcdState = 'connecting' | 'up' | 'unreachable';

export interface EtcdStoreOptions {
  endpoints: readonly string[];
  cluster: string;
  /** This core's registration (its incarnation may change after a lost lease). */
  self: NodeInfo;
  leaseTtl: number;
  batchMs: number;
  shards: Record<ShardName, ShardState>;
  log: Logger;
  /** The node's lease expired while etcd was away and is replaced (new incarnation). */
  onReregistered?: (inc: string) => void;
  /** A core's tick seen in a shard (for lag). */
  onTick?: (shard: ShardName, node: string, rev: number, ts: number) => void;
}

export function newIncarnation(): string {
  return `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
}

export class EtcdStore {
  readonly client: Etcd3;
  readonly leases: LeaseKeeper;
  leaseId = '';
  state: EtcdState = 'connecting';
  /** Since when etcd has not answered (ms), 0 while it does. */
  unreachableSince = 0;
  lastError: string | null = null;
  private readonly sources: ShardSource[] = [];
  readonly routesDecoder = new RoutesDecoder();
  ownRoutes!: RouteLog;
  readonly retained: KvWriter;
  readonly config: KvWriter;
  readonly auth: KvWriter;
  readonly sessions: SessionRegistry;
  /** Route logs this core writes for its replicants: node name → log. */
  readonly replicantRoutes = new Map<string, RouteLog>();
  private tickTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  readonly health: WriterHealth;
  private reregistering = false;

  constructor(private readonly o: EtcdStoreOptions) {
    this.client = etcdClient(o.endpoints);
    this.leases = new LeaseKeeper(this.client, o.log);
    this.health = {
      onUnavailable: (e) => this.markDown(e),
      onAvailable: () => this.markUp(),
    };
    const p = (s: ShardName) => shardPrefix(o.cluster, s);
    this.retained = new KvWriter(this.client, p('retained'), o.batchMs, o.log, this.health, 'topic');
    this.config = new KvWriter(this.client, p('config'), o.batchMs, o.log, this.health);
    this.auth = new KvWriter(this.client, p('auth'), o.batchMs, o.log, this.health);
    const sessions = o.shards.sessions;
    this.sessions = new SessionRegistry(this.client, p('sessions'), o.log, this.health, (id) => {
      const v = sessions.data.get(id);
      if (!v) return null;
      const s = JSON.parse(v.toString('utf8')) as SessionOwner & { epoch: number };
      return [s.epoch, { node: s.node, inc: s.inc, persistent: s.persistent }];
    });
    sessions.onChange((c) => {
      for (const op of c.ops) this.sessions.observe(op.k, c.rev);
    });
  }

  get self(): NodeInfo {
    return this.o.self;
  }

  private markDown(e: unknown): void {
    this.lastError = (e as Error).message;
    if (this.state !== 'unreachable') {
      this.state = 'unreachable';
      this.unreachableSince = Date.now();
      this.o.log.error('cluster.etcd_unreachable', { error: this.lastError, detail: 'routing goes on from memory; writes queue and are retried' });
    }
  }

  private markUp(): void {
    if (this.state === 'up') return;
    const was = this.state;
    this.state = 'up';
    if (was === 'unreachable') this.o.log.warn('cluster.etcd_reachable', { down_ms: Date.now() - this.unreachableSince });
    this.unreachableSince = 0;
  }

  /**
   * Registers the node and loads every shard. Rejects (with code CLUSTER_ETCD_UNREACHABLE)
   * when etcd does not answer within `timeoutMs`.
   */
  async start(timeoutMs = 10_000): Promise<void> {
    const { log, cluster } = this.o;
    const t0 = Date.now();
    let lastErr: unknown = null;
    while (Date.now() - t0 < timeoutMs) {
      try {
        this.leaseId = await this.leases.grant(this.o.leaseTtl);
        break;
      } catch (e) {
        lastErr = e;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
    if (this.leaseId === '') {
      throw Object.assign(new Error(`etcd at ${this.o.endpoints.join(', ')} did not answer within ${timeoutMs} ms: ${(lastErr as Error | null)?.message ?? 'no answer'}`), { code: 'CLUSTER_ETCD_UNREACHABLE' });
    }
    this.markUp();
    await this.register();
    const decoders: Record<ShardName, ShardDecoder> = {
      nodes: new PlainDecoder(), routes: this.routesDecoder, sessions: new SessionsDecoder(),
      retained: new PlainDecoder(), config: new PlainDecoder(), auth: new PlainDecoder(),
    };
    for (const name of SHARDS) {
      const src = new ShardSource({
        client: this.client, cluster, shard: this.o.shards[name], decoder: decoders[name], log,
        onTick: (node, rev, ts) => this.o.onTick?.(name, node, rev, ts),
      });
      this.sources.push(src);
      await src.start();
    }
    this.tickTimer = setInterval(() => void this.tick(), 1000);
    this.tickTimer.unref();
    log.info('cluster.etcd_ready', { endpoints: this.o.endpoints, lease: this.leaseId, ms: Date.now() - t0 });
  }

  /** Puts this node's keys (live, member, routes alive) and removes its older incarnations' routes. */
  private async register(): Promise<void> {
    const { cluster, self } = this.o;
    this.leases.keep(this.leaseId, this.o.leaseTtl, () => void this.reregister());
    await this.putNode(self, this.leaseId);
    // Routes of this node's earlier runs have no subscriber left: remove them now rather
    // than when their lease expires.
    const pre = `${clusterPrefix(cluster)}routes/${self.name}/`;
    const old = await this.client.kv.range({ key: Buffer.from(pre), range_end: prefixEnd(pre), keys_only: true });
    const incs = new Set<string>();
    for (const kv of old.kvs) {
      const inc = kv.key.toString('utf8', Buffer.byteLength(pre)).split('/')[0];
      if (inc && inc !== self.incarnation) incs.add(inc);
    }
    for (const inc of incs) {
      const ip = incPrefix(cluster, self.name, inc);
      // The alive key first, so that readers drop the incarnation's routes in one go.
      await this.client.kv.deleteRange({ key: Buffer.from(routeAliveKey(cluster, self.name, inc)) });
      await this.client.kv.deleteRange({ key: Buffer.from(ip), range_end: prefixEnd(ip) });
    }
    this.ownRoutes?.stop();
    this.ownRoutes = new RouteLog(this.client, cluster, self.name, self.incarnation, this.leaseId, this.o.log, this.health);
  }

  /** live + member + routes alive for `info` (itself, or a replicant it serves) on `lease`. */
  async putNode(info: NodeInfo, lease: string): Promise<void> {
    const { cluster } = this.o;
    const member: MemberInfo = { name: info.name, role: info.role, joined_at: Date.now() };
    const mk = Buffer.from(memberKey(cluster, info.name));
    // The member key keeps its first joined_at.
    await this.client.kv.txn({
      compare: [{ key: mk, target: 'Create', result: 'Equal', create_revision: 0 }],
      success: [{ request_put: { key: mk, value: Buffer.from(JSON.stringify(member)) } }],
      failure: [],
    });
    await this.client.kv.txn({
      compare: [],
      success: [
        { request_put: { key: Buffer.from(liveKey(cluster, info.name)), value: Buffer.from(JSON.stringify(info)), lease } },
        { request_put: { key: Buffer.from(routeAliveKey(cluster, info.name, info.incarnation)), value: Buffer.alloc(0), lease } },
      ],
      failure: [],
    });
  }

  /** The node's lease expired (etcd was away longer than its TTL): register again, new incarnation. */
  private async reregister(): Promise<void> {
    if (this.stopped || this.reregistering) return;
    this.reregistering = true;
    const { log, self } = this.o;
    let delay = 250;
    try {
      while (!this.stopped) {
        try {
          this.leaseId = await this.leases.grant(this.o.leaseTtl);
          self.incarnation = newIncarnation();
          await this.register();
          this.markUp();
          log.warn('cluster.reregistered', { lease: this.leaseId, incarnation: self.incarnation });
          this.o.onReregistered?.(self.incarnation);
          return;
        } catch (e) {
          this.markDown(e);
          await new Promise((r) => setTimeout(r, delay));
          delay = Math.min(2 * delay, 2000);
        }
      }
    } finally {
      this.reregistering = false;
    }
  }

  /** A heartbeat in every shard: readers learn how far (and how recently) they are current. */
  private async tick(): Promise<void> {
    const { cluster, self } = this.o;
    const value = Buffer.from(JSON.stringify({ ts: Date.now() }));
    try {
      await this.client.kv.txn({
        compare: [],
        success: SHARDS.map((s) => ({ request_put: { key: Buffer.from(tickKey(cluster, s, self.name)), value, lease: this.leaseId } })),
        failure: [],
      }, { deadline: Date.now() + CALL_TIMEOUT_MS });
      this.markUp();
    } catch (e) {
      this.markDown(e);
    }
  }

  /** The current etcd revision (a cheap range), or null when etcd does not answer. */
  async revision(): Promise<number | null> {
    try {
      const r = await this.client.kv.range({ key: Buffer.from(clusterPrefix(this.o.cluster) + '\u0000'), count_only: true });
      return num(r.header.revision);
    } catch {
      return null;
    }
  }

  /** The route log of a replicant this core serves (made on first use, on the replicant's lease). */
  replicantRouteLog(node: string, inc: string, lease: string): RouteLog {
    let l = this.replicantRoutes.get(node);
    if (!l || l.inc !== inc) {
      l?.stop();
      l = new RouteLog(this.client, this.o.cluster, node, inc, lease, this.o.log, this.health);
      this.replicantRoutes.set(node, l);
    } else l.setLease(lease);
    return l;
  }

  /** Removes a node from the cluster: its membership, live entry, routes and sessions. */
  async forceLeave(node: string, lease?: string): Promise<void> {
    const { cluster, shards } = this.o;
    if (lease) await this.leases.revoke(lease).catch(() => undefined);
    const pre = `${clusterPrefix(cluster)}routes/${node}/`;
    await this.client.kv.deleteRange({ key: Buffer.from(liveKey(cluster, node)) });
    await this.client.kv.deleteRange({ key: Buffer.from(pre), range_end: prefixEnd(pre) });
    // Its sessions: only those it still owns (compare the epoch).
    for (const [id, v] of shards.sessions.data) {
      const s = JSON.parse(v.toString('utf8')) as SessionOwner & { epoch: number };
      if (s.node === node) await this.sessions.release(id, s.epoch);
    }
    await this.client.kv.deleteRange({ key: Buffer.from(memberKey(cluster, node)) });
  }

  /** This core leaves: every entry of it goes (its lease is revoked), then its membership. */
  async leave(): Promise<void> {
    const { cluster, self } = this.o;
    await this.forceLeave(self.name, this.leaseId);
    this.leaseId = '';
    await this.stop(false);
    void cluster;
  }

  /** Graceful stop: the lease is revoked, so every entry of this node goes at once. */
  async stop(revoke = true): Promise<void> {
    this.stopped = true;
    if (this.tickTimer) clearInterval(this.tickTimer);
    await Promise.all(this.sources.map((s) => s.stop()));
    this.retained.stop();
    this.config.stop();
    this.auth.stop();
    this.sessions.stop();
    this.ownRoutes?.stop();
    for (const l of this.replicantRoutes.values()) l.stop();
    if (revoke && this.leaseId !== '') {
      await Promise.race([this.leases.revoke(this.leaseId).catch(() => undefined), new Promise((r) => setTimeout(r, 2000))]);
    }
    this.leases.stop();
    this.client.close();
  }
}

export function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  b[b.length - 1] = b[b.length - 1]! + 1;
  return b;
}
