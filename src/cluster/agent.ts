// The cluster, as the replication thread of one node runs it (docs/cluster.md). It owns:
//  - the shards (nodes, routes, sessions, retained, config, auth): on a core built from etcd
//    (EtcdStore), on a replicant streamed from a core (RlogClient);
//  - this node's routes in the cluster (NodeRoutes), fed by the workers' route ops, and the
//    "committed" word per worker that holds a SUBACK until its route is in etcd;
//  - the remote routes applied to the shared trie (RemoteRoutes → RemoteRouteTarget);
//  - the membership and the peers the workers forward to;
//  - retained messages: the workers' writes go to etcd, the shard's changes to every worker;
//  - the cluster port: RLOG for replicants (cores), STATUS for everyone.
// Nothing here is on the publish path: workers route by the trie and forward themselves.
import type { Config } from '../config/types.js';
import type { Logger } from '../log/logger.js';
import type { Message } from '../broker/message.js';
import { VERSION } from '../broker/sys.js';
import { EtcdStore, newIncarnation } from './etcd/store.js';
import { COMPACT_MIN_ENTRIES, type ClaimResult } from './etcd/writers.js';
import type { NodeInfo, SessionOwner } from './keys.js';
import type { Link } from './wire/link.js';
import { Membership, type Peer } from './membership.js';
import { NodeRoutes } from './node-routes.js';
import { OwnRetained } from './own-retained.js';
import { RemoteRoutes, type RemoteRouteTarget } from './remote-routes.js';
import { decodeRetained, encodeRetained } from './retained-codec.js';
import { RlogClient } from './rlog/client.js';
import { json, parseJson, R_FORCE_LEAVE, R_STATUS, type NodeStatus, type ShardStatus } from './rlog/protocol.js';
import { RlogService } from './rlog/server.js';
import { SHARDS, ShardState, type ShardName } from './shard.js';
import { removeMember } from './etcd/members.js';
import { DnsDiscovery } from './discovery.js';
import { StatusLinks } from './status-links.js';
import type { GroupOnlineEntry } from './group-online.js';

/** What the agent tells the connection workers. */
export type AgentToWorker =
  | { type: 'peers'; peers: Peer[] }
  | { type: 'retained'; msg: Message; seq: number }
  /** Online members of shared groups on other nodes (src/cluster/group-online.ts). */
  | { type: 'groupOnline'; entries: GroupOnlineEntry[] };

export interface ClusterTransport {
  /** Listens on the cluster port; every authenticated link goes to onLink. */
  listen(onLink: (link: Link) => void): Promise<{ port: number; close(): Promise<void> }>;
  /** An authenticated link to a node's cluster port (host:port). */
  connect(address: string): Promise<Link>;
}

export interface AgentOptions {
  cfg: Config;
  /** Endpoints of etcd (a core: the external ones, or its managed member's). */
  etcdEndpoints: readonly string[];
  workers: number;
  log: Logger;
  transport: ClusterTransport;
  trie: RemoteRouteTarget;
  /** Worker w's route ops up to seq are in the cluster (the SUBACK may go). */
  committed: (w: number, seq: number) => void;
  /** Next node-wide retained sequence number. */
  nextRetainSeq: () => number;
  toWorkers: (m: AgentToWorker) => void;
  /** A replicant's cores kept in <data-dir>/cluster.json (its membership across restarts). */
  knownCores?: string[];
  persist?: (state: { cores: string[]; left?: boolean }) => void;
  /** The node's lease was lost and replaced: entries on the old one (session ownership) are gone. */
  onLeaseRenewed?: () => void;
}

/** How long a node is gone (neither live nor a member) before its node slot may serve another. */
const SLOT_QUARANTINE_MS = 60_000;
/** How long a stopping replicant waits for its core to revoke its lease. */
const STOP_NOTICE_MS = 2_000;

export class ClusterAgent {
  readonly shards: Record<ShardName, ShardState>;
  readonly membership: Membership;
  readonly self: NodeInfo;
  readonly role: 'core' | 'replicant';
  private store: EtcdStore | null = null;
  private rlog: RlogService | null = null;
  private client: RlogClient | null = null;
  readonly nodeRoutes: NodeRoutes;
  private readonly remote: RemoteRoutes;
  private server: { port: number; close(): Promise<void> } | null = null;
  private readonly links = new Set<Link>();
  /** Links to other nodes' cluster ports for clusterView, kept while it is asked. */
  private readonly statusLinks = new StatusLinks((address) => this.o.transport.connect(address));
  private readonly startedAt = Date.now();
  /** This node's newest retained write per topic, until the shard passed it. */
  private readonly ownRetained: OwnRetained;
  private status: NodeStatus['status'] = 'joining';
  /** ctl cluster leave ran: this node is alone now. */
  private left = false;
  /** A core leaving (or left): the RLOG is closed and refused. */
  private leavingRlog = false;
  /** SIGTERM: route changes are no longer written (a core's lease revoke removes them all). */
  private stopping = false;
  /** Cores added by ctl cluster join (and those kept in <data-dir>). */
  private readonly extraSeeds: string[] = [];
  private dns: DnsDiscovery | null = null;
  private lagWarned = new Map<ShardName, number>();
  private compacting = false;
  private readonly lagTimer: NodeJS.Timeout;

  constructor(private readonly o: AgentOptions) {
    const c = o.cfg.cluster;
    this.role = c.role === 'core' ? 'core' : 'replicant';
    const host = c.advertise ?? o.cfg.node.name.slice(o.cfg.node.name.indexOf('@') + 1);
    this.self = {
      name: o.cfg.node.name, role: this.role, incarnation: newIncarnation(),
      cluster: hostPort(host, c.port), forward: hostPort(host, c.forward_port),
      workers: o.workers, started_at: this.startedAt,
    };
    this.shards = Object.fromEntries(SHARDS.map((s) => [s, new ShardState(s)])) as Record<ShardName, ShardState>;
    this.membership = new Membership(this.self.name);
    this.membership.attach(this.shards.nodes);
    this.membership.onChange(() => {
      if (this.left) return;
      o.toWorkers({ type: 'peers', peers: this.membership.peers() });
      if (this.role === 'replicant') o.persist?.({ cores: this.coreAddresses().map((c) => c.address) });
    });
    this.remote = new RemoteRoutes(this.self.name, (n) => this.membership.slotOf(n), o.trie);
    this.shards.routes.onChange((ch, before) => this.remote.apply(ch, before));
    this.ownRetained = new OwnRetained(this.self.name);
    this.shards.retained.onChange((ch) => {
      for (const op of ch.ops) this.retainedChanged(op.k, op.v, ch.rev);
      this.ownRetained.reached(ch.rev);
    });
    this.nodeRoutes = new NodeRoutes(o.workers, (seq, ops) => this.writeRoutes(seq, ops), c.write_batch_ms, o.committed, (seq) => this.maybeCompact(seq));
    this.lagTimer = setInterval(() => this.checkLag(), 1000);
    this.lagTimer.unref();
  }

  /** Connects (etcd or a core), loads every shard, opens the cluster port. */
  async start(): Promise<void> {
    const { cfg, log, transport } = this.o;
    if (cfg.cluster.discovery === 'dns' && cfg.cluster.dns_name !== null) {
      this.dns = new DnsDiscovery({ name: cfg.cluster.dns_name, port: cfg.cluster.dns_port || cfg.cluster.port, server: cfg.cluster.dns_server }, cfg.cluster.dns_refresh_ms, log);
      await this.dns.refresh();
    }
    this.server = await transport.listen((link) => this.onLink(link));
    if (this.role === 'core') {
      this.store = new EtcdStore({
        endpoints: this.o.etcdEndpoints, cluster: cfg.cluster.name, self: this.self, leaseTtl: cfg.cluster.lease_ttl_s,
        batchMs: cfg.cluster.write_batch_ms, shards: this.shards, log,
        onReregistered: () => this.leaseReplaced(),
        onTick: (shard) => this.rlog?.ticked(shard),
      });
      await this.store.start();
      this.rlog = new RlogService({ store: this.store, shards: this.shards, self: this.self.name, leaseTtl: cfg.cluster.lease_ttl_s, log });
    } else {
      this.client = new RlogClient({
        self: this.self, shards: this.shards, log,
        cores: () => this.coreAddresses(),
        connect: (a) => transport.connect(a),
        onCore: (core) => {
          this.self.core = core ?? undefined;
        },
        // Its old lease expired (no core kept it alive): the route log entries on it are
        // gone from etcd, so every route goes out again, numbered after the last entry.
        onLeaseRenewed: () => {
          if (!this.left) this.leaseReplaced(this.nodeRoutes.lastSeq + 1);
        },
      });
      await this.client.start();
    }
    this.status = 'running';
    this.o.toWorkers({ type: 'peers', peers: this.membership.peers() });
    log.info('cluster.joined', {
      role: this.role, cluster: cfg.cluster.name, incarnation: this.self.incarnation, cluster_port: this.server.port,
      nodes: this.membership.live.size, core: this.self.core ?? null,
    });
  }

  /** Cores to stream from: the live ones the nodes shard names, then the seeds. */
  private coreAddresses(): { name: string | null; address: string }[] {
    const out: { name: string | null; address: string }[] = this.membership.cores().map((n) => ({ name: n.name, address: n.cluster }));
    for (const s of [...this.extraSeeds, ...this.o.cfg.cluster.seeds, ...(this.dns?.cores ?? []), ...(this.o.knownCores ?? [])]) out.push({ name: null, address: s });
    return out;
  }

  // ---- routes ------------------------------------------------------------------------

  /** A worker's route op (from the trie writer): the node-level set may change. */
  localRoute(w: number, seq: number, key: string | null, d: 1 | -1 | 0): void {
    this.nodeRoutes.change(w, seq, key, d);
  }

  private async writeRoutes(seq: number, ops: import('./shard.js').KvOp[]): Promise<void> {
    if (this.store) await this.store.ownRoutes.append(seq, ops);
    else await this.client!.routes(this.self.incarnation, seq, ops);
  }

  private maybeCompact(seq: number): void {
    const log = this.store?.ownRoutes;
    if (!log) return;
    // A base costs one write per 512 KiB of routes: worth it once the log holds a few
    // times as many entries as the base would have chunks.
    if (this.stopping || this.compacting) return;
    if (log.entriesSinceBase >= Math.max(COMPACT_MIN_ENTRIES, this.nodeRoutes.sent.size / 2048)) {
      // One at a time: entries committed while a base is written would queue more bases.
      this.compacting = true;
      void log.compact(seq, [...this.nodeRoutes.sent], (k) => this.nodeRoutes.sentValueOf(k)).finally(() => (this.compacting = false));
    }
  }

  // ---- retained --------------------------------------------------------------------------

  /** A worker set (or cleared) a retained message: it goes to etcd (last writer wins there). */
  retain(msg: Message, seq: number): void {
    const topic = msg.topic;
    const clear = msg.payload.length === 0;
    this.ownRetained.wrote(topic, seq, clear);
    const v = clear ? null : encodeRetained(msg, { node: this.self.name, seq });
    const written = (rev: number): void => {
      // rev 0: etcd never took it (too large: the writer logged it); the node shows the shard's value again.
      if (rev === 0 && !this.store) this.o.log.warn('cluster.retained_dropped', { topic, bytes: v?.length ?? 0, detail: 'refused by the core' });
      if (this.ownRetained.written(topic, seq, rev, this.shards.retained.rev)) this.showRetained(topic);
    };
    if (this.store) void this.store.retained.set(topic, v).then(written);
    else {
      void this.client!.kv('retained', [{ k: topic, v }]).then(written, (e: Error) => {
        this.o.log.error('cluster.retained_write_failed', { topic, error: e.message });
        if (this.ownRetained.written(topic, seq, 0, this.shards.retained.rev)) this.showRetained(topic);
      });
    }
  }

  private retainedChanged(topic: string, v: Buffer | null, rev: number): void {
    const r = v === null ? null : decodeRetained(topic, v);
    // While this node's own write of the topic is on its way, older changes do not replace it.
    if (!this.ownRetained.change(topic, rev, r?.origin ?? null)) return;
    this.o.toWorkers({ type: 'retained', msg: r?.msg ?? clearedRetained(topic), seq: this.o.nextRetainSeq() });
  }

  /** The retained shard's value of `topic` to every worker. */
  private showRetained(topic: string): void {
    const v = this.shards.retained.data.get(topic);
    this.o.toWorkers({ type: 'retained', msg: v ? decodeRetained(topic, v).msg : clearedRetained(topic), seq: this.o.nextRetainSeq() });
  }

  /** Every retained message of the shard (for a worker that just started). */
  retainedAll(): Message[] {
    return [...this.shards.retained.data].map(([t, v]) => decodeRetained(t, v).msg);
  }

  /**
   * The node's lease expired and another replaced it: what hung on the old one is gone from
   * etcd. Every route goes out again (a replicant numbers them after its last log entry,
   * `from`), and the supervisor claims the node's sessions again.
   */
  private leaseReplaced(from?: number): void {
    this.nodeRoutes.rewriteAll((seq, ops) => this.writeRoutes(seq, ops), from);
    this.o.onLeaseRenewed?.();
  }

  // ---- sessions --------------------------------------------------------------------------

  /** Makes this node the owner of `clientId` (an etcd transaction through a core). */
  /** `keep`: only if no other node owns it now (a re-claim after the lease was lost). */
  claim(clientId: string, persistent: boolean, keep = false): Promise<ClaimResult> {
    const owner: SessionOwner = { node: this.self.name, inc: this.self.incarnation, persistent };
    if (this.store) return this.store.sessions.claim(clientId, owner, persistent ? undefined : this.store.leaseId, keep);
    return this.client!.claim(clientId, owner, keep);
  }

  release(clientId: string, epoch: number): Promise<boolean> {
    if (this.store) return this.store.sessions.release(clientId, epoch);
    return this.client!.release(clientId, epoch);
  }

  /** Who owns a client id's session as the sessions shard says. */
  owner(clientId: string): (SessionOwner & { epoch: number }) | null {
    const v = this.shards.sessions.data.get(clientId);
    return v ? parseJson<SessionOwner & { epoch: number }>(v) : null;
  }

  // ---- the cluster port --------------------------------------------------------------

  private onLink(link: Link): void {
    this.links.add(link);
    link.onRequest = (kind, body) => {
      if (kind === R_STATUS) return json(this.nodeStatus());
      if (kind === R_FORCE_LEAVE && this.role === 'core') {
        return this.forceLeave(parseJson<{ node: string }>(body).node).then((r) => {
          if (!r.ok) throw new Error(r.message);
          return json(r);
        });
      }
      if (this.leavingRlog && this.role === 'core') throw new Error(`${this.self.name} left the cluster: stream from another core`);
      const r = this.rlog?.handle(link, kind, body);
      if (r) return r;
      throw new Error(`request kind ${kind} is not served by a ${this.role}`);
    };
    link.onClose = () => {
      this.links.delete(link);
      this.rlog?.linkClosed(link);
    };
  }

  // ---- membership changes --------------------------------------------------------------

  /** ctl cluster join TARGET (host:port of a core's cluster port, or NAME@HOST[:PORT]). */
  async join(target: string): Promise<{ ok: boolean; status: number; message: string; rejoin?: string }> {
    const address = this.addressOf(target);
    if (this.left) return { ok: false, status: 409, message: 'this node left the cluster; restart it to join again' };
    const known = [...this.membership.live.values()].find((n) => n.cluster === address || n.name === target);
    // A replicant asked to join a live core of its own cluster streams from it (below).
    if (known && (this.role === 'core' || known.role !== 'core' || known.name === this.client?.core)) {
      return { ok: true, status: 200, message: `${known.name} is already in this cluster` };
    }
    if (this.role === 'core') {
      // A managed core moves its etcd member to the target's cluster: the main thread does
      // that (it owns the member and restarts the node's threads on the new etcd).
      if (this.o.cfg.cluster.etcd.managed) return { ok: false, status: 409, message: `joining ${address}: the main thread moves this core's etcd member`, rejoin: address };
      return {
        ok: false, status: 409,
        message: 'a core on an etcd it was given (--etcd) is in the cluster of that etcd: restart it with --etcd pointing at the etcd of ' + address,
      };
    }
    // A replicant: stream from the target from now on. It is kept among the cores (and in
    // <data-dir>/cluster.json) only once it streams: a failed join changes nothing.
    try {
      await this.client!.switchTo(address);
    } catch (e) {
      this.o.log.warn('cluster.join_failed', { target, address, error: (e as Error).message, core: this.client!.core });
      return { ok: false, status: 502, message: `cannot stream from ${address}: ${(e as Error).message} (still streaming from ${this.client!.core ?? 'no core'})` };
    }
    if (!this.extraSeeds.includes(address)) this.extraSeeds.unshift(address);
    this.o.persist?.({ cores: this.coreAddresses().map((c) => c.address) });
    return { ok: true, status: 200, message: `streaming from ${this.client!.core ?? address}` };
  }

  private addressOf(target: string): string {
    const at = target.indexOf('@');
    const hp = at >= 0 ? target.slice(at + 1) : target;
    return /:\d+$/.test(hp) && !hp.endsWith(']') ? hp : `${hp}:${this.o.cfg.cluster.port}`;
  }

  /** ctl cluster leave: this node's entries go from the cluster; it goes on alone. */
  async leave(): Promise<{ ok: boolean; status: number; message: string }> {
    if (this.left) return { ok: true, status: 200, message: 'already left' };
    this.status = 'leaving';
    this.o.log.warn('cluster.leaving', { node: this.self.name });
    if (this.store) {
      // Its replicants first: their streams close (and new ones are refused), so they move
      // to another core, which takes their leases over, before this core's entries go.
      this.leavingRlog = true;
      const moved = this.rlog?.count ?? 0;
      this.rlog?.stop('core leaving the cluster');
      if (moved > 0) this.o.log.info('cluster.replicants_released', { replicants: moved });
      await this.store.leave();
      if (this.o.cfg.cluster.etcd.managed) await removeMember(this.o.etcdEndpoints, this.self.name).catch(() => undefined);
    } else if (this.client) {
      await this.client.leave();
    }
    this.left = true;
    this.status = 'left';
    this.goAlone();
    this.o.persist?.({ cores: [], left: true });
    this.o.log.warn('cluster.left', { node: this.self.name, detail: 'serving this node\'s clients alone until it is stopped' });
    return { ok: true, status: 200, message: `${this.self.name} left the cluster` };
  }

  /** After leave: no remote routes, no peers, writes answered locally. */
  private goAlone(): void {
    this.remote.clear();
    this.o.toWorkers({ type: 'peers', peers: [] });
    this.nodeRoutes.rewriteAll(async () => undefined);
  }

  /** ctl cluster force-leave NODE: a stopped node's entries are removed. */
  async forceLeave(node: string): Promise<{ ok: boolean; status: number; message: string }> {
    if (node === this.self.name) return { ok: false, status: 400, message: 'to remove this node, use leave' };
    const live = this.membership.live.get(node);
    const member = this.membership.members.get(node);
    if (!live && !member) return { ok: false, status: 404, message: `no member named ${node}` };
    if (live) {
      const view = await this.clusterView();
      const st = view.nodes.find((n) => n.name === node);
      if (st && st.status !== 'stopped') return { ok: false, status: 409, message: `${node} is ${st.status}: stop it first, or run leave on it` };
    }
    if (this.store) {
      await this.store.forceLeave(node);
      await removeMember(this.o.etcdEndpoints, node).catch(() => undefined);
    } else await this.client!.forceLeave(node);
    this.o.log.warn('cluster.force_left', { node });
    return { ok: true, status: 200, message: `${node} removed from the cluster` };
  }

  // ---- status ----------------------------------------------------------------------------

  shardStatus(): ShardStatus[] {
    const now = Date.now();
    return SHARDS.map((name) => {
      const s = this.shards[name];
      const lag = s.lag(now);
      return { name, revision: s.rev, lag: lag.revisions, lag_ms: lag.ms, keys: s.data.size };
    });
  }

  nodeStatus(): NodeStatus {
    const st: NodeStatus = {
      name: this.self.name, role: this.role, status: this.status, uptime_s: Math.floor((Date.now() - this.startedAt) / 1000),
      core: this.role === 'replicant' ? (this.client?.core ?? null) : null,
      shards: this.shardStatus(), incarnation: this.self.incarnation, version: VERSION,
    };
    if (this.store) {
      st.etcd = {
        state: this.store.state, endpoints: this.o.etcdEndpoints,
        unreachable_ms: this.store.unreachableSince === 0 ? 0 : Date.now() - this.store.unreachableSince,
        last_error: this.store.lastError,
      };
    }
    return st;
  }

  /** Every member's status: this node's own, the others' asked over their cluster ports. */
  async clusterView(timeoutMs = 1500): Promise<{ nodes: (NodeStatus | { name: string; role: string; status: 'stopped'; uptime_s: 0; core: null; shards: [] })[] }> {
    // A node that left is a cluster of one (its replica of the nodes shard is stale).
    if (this.left) return { nodes: [this.nodeStatus()] };
    const names = new Set<string>([...this.membership.members.keys(), ...this.membership.live.keys(), this.self.name]);
    const nodes = await Promise.all([...names].sort().map(async (name) => {
      if (name === this.self.name) return this.nodeStatus();
      const live = this.membership.live.get(name);
      const member = this.membership.members.get(name);
      const role = live?.role ?? member?.role ?? 'replicant';
      const stopped = { name, role, status: 'stopped' as const, uptime_s: 0 as const, core: null, shards: [] as [] };
      if (!live) return stopped;
      try {
        return parseJson<NodeStatus>(await this.statusLinks.request(live.cluster, R_STATUS, Buffer.alloc(0), timeoutMs));
      } catch {
        return { ...stopped, status: member?.leaving ? 'leaving' as const : 'stopped' as const };
      }
    }));
    return { nodes: nodes as never };
  }

  private checkLag(): void {
    const warnMs = this.o.cfg.cluster.lag_warn_ms;
    const now = Date.now();
    for (const name of SHARDS) {
      const lag = this.shards[name].lag(now);
      if (lag.ms <= warnMs) continue;
      const last = this.lagWarned.get(name) ?? 0;
      if (now - last < 10_000) continue;
      this.lagWarned.set(name, now);
      this.o.log.warn('cluster.shard_lag', { shard: name, revisions: lag.revisions, ms: lag.ms, threshold_ms: warnMs });
    }
    // Slots of nodes gone for a minute whose routes are all gone too, for nodes to come.
    for (const node of this.membership.reclaim(now, SLOT_QUARANTINE_MS, (slot) => this.remote.holds(slot))) {
      this.o.log.info('cluster.node_slot_reclaimed', { node });
    }
  }

  /** Counters and states for /api/v1/stats and /status. */
  stats(): Record<string, unknown> {
    return {
      role: this.role, status: this.status, incarnation: this.self.incarnation,
      etcd: this.store ? { state: this.store.state, unreachable_ms: this.store.unreachableSince === 0 ? 0 : Date.now() - this.store.unreachableSince, last_error: this.store.lastError } : undefined,
      core: this.client?.core ?? undefined,
      replicants: this.rlog?.count,
      routes: {
        local: this.nodeRoutes.size, remote: this.remote.routes, batches: this.nodeRoutes.batchesWritten, ops: this.nodeRoutes.opsWritten,
        uncommitted: this.nodeRoutes.uncommitted,
      },
      // A replicant's requests to its core (route entries among them); a core's queued
      // retained writes and session claims, and the route log entry it is writing.
      pending_writes: this.client?.pendingWrites ??
        (this.store ? this.store.retained.queued + this.store.sessions.queued + (this.nodeRoutes.entryInFlight ? 1 : 0) : 0),
      failovers: this.client?.failovers,
      node_slots_reclaimed: this.membership.slotsReclaimed,
      shards: this.shardStatus(),
    };
  }

  /**
   * The node is stopping (before its workers end their clients' subscriptions): it stops
   * writing route changes, since revoking its lease removes every route in one etcd call;
   * writing 100k removals first would outlast the stop timeout. A core revokes its own
   * lease when its store stops; a replicant asks its core to revoke its lease now.
   */
  beginStop(): void {
    if (this.stopping) return;
    this.stopping = true;
    if (this.left) return;
    this.nodeRoutes.discard();
    if (this.client) this.stopNotice = this.client.stopping(STOP_NOTICE_MS);
  }
  private stopNotice: Promise<boolean> | null = null;

  async stop(): Promise<void> {
    this.beginStop();
    if (!this.left) this.status = 'leaving';
    clearInterval(this.lagTimer);
    this.dns?.stop();
    this.rlog?.stop();
    if (this.stopNotice && !(await this.stopNotice)) this.o.log.warn('cluster.stop_not_announced', { detail: `no core revoked this node's lease: it stays live for up to lease_ttl_s` });
    this.client?.stop();
    for (const l of this.links) l.close('node stopping');
    this.statusLinks.stop();
    await this.store?.stop();
    await this.server?.close();
  }
}

function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** A cleared retained topic, as the workers take it. */
function clearedRetained(topic: string): Message {
  return { topic, payload: Buffer.alloc(0), qos: 0, retain: true, from: '', props: undefined, expiresAt: 0 };
}
