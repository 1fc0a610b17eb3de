// The etcd a core uses (docs/cluster.md, "Cores and etcd"): the endpoints it was given
// (--etcd), or its own managed member (--etcd-managed) under <data-dir>/etcd, started and
// supervised here in the main thread and stopped after the node. A managed core with seeds
// and no member yet joins their etcd cluster (member add; the seeds' cluster ports say where
// their etcd is); with a member in its data dir it simply starts it again.
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { hasMember, startManagedEtcd, type ManagedEtcd } from '../cluster/etcd/managed.js';
import { joinManagedEtcd, listMembers } from '../cluster/etcd/members.js';
import { etcdTlsOf, useEtcdTls } from '../cluster/etcd/tls.js';
import { parseJson, R_STATUS, type NodeStatus } from '../cluster/rlog/protocol.js';
import { createClusterTransport } from '../cluster/transport.js';
import type { Config } from '../config/types.js';
import type { Logger } from '../log/logger.js';

export interface ClusterEtcd {
  endpoints: string[];
  member: ManagedEtcd | null;
}

/** The advertised host as an IP address (etcd listens on IPs). */
export async function advertiseIp(cfg: Config): Promise<string> {
  const host = cfg.cluster.advertise ?? cfg.node.name.slice(cfg.node.name.indexOf('@') + 1);
  return isIP(host) !== 0 ? host : (await lookup(host)).address;
}

/** `cfg` with other seeds. */
export function withSeeds(cfg: Config, seeds: string[]): Config {
  return { ...cfg, cluster: { ...cfg.cluster, seeds } };
}

/**
 * etcd client URLs that the seeds' cores use (asked over their cluster ports). With
 * `waitMs`, seeds that cannot be reached yet (cores started together: the first one is
 * still coming up) are asked again every second until then, saying so every 5 s; a seed
 * that answers and refuses (wrong cookie or cluster name, not a core) ends it at once.
 */
export async function seedEtcd(cfg: Config, log: Logger, waitMs = 0): Promise<string[]> {
  const t = createClusterTransport(cfg, log);
  const t0 = Date.now();
  let lastLog = 0;
  for (let attempt = 1; ; attempt++) {
    const errors: string[] = [];
    let refused = false;
    for (const seed of cfg.cluster.seeds) {
      try {
        const link = await t.connect(seed);
        try {
          const st = parseJson<NodeStatus>(await link.request(R_STATUS, Buffer.alloc(0), 5000));
          if (st.role === 'core' && st.etcd && st.etcd.endpoints.length > 0) {
            if (attempt > 1) log.info('cluster.seed_answered', { seed, attempts: attempt, waited_ms: Date.now() - t0 });
            return [...st.etcd.endpoints];
          }
          errors.push(`${seed}: ${st.name} is a ${st.role} without etcd endpoints`);
          refused = true;
        } finally {
          link.close('asked');
        }
      } catch (e) {
        errors.push(`${seed}: ${(e as Error).message}`);
        if ((e as { code?: string }).code === 'CLUSTER_REFUSED') refused = true;
      }
    }
    const waited = Date.now() - t0;
    if (refused || waited >= waitMs) {
      throw Object.assign(new Error(`cannot join: no seed answered with its etcd${waited > 0 ? ` (tried for ${waited} ms)` : ''} (${errors.join('; ')})`), { code: 'CLUSTER_JOIN_FAILED' });
    }
    if (attempt === 1 || Date.now() - lastLog >= 5000) {
      lastLog = Date.now();
      log.info('cluster.seed_wait', { seeds: cfg.cluster.seeds, attempts: attempt, waited_ms: waited, limit_ms: waitMs, errors });
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** How long a join waits for etcd to accept its member add (cores started together). */
const JOIN_WAIT_MS = 90_000;

/**
 * etcd refuses a member add, before changing anything, while its newest member joined
 * less than 5 s ago ("unhealthy cluster") and while another new member is still a learner
 * ("too many learner members in cluster": one learner at a time). Cores started together
 * thus join one after the other: each of those answers is waited out and tried again,
 * every second, for up to JOIN_WAIT_MS, saying so every 5 s.
 */
async function joinWhenAccepted(join: () => Promise<ManagedEtcd>, log: Logger): Promise<ManagedEtcd> {
  const t0 = Date.now();
  let attempts = 0;
  let lastLog = 0;
  for (;;) {
    attempts++;
    try {
      const m = await join();
      if (attempts > 1) log.info('cluster.etcd_member_join_accepted', { attempts, waited_ms: Date.now() - t0 });
      return m;
    } catch (e) {
      const msg = (e as Error).message;
      const busy = /too many learner members/.test(msg) ? 'learner' : /unhealthy cluster/.test(msg) ? 'unhealthy' : null;
      if (busy === null) throw e;
      const waited = Date.now() - t0;
      if (waited > JOIN_WAIT_MS) {
        throw Object.assign(new Error(`etcd did not accept this core's member for ${waited} ms (${attempts} attempts): ${msg}`), { code: 'CLUSTER_JOIN_FAILED' });
      }
      if (attempts === 1 || Date.now() - lastLog >= 5000) {
        lastLog = Date.now();
        log.info('cluster.etcd_member_join_wait', {
          reason: busy, attempts, waited_ms: waited, limit_ms: JOIN_WAIT_MS,
          detail: busy === 'learner'
            ? 'another new member is still a learner (etcd takes one at a time); trying again'
            : 'etcd accepts no new member yet (the last one joined under 5 s ago); trying again',
        });
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

export async function startClusterEtcd(cfg: Config, log: Logger): Promise<ClusterEtcd> {
  const c = cfg.cluster;
  if (c.role !== 'core') return { endpoints: [], member: null };
  // cluster.tls: the member serves https to clients and peers that hold a certificate of the CA.
  useEtcdTls(etcdTlsOf(cfg));
  if (!c.etcd.managed) return { endpoints: [...c.etcd.endpoints], member: null };
  const dataDir = resolve(cfg.node.data_dir, 'etcd');
  const base = {
    name: cfg.node.name, dataDir, host: await advertiseIp(cfg), clientPort: c.etcd.client_port, peerPort: c.etcd.peer_port,
    clusterToken: c.name, binary: c.etcd.binary, log,
  };
  let member: ManagedEtcd;
  if (hasMember(dataDir)) {
    log.info('cluster.etcd_member_restart', { data_dir: dataDir });
    member = await startManagedEtcd({ ...base, clusterState: 'new' });
  } else if (c.seeds.length > 0) {
    const urls = await seedEtcd(cfg, log, JOIN_WAIT_MS);
    log.info('cluster.etcd_member_join', { data_dir: dataDir, cluster_etcd: urls });
    member = await joinWhenAccepted(() => joinManagedEtcd({ ...base, clientUrls: urls }), log);
  } else {
    log.info('cluster.etcd_member_new', { data_dir: dataDir });
    member = await startManagedEtcd({ ...base, clusterState: 'new' });
  }
  // Every member's client URL: the node goes on through another one if its own dies.
  const members = await listMembers([member.clientUrl]).catch(() => []);
  const endpoints = [...new Set([member.clientUrl, ...members.flatMap((m) => m.clientURLs)])];
  return { endpoints, member };
}

/**
 * ctl cluster join on a running managed core, once its threads have stopped: its member's
 * data (the old cluster's) is dropped and a new member joins the etcd of the core at
 * `address` (member add, as a first start with --seeds). When that fails, the core starts a
 * new one-member etcd (it goes on alone) and the error comes back with it.
 */
export async function moveManagedMember(cfg: Config, log: Logger, current: ClusterEtcd, address: string): Promise<{ etcd: ClusterEtcd; error: Error | null }> {
  await current.member?.stop(2000).catch((e: unknown) => log.error('cluster.etcd_stop_failed', { error: e }));
  const dataDir = resolve(cfg.node.data_dir, 'etcd');
  rmSync(dataDir, { recursive: true, force: true });
  log.info('cluster.etcd_member_dropped', { data_dir: dataDir });
  try {
    return { etcd: await startClusterEtcd(withSeeds(cfg, [address]), log), error: null };
  } catch (e) {
    log.error('cluster.rejoin_failed', { target: address, error: (e as Error).message, detail: 'starting a new one-member etcd: this core goes on alone' });
    rmSync(dataDir, { recursive: true, force: true });
    return { etcd: await startClusterEtcd(withSeeds(cfg, []), log), error: e as Error };
  }
}
