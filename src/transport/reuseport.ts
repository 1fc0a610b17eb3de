// Per-worker SO_REUSEPORT listening sockets on Node 20 (node:net's `reusePort` needs Node
// >= 22.12), through the tiny N-API addon in native/reuseport/ (docs/accept.md).
//
// Each worker thread calls listenReusePort() itself: the addon creates a non-blocking TCP
// socket with SO_REUSEADDR + SO_REUSEPORT, binds and listens, and the worker's own
// net.Server / tls.Server adopts the fd with listen({ fd }). The kernel then hashes new
// connections over the group's sockets, which spreads them evenly; one fd shared by all
// workers does not (whichever thread wakes first wins the accept: 160/40 was seen).
//
// SO_REUSEPORT also means that a second process of the same user can join the group and
// take a share of the connections: the listener is started only after an exclusive probe
// (probeExclusive) shows the port is free, and by the first worker only.
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';
import { listenError } from './uws.js';

export interface ReusePortAddon {
  /** Listening TCP socket (non-blocking, CLOEXEC, SO_REUSEADDR + SO_REUSEPORT); returns the fd.
   *  Throws an Error with code (EADDRINUSE, EADDRNOTAVAIL, EACCES, ENOTFOUND, ...). */
  listenReusePort(host: string, port: number, backlog: number): number;
  /** Port the fd is bound to (for port 0). */
  localPort(fd: number): number;
  /** close(2), for an fd that was never handed to a net.Server. */
  closeFd(fd: number): void;
}

const here = dirname(fileURLToPath(import.meta.url));
/** dist/src/transport -> repo root; src/transport (ts-node style) -> repo root. */
function repoRoot(): string {
  for (const up of ['../../..', '../..']) {
    const root = resolve(here, up);
    if (existsSync(join(root, 'native', 'reuseport', 'binding.gyp'))) return root;
  }
  return resolve(here, '../../..');
}

/** The addon that npm's install step builds (scripts/build-addon.mjs); FLEETMQ_REUSEPORT_ADDON names another file. */
const DEFAULT_ADDON_PATH = join(repoRoot(), 'native', 'reuseport', 'build', 'Release', 'reuseport.node');
export const REUSEPORT_ADDON_PATH = process.env['FLEETMQ_REUSEPORT_ADDON'] || DEFAULT_ADDON_PATH;
/** Written by scripts/build-addon.mjs: whether the install step built the addon, and why not. */
const BUILD_STATUS_PATH = join(repoRoot(), 'native', 'reuseport', 'build-status.json');
export const REUSEPORT_FIX =
  'install make, g++ and python3 (Debian: apt-get install -y make g++ python3), then run ' +
  '`npm run build:reuseport` in a clone, or `npm rebuild fleetmq --foreground-scripts` where fleetmq is installed as a package';

let cached: ReusePortAddon | null = null;

class AddonUnavailable extends Error {
  readonly code = 'REUSEPORT_ADDON_UNAVAILABLE';
  constructor(readonly why: string, cause?: unknown) {
    super(`SO_REUSEPORT addon unavailable: ${why}; fix: ${REUSEPORT_FIX}`, { cause });
  }
}

/** Loads the addon (once per thread); a clear REUSEPORT_ADDON_UNAVAILABLE error when it cannot. */
export function loadReusePort(path = REUSEPORT_ADDON_PATH): ReusePortAddon {
  if (cached !== null && path === REUSEPORT_ADDON_PATH) return cached;
  if (process.platform !== 'linux') throw new AddonUnavailable(`the addon is built for Linux only (platform ${process.platform})`);
  const require = createRequire(import.meta.url);
  let addon: ReusePortAddon;
  try {
    addon = require(path) as ReusePortAddon;
  } catch (e) {
    throw new AddonUnavailable(
      existsSync(path) ? `${path} failed to load: ${(e as Error).message}` : `${path} does not exist${whyMissing(path)}`, e);
  }
  if (typeof addon.listenReusePort !== 'function') throw new AddonUnavailable(`${path} does not export listenReusePort()`);
  if (path === REUSEPORT_ADDON_PATH) cached = addon;
  return addon;
}

function whyMissing(path: string): string {
  if (path === DEFAULT_ADDON_PATH) return ` (${buildCause()})`;
  return path === process.env['FLEETMQ_REUSEPORT_ADDON'] ? ' (named by FLEETMQ_REUSEPORT_ADDON)' : '';
}

/** Why the install step left no addon, as scripts/build-addon.mjs recorded it. */
function buildCause(): string {
  try {
    const st = JSON.parse(readFileSync(BUILD_STATUS_PATH, 'utf8')) as { ok?: boolean; cause?: string | null };
    if (st.ok === false && st.cause) return `the install step could not build it: ${st.cause}`;
    if (st.ok === true) return 'it was built once and has since been removed';
  } catch {
    /* no status: the install step did not run */
  }
  return 'the install step did not run: npm was given --ignore-scripts, or skipped the package\'s install script';
}

export type ReusePortAvailability = { ok: true } | { ok: false; cause: string; fix: string };

/** Whether listenReusePort() can work in this process (the addon loads), and if not why. */
export function reusePortAvailability(): ReusePortAvailability {
  try {
    loadReusePort();
    return { ok: true };
  } catch (e) {
    if (e instanceof AddonUnavailable) return { ok: false, cause: e.why, fix: REUSEPORT_FIX };
    throw e;
  }
}

export interface ReusePortListenOptions {
  /** Listener name for error messages. */
  name: string;
  bind: string;
  /** 0 = ephemeral (only for the first member of a group; the others use the bound port). */
  port: number;
  backlog?: number;
  addon?: ReusePortAddon;
}

/**
 * Makes `server` (net.Server or tls.Server, not listening yet) listen on a new SO_REUSEPORT
 * socket of the group for bind:port. Resolves with the bound port. Bind errors become
 * listenError()s (code EADDRINUSE etc.), like the other listeners'.
 */
export async function listenReusePort(server: net.Server, opts: ReusePortListenOptions): Promise<number> {
  const addon = opts.addon ?? loadReusePort();
  let fd: number;
  try {
    fd = addon.listenReusePort(opts.bind, opts.port, opts.backlog ?? 511);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EUNKNOWN';
    throw listenError(opts.name, opts.bind, opts.port, code, (e as Error).message, e);
  }
  const port = addon.localPort(fd);
  try {
    await new Promise<void>((resolvePromise, reject) => {
      const onError = (err: Error): void => reject(err);
      server.once('error', onError);
      server.listen({ fd }, () => {
        server.off('error', onError);
        resolvePromise();
      });
    });
  } catch (e) {
    // The handle may or may not own the fd by now; close() on a server that never listened
    // is a no-op, so close the fd ourselves unless the server took it.
    if (!server.listening) {
      try {
        addon.closeFd(fd);
      } catch {
        /* already closed */
      }
    }
    const code = (e as NodeJS.ErrnoException).code ?? 'EUNKNOWN';
    throw listenError(opts.name, opts.bind, port, code, (e as Error).message, e);
  }
  return port;
}

/**
 * Fails with EADDRINUSE (listenError) when bind:port is held by anyone, reuseport or not:
 * node:net listens without SO_REUSEPORT. Run it once, before the first listenReusePort()
 * of a group, so that a second broker on the same port fails instead of sharing it.
 */
export async function probeExclusive(name: string, bind: string, port: number): Promise<void> {
  if (port === 0) return;
  const code = await new Promise<string | null>((resolvePromise) => {
    const srv = net.createServer();
    srv.once('error', (e: NodeJS.ErrnoException) => resolvePromise(e.code ?? 'EUNKNOWN'));
    srv.listen({ host: bind, port, exclusive: true }, () => srv.close(() => resolvePromise(null)));
  });
  if (code !== null) throw listenError(name, bind, port, code);
}
