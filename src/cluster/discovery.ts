// Finding cores by DNS (cluster.discovery = "dns"): the SRV records of cluster.dns_name
// (target:port of each core's cluster port), or, when it has none, its A/AAAA records with
// cluster.dns_port (default cluster.port), as a Kubernetes headless service gives them.
// Resolved again every cluster.dns_refresh_ms; the last good answer is kept while DNS fails.
import { lookup } from 'node:dns/promises';
import { Resolver } from 'node:dns/promises';
import type { Logger } from '../log/logger.js';

export interface DnsTarget {
  name: string;
  /** Port of A/AAAA answers. */
  port: number;
}

/** host:port of the cores that `name` lists. */
export async function resolveCores(t: DnsTarget, resolver: Pick<Resolver, 'resolveSrv'> = new Resolver()): Promise<string[]> {
  try {
    const srv = await resolver.resolveSrv(t.name);
    if (srv.length > 0) {
      // Lower priority first; within one, higher weight first (no random weighting: every
      // replicant tries them all in this order after its own first pick).
      srv.sort((a, b) => a.priority - b.priority || b.weight - a.weight || a.name.localeCompare(b.name));
      return srv.map((r) => `${r.name.includes(':') ? `[${r.name}]` : r.name}:${r.port}`);
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENODATA' && code !== 'ENOTFOUND' && code !== 'ESERVFAIL' && code !== 'ECONNREFUSED' && code !== 'ETIMEOUT') throw e;
  }
  const addrs = await lookup(t.name, { all: true });
  return addrs.map((a) => (a.family === 6 ? `[${a.address}]:${t.port}` : `${a.address}:${t.port}`));
}

/** Keeps the DNS answer fresh. */
export class DnsDiscovery {
  private last: string[] = [];
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly t: DnsTarget, refreshMs: number, private readonly log: Logger) {
    this.timer = setInterval(() => void this.refresh(), refreshMs);
    this.timer.unref();
  }

  async refresh(): Promise<string[]> {
    try {
      const next = await resolveCores(this.t);
      if (next.join(',') !== this.last.join(',')) this.log.info('cluster.dns_cores', { name: this.t.name, cores: next });
      this.last = next;
    } catch (e) {
      this.log.warn('cluster.dns_failed', { name: this.t.name, error: (e as Error).message, kept: this.last });
    }
    return this.last;
  }

  get cores(): string[] {
    return this.last;
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
