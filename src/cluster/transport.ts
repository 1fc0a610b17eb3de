// The cluster port's links for the replication thread (ClusterTransport of agent.ts), and
// the TLS material of inter-node links (cluster.tls: the node's own certificate).
import { readFileSync } from 'node:fs';
import type { Config } from '../config/types.js';
import type { Logger } from '../log/logger.js';
import type { ClusterTransport } from './agent.js';
import { splitHostPort } from './forwarder.js';
import { connectLink, createLinkServer, type Link, type LinkIdentity, type LinkTls } from './wire/link.js';

export function clusterTls(cfg: Config): LinkTls | null {
  const t = cfg.listeners.tls;
  if (!cfg.cluster.tls || !t.cert || !t.key || !t.ca) return null;
  return { cert: readFileSync(t.cert), key: readFileSync(t.key), ca: readFileSync(t.ca) };
}

export function linkIdentity(cfg: Config, log: Logger, incarnation: string): LinkIdentity {
  return { cookie: cfg.cluster.cookie!, cluster: cfg.cluster.name, node: cfg.node.name, incarnation, tls: clusterTls(cfg), log };
}

export function createClusterTransport(cfg: Config, log: Logger, incarnation = ''): ClusterTransport {
  const id = linkIdentity(cfg, log, incarnation);
  return {
    listen: (onLink) => new Promise((resolve, reject) => {
      const server = createLinkServer({ ...id, channel: 'cluster', onLink });
      server.once('error', (e: NodeJS.ErrnoException) => reject(Object.assign(
        new Error(`cluster port ${cfg.listeners.bind}:${cfg.cluster.port}: ${e.code === 'EADDRINUSE' ? 'already in use' : e.message}`),
        { code: e.code === 'EADDRINUSE' ? 'EADDRINUSE' : 'CLUSTER_LISTEN_FAILED' })));
      server.listen({ host: cfg.listeners.bind, port: cfg.cluster.port, exclusive: true }, () => {
        server.on('error', (e) => log.error('cluster.server_error', { error: e.message }));
        const a = server.address();
        resolve({
          port: typeof a === 'object' && a ? a.port : cfg.cluster.port,
          close: () => new Promise<void>((r) => server.close(() => r())),
        });
      });
    }),
    connect: (address: string): Promise<Link> => {
      const [host, port] = splitHostPort(address);
      return connectLink({ ...id, host, port, channel: 'cluster' });
    },
  };
}
