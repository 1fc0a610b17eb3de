// etcd over TLS (cluster.tls with a managed member, or https:// endpoints): the node's own
// certificate and CA (listeners.tls.cert / key / ca) serve both ends — a managed member
// listens on https for clients and peers and asks each for a certificate signed by the CA
// (--client-cert-auth, --peer-client-cert-auth), and the node's etcd client presents its
// certificate. Set once per thread (main thread and replication thread, from the same
// config) before any etcd client or member is made: a node has one etcd identity.
import { readFileSync } from 'node:fs';
import type { Config } from '../../config/types.js';

export interface EtcdTlsFiles {
  ca: string;
  cert: string;
  key: string;
}

let files: EtcdTlsFiles | null = null;
let loaded: { rootCertificate: Buffer; certChain: Buffer; privateKey: Buffer } | null = null;

/**
 * The files of a config's etcd TLS, or null (plain http): with cluster.tls, for a managed
 * member, or for given endpoints that are all https:// (an external etcd on plain http
 * stays plain; https endpoints without cluster.tls are verified against the system's CAs,
 * with no client certificate).
 */
export function etcdTlsOf(cfg: Config): EtcdTlsFiles | null {
  const t = cfg.listeners.tls;
  if (!cfg.cluster.tls || t.cert === null || t.key === null || t.ca === null) return null;
  const e = cfg.cluster.etcd;
  if (!e.managed && (e.endpoints.length === 0 || !e.endpoints.every((u) => u.startsWith('https://')))) return null;
  return { ca: t.ca, cert: t.cert, key: t.key };
}

/** This thread's etcd TLS from now on (null: plain http). */
export function useEtcdTls(f: EtcdTlsFiles | null): void {
  files = f;
  loaded = f && { rootCertificate: readFileSync(f.ca), certChain: readFileSync(f.cert), privateKey: readFileSync(f.key) };
}

export function etcdTls(): EtcdTlsFiles | null {
  return files;
}

/** The client credentials (PEM contents), or undefined for plain http. */
export function etcdCredentials(): { rootCertificate: Buffer; certChain: Buffer; privateKey: Buffer } | undefined {
  return loaded ?? undefined;
}

/** The scheme of this thread's etcd URLs. */
export function etcdScheme(): 'http' | 'https' {
  return files ? 'https' : 'http';
}
