// Finding cores by DNS (cluster.discovery = "dns"): the SRV records of cluster.dns_name
// (target:port of each core's cluster port), or, when it has none, its A/AAAA records with
// cluster.dns_port (default cluster.port), as a Kubernetes headless service gives them.
// Resolved again every cluster.dns_refresh_ms; the last good answer is kept while DNS fails.
// With cluster.dns_server every query goes to that server (SRV, SRV targets, A/AAAA);
// without, the system's resolver (and getaddrinfo for A/AAAA, so /etc/hosts counts).
import { lookup, Resolver } from 'node:dns/promises';
import type { Logger } from '../log/logger.js';

export interface DnsTarget {
  name: string;
  /** Port of A/AAAA answers. */
  port: number;
  /** IP[:port] of the DNS server to ask (null: the system's). */
  server?: string | null;
}

type DnsResolver = Pick<Resolver, 'resolveSrv' | 'resolve4' | 'resolve6'>;

/** A resolver asking `server` (or the system's servers), 2 s per try, 2 tries. */
export function dnsResolver(server: string | null | undefined): Resolver {
  const r = new Resolver({ timeout: 2000, tries: 2 });
  if (server) r.setServers([server]);
  return r;
}

/** Answers that mean "no such records" rather than a broken resolver. */
const NO_RECORDS = new Set(['ENODATA', 'ENOTFOUND', 'ESERVFAIL', 'ECONNREFUSED', 'ETIMEOUT']);

async function addresses(resolver: DnsResolver, name: string): Promise<string[]> {
  const out: string[] = [];
  for (const [f, v6] of [[() => resolver.resolve4(name), false], [() => resolver.resolve6(name), true]] as const) {
    try {
      for (const a of await f()) out.push(v6 ? `[${a}]` : a);
    } catch (e) {
      if (!NO_RECORDS.has((e as NodeJS.ErrnoException).code ?? '')) throw e;
    }
  }
  return out;
}

/** host:port of the cores that `name` lists. */
export async function resolveCores(t: DnsTarget, resolver: DnsResolver = dnsResolver(t.server)): Promise<string[]> {
  try {
    const srv = await resolver.resolveSrv(t.name);
    if (srv.length > 0) {
      // Lower priority first; within one, higher weight first (no random weighting: every
      // replicant tries them all in this order after its own first pick).
      srv.sort((a, b) => a.priority - b.priority || b.weight - a.weight || a.name.localeCompare(b.name));
      const out: string[] = [];
      for (const r of srv) {
        // A private server's targets may be unknown to the system's resolver: resolve them
        // there (a target without addresses is kept by name).
        const ips = t.server ? await addresses(resolver, r.name) : [];
        if (ips.length === 0) out.push(`${r.name.includes(':') ? `[${r.name}]` : r.name}:${r.port}`);
        for (const ip of ips) out.push(`${ip}:${r.port}`);
      }
      return out;
    }
  } catch (e) {
    if (!NO_RECORDS.has((e as NodeJS.ErrnoException).code ?? '')) throw e;
  }
  if (t.server) {
    const ips = await addresses(resolver, t.name);
    if (ips.length === 0) throw Object.assign(new Error(`no SRV, A or AAAA records for ${t.name} at ${t.server}`), { code: 'ENODATA' });
    return ips.map((a) => `${a}:${t.port}`);
  }
  const addrs = await lookup(t.name, { all: true });
  return addrs.map((a) => (a.family === 6 ? `[${a.address}]:${t.port}` : `${a.address}:${t.port}`));
}

/** Keeps the DNS answer fresh. */
export class DnsDiscovery {
  private last: string[] = [];
  private readonly timer: NodeJS.Timeout;
  private readonly resolver: Resolver;

  constructor(private readonly t: DnsTarget, refreshMs: number, private readonly log: Logger) {
    this.resolver = dnsResolver(t.server);
    this.timer = setInterval(() => void this.refresh(), refreshMs);
    this.timer.unref();
  }

  async refresh(): Promise<string[]> {
    try {
      const next = await resolveCores(this.t, this.resolver);
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
