// MQTT over WebSocket (and WSS) on uWebSockets.js.
//
// uWS rules this module lives by:
// - A uWS WebSocket must never be used after its close callback ran (or after we called
//   end()/close(), which run the close callback synchronously): every call is guarded by
//   `gone`. (20.30 throws "Invalid access of closed uWS.WebSocket"; other builds crash.)
// - ArrayBuffers handed to `message` are reused after the callback: payloads are copied.
// - uWS 20.30 has no way to stop reading a WebSocket. pauseReading() therefore only makes
//   the transport queue incoming payloads until resumeReading() (bounded by
//   maxPausedBytes: above it the connection is destroyed). TCP flow control towards the
//   client is not applied while paused.
// - All sockets are closed before the listen socket, and the app is closed after it: a
//   process or thread exiting with open uWS handles aborts.
//
// With the JS fallback (node.allow_uws_fallback) the listener works in a degraded way:
// the fallback cannot run a custom upgrade handler (it throws), so there is no path /
// subprotocol check of ours (the `ws` library answers with the client's first offered
// subprotocol), getUserData() is not implemented (transports are found through a WeakMap),
// there are no drain events (polled every 50 ms) and close() does not run the close
// callback (synthesized).
import type { Logger } from '../log/logger.js';
import { CloseNotifier } from './close-notifier.js';
import type { Listener, Transport, TransportHandlers, TransportKind } from './types.js';
import { DEFAULT_HIGH_WATER_MARK } from './tcp.js';
import { readTlsFile } from './tls.js';
import {
  closeApp,
  codeError,
  formatRemoteAddress,
  isNativeUws,
  listenExclusive,
  type Uws,
  type UwsApp,
  type UwsHttpRequest,
  type UwsHttpResponse,
  type UwsListenSocket,
  type UwsSocketContext,
  type UwsWebSocket,
} from './uws.js';

/** Subprotocols accepted for MQTT, matched case-insensitively, echoed as the client sent them. */
export const MQTT_WS_SUBPROTOCOLS: readonly string[] = ['mqtt', 'mqttv3.1', 'mqttv3.1.1'];

export const DEFAULT_MAX_PAUSED_BYTES = 4 * 1024 * 1024;

export interface WsListenerOptions {
  name: string;
  uws: Uws;
  bind: string;
  /** 0 = ephemeral; Listener.port reports the bound port. */
  port: number;
  /** URL path of the WebSocket endpoint, e.g. '/mqtt'; other paths get 404. */
  path: string;
  /** WSS via uws.SSLApp. `ca` makes uSockets verify client certificates that are presented
   *  (it does not require one, and this build cannot expose the peer certificate, so
   *  certCommonName is always null over WSS). */
  tls?: { cert: string; key: string; ca?: string | null };
  /** Largest WebSocket message accepted (≥ mqtt.max_packet_size); larger closes the socket. */
  maxPayloadLength: number;
  onConnection: (t: Transport) => void;
  log: Logger;
  /** write() returns false once getBufferedAmount() exceeds this (default 64 KiB). */
  highWaterMark?: number;
  /** Incoming bytes queued while reading is paused before the connection is dropped. */
  maxPausedBytes?: number;
  /**
   * Share the port with the same listener in other worker threads of this process (no
   * LIBUS_LISTEN_EXCLUSIVE_PORT; uWS spreads connections over them). The caller probes that
   * the port is free first.
   */
  shared?: boolean;
}

interface UserData {
  remote: string;
  protocol: string;
}

interface WsHooks {
  native: boolean;
  /** The socket is closed (either side): forget it. */
  gone(t: WsTransport): void;
}

const FALLBACK_DRAIN_POLL_MS = 50;

/** First MQTT subprotocol in the client's Sec-WebSocket-Protocol list, or null. */
export function selectSubprotocol(header: string): string | null {
  for (const part of header.split(',')) {
    const p = part.trim();
    if (p !== '' && MQTT_WS_SUBPROTOCOLS.includes(p.toLowerCase())) return p;
  }
  return null;
}

class WsTransport implements Transport {
  readonly certCommonName = null;
  private handlers: TransportHandlers | null = null;
  /** The uWS socket is closed: never touch `ws` again. */
  private gone = false;
  private byUs = false;
  private readonly closing: CloseNotifier;
  private needDrain = false;
  private paused = false;
  private queue: Buffer[] = [];
  private queuedBytes = 0;
  private flushScheduled = false;
  private closeSeen = false;
  private drainPoll: NodeJS.Timeout | null = null;
  private readonly lowWater: number;

  constructor(
    private readonly ws: UwsWebSocket<UserData>,
    readonly kind: TransportKind,
    readonly remoteAddress: string,
    private readonly hwm: number,
    private readonly maxPausedBytes: number,
    private readonly log: Logger,
    private readonly hooks: WsHooks,
  ) {
    this.lowWater = Math.floor(hwm / 2);
    this.closing = new CloseNotifier(kind, log, () => this.handlers);
  }

  setHandlers(h: TransportHandlers): void {
    const first = this.handlers === null;
    this.handlers = h;
    if (!first) return;
    if (this.queue.length > 0) this.scheduleFlush();
    this.closing.handlersSet();
  }

  write(buf: Uint8Array): boolean {
    if (this.gone) return false;
    let status: number;
    let buffered: number;
    try {
      status = this.ws.send(buf, true, false);
      buffered = this.ws.getBufferedAmount();
    } catch (err) {
      this.log.debug('ws.send_failed', { remote: this.remoteAddress, err });
      return false;
    }
    if (status === 2) {
      // Dropped by uWS (maxBackpressure): the byte stream is broken. Not expected with
      // maxBackpressure 0 (unlimited), kept as a safety net.
      this.log.warn('ws.send_dropped', { remote: this.remoteAddress, buffered });
      this.destroy();
      return false;
    }
    if (buffered > this.hwm) {
      this.needDrain = true;
      if (!this.hooks.native && this.drainPoll === null) {
        this.drainPoll = setInterval(() => this.onDrain(), FALLBACK_DRAIN_POLL_MS);
        this.drainPoll.unref();
      }
      return false;
    }
    return true;
  }

  bufferedBytes(): number {
    if (this.gone) return 0;
    try {
      return this.ws.getBufferedAmount();
    } catch {
      return 0;
    }
  }

  pauseReading(): void {
    this.paused = true;
  }

  resumeReading(): void {
    this.paused = false;
    if (this.queue.length > 0) this.scheduleFlush();
  }

  end(): void {
    if (this.gone) return;
    this.gone = true;
    this.byUs = true;
    try {
      // Close frame queued after the buffered data; uWS flushes, then closes (with a timeout).
      // (The fallback needs the reason argument.)
      this.ws.end(1000, '');
    } catch (err) {
      this.log.debug('ws.end_failed', { remote: this.remoteAddress, err });
    }
  }

  destroy(): void {
    if (this.gone) return;
    this.gone = true;
    this.byUs = true;
    try {
      this.ws.close();
    } catch (err) {
      this.log.debug('ws.close_failed', { remote: this.remoteAddress, err });
    }
    // Native uWS ran the close callback inside close(); the fallback never does.
    if (!this.closeSeen) this.onClose(1006);
  }

  // --- called from the uWS behavior ---

  onMessage(message: ArrayBuffer, isBinary: boolean): void {
    if (this.gone) return;
    if (!isBinary) {
      // [MQTT-6.0.0-1] MQTT is carried in binary frames; any other data frame closes.
      this.log.debug('ws.text_frame', { remote: this.remoteAddress });
      this.destroy();
      return;
    }
    if (message.byteLength === 0) return;
    // uWS neuters / reuses the ArrayBuffer after this callback: copy.
    const chunk = Buffer.copyBytesFrom(new Uint8Array(message));
    if (this.handlers !== null && !this.paused && this.queue.length === 0) {
      this.handlers.data(chunk);
      return;
    }
    this.queue.push(chunk);
    this.queuedBytes += chunk.length;
    if (this.queuedBytes > this.maxPausedBytes) {
      this.log.warn('ws.paused_buffer_overflow', { remote: this.remoteAddress, bytes: this.queuedBytes });
      this.destroy();
    }
  }

  onDrain(): void {
    if (this.gone || !this.needDrain) return;
    let buffered: number;
    try {
      buffered = this.ws.getBufferedAmount();
    } catch {
      return;
    }
    if (buffered > this.lowWater) return;
    this.needDrain = false;
    this.stopDrainPoll();
    this.handlers?.drain();
  }

  onClose(code: number): void {
    if (this.closeSeen) return;
    this.closeSeen = true;
    this.gone = true;
    this.stopDrainPoll();
    this.hooks.gone(this);
    this.queue = [];
    this.queuedBytes = 0;
    const hadError = !this.byUs && code !== 1000 && code !== 1001 && code !== 1005;
    // Deferred: end()/destroy() run the uWS close callback synchronously.
    queueMicrotask(() => this.closing.notify(hadError));
  }

  private stopDrainPoll(): void {
    if (this.drainPoll !== null) clearInterval(this.drainPoll);
    this.drainPoll = null;
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    while (this.handlers !== null && !this.paused && !this.closing.done) {
      const chunk = this.queue.shift();
      if (chunk === undefined) return;
      this.queuedBytes -= chunk.length;
      this.handlers.data(chunk);
    }
  }
}

function makeApp(opts: WsListenerOptions): UwsApp {
  const { uws, tls } = opts;
  if (tls === undefined) return uws.App();
  const keyFile = tls.key;
  const certFile = tls.cert;
  // uSockets only says "App construction failed": check the files first for a clear error.
  readTlsFile(opts.name, 'listeners.tls.cert', certFile);
  readTlsFile(opts.name, 'listeners.tls.key', keyFile);
  if (tls.ca) readTlsFile(opts.name, 'listeners.tls.ca', tls.ca);
  if (typeof uws.SSLApp !== 'function') {
    throw codeError(
      `listener ${opts.name}: WSS needs the native uWebSockets.js build (the JS fallback has no SSLApp)`,
      'UWS_TLS_UNAVAILABLE',
    );
  }
  try {
    return uws.SSLApp({
      key_file_name: keyFile,
      cert_file_name: certFile,
      ...(tls.ca ? { ca_file_name: tls.ca } : {}),
    });
  } catch (e) {
    throw codeError(
      `listener ${opts.name}: invalid TLS certificate/key for WSS (listeners.tls.cert='${certFile}', ` +
        `listeners.tls.key='${keyFile}'): ${(e as Error).message}`,
      'TLS_CONFIG_INVALID',
      e,
    );
  }
}

function plain(res: UwsHttpResponse, status: string, body: string): void {
  res.cork(() => {
    res.writeStatus(status).writeHeader('content-type', 'text/plain').end(body);
  });
}

export async function startWsListener(opts: WsListenerOptions): Promise<Listener> {
  if (!Number.isInteger(opts.maxPayloadLength) || opts.maxPayloadLength <= 0) {
    throw new RangeError(`listener ${opts.name}: maxPayloadLength must be a positive integer`);
  }
  const { uws, log } = opts;
  const kind: TransportKind = opts.tls ? 'wss' : 'ws';
  const hwm = opts.highWaterMark ?? DEFAULT_HIGH_WATER_MARK;
  const maxPaused = opts.maxPausedBytes ?? Math.max(DEFAULT_MAX_PAUSED_BYTES, 2 * opts.maxPayloadLength);
  const open = new Set<WsTransport>();
  // The uWS socket object is stable for the socket's life; the fallback has no getUserData().
  const byWs = new WeakMap<object, WsTransport>();
  const hooks: WsHooks = { native: isNativeUws(uws), gone: (t) => open.delete(t) };
  let closed = false;

  const app = makeApp(opts);
  const upgrade = (res: UwsHttpResponse, req: UwsHttpRequest, context: UwsSocketContext): void => {
    if (closed) {
      res.close();
      return;
    }
    const key = req.getHeader('sec-websocket-key');
    const offered = req.getHeader('sec-websocket-protocol');
    const extensions = req.getHeader('sec-websocket-extensions');
    const protocol = selectSubprotocol(offered);
    if (protocol === null) {
      log.debug('ws.upgrade_refused', { listener: opts.name, offered });
      plain(res, '400 Bad Request', 'MQTT over WebSocket needs the "mqtt" subprotocol (Sec-WebSocket-Protocol)\n');
      return;
    }
    const remote = formatRemoteAddress(res.getRemoteAddress(), () => res.getRemoteAddressAsText());
    const data: UserData = { remote, protocol };
    res.upgrade(data, key, protocol, extensions, context);
  };
  app.ws<UserData>(opts.path, {
    compression: 0, // DISABLED
    maxPayloadLength: opts.maxPayloadLength,
    // MQTT keep alive is enforced by the broker; uWS must not close idle clients.
    idleTimeout: 0,
    sendPingsAutomatically: false,
    // 0 = unlimited: uWS never drops a send (that would corrupt the MQTT byte stream);
    // backpressure is signalled by write() returning false.
    maxBackpressure: 0,
    ...(hooks.native ? { upgrade } : {}),
    open: (ws: UwsWebSocket<UserData>) => {
      const remote = hooks.native ? ws.getUserData().remote : '';
      const t = new WsTransport(ws, kind, remote, hwm, maxPaused, log, hooks);
      byWs.set(ws, t);
      if (closed) {
        t.destroy();
        return;
      }
      open.add(t);
      try {
        opts.onConnection(t);
      } catch (err) {
        log.error('listener.on_connection_failed', { listener: opts.name, err });
        t.destroy();
      }
    },
    message: (ws: UwsWebSocket<UserData>, message: ArrayBuffer, isBinary: boolean) => {
      byWs.get(ws)?.onMessage(message, isBinary);
    },
    drain: (ws: UwsWebSocket<UserData>) => {
      byWs.get(ws)?.onDrain();
    },
    close: (ws: UwsWebSocket<UserData>, code: number) => {
      byWs.get(ws)?.onClose(code);
    },
  });
  app.any('/*', (res: UwsHttpResponse) => {
    plain(res, '404 Not Found', 'not found\n');
  });

  let ls: UwsListenSocket;
  let port: number;
  try {
    ({ socket: ls, port } = await listenExclusive(uws, app, { name: opts.name, bind: opts.bind, port: opts.port, shared: opts.shared ?? false }));
  } catch (err) {
    closeApp(uws, app, null);
    throw err;
  }
  log.info('listener.up', { listener: opts.name, bind: opts.bind, port, path: opts.path, kind });

  return {
    name: opts.name,
    port,
    close(): Promise<void> {
      if (closed) return Promise.resolve();
      closed = true;
      for (const t of [...open]) t.destroy();
      open.clear();
      closeApp(uws, app, ls);
      log.info('listener.down', { listener: opts.name, port });
      return Promise.resolve();
    },
  };
}
