// MQTT over TLS (node:tls). Certificates are read once, at start.
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import type { Listener } from './types.js';
import { DEFAULT_HIGH_WATER_MARK, acceptNetSocket, listenNetServer, type TcpListenerOptions } from './tcp.js';
import { codeError } from './uws.js';

export interface TlsListenerOptions extends TcpListenerOptions {
  /** PEM paths (listeners.tls.cert / key / ca), read once at start. */
  cert: string;
  key: string;
  ca?: string | null;
  /** Ask for a client certificate and verify it against `ca`; clients without a valid one are refused. */
  requestCert?: boolean;
  /** TLS handshake deadline (default 10 s). */
  handshakeTimeoutMs?: number;
}

/** Read a PEM file named by a config option; the error names the option and the path. */
export function readTlsFile(listener: string, option: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw codeError(
      `listener ${listener}: cannot read ${option} file '${path}': ${err.code ?? err.message}`,
      'TLS_FILE_UNREADABLE',
      e,
    );
  }
}

export async function startTlsListener(opts: TlsListenerOptions): Promise<Listener> {
  const hwm = opts.highWaterMark ?? DEFAULT_HIGH_WATER_MARK;
  const requestCert = opts.requestCert ?? false;
  const cert = readTlsFile(opts.name, 'listeners.tls.cert', opts.cert);
  const key = readTlsFile(opts.name, 'listeners.tls.key', opts.key);
  const ca = opts.ca ? readTlsFile(opts.name, 'listeners.tls.ca', opts.ca) : undefined;
  if (requestCert && ca === undefined) {
    throw codeError(
      `listener ${opts.name}: listeners.tls.request_cert needs listeners.tls.ca (the CA that signs client certificates)`,
      'TLS_CONFIG_INVALID',
    );
  }
  let server: tls.Server;
  try {
    server = tls.createServer({
      cert,
      key,
      ...(ca !== undefined ? { ca } : {}),
      requestCert,
      rejectUnauthorized: requestCert,
      handshakeTimeout: opts.handshakeTimeoutMs ?? 10_000,
      noDelay: true,
      keepAlive: opts.keepAlive ?? false,
      highWaterMark: hwm,
    });
  } catch (e) {
    throw codeError(
      `listener ${opts.name}: invalid TLS certificate/key (listeners.tls.cert='${opts.cert}', ` +
        `listeners.tls.key='${opts.key}'): ${(e as Error).message}`,
      'TLS_CONFIG_INVALID',
      e,
    );
  }
  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
    opts.log.debug('tls.handshake_failed', {
      listener: opts.name,
      remote: socket.remoteAddress,
      code: err.code,
      err,
    });
  });
  server.on('secureConnection', (socket: tls.TLSSocket) => acceptNetSocket(socket, 'tls', peerCommonName(socket), hwm, opts));
  return listenNetServer(server, opts);
}

/**
 * Subject CN of the verified peer certificate, else null. A subject with several CN
 * attributes (Node gives an array) is ambiguous and yields null.
 */
export function peerCommonName(socket: tls.TLSSocket): string | null {
  if (!socket.authorized) return null;
  const cert = socket.getPeerCertificate();
  const cn: unknown = cert?.subject?.CN;
  return typeof cn === 'string' && cn.length > 0 ? cn : null;
}
