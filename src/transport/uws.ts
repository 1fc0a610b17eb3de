// The only module that touches uWebSockets.js (@trufflesuite/uws-js-unofficial 20.30).
//
// We do not go through the package's src/uws.js: it console.logs and silently falls back
// to a slow JS implementation when the native binary does not load. Instead the binary
// for this platform / Node ABI is loaded directly; the fallback is used only when the
// operator allowed it (node.allow_uws_fallback), with a warning.
//
// Everything else (ws.ts, mgmt/http.ts) gets the module object and the types from here.
import { createRequire } from 'node:module';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import net from 'node:net';
import type * as UwsModule from '@trufflesuite/uws-js-unofficial';
import type { Logger } from '../log/logger.js';

export type Uws = typeof UwsModule;
export type UwsApp = UwsModule.TemplatedApp;
export type UwsWebSocket<UserData> = UwsModule.WebSocket<UserData>;
export type UwsWebSocketBehavior<UserData> = UwsModule.WebSocketBehavior<UserData>;
export type UwsHttpResponse = UwsModule.HttpResponse;
export type UwsHttpRequest = UwsModule.HttpRequest;
export type UwsListenSocket = UwsModule.us_listen_socket;
export type UwsSocketContext = UwsModule.us_socket_context_t;

/** uSockets listen option: bind without SO_REUSEPORT (see listenExclusive). */
export const LIBUS_LISTEN_EXCLUSIVE_PORT = 1;

export interface LoadedUws {
  uws: Uws;
  /** false when the JS fallback (dist/index) is in use: slow, no SSLApp, no drain events,
   *  no custom upgrade handler (see ws.ts for how the WS listener copes). */
  native: boolean;
}

export interface LoadUwsOptions {
  allowFallback: boolean;
  log: Logger;
  /** Testing hook: load this file instead of the binary for this platform / ABI. */
  nativePath?: string;
}

const PKG = '@trufflesuite/uws-js-unofficial';

const nativeModules = new WeakSet<object>();

/** true for the native binary as returned by loadUws, false for the JS fallback. */
export function isNativeUws(uws: Uws): boolean {
  return nativeModules.has(uws);
}

export function loadUws(opts: LoadUwsOptions): LoadedUws {
  const require = createRequire(import.meta.url);
  let pkgDir: string;
  try {
    pkgDir = dirname(require.resolve(`${PKG}/package.json`));
  } catch (e) {
    throw codeError(`${PKG} is not installed (${(e as Error).message})`, 'UWS_NATIVE_UNAVAILABLE', e);
  }
  const file = `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
  const nativePath = opts.nativePath ?? join(pkgDir, 'binaries', file);
  try {
    const uws = require(nativePath) as Uws;
    if (typeof uws.App !== 'function') throw new Error(`${nativePath} does not export App()`);
    nativeModules.add(uws);
    return { uws, native: true };
  } catch (e) {
    let why: string;
    if (!existsSync(nativePath)) {
      why =
        `no uWebSockets.js binary for ${process.platform}/${process.arch} with Node ABI ${process.versions.modules} ` +
        `(Node ${process.versions.node}): ${nativePath} does not exist; available: ${availableBinaries(pkgDir)}`;
    } else {
      why = `${nativePath} failed to load: ${(e as Error).message}`;
    }
    if (!opts.allowFallback) {
      throw codeError(
        `uWebSockets.js native binary unavailable: ${why}. ` +
          'Use a supported Node.js version, or set node.allow_uws_fallback=true to start with the slow JS fallback ' +
          '(no WSS, no subprotocol check, polled backpressure)',
        'UWS_NATIVE_UNAVAILABLE',
        e,
      );
    }
    opts.log.warn('uws.fallback', { reason: why });
    const uws = require(join(pkgDir, 'dist', 'index.js')) as Uws;
    return { uws, native: false };
  }
}

function availableBinaries(pkgDir: string): string {
  try {
    const names = readdirSync(join(pkgDir, 'binaries')).filter((n) => n.endsWith('.node'));
    return names.length > 0 ? names.join(', ') : 'none';
  } catch {
    return 'none';
  }
}

export function codeError(message: string, code: string, cause?: unknown): Error & { code: string } {
  const err = new Error(message, cause === undefined ? undefined : { cause }) as Error & { code: string };
  err.code = code;
  return err;
}

/** app.listen(host, port, options, cb): supported by the native build, missing from its d.ts. */
type ListenWithOptions = (
  host: string,
  port: number,
  options: number,
  cb: (ls: UwsListenSocket | false) => void,
) => UwsApp;

/**
 * Listen with LIBUS_LISTEN_EXCLUSIVE_PORT. Without it uSockets sets SO_REUSEPORT, and a
 * second fleetmq process on the same port would start "successfully" and steal half of
 * the connections. A `false` listen socket becomes an Error with code EADDRINUSE (or,
 * when a probe with node:net shows a clearer cause such as EADDRNOTAVAIL / EACCES /
 * ENOTFOUND, that code), naming the listener and port.
 */
export async function listenExclusive(
  uws: Uws,
  app: UwsApp,
  opts: { name: string; bind: string; port: number; shared?: boolean },
): Promise<{ socket: UwsListenSocket; port: number }> {
  const ls = await new Promise<UwsListenSocket | false>((resolve) => {
    (app.listen as unknown as ListenWithOptions).call(app, opts.bind, opts.port, opts.shared ? 0 : LIBUS_LISTEN_EXCLUSIVE_PORT, resolve);
  });
  if (ls === false || ls === null || ls === undefined) {
    throw await listenFailure(opts.name, opts.bind, opts.port);
  }
  const port = uws.us_socket_local_port(ls as unknown as UwsModule.us_socket);
  return { socket: ls, port: typeof port === 'number' && port > 0 ? port : opts.port };
}

/** Error for a listener that could not bind; used by node:net listeners too. */
export function listenError(name: string, bind: string, port: number, code: string, detail?: string, cause?: unknown): Error {
  const where = `${bind}:${port}`;
  let msg: string;
  switch (code) {
    case 'EADDRINUSE':
      msg = `listener ${name}: port ${port} is already in use (${where}); is another fleetmq or server running?`;
      break;
    case 'EACCES':
      msg = `listener ${name}: permission denied binding ${where} (ports below 1024 need privileges)`;
      break;
    case 'EADDRNOTAVAIL':
      msg = `listener ${name}: address ${bind} is not available on this host (listeners.bind)`;
      break;
    case 'ENOTFOUND':
      msg = `listener ${name}: bind address ${bind} does not resolve (listeners.bind)`;
      break;
    default:
      msg = `listener ${name}: cannot listen on ${where}${detail ? `: ${detail}` : ''}`;
  }
  return codeError(msg, code, cause);
}

// uSockets only says "false". Probe with node:net (which does not set SO_REUSEPORT) to
// tell a bad bind address apart from a port in use; default to EADDRINUSE.
async function listenFailure(name: string, bind: string, port: number): Promise<Error> {
  const code = await new Promise<string | null>((resolve) => {
    const srv = net.createServer();
    srv.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? null));
    srv.listen({ host: bind, port, exclusive: true }, () => srv.close(() => resolve(null)));
  });
  const known = code === 'EACCES' || code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND';
  return listenError(name, bind, port, known ? code : 'EADDRINUSE');
}

/** Close a listen socket and, when the build has it (20.30 native does), every socket of the app. */
export function closeApp(uws: Uws, app: UwsApp, ls: UwsListenSocket | null): void {
  if (ls !== null) uws.us_listen_socket_close(ls);
  const withClose = app as UwsApp & { close?: () => void };
  if (typeof withClose.close === 'function') withClose.close();
}

/** Binary remote address (4 or 16 bytes) as text; IPv4-mapped IPv6 becomes dotted IPv4. */
export function formatRemoteAddress(bin: ArrayBuffer, text: () => ArrayBuffer): string {
  const b = new Uint8Array(bin);
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (b.length === 16) {
    let mapped = b[10] === 0xff && b[11] === 0xff;
    for (let i = 0; i < 10 && mapped; i++) if (b[i] !== 0) mapped = false;
    if (mapped) return `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  }
  try {
    return Buffer.from(text()).toString('latin1');
  } catch {
    return '';
  }
}
