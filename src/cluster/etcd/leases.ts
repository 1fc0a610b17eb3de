// etcd leases kept alive by a core: its own (its liveness) and those of the replicants it
// serves (a replicant has no etcd client: its core keeps its lease alive while the
// replicant's RLOG link is up; after a failover the next core takes the same lease over).
// One keep-alive stream carries them all; each lease is refreshed every TTL / 3.
import type { Etcd3 } from 'etcd3';
import type { Logger } from '../../log/logger.js';
import { num } from './client.js';

interface Kept {
  id: string;
  ttl: number;
  /** Last time etcd confirmed it (ms). */
  confirmed: number;
  onLost: () => void;
}

type Stream = Awaited<ReturnType<Etcd3['leaseClient']['leaseKeepAlive']>>;

export class LeaseKeeper {
  private readonly kept = new Map<string, Kept>();
  private stream: Stream | null = null;
  private opening: Promise<Stream> | null = null;
  private readonly timer: NodeJS.Timeout;
  private stopped = false;

  constructor(private readonly client: Etcd3, private readonly log: Logger, tickMs = 500) {
    this.timer = setInterval(() => void this.tick(), tickMs);
    this.timer.unref();
  }

  /** Grants a new lease of `ttl` seconds (rejects when etcd does not answer). */
  async grant(ttl: number): Promise<string> {
    const r = await this.client.leaseClient.leaseGrant({ TTL: ttl });
    if (r.error) throw new Error(`etcd refused a lease: ${r.error}`);
    return r.ID;
  }

  /** Seconds the lease has left, or -1 when it no longer exists. */
  async timeToLive(id: string): Promise<number> {
    const r = await this.client.leaseClient.leaseTimeToLive({ ID: id });
    return num(r.TTL);
  }

  /** Keeps `id` alive until forget(); `onLost` runs once if etcd says it expired. */
  keep(id: string, ttl: number, onLost: () => void): void {
    this.kept.set(id, { id, ttl, confirmed: Date.now(), onLost });
    void this.send(id);
  }

  forget(id: string): void {
    this.kept.delete(id);
  }

  async revoke(id: string): Promise<void> {
    this.kept.delete(id);
    await this.client.leaseClient.leaseRevoke({ ID: id });
  }

  /** Ms since etcd last confirmed `id` (Infinity when not kept). */
  sinceConfirmed(id: string): number {
    const k = this.kept.get(id);
    return k ? Date.now() - k.confirmed : Infinity;
  }

  private async open(): Promise<Stream> {
    if (this.stream) return this.stream;
    this.opening ??= (async () => {
      const s = await this.client.leaseClient.leaseKeepAlive();
      s.on('data', (res: { ID: string; TTL: string }) => {
        const k = this.kept.get(res.ID);
        if (!k) return;
        if (num(res.TTL) <= 0) {
          this.kept.delete(res.ID);
          this.log.warn('cluster.lease_lost', { lease: res.ID });
          k.onLost();
        } else k.confirmed = Date.now();
      });
      const drop = (): void => {
        if (this.stream === s) this.stream = null;
      };
      s.on('error', (e: Error) => {
        this.log.debug('cluster.lease_stream_error', { error: e.message });
        drop();
      });
      s.on('end', drop);
      this.stream = s;
      return s;
    })().finally(() => {
      this.opening = null;
    });
    return this.opening;
  }

  private async send(id: string): Promise<void> {
    try {
      const s = await this.open();
      s.write({ ID: id });
    } catch {
      /* etcd down: the next tick tries again */
    }
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    const now = Date.now();
    for (const k of this.kept.values()) {
      // Refresh a third of the TTL after the last confirmation (more often while failing).
      if (now - k.confirmed >= (k.ttl * 1000) / 3) await this.send(k.id);
    }
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
    this.stream?.end();
    this.stream = null;
  }
}
