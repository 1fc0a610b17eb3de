// Test certificates made with the openssl command line (RSA 2048, valid for 2 days).
// Each function writes <name>.key and <name>.crt into `dir`.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const DAYS = '2';

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { stdio: 'ignore', timeout: 20_000 });
}

/** A self-signed certificate (also usable as a CA) with subject CN=`cn`. */
export function selfSignedCert(dir: string, name: string, cn: string): void {
  const f = (ext: string): string => join(dir, `${name}.${ext}`);
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-days', DAYS,
    '-keyout', f('key'), '-out', f('crt'));
}

/** A certificate with subject CN=`cn` signed by the CA `<ca>.crt` / `<ca>.key` in `dir`; `san` adds a subjectAltName. */
export function signedCert(dir: string, name: string, cn: string, opts: { ca?: string; san?: string } = {}): void {
  const f = (file: string): string => join(dir, file);
  const ca = opts.ca ?? 'ca';
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`));
  const ext: string[] = [];
  if (opts.san !== undefined) {
    writeFileSync(f(`${name}.ext`), `subjectAltName=${opts.san}\n`);
    ext.push('-extfile', f(`${name}.ext`));
  }
  openssl('x509', '-req', '-in', f(`${name}.csr`), '-CA', f(`${ca}.crt`), '-CAkey', f(`${ca}.key`), '-CAcreateserial',
    '-days', DAYS, ...ext, '-out', f(`${name}.crt`));
}

/**
 * A CA (ca.crt / ca.key, CN=`caCn`), a server certificate it signed (server.crt /
 * server.key, CN=localhost, SAN IP:127.0.0.1 and DNS:localhost) and, with `clientCn`, a
 * client certificate it signed (client.crt / client.key).
 */
export function makeTestPki(dir: string, caCn: string, clientCn?: string): void {
  selfSignedCert(dir, 'ca', caCn);
  signedCert(dir, 'server', 'localhost', { san: 'IP:127.0.0.1,DNS:localhost' });
  if (clientCn !== undefined) signedCert(dir, 'client', clientCn);
}
