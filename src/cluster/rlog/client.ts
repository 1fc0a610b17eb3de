// The replicant side of the RLOG (docs/cluster.md): one link to one core at a time. It
// bootstraps every shard from the core (or resumes from the revisions it has), applies the
// changes in order, and sends the replicant's writes (routes, session claims, retained
// messages) to the core, which answers once etcd holds them.
//
// When the link drops it moves to another live core at once (the cores it knows from the
// nodes shard, then its seeds), resuming every shard from its last revision, and resends
// the writes that were not answered, in order. Which core: the first connection picks by a
// hash of the replicant's name (so replicants spread over cores); a failover picks the same
// way among the other cores and tries the one it lost last (it stays listed until its lease
// expires), and nothing moves back later, so a core that comes back does not get every
// replicant at once.
import type { Logger } from '../../log/logger.js';
import { hash32 } from '../../broker/shared.js';
import { encodeOps, readOps } from '../kv-codec.js';
import type { NodeInfo, SessionOwner } from '../keys.js';
import { SHARDS, shardId, shardName, type KvOp, type ShardName, type ShardState } from '../shard.js';
import type { ClaimResult } from '../etcd/writers.js';
import {
  F_CHANGE, F_PROGRESS, F_SNAP_BEGIN, F_SNAP_DATA, F_SNAP_END, json, parseJson,
  R_CLAIM, R_FORCE_LEAVE, R_KV, R_LEAVE, R_RELEASE, R_ROUTES, R_STOPPING, R_SUBSCRIBE, type Link,
} from './protocol.js';

const REQUEST_TIMEOUT_MS = 15_000;

export interface RlogClientOptions {
  self: NodeInfo;
  shards: Record<ShardName, ShardState>;
  /** Cores to try: the seeds and what the nodes shard says (host:port of cluster ports, names if known). */
  cores: () => { name: string | null; address: string }[];
  connect: (address: string) => Promise<Link>;
  log: Logger;
  /** The link to a core is up (name) or down (null). */
  onCore?: (core: string | null) => void;
  /**
   * The core granted a new lease in place of the one this replicant had (it expired while no
   * core kept it alive): what hung on the old one (its routes) must be written again.
   */
  onLeaseRenewed?: (lease: string) => void;
}

interface PendingWrite {
  kind: number;
  body: Buffer;
  resolve: (b: Buffer) => void;
  reject: (e: Error) => void;
}

export class RlogClient {
  link: Link | null = null;
  core: string | null = null;
  lease: string | null = null;
  private stopped = false;
  private readonly snap = new Map<ShardName, { rev: number; total: number; entries: [string, Buffer][]; received: number; inPlace: boolean; t0: number; lastLog: number }>();
  /** Writes not answered yet, oldest first: resent in order on the next link. */
  private readonly writes: PendingWrite[] = [];
  private connecting: Promise<void> | null = null;
  /** The core whose link closed last (tried last on the failover). */
  private lost: { name: string | null; address: string } | null = null;
  /** Shards bootstrapped at least once (then resumed from their revision). */
  private readonly loaded = new Set<ShardName>();
  private readonly readyWaiters: (() => void)[] = [];
  failovers = 0;

  constructor(private readonly o: RlogClientOptions) {}

  /** Connects and streams; resolves once every shard is loaded the first time. */
  start(): Promise<void> {
    const ready = new Promise<void>((r) => this.readyWaiters.push(r));
    void this.reconnect();
    return ready;
  }

  get ready(): boolean {
    return this.loaded.size === SHARDS.length;
  }

  private async reconnect(): Promise<void> {
    if (this.connecting) return this.connecting;
    this.connecting = (async () => {
      let delay = 50;
      while (!this.stopped && this.link === null) {
        for (const c of this.candidates()) {
          if (this.stopped) return;
          try {
            await this.attach(await this.o.connect(c.address), c.address);
            return;
          } catch (e) {
            this.o.log.warn('cluster.core_unreachable', { core: c.name ?? c.address, error: (e as Error).message });
          }
        }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 1000);
      }
    })().finally(() => {
      this.connecting = null;
    });
    return this.connecting;
  }

  /**
   * Cores in the order to try: starting at hash(our name) mod their number, so replicants
   * spread over cores; after a failover the core just lost comes last (it is still listed
   * while its lease lasts, and a host that is gone would cost the 3 s connect timeout).
   */
  private candidates(): { name: string | null; address: string }[] {
    const seen = new Set<string>();
    const list = this.o.cores().filter((c) => !seen.has(c.address) && seen.add(c.address));
    const lost = this.lost;
    const isLost = (c: { name: string | null; address: string }): boolean =>
      lost !== null && (c.address === lost.address || (c.name !== null && c.name === lost.name));
    const others = list.filter((c) => !isLost(c));
    const start = others.length === 0 ? 0 : hash32(this.o.self.name) % others.length;
    return [...others.slice(start), ...others.slice(0, start), ...list.filter(isLost)];
  }

  private async attach(link: Link, address: string): Promise<void> {
    const { log, shards } = this.o;
    link.onFrame = (type, body) => this.onFrame(type, body);
    const revs: Partial<Record<ShardName, number | null>> = {};
    for (const name of SHARDS) revs[name] = this.loaded.has(name) ? shards[name].rev : null;
    let answer: { lease: string; core: string };
    try {
      answer = parseJson(await link.request(R_SUBSCRIBE, json({ node: this.o.self, lease: this.lease, shards: revs }), REQUEST_TIMEOUT_MS));
    } catch (e) {
      link.close('subscribe failed');
      throw e;
    }
    const old = this.link;
    const renewed = this.lease !== null && answer.lease !== this.lease;
    if (old !== null || this.lost !== null) this.failovers++;
    this.link = link;
    this.lease = answer.lease;
    this.core = answer.core;
    this.lost = null;
    // A switch (ctl cluster join): the old link goes only now that the new one streams.
    if (old !== null) {
      old.onFrame = () => undefined;
      old.close(`switched to ${answer.core}`);
    }
    log.info('cluster.core_connected', { core: answer.core, lease: answer.lease, lease_renewed: renewed, resumed: SHARDS.filter((s) => revs[s] !== null) });
    this.o.onCore?.(answer.core);
    link.onClose = (reason) => {
      if (this.link !== link) return;
      this.link = null;
      this.o.log.warn('cluster.core_lost', { core: this.core, reason });
      this.lost = { name: this.core, address };
      this.core = null;
      this.o.onCore?.(null);
      for (const s of SHARDS) this.snap.delete(s);
      if (!this.stopped) void this.reconnect();
    };
    // Writes that the previous core did not answer, in order.
    for (const w of this.writes) this.send(link, w);
    if (renewed) {
      log.warn('cluster.lease_renewed', { core: answer.core, lease: answer.lease, detail: 'the previous lease expired: routes are written again' });
      this.o.onLeaseRenewed?.(answer.lease);
    }
  }

  private onFrame(type: number, body: Buffer): void {
    const name = shardName(body[0]!);
    if (name === undefined) return;
    const shard = this.o.shards[name];
    switch (type) {
      case F_SNAP_BEGIN: {
        shard.bootstrapping = true;
        // An empty shard (first bootstrap) takes each batch as it comes; one that holds data
        // (a re-bootstrap) collects the snapshot and swaps it in at the end, as one diff.
        const inPlace = shard.data.size === 0;
        this.snap.set(name, { rev: body.readDoubleBE(1), total: body.readUInt32BE(9), entries: [], received: 0, inPlace, t0: Date.now(), lastLog: Date.now() });
        return;
      }
      case F_SNAP_DATA: {
        const s = this.snap.get(name);
        if (!s) return;
        const ops = readOps(body, 1).ops;
        s.received += ops.length;
        if (s.inPlace) shard.loadPart(ops);
        else for (const op of ops) if (op.v !== null) s.entries.push([op.k, op.v]);
        const now = Date.now();
        if (now - s.lastLog >= 1000) {
          s.lastLog = now;
          this.o.log.info('cluster.bootstrap_progress', { shard: name, received: s.received, total: s.total });
        }
        return;
      }
      case F_SNAP_END: {
        const s = this.snap.get(name);
        if (!s) return;
        this.snap.delete(name);
        shard.bootstrapping = false;
        if (s.inPlace) shard.loadedAt(s.rev);
        else shard.reset(s.entries, s.rev);
        this.o.log.info('cluster.shard_bootstrapped', { shard: name, revision: s.rev, keys: shard.data.size, ms: Date.now() - s.t0 });
        this.markLoaded(name);
        return;
      }
      case F_CHANGE: {
        if (this.snap.has(name)) return; // cannot happen: the core holds changes back until SNAP_END
        const rev = body.readDoubleBE(1);
        const ts = body.readDoubleBE(9);
        shard.apply({ rev, ts, ops: readOps(body, 17).ops });
        if (!this.loaded.has(name)) this.markLoaded(name);
        return;
      }
      case F_PROGRESS: {
        shard.caughtUp(body.readDoubleBE(1));
        shard.progress(body.readDoubleBE(9));
        if (!this.loaded.has(name) && !this.snap.has(name)) this.markLoaded(name);
        return;
      }
    }
  }

  private markLoaded(name: ShardName): void {
    this.loaded.add(name);
    if (this.ready) for (const f of this.readyWaiters.splice(0)) f();
  }

  private send(link: Link, w: PendingWrite): void {
    link.request(w.kind, w.body, REQUEST_TIMEOUT_MS).then(
      (b) => {
        const i = this.writes.indexOf(w);
        if (i >= 0) this.writes.splice(i, 1);
        w.resolve(b);
      },
      (e: Error & { code?: string }) => {
        // A closed link: the write is resent on the next one. An answer that is an error
        // (the core refused it) is final.
        if (e.code === 'CLUSTER_REMOTE_ERROR') {
          const i = this.writes.indexOf(w);
          if (i >= 0) this.writes.splice(i, 1);
          w.reject(e);
        } else if (this.link === link) link.close(`request failed: ${e.message}`);
      },
    );
  }

  private write(kind: number, body: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const w: PendingWrite = { kind, body, resolve, reject };
      this.writes.push(w);
      if (this.link) this.send(this.link, w);
    });
  }

  get pendingWrites(): number {
    return this.writes.length;
  }

  /** One entry of this replicant's route log (resent until a core has it in etcd). */
  async routes(inc: string, seq: number, ops: KvOp[]): Promise<void> {
    const incB = Buffer.from(inc);
    const head = Buffer.allocUnsafe(10);
    head.writeDoubleBE(seq, 0);
    head.writeUInt16BE(incB.length, 8);
    await this.write(R_ROUTES, Buffer.concat([head, incB, encodeOps(ops)]));
  }

  async claim(id: string, owner: SessionOwner, keep = false): Promise<ClaimResult> {
    return parseJson<ClaimResult>(await this.write(R_CLAIM, json(keep ? { id, owner, keep } : { id, owner })));
  }

  async release(id: string, epoch: number): Promise<boolean> {
    return parseJson<{ released: boolean }>(await this.write(R_RELEASE, json({ id, epoch }))).released;
  }

  async kv(shard: 'retained' | 'config' | 'auth', ops: KvOp[]): Promise<number> {
    const b = await this.write(R_KV, Buffer.concat([Buffer.from([shardId(shard)]), encodeOps(ops)]));
    return b.readDoubleBE(0);
  }

  /**
   * Moves to the core at `address` now (ctl cluster join). Rejects, and streams on from
   * the current core, when that core cannot be reached or refuses the subscription.
   */
  async switchTo(address: string): Promise<void> {
    const link = await this.o.connect(address);
    await this.attach(link, address);
  }

  /** This replicant leaves the cluster: its core removes its entries; streaming stops. */
  async leave(): Promise<void> {
    if (this.link) await this.link.request(R_LEAVE, json({ node: this.o.self.name }), REQUEST_TIMEOUT_MS);
    this.stop();
  }

  /**
   * This replicant stops: its core revokes its lease (its entries go at once). Answers
   * false when no core took it within `timeoutMs` (the lease then runs out by itself).
   */
  async stopping(timeoutMs: number): Promise<boolean> {
    if (!this.link) return false;
    try {
      await this.link.request(R_STOPPING, json({ node: this.o.self.name }), timeoutMs);
      return true;
    } catch {
      return false;
    }
  }

  async forceLeave(node: string): Promise<void> {
    if (!this.link) throw new Error('no core to ask: this replicant is not connected');
    await this.link.request(R_FORCE_LEAVE, json({ node }), REQUEST_TIMEOUT_MS);
  }

  stop(): void {
    this.stopped = true;
    this.link?.close('replicant stopping');
    this.link = null;
  }
}
