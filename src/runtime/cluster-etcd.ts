// The etcd a core uses (docs/cluster.md, "Cores and etcd"): the endpoints it was given
// (--etcd), or its own managed member (--etcd-managed) under <data-dir>/etcd, started and
// supervised here in the main thread and stopped after the node. A managed core with seeds
// and no member yet joins their etcd cluster (member add; the seeds' cluster ports say where
// their etcd is); with a member in its data dir it simply starts it again.
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { hasMember, startManagedEtcd, type ManagedEtcd } from '../cluster/etcd/managed.js';
import { joinManagedEtcd, listMembers } from '../cluster/etcd/members.js';
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

/** etcd client URLs that the seeds' cores use (asked over their cluster ports). */
async function seedEtcd(cfg: Config, log: Logger): Promise<string[]> {
  const t = createClusterTransport(cfg, log);
  const errors: string[] = [];
  for (const seed of cfg.cluster.seeds) {
    try {
      const link = await t.connect(seed);
      try {
        const st = parseJson<NodeStatus>(await link.request(R_STATUS, Buffer.alloc(0), 5000));
        if (st.role === 'core' && st.etcd && st.etcd.endpoints.length > 0) return [...st.etcd.endpoints];
        errors.push(`${seed}: ${st.name} is a ${st.role} without etcd endpoints`);
      } finally {
        link.close('asked');
      }
    } catch (e) {
      errors.push(`${seed}: ${(e as Error).message}`);
    }
  }
  throw Object.assign(new Error(`cannot join: no seed answered with its etcd (${errors.join('; ')})`), { code: 'CLUSTER_JOIN_FAILED' });
}

export async function startClusterEtcd(cfg: Config, log: Logger): Promise<ClusterEtcd> {
  const c = cfg.cluster;
  if (c.role !== 'core') return { endpoints: [], member: null };
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
    const urls = await seedEtcd(cfg, log);
    log.info('cluster.etcd_member_join', { data_dir: dataDir, cluster_etcd: urls });
    // etcd refuses a member add while its last new member is younger than 5 s
    // ("unhealthy cluster"): cores started together join one after the other.
    const until = Date.now() + 30_000;
    for (;;) {
      try {
        member = await joinManagedEtcd({ ...base, clientUrls: urls });
        break;
      } catch (e) {
        if (!/unhealthy cluster/.test((e as Error).message) || Date.now() > until) throw e;
        log.info('cluster.etcd_member_join_wait', { detail: 'etcd accepts no new member yet (the last one joined under 5 s ago); trying again' });
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  } else {
    log.info('cluster.etcd_member_new', { data_dir: dataDir });
    member = await startManagedEtcd({ ...base, clusterState: 'new' });
  }
  // Every member's client URL: the node goes on through another one if its own dies.
  const members = await listMembers([member.clientUrl]).catch(() => []);
  const endpoints = [...new Set([member.clientUrl, ...members.flatMap((m) => m.clientURLs)])];
  return { endpoints, member };
}
