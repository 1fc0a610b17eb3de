// Plain TCP listener (node:net) and the Transport over a net.Socket, shared with tls.ts.
import net from 'node:net';
import type { Logger } from '../log/logger.js';
import { CloseNotifier } from './close-notifier.js';
import type { Listener, Transport, TransportHandlers, TransportKind } from './types.js';
import { listenError } from './uws.js';
import { listenReusePort } from './reuseport.js';

export const DEFAULT_HIGH_WATER_MARK = 64 * 1024;
/** end(): time allowed to flush and close before the socket is destroyed. */
export const DEFAULT_END_TIMEOUT_MS = 5_000;

export interface TcpListenerOptions {
  name: string;
  bind: string;
  /** 0 = ephemeral; Listener.port reports the bound port. */
  port: number;
  onConnection: (t: Transport) => void;
  log: Logger;
  /** write() returns false once this many bytes are queued (default 64 KiB). */
  highWaterMark?: number;
  /** TCP keepalive probes (default off: MQTT has its own keep alive). */
  keepAlive?: boolean;
  endTimeoutMs?: number;
  /**
   * Listen on a socket of an SO_REUSEPORT group (one per worker thread; the kernel spreads
   * connections evenly by a hash). The caller probes that the port is free first.
   */
  reusePort?: boolean;
  /**
   * Listen on this already bound socket, shared with the other workers (the accept path
   * without the reuseport addon, shared-socket.ts). Wins over reusePort.
   */
  fd?: number;
}

/**
 * Transport over a net.Socket / tls.TLSSocket.
 * - No data is read before setHandlers() (the socket is not flowing until then).
 * - write() returns false when socket.writableLength exceeds the high-water mark; the
 *   drain handler runs once Node's 'drain' fires (buffer empty). For TLS sockets Node's
 *   own writable high-water mark (16 KiB) cannot be set per server, so the effective mark
 *   is max(highWaterMark, socket.writableHighWaterMark) to guarantee a 'drain' event.
 * - close(hadError) is called exactly once, asynchronously; socket errors never throw.
 */
export class NetTransport implements Transport {
  readonly remoteAddress: string;
  private handlers: TransportHandlers | null = null;
  private readonly hwm: number;
  private needDrain = false;
  private paused = false;
  private ending = false;
  private closed = false;
  private readonly closing: CloseNotifier;
  private hadError = false;
  private endTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly socket: net.Socket,
    readonly kind: TransportKind,
    readonly certCommonName: string | null,
    highWaterMark: number,
    private readonly log: Logger,
    private readonly endTimeoutMs = DEFAULT_END_TIMEOUT_MS,
  ) {
    this.remoteAddress = normalizeAddress(socket.remoteAddress);
    this.hwm = Math.max(highWaterMark, socket.writableHighWaterMark);
    this.closing = new CloseNotifier(kind, log, () => this.handlers);
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.hadError = true;
      this.log.debug('transport.error', { kind, remote: this.remoteAddress, code: err.code, err });
    });
    socket.on('drain', () => {
      if (!this.needDrain || this.closed) return;
      this.needDrain = false;
      this.handlers?.drain();
    });
    socket.on('close', (hadError: boolean) => {
      this.closed = true;
      if (this.endTimer !== null) clearTimeout(this.endTimer);
      this.closing.notify(hadError || this.hadError);
    });
    if (socket.destroyed) {
      this.closed = true;
      queueMicrotask(() => this.closing.notify(true));
    }
  }

  setHandlers(h: TransportHandlers): void {
    const first = this.handlers === null;
    this.handlers = h;
    if (!first) return;
    this.socket.on('data', (chunk: Buffer) => {
      if (!this.ending) this.handlers?.data(chunk);
    });
    // Adding a 'data' listener starts the flow unless pause() was called; be explicit.
    if (this.paused) this.socket.pause();
    else this.socket.resume();
    this.closing.handlersSet();
  }

  write(buf: Uint8Array): boolean {
    if (this.closed || this.socket.destroyed || this.socket.writableEnded) return false;
    // Packets written to one socket in the same tick leave in one writev: cork on the
    // first, uncork once the current batch of events is handled.
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(uncork, this);
    }
    this.socket.write(buf);
    if (this.socket.writableLength > this.hwm) {
      this.needDrain = true;
      return false;
    }
    return true;
  }

  private corked = false;

  uncork(): void {
    this.corked = false;
    if (!this.socket.destroyed) this.socket.uncork();
  }

  bufferedBytes(): number {
    return this.closed ? 0 : this.socket.writableLength;
  }

  pauseReading(): void {
    this.paused = true;
    if (!this.closed && !this.ending) this.socket.pause();
  }

  resumeReading(): void {
    this.paused = false;
    if (this.ending) return;
    // Before setHandlers() resuming would drop data on the floor (no 'data' listener).
    if (!this.closed && this.handlers !== null) this.socket.resume();
  }

  end(): void {
    if (this.closed || this.socket.writableEnded) return;
    // Input after end() is discarded; keep reading so the peer's FIN is seen and the
    // socket closes as soon as our data is flushed.
    this.ending = true;
    if (this.handlers !== null) this.socket.resume();
    this.socket.end();
    this.endTimer = setTimeout(() => {
      this.endTimer = null;
      this.socket.destroy();
    }, this.endTimeoutMs);
    this.endTimer.unref();
  }

  destroy(): void {
    if (this.socket.destroyed) return;
    this.socket.destroy();
  }
}

export function normalizeAddress(addr: string | undefined): string {
  if (addr === undefined) return '';
  return addr.startsWith('::ffff:') && addr.includes('.') ? addr.slice(7) : addr;
}

/**
 * Listen on a node:net server (TCP or TLS) and build the Listener. Raw connections are
 * tracked so close() can destroy them (net.Server.close() waits for open connections,
 * including TLS handshakes in progress).
 */
export async function listenNetServer(
  server: net.Server,
  opts: { name: string; bind: string; port: number; log: Logger; reusePort?: boolean; fd?: number },
): Promise<Listener> {
  const raw = new Set<net.Socket>();
  server.on('connection', (s: net.Socket) => {
    raw.add(s);
    s.once('close', () => raw.delete(s));
  });
  if (opts.fd === undefined && opts.reusePort) await listenReusePort(server, { name: opts.name, bind: opts.bind, port: opts.port });
  else {
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        reject(listenError(opts.name, opts.bind, opts.port, err.code ?? 'ELISTEN', err.message, err));
      };
      server.once('error', onError);
      const how = opts.fd !== undefined ? { fd: opts.fd } : { host: opts.bind, port: opts.port, exclusive: true };
      server.listen(how, () => {
        server.off('error', onError);
        resolve();
      });
    });
  }
  server.on('error', (err) => opts.log.error('listener.error', { listener: opts.name, err }));
  const addr = server.address();
  const port = addr !== null && typeof addr === 'object' ? addr.port : opts.port;
  opts.log.info('listener.up', { listener: opts.name, bind: opts.bind, port });
  let closing: Promise<void> | null = null;
  return {
    name: opts.name,
    port,
    close(): Promise<void> {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of raw) s.destroy();
        opts.log.info('listener.down', { listener: opts.name, port });
      });
      return closing;
    },
  };
}

export function startTcpListener(opts: TcpListenerOptions): Promise<Listener> {
  const hwm = opts.highWaterMark ?? DEFAULT_HIGH_WATER_MARK;
  const server = net.createServer({
    noDelay: true,
    keepAlive: opts.keepAlive ?? false,
    highWaterMark: hwm,
  });
  server.on('connection', (socket: net.Socket) => acceptNetSocket(socket, 'tcp', null, hwm, opts));
  return listenNetServer(server, opts);
}

/**
 * Hands an accepted TCP / TLS socket to `opts.onConnection` as a NetTransport (Nagle off);
 * an onConnection that throws is logged and the socket destroyed.
 */
export function acceptNetSocket(
  socket: net.Socket,
  kind: TransportKind,
  certCommonName: string | null,
  hwm: number,
  opts: Pick<TcpListenerOptions, 'name' | 'onConnection' | 'log' | 'endTimeoutMs'>,
): void {
  socket.setNoDelay(true);
  const t = new NetTransport(socket, kind, certCommonName, hwm, opts.log, opts.endTimeoutMs);
  try {
    opts.onConnection(t);
  } catch (err) {
    opts.log.error('listener.on_connection_failed', { listener: opts.name, err });
    socket.destroy();
  }
}

function uncork(t: NetTransport): void {
  t.uncork();
}
