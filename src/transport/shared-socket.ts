// The accept path without the SO_REUSEPORT addon (docs/workers.md, "Accept paths"): one
// TCP socket that the main thread binds, and that every worker thread adopts with
// net.Server#listen({ fd }). The kernel then wakes every worker on a new connection and
// the first to call accept() wins, so the spread is uneven (measured in docs/workers.md).
//
// The main thread binds but never listens: a listening handle would sit in the main
// thread's event loop and accept connections that nobody serves. node:net cannot bind
// without listening, so this uses Node's own TCP handle (process.binding('tcp_wrap'),
// the handle node:net is built on; a documentation-only deprecation in Node 20) for the
// bind. Each worker's listen() calls listen(2) on the same socket (harmless when repeated).
//
// One fd number is shared by every worker's handle, and a handle closes its fd when it
// closes: when one worker ends, the socket is gone for all. So in this mode a worker that
// dies stops the node (supervisor.ts), instead of being restarted on a dead socket.
import { lookup } from 'node:dns/promises';
import net from 'node:net';
import { listenError } from './uws.js';

interface TcpHandle {
  bind(host: string, port: number): number;
  bind6(host: string, port: number, flags: number): number;
  getsockname(out: { port?: number }): number;
  close(cb?: () => void): void;
  readonly fd: number;
}

interface TcpWrapBinding {
  TCP: new (type: number) => TcpHandle;
  constants: { SERVER: number };
}

/** process.binding(), which @types/node does not declare. */
function binding<T>(name: string): T {
  return (process as unknown as { binding(n: string): T }).binding(name);
}

export interface SharedSocket {
  readonly fd: number;
  readonly port: number;
  /** Closes the main thread's handle (and with it the fd); only after every worker has ended. */
  close(): void;
}

/** errno (negative, libuv style) → its code, as node:net reports bind errors. */
function errnoCode(err: number): string {
  const util = binding<{ errname(n: number): string }>('uv');
  try {
    return util.errname(err);
  } catch {
    return `E${-err}`;
  }
}

/**
 * Binds `bind:port` (no SO_REUSEPORT, so a port that anybody holds fails with EADDRINUSE,
 * like an exclusive node:net listen) and returns the fd for the workers. `port` 0 binds an
 * ephemeral port, reported in `port`.
 */
export async function bindSharedSocket(name: string, bind: string, port: number): Promise<SharedSocket> {
  let host = bind;
  if (net.isIP(host) === 0) host = (await lookup(bind)).address;
  const { TCP, constants } = binding<TcpWrapBinding>('tcp_wrap');
  const handle = new TCP(constants.SERVER);
  // bind6 flags 0: dual-stack for '::', as node:net does.
  const err = net.isIPv6(host) ? handle.bind6(host, port, 0) : handle.bind(host, port);
  if (err !== 0) {
    handle.close();
    const code = errnoCode(err);
    throw listenError(name, bind, port, code);
  }
  // libuv defers EADDRINUSE from bind(2) to listen(): a socket left unbound reads back
  // port 0, and listen(2) would then bind it to a random port. Check here instead.
  const out: { port?: number } = {};
  handle.getsockname(out);
  if (!out.port || (port !== 0 && out.port !== port)) {
    handle.close();
    throw listenError(name, bind, port, 'EADDRINUSE');
  }
  let closed = false;
  return {
    fd: handle.fd,
    port: out.port ?? port,
    close() {
      if (closed) return;
      closed = true;
      handle.close();
    },
  };
}
