// An authenticated link between two nodes (docs/cluster.md, "Links"): TCP or TLS, the
// cookie handshake, then frames, request/response pairs and heartbeats.
//
// Handshake (before anything else, bounded by a timeout), with the cluster's cookie as the
// HMAC-SHA256 key; the cookie itself never crosses the wire:
//   client → HELLO      {v, cluster, node, channel, worker, incarnation, nonce}
//   server → CHALLENGE  {v, cluster, node, incarnation, nonce, proof}
//              proof = HMAC(cookie, "fleetmq/server|" cluster "|" clientNonce "|" serverNonce "|" serverNode)
//            or REFUSE {reason: "cluster_name" | "version"} and close
//   client → AUTH       {proof = HMAC(cookie, "fleetmq/client|" cluster "|" serverNonce "|" clientNonce "|" clientNode)}
//            (after checking the server's proof: a server without the cookie is dropped)
//   server → WELCOME {} or REFUSE {reason: "cookie"} and close
// Each side proves it knows the cookie for nonces the other chose, so a recorded handshake
// cannot be replayed. A peer that fails is refused and logged; it never reaches the
// application.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from '../../log/logger.js';
import {
  DEFAULT_MAX_FRAME, FIRST_APP_TYPE, FrameError, FrameReader, frameHead,
  T_AUTH, T_CHALLENGE, T_HELLO, T_PING, T_PONG, T_REFUSE, T_REQUEST, T_RESPONSE, T_WELCOME,
} from './frames.js';

export const PROTOCOL_VERSION = 1;
export type Channel = 'cluster' | 'forward';

export interface LinkTls {
  cert: string | Buffer;
  key: string | Buffer;
  ca: string | Buffer;
}

export interface LinkIdentity {
  cookie: string;
  cluster: string;
  node: string;
  incarnation: string;
  tls?: LinkTls | null;
  log: Logger;
  handshakeTimeoutMs?: number;
  heartbeatMs?: number;
  deadAfterMs?: number;
  maxFrame?: number;
  /** Bytes not yet written (gathered + socket.writableLength) above which send() returns false (default 1 MiB). */
  highWaterMark?: number;
  /**
   * Frames are gathered this long (ms) before one write; 0 (default): until the end of the
   * loop turn. Forward links use a millisecond (cluster.forward_flush_ms): at modest rates
   * a turn holds one message, and a write per message is most of a forwarded message's CPU.
   */
  flushDelayMs?: number;
}

export interface PeerInfo {
  node: string;
  cluster: string;
  channel: Channel;
  worker: number;
  incarnation: string;
}

export class LinkError extends Error {
  constructor(message: string, readonly code: string) {
    super(message);
  }
}

const hmac = (key: string, s: string): string => createHmac('sha256', key).update(s).digest('hex');

function sameHex(a: unknown, b: string): boolean {
  if (typeof a !== 'string' || a.length !== b.length) return false;
  return timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

function jsonFrame(type: number, o: unknown): Buffer[] {
  const body = Buffer.from(JSON.stringify(o));
  return [frameHead(type, body.length), body];
}

type Socket = net.Socket | tls.TLSSocket;

/** Frames up to this size are copied into the link's gather chunk when sent; bigger ones are written as they are. */
export const GATHER_COPY_BYTES = 64 * 1024;
/** Size of a gather chunk (a bigger frame that is still copied gets a chunk of its own size). */
const CHUNK_BYTES = 16 * 1024;
/** Bytes of a frame's head (u32 length, u8 type). */
const FRAME_HEAD_BYTES = 5;

/** Whether Link.send() keeps a frame with a body of `bodyLen` bytes by reference (its parts must not change until written). */
export function sentByReference(bodyLen: number): boolean {
  return FRAME_HEAD_BYTES + bodyLen > GATHER_COPY_BYTES;
}

/**
 * One authenticated connection. Frames sent in one event-loop turn (or flushDelayMs) go out
 * in one write. A frame up to GATHER_COPY_BYTES is copied into a gather chunk by send(), so
 * its parts may be reused as soon as send() returns; a bigger frame is kept by reference
 * until written (its parts must not change). Handlers: onFrame (application frames, body
 * valid only during the call), onRequest, onClose (once), onDrain.
 */

export class Link {
  onFrame: (type: number, body: Buffer) => void = () => undefined;
  onRequest: (kind: number, body: Buffer) => Buffer | Promise<Buffer> = (kind) => {
    throw new Error(`request kind ${kind} not served here`);
  };
  onClose: (reason: string) => void = () => undefined;
  onDrain: () => void = () => undefined;
  readonly peerAddress: string;
  private closed = false;
  /** Frames of this loop turn, written as one buffer in its check phase (see send). */
  private out: Buffer[] = [];
  private outBytes = 0;
  /**
   * Small frames are copied here, from chunkStart up to chunkLen, and that region joins
   * `out` at the next big frame or flush. Regions handed to the socket are never written
   * again (a write may hold them until sent): the chunk fills on, then a new one is made.
   */
  private chunk: Buffer | null = null;
  private chunkStart = 0;
  private chunkLen = 0;
  private flushQueued = false;
  /** The pending flush when it waits on a timer (flushDelayMs > 0). */
  private flushTimer: NodeJS.Timeout | null = null;
  private readonly flushDelay: number;
  /** send() said false: drain waiters are owed a wake-up once the bytes are out. */
  private full = false;
  private lastIn = Date.now();
  private lastOut = Date.now();
  private nextReq = 1;
  private readonly pending = new Map<number, { resolve: (b: Buffer) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private readonly hwm: number;
  private readonly timer: NodeJS.Timeout;
  private drainWaiters: (() => void)[] = [];

  constructor(
    private readonly socket: Socket,
    readonly peer: PeerInfo,
    private readonly reader: FrameReader,
    private readonly id: LinkIdentity,
  ) {
    this.hwm = id.highWaterMark ?? 1024 * 1024;
    this.flushDelay = id.flushDelayMs ?? 0;
    this.peerAddress = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    const hb = id.heartbeatMs ?? 1000;
    const dead = id.deadAfterMs ?? 5000;
    this.timer = setInterval(() => {
      const now = Date.now();
      if (now - this.lastIn > dead) this.close('heartbeat timeout');
      else if (now - this.lastOut >= hb) this.send(T_PING, []);
    }, Math.max(50, Math.min(hb, dead) / 2));
    this.timer.unref();
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => {
      if (this.outBytes === 0) this.drainedNow();
    });
    socket.on('error', (e: Error) => this.close(`socket error: ${e.message}`));
    socket.on('close', () => this.close('connection closed'));
  }

  /** Frames that arrived with the handshake's last one: handled once the owner set its handlers. */
  replay(frames: { type: number; body: Buffer }[]): void {
    // The socket stays paused until then, so these come before anything read later.
    setImmediate(() => {
      for (const f of frames) this.onFrameIn(f.type, f.body);
      if (!this.closed) this.socket.resume();
    });
  }

  /** Bytes the socket has not written yet. */
  get bufferedBytes(): number {
    return this.socket.writableLength + this.outBytes;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Writes a frame; false when the socket buffers more than the high-water mark (wait for drained()). */
  send(type: number, parts: Buffer | readonly Buffer[]): boolean {
    if (this.closed) return false;
    let len = 0;
    if (Buffer.isBuffer(parts)) len = parts.length;
    else for (const p of parts) len += p.length;
    const need = FRAME_HEAD_BYTES + len;
    if (!sentByReference(len)) {
      let c = this.chunk;
      if (c === null || this.chunkLen + need > c.length) {
        this.closeChunk();
        c = this.chunk = Buffer.allocUnsafe(Math.max(CHUNK_BYTES, need));
        this.chunkStart = this.chunkLen = 0;
      }
      let at = this.chunkLen;
      c.writeUInt32BE(len + 1, at); // frameHead, written in place
      c[at + 4] = type;
      at += FRAME_HEAD_BYTES;
      if (Buffer.isBuffer(parts)) at += parts.copy(c, at);
      else for (const p of parts) at += p.copy(c, at);
      this.chunkLen = at;
    } else {
      this.closeChunk();
      this.out.push(frameHead(type, len));
      if (Buffer.isBuffer(parts)) this.out.push(parts);
      else for (const p of parts) if (p.length > 0) this.out.push(p);
    }
    this.outBytes += need;
    if (!this.flushQueued) {
      this.flushQueued = true;
      // Written after this loop turn's I/O callbacks (setImmediate), not after this one
      // callback (nextTick): at a modest rate every publish arrives in its own read, and a
      // write per message costs a syscall each; one poll phase gathers them all. With a
      // flush delay, the frames of the next milliseconds' turns join them.
      if (this.flushDelay > 0) this.flushTimer = setTimeout(this.flushOut, this.flushDelay);
      else setImmediate(this.flushOut);
    } else if (this.flushTimer !== null && this.outBytes >= GATHER_COPY_BYTES) {
      // Enough for one large write: no reason to wait out the delay.
      clearTimeout(this.flushTimer);
      this.flushTimer = null;
      setImmediate(this.flushOut);
    }
    this.lastOut = Date.now();
    if (this.bufferedBytes <= this.hwm) return true;
    this.full = true;
    return false;
  }

  /** The chunk's filled region joins `out` (before any frame sent after it). */
  private closeChunk(): void {
    if (this.chunk === null || this.chunkLen === this.chunkStart) return;
    this.out.push(this.chunk.subarray(this.chunkStart, this.chunkLen));
    this.chunkStart = this.chunkLen;
  }

  /** Writes the gathered frames: small ones copied into one buffer, big ones as they are (writev). */
  private readonly flushOut = (): void => {
    this.flushQueued = false;
    if (this.flushTimer !== null) {
      clearTimeout(this.flushTimer);
      this.flushTimer = null;
    }
    this.closeChunk();
    const out = this.out;
    if (out.length === 0) return;
    const bytes = this.outBytes;
    this.out = [];
    this.outBytes = 0;
    if (this.socket.destroyed) return;
    if (bytes <= GATHER_COPY_BYTES) this.socket.write(out.length === 1 ? out[0]! : Buffer.concat(out, bytes));
    else {
      this.socket.cork();
      for (const b of out) this.socket.write(b);
      this.socket.uncork();
    }
    // A socket that took it all emits no 'drain': wake whoever send() told to wait.
    if (this.full && this.socket.writableLength <= this.hwm) this.drainedNow();
  };

  private drainedNow(): void {
    this.full = false;
    for (const f of this.drainWaiters.splice(0)) f();
    this.onDrain();
  }

  /** Resolves when the socket's buffer has drained (or the link closed). */
  drained(): Promise<void> {
    if (this.closed || this.bufferedBytes <= this.hwm) return Promise.resolve();
    return new Promise((r) => this.drainWaiters.push(r));
  }

  request(kind: number, body: Buffer, timeoutMs: number): Promise<Buffer> {
    if (this.closed) return Promise.reject(new LinkError('link closed', 'CLUSTER_LINK_CLOSED'));
    const reqId = this.nextReq++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(reqId);
        reject(new LinkError(`request ${kind} to ${this.peer.node}: no answer in ${timeoutMs} ms`, 'CLUSTER_REQUEST_TIMEOUT'));
      }, timeoutMs);
      timer.unref();
      this.pending.set(reqId, { resolve, reject, timer });
      const head = Buffer.allocUnsafe(6);
      head.writeUInt32BE(reqId, 0);
      head.writeUInt16BE(kind, 4);
      this.send(T_REQUEST, [head, body]);
    });
  }

  private onData(chunk: Buffer): void {
    this.lastIn = Date.now();
    try {
      this.reader.push(chunk, (type, body) => this.onFrameIn(type, body));
    } catch (e) {
      this.close(e instanceof FrameError ? e.message : `frame handler failed: ${(e as Error).message}`);
    }
  }

  private onFrameIn(type: number, body: Buffer): void {
    if (this.closed) return;
    if (type >= FIRST_APP_TYPE) return this.onFrame(type, body);
    switch (type) {
      case T_PING:
        this.send(T_PONG, []);
        return;
      case T_PONG:
        return;
      case T_REQUEST: {
        const reqId = body.readUInt32BE(0);
        const kind = body.readUInt16BE(4);
        const payload = Buffer.from(body.subarray(6));
        const answer = (status: number, b: Buffer): void => {
          const head = Buffer.allocUnsafe(5);
          head.writeUInt32BE(reqId, 0);
          head[4] = status;
          this.send(T_RESPONSE, [head, b]);
        };
        try {
          Promise.resolve(this.onRequest(kind, payload)).then(
            (b) => answer(0, b),
            (e: Error) => answer(1, Buffer.from(e.message ?? String(e))),
          );
        } catch (e) {
          answer(1, Buffer.from((e as Error).message));
        }
        return;
      }
      case T_RESPONSE: {
        const reqId = body.readUInt32BE(0);
        const p = this.pending.get(reqId);
        if (!p) return;
        this.pending.delete(reqId);
        clearTimeout(p.timer);
        const b = Buffer.from(body.subarray(5));
        if (body[4] === 0) p.resolve(b);
        else p.reject(new LinkError(b.toString('utf8'), 'CLUSTER_REMOTE_ERROR'));
        return;
      }
      default:
        this.close(`unexpected frame type ${type}`);
    }
  }

  close(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new LinkError(`link to ${this.peer.node} closed: ${reason}`, 'CLUSTER_LINK_CLOSED'));
    }
    this.pending.clear();
    for (const f of this.drainWaiters.splice(0)) f();
    this.flushOut(); // what was sent before the close still goes (end() sends it, then FIN)
    this.socket.end();
    // Do not wait for the peer's FIN for ever.
    setTimeout(() => this.socket.destroy(), 1000).unref();
    this.onClose(reason);
  }

  destroy(): void {
    this.socket.destroy();
    this.close('destroyed');
  }
}

// ---------------------------------------------------------------------------- handshake

/** Reads handshake frames off a socket until `done`; the rest of the data stays buffered in the reader. */
function handshakeReader(socket: Socket, reader: FrameReader, timeoutMs: number, what: string): {
  next(): Promise<{ type: number; body: Buffer }>;
  /** Ends the handshake; returns the frames that arrived behind the last one it read. */
  done(): { type: number; body: Buffer }[];
} {
  const queue: { type: number; body: Buffer }[] = [];
  let waiter: { resolve: (f: { type: number; body: Buffer }) => void; reject: (e: Error) => void } | null = null;
  let failed: Error | null = null;
  const fail = (e: Error): void => {
    failed ??= e;
    waiter?.reject(e);
    waiter = null;
  };
  let app = false;
  const onData = (chunk: Buffer): void => {
    try {
      reader.push(chunk, (type, body) => {
        if (app) return;
        const f = { type, body: Buffer.from(body) };
        if (waiter) {
          const w = waiter;
          waiter = null;
          w.resolve(f);
        } else queue.push(f);
      });
    } catch (e) {
      fail(new LinkError(`${what}: ${(e as Error).message}`, 'CLUSTER_REFUSED'));
    }
  };
  const onClose = (): void => fail(new LinkError(`${what}: connection closed during the handshake`, 'CLUSTER_REFUSED'));
  const onError = (e: Error): void => fail(new LinkError(`${what}: ${e.message}`, 'CLUSTER_CONNECT_FAILED'));
  const timer = setTimeout(() => {
    fail(new LinkError(`${what}: handshake timeout after ${timeoutMs} ms`, 'CLUSTER_REFUSED'));
    socket.destroy();
  }, timeoutMs);
  socket.on('data', onData);
  socket.on('close', onClose);
  socket.on('error', onError);
  return {
    next: () => {
      if (failed) return Promise.reject(failed);
      const f = queue.shift();
      if (f) return Promise.resolve(f);
      return new Promise((resolve, reject) => (waiter = { resolve, reject }));
    },
    done: () => {
      app = true;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.off('error', onError);
      socket.pause();
      return queue.splice(0);
    },
  };
}

function parse(body: Buffer): Record<string, unknown> {
  try {
    const o = JSON.parse(body.toString('utf8')) as unknown;
    return o && typeof o === 'object' ? (o as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function writeFrames(socket: Socket, frames: Buffer[]): void {
  for (const f of frames) socket.write(f);
}

function refused(id: LinkIdentity, channel: string, peer: string | null, remote: string, reason: string): void {
  id.log.warn('cluster.peer_refused', { channel, peer, remote, reason });
}

export interface ConnectOptions extends LinkIdentity {
  host: string;
  port: number;
  channel: Channel;
  worker?: number;
  connectTimeoutMs?: number;
}

/** Connects and authenticates; rejects with code CLUSTER_REFUSED / CLUSTER_CONNECT_FAILED. */
export function connectLink(o: ConnectOptions): Promise<Link> {
  const remote = `${o.host}:${o.port}`;
  return new Promise<Link>((resolve, reject) => {
    let ctimer: NodeJS.Timeout | undefined;
    const onConnectError = (e: Error): void => {
      clearTimeout(ctimer);
      reject(new LinkError(`cannot connect to ${remote}: ${e.message}`, 'CLUSTER_CONNECT_FAILED'));
    };
    const socket: Socket = o.tls
      ? tls.connect({ host: o.host, port: o.port, cert: o.tls.cert, key: o.tls.key, ca: o.tls.ca, checkServerIdentity: () => undefined })
      : net.connect({ host: o.host, port: o.port });
    socket.setNoDelay(true);
    socket.once('error', onConnectError);
    ctimer = setTimeout(() => {
      socket.destroy();
      reject(new LinkError(`cannot connect to ${remote}: timeout`, 'CLUSTER_CONNECT_FAILED'));
    }, o.connectTimeoutMs ?? 3000);
    socket.once(o.tls ? 'secureConnect' : 'connect', () => {
      clearTimeout(ctimer);
      socket.off('error', onConnectError);
      void clientHandshake(socket, o, remote).then(resolve, (e: Error) => {
        // A reset from the peer after its refusal must not become an unhandled 'error'.
        socket.on('error', () => {});
        // end(), not destroy(): what we wrote last (our proof) still goes out.
        socket.end();
        setTimeout(() => socket.destroy(), 500).unref();
        reject(e);
      });
    });
  });
}

async function clientHandshake(socket: Socket, o: ConnectOptions, remote: string): Promise<Link> {
  const reader = new FrameReader(o.maxFrame ?? DEFAULT_MAX_FRAME);
  const hs = handshakeReader(socket, reader, o.handshakeTimeoutMs ?? 5000, `handshake with ${remote}`);
  try {
    return await clientSteps(socket, o, remote, reader, hs);
  } catch (e) {
    // Every failure ends the reader (its timer, its listeners), a refusal as well as a cut
    // or a timeout rejecting hs.next(). done() twice is harmless.
    hs.done();
    throw e;
  }
}

async function clientSteps(
  socket: Socket, o: ConnectOptions, remote: string, reader: FrameReader, hs: ReturnType<typeof handshakeReader>,
): Promise<Link> {
  const nonce = randomBytes(32).toString('hex');
  writeFrames(socket, jsonFrame(T_HELLO, {
    v: PROTOCOL_VERSION, cluster: o.cluster, node: o.node, channel: o.channel, worker: o.worker ?? -1, incarnation: o.incarnation, nonce,
  }));
  const ch = await hs.next();
  const c = parse(ch.body);
  if (ch.type === T_REFUSE) {
    const why = String(c['reason']);
    refused(o, o.channel, null, remote, `the peer refused us: ${why}`);
    throw new LinkError(`${remote} refused the connection: ${why === 'cluster_name' ? `wrong cluster name (ours: ${o.cluster})` : why === 'cookie' ? 'wrong cookie' : why}`, 'CLUSTER_REFUSED');
  }
  const serverNode = String(c['node'] ?? '');
  const sNonce = String(c['nonce'] ?? '');
  if (ch.type !== T_CHALLENGE) {
    refused(o, o.channel, serverNode || null, remote, `expected CHALLENGE, got frame type ${ch.type}`);
    throw new LinkError(`${remote} failed the handshake: expected CHALLENGE, got frame type ${ch.type}`, 'CLUSTER_REFUSED');
  }
  // Our proof goes even when the server's is wrong, so that the server learns of (and logs)
  // the mismatch too; either way we do not go on.
  writeFrames(socket, jsonFrame(T_AUTH, { proof: hmac(o.cookie, `fleetmq/client|${o.cluster}|${sNonce}|${nonce}|${o.node}`) }));
  if (!sameHex(c['proof'], hmac(o.cookie, `fleetmq/server|${o.cluster}|${nonce}|${sNonce}|${serverNode}`))) {
    refused(o, o.channel, serverNode || null, remote, 'wrong cookie (the server could not prove it knows ours)');
    throw new LinkError(`${remote} failed the handshake: wrong cookie (the server could not prove it knows it)`, 'CLUSTER_REFUSED');
  }
  const w = await hs.next();
  const behind = hs.done();
  if (w.type !== T_WELCOME) {
    const why = String(parse(w.body)['reason'] ?? 'refused');
    refused(o, o.channel, serverNode, remote, `the peer refused us: ${why}`);
    throw new LinkError(`${remote} (${serverNode}) refused the connection: ${why === 'cookie' ? 'wrong cookie' : why}`, 'CLUSTER_REFUSED');
  }
  const link = new Link(socket, {
    node: serverNode, cluster: o.cluster, channel: o.channel, worker: -1, incarnation: String(c['incarnation'] ?? ''),
  }, reader, o);
  link.replay(behind);
  return link;
}

export interface ServeOptions extends LinkIdentity {
  channel: Channel;
  /** An authenticated link. */
  onLink: (link: Link) => void;
}

/** A server (not listening yet) whose connections become Links after the handshake. */
export function createLinkServer(o: ServeOptions): net.Server {
  const handler = (socket: Socket): void => {
    socket.setNoDelay(true);
    void serverHandshake(socket, o).then(
      (link) => {
        if (link) o.onLink(link);
      },
      () => socket.destroy(),
    );
  };
  if (o.tls) {
    return tls.createServer({ cert: o.tls.cert, key: o.tls.key, ca: o.tls.ca, requestCert: true, rejectUnauthorized: true }, handler);
  }
  return net.createServer(handler);
}

async function serverHandshake(socket: Socket, o: ServeOptions): Promise<Link | null> {
  const remote = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
  const reader = new FrameReader(o.maxFrame ?? DEFAULT_MAX_FRAME);
  const hs = handshakeReader(socket, reader, o.handshakeTimeoutMs ?? 5000, `handshake from ${remote}`);
  socket.on('error', () => undefined);
  try {
    const h = await hs.next();
    const m = parse(h.body);
    const node = typeof m['node'] === 'string' ? m['node'] : null;
    const refuse = (reason: string, detail: string): null => {
      hs.done();
      refused(o, o.channel, node, remote, detail);
      socket.end(Buffer.concat(jsonFrame(T_REFUSE, { reason })));
      setTimeout(() => socket.destroy(), 1000).unref();
      return null;
    };
    if (h.type !== T_HELLO) return refuse('protocol', `expected HELLO, got frame type ${h.type}`);
    if (m['v'] !== PROTOCOL_VERSION) return refuse('version', `protocol version ${String(m['v'])}, ours ${PROTOCOL_VERSION}`);
    if (m['cluster'] !== o.cluster) return refuse('cluster_name', `wrong cluster name ${JSON.stringify(m['cluster'])} (ours: ${o.cluster})`);
    if (m['channel'] !== o.channel) return refuse('channel', `channel ${String(m['channel'])} on the ${o.channel} port`);
    const cNonce = String(m['nonce'] ?? '');
    const nonce = randomBytes(32).toString('hex');
    writeFrames(socket, jsonFrame(T_CHALLENGE, {
      v: PROTOCOL_VERSION, cluster: o.cluster, node: o.node, incarnation: o.incarnation, nonce,
      proof: hmac(o.cookie, `fleetmq/server|${o.cluster}|${cNonce}|${nonce}|${o.node}`),
    }));
    const a = await hs.next();
    if (a.type !== T_AUTH || !sameHex(parse(a.body)['proof'], hmac(o.cookie, `fleetmq/client|${o.cluster}|${nonce}|${cNonce}|${node ?? ''}`))) {
      return refuse('cookie', 'wrong cookie');
    }
    writeFrames(socket, jsonFrame(T_WELCOME, {}));
    const behind = hs.done();
    const link = new Link(socket, {
      node: node ?? '', cluster: o.cluster, channel: o.channel, worker: typeof m['worker'] === 'number' ? m['worker'] : -1,
      incarnation: String(m['incarnation'] ?? ''),
    }, reader, o);
    link.replay(behind);
    return link;
  } catch (e) {
    hs.done();
    refused(o, o.channel, null, remote, (e as Error).message);
    socket.destroy();
    return null;
  }
}
