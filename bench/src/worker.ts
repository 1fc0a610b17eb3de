// One worker thread of the load generator (a piscina task that lasts the whole run): it
// connects its share of the clients, subscribes, publishes and receives, and reports
// counters every 200 ms over its MessagePort. It returns its counters and its encoded
// latency histograms. See docs/bench.md ("TypeScript generator") for the design.
import net from 'node:net';
import tls from 'node:tls';
import type { MessagePort } from 'node:worker_threads';
import WebSocket from 'ws';
import { encode, newHist, record, type Histogram } from './hist.js';
import {
  DISCONNECT, PINGREQ, connackReason, encodeConnect, encodeSubscribe, publishTemplate, readConnackProps, skipProps,
  type PublishTemplate,
} from './mqtt.js';
import { E2E, PAIRED, type Options } from './options.js';
import { clientId, pubTopic, subFilter, type Range, type Role, type Slice } from './plan.js';
import { zeroCounters, type Counters, type Down, type Up, type UnitResult } from './proto.js';

export interface WorkerTask {
  port: MessagePort;
  o: Options;
  slice: Slice;
  /** Global index of this worker among all workers of the run, and their number. */
  wIndex: number;
  wTotal: number;
  /** hrtime base of the run, ns, decimal. */
  base: string;
  /** The publishers of this process (index into the shared receipt counters). */
  procPubs: Range;
  /** Int32: [0] messages left under -L; [1 + k] deliveries received from publisher procPubs.first + k. */
  sab: SharedArrayBuffer;
  limited: boolean;
  /** Multi-process run: receipts for publishers of other processes are sent up. */
  relay: boolean;
}

const RCV = 1;
const STATS_MS = 200;
/** Connection attempts in progress per worker. */
const MAX_PENDING = 256;
/** A publisher blocked by the window for this long gives up on its unreceived messages. */
const STALL_MS = 2000;
/** Messages one publisher writes in one go (flood mode), and per scheduling round. */
const BURST = 64;
const ROUND_BUDGET = 4096;
const WS_HIGH_WATER = 64 * 1024;

const ST_IDLE = 0;
const ST_CONNECTING = 1;
const ST_CONNECTED = 2;
const ST_CLOSED = 3;

interface Conn {
  write(b: Buffer): boolean;
  end(): void;
  destroy(): void;
}

class Client {
  st = ST_IDLE;
  conn: Conn | null = null;
  ws: WebSocket | null = null;
  // receive reassembly
  parts: Buffer[] | null = null;
  partsLen = 0;
  need = 0;
  acks: number[] = [];
  t0 = 0;
  timer: NodeJS.Timeout | null = null;
  lastErr: string | null = null;
  lastCode: string | null = null;
  wrote = false;
  // subscriber: 0 none, 1 SUBSCRIBE sent, 2 subscribed, 3 failed
  subState = 0;
  filter = '';
  // publisher
  tpl: PublishTemplate | null = null;
  cap = 65000;
  inflight = 0;
  nextPid = 0;
  sent = 0;
  forgiven = 0;
  enabled = true;
  wBlocked = false;
  inWin = false;
  winSince = 0;
  inReady = false;
  li = 0;
  partner: Client | null = null;
  wsPoll: NodeJS.Timeout | null = null;

  constructor(
    readonly seq: number,
    readonly role: Role,
    readonly id: string,
  ) {}
}

class TcpConn implements Conn {
  constructor(private readonly s: net.Socket) {}
  write(b: Buffer): boolean {
    return this.s.write(b);
  }
  end(): void {
    this.s.end();
  }
  destroy(): void {
    this.s.destroy();
  }
}

class WsConn implements Conn {
  constructor(private readonly ws: WebSocket) {}
  write(b: Buffer): boolean {
    if (this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(b);
    return this.ws.bufferedAmount < WS_HIGH_WATER;
  }
  end(): void {
    this.ws.close();
  }
  destroy(): void {
    this.ws.terminate();
  }
}

class Engine {
  private readonly o: Options;
  private readonly port: MessagePort;
  private readonly base: bigint;
  private readonly bhi: number;
  private readonly blo: number;
  private readonly recv: Int32Array;
  private readonly clients: Client[] = [];
  private readonly pubs: Client[] = [];
  private readonly subs: Client[] = [];
  private readonly v5: boolean;
  private readonly winOn: boolean;
  private readonly crossWorker: boolean;
  private readonly flood: boolean;

  private readonly c: Counters = zeroCounters();
  private readonly hist: Histogram = newHist();
  private readonly ihist: Histogram = newHist();
  private readonly chist: Histogram = newHist();
  private readonly errs = new Map<string, number>();
  private readonly errDelta = new Map<string, number>();

  // connect phase
  private pending = 0;
  private nextConn = 0;
  private connT0 = 0;
  private connStep = 0;
  private connOff = 0;
  private connTimer: NodeJS.Timeout | null = null;
  private connDone = false;
  // subscribe phase
  private subPending = 0;
  private subTimer: NodeJS.Timeout | null = null;
  private subDone = true;
  // publish phase
  private ms = Infinity;
  private me = Infinity;
  private match = 1;
  private publishing = false;
  private limitHit = false;
  private eligible: Client[] = [];
  private ready: Client[] = [];
  private floodScheduled = false;
  private slot0 = 0;
  private slotNs = 0;
  private nextSlot = 0;
  private rateTimer: NodeJS.Timeout | null = null;
  private endTimer: NodeJS.Timeout | null = null;
  private readonly winSet = new Set<Client>();
  private pollTimer: NodeJS.Timeout | null = null;
  // receive
  private rxNow = 0;
  private needOut = 0;
  private readonly remote = new Map<number, number>();
  private remoteTimer: NodeJS.Timeout | null = null;
  // housekeeping
  private statsTimer: NodeJS.Timeout | null = null;
  private pingTimer: NodeJS.Timeout | null = null;
  private stopping = false;
  private finish: ((r: UnitResult) => void) | null = null;

  private readonly runFlood = (): void => this.floodRound();
  private readonly runRate = (): void => this.rateTick();

  constructor(private readonly task: WorkerTask) {
    this.o = task.o;
    this.port = task.port;
    this.base = BigInt(task.base);
    this.bhi = Number(this.base >> 32n);
    this.blo = Number(this.base & 0xffffffffn);
    this.recv = new Int32Array(task.sab);
    this.v5 = this.o.V === 5;
    this.winOn = this.o.window > 0 && E2E.has(this.o.cmd);
    this.crossWorker = this.o.cmd === 'fanout' || this.o.cmd === 'fanin-shared';
    this.flood = this.o.I === 0;
    this.c.pubDone = 0;
    this.build();
  }

  private relNow(): number {
    return Number(process.hrtime.bigint() - this.base);
  }

  private build(): void {
    const { o, task } = this;
    const s = task.slice;
    const paired = PAIRED.has(o.cmd);
    const mkPub = (seq: number): Client => {
      const c = new Client(seq, 'pub', clientId(o, 'pub', seq));
      c.tpl = publishTemplate(o.V, pubTopic(o, seq, c.id), o.q, o.s, o.ts, seq);
      c.cap = o.F === 0 ? 65000 : o.F;
      c.li = RCV + seq - task.procPubs.first;
      return c;
    };
    const mkSub = (seq: number): Client => {
      const c = new Client(seq, 'sub', clientId(o, 'sub', seq));
      c.filter = subFilter(o, seq, c.id);
      return c;
    };
    if (paired) {
      for (let k = 0; k < s.pubs.count; k++) {
        const sub = mkSub(s.subs.first + k);
        const pub = mkPub(s.pubs.first + k);
        pub.partner = sub;
        this.subs.push(sub);
        this.pubs.push(pub);
        this.clients.push(sub, pub);
      }
    } else {
      for (let k = 0; k < s.subs.count; k++) this.subs.push(mkSub(s.subs.first + k));
      for (let k = 0; k < s.pubs.count; k++) this.pubs.push(mkPub(s.pubs.first + k));
      this.clients.push(...this.subs, ...this.pubs);
    }
    for (let k = 0; k < s.idle.count; k++) {
      const seq = s.idle.first + k;
      this.clients.push(new Client(seq, 'conn', clientId(o, 'conn', seq)));
    }
  }

  run(): Promise<UnitResult> {
    return new Promise((resolve) => {
      this.finish = resolve;
      this.port.on('message', (m: Down) => this.onDown(m));
      this.statsTimer = setInterval(() => this.tick(), STATS_MS);
      this.post({ t: 'hello' });
    });
  }

  private post(m: Up): void {
    this.port.postMessage(m);
  }

  private error(msg: string, n = 1): void {
    this.errs.set(msg, (this.errs.get(msg) ?? 0) + n);
    this.errDelta.set(msg, (this.errDelta.get(msg) ?? 0) + n);
  }

  private onDown(m: Down): void {
    switch (m.t) {
      case 'connect':
        this.startConnecting(m.t0);
        break;
      case 'subscribe':
        this.startSubscribing();
        break;
      case 'publish':
        this.startPublishing(m.start, m.ms, m.me, m.match);
        break;
      case 'end':
        this.me = Math.min(this.me, m.me);
        this.stopPublishing();
        break;
      case 'stop':
        void this.stop();
        break;
      case 'rcpt':
        break; // workers get remote receipts through the shared counters
    }
  }

  // ---- statistics ----

  private tick(): void {
    this.sendStats();
    if (this.publishing && this.winSet.size) this.checkStalls();
  }

  private sendStats(): void {
    const ih = encode(this.ihist);
    this.ihist.reset();
    this.post({ t: 'stats', c: { ...this.c }, ih, err: [...this.errDelta] });
    this.errDelta.clear();
  }

  // ---- connect ----

  private startConnecting(t0: number): void {
    const o = this.o;
    const interval = o.R > 0 ? 1e9 / o.R : o.i * 1e6;
    this.connT0 = t0;
    this.connStep = interval * this.task.wTotal;
    this.connOff = interval * this.task.wIndex;
    if (o.k > 0) {
      this.pingTimer = setInterval(() => this.ping(), (o.k * 1000) / 2);
    }
    this.connectTick();
  }

  private connectTick(): void {
    this.connTimer = null;
    if (this.stopping) return;
    const now = this.relNow();
    while (this.nextConn < this.clients.length && this.pending < MAX_PENDING) {
      const due = this.connT0 + this.connOff + this.nextConn * this.connStep;
      if (due > now) break;
      this.startConnect(this.clients[this.nextConn++]!);
    }
    if (this.nextConn < this.clients.length) {
      if (this.pending >= MAX_PENDING) return; // resumed when an attempt completes
      const due = this.connT0 + this.connOff + this.nextConn * this.connStep;
      this.connTimer = setTimeout(() => this.connectTick(), Math.max(0, (due - this.relNow()) / 1e6));
    } else this.checkConnectDone();
  }

  private checkConnectDone(): void {
    if (!this.connDone && this.nextConn >= this.clients.length && this.pending === 0) {
      this.connDone = true;
      this.sendStats();
      this.post({ t: 'ready', stage: 'connect' });
    }
  }

  private startConnect(c: Client): void {
    const o = this.o;
    c.st = ST_CONNECTING;
    this.c.attempted++;
    this.pending++;
    c.t0 = this.relNow();
    c.timer = setTimeout(() => this.connFail(c, false, `connect timeout (no CONNACK within ${o.connectTimeout} s)`), o.connectTimeout * 1000);
    const host = o.hosts[c.seq % o.hosts.length]!;
    const localAddress = o.ifaddr.length ? o.ifaddr[c.seq % o.ifaddr.length] : undefined;
    const sendConnect = (): void => {
      c.conn!.write(
        encodeConnect({ V: o.V, clientId: c.id, clean: o.C, keepalive: o.k, username: o.username, password: o.password, sessionExpiry: o.x }),
      );
    };
    if (o.ws) {
      const url = `${o.tls ? 'wss' : 'ws'}://${net.isIPv6(host) ? `[${host}]` : host}:${o.port}${o.wsPath}`;
      const ws = new WebSocket(url, 'mqtt', {
        perMessageDeflate: false,
        rejectUnauthorized: false,
        ...(localAddress ? { localAddress } : {}),
      });
      c.ws = ws;
      c.conn = new WsConn(ws);
      ws.on('open', sendConnect);
      ws.on('message', (d: Buffer) => this.onData(c, d));
      ws.on('error', (e: NodeJS.ErrnoException) => {
        c.lastErr = e.message;
        c.lastCode = e.code ?? null;
      });
      ws.on('close', () => this.onClose(c));
      return;
    }
    const opts = { host, port: o.port, noDelay: true, ...(localAddress ? { localAddress } : {}) };
    const sock = o.tls
      ? tls.connect({ ...opts, rejectUnauthorized: false, ...(net.isIP(host) ? {} : { servername: host }) })
      : net.connect(opts);
    sock.setNoDelay(true);
    c.conn = new TcpConn(sock);
    sock.once(o.tls ? 'secureConnect' : 'connect', sendConnect);
    sock.on('data', (d: Buffer) => this.onData(c, d));
    sock.on('drain', () => this.onDrain(c));
    sock.on('error', (e: NodeJS.ErrnoException) => {
      c.lastErr = e.message;
      c.lastCode = e.code ?? null;
    });
    sock.on('close', () => this.onClose(c));
  }

  /** A connection attempt ended without a session: refused (by the TCP peer or the CONNACK) or failed. */
  private connFail(c: Client, refused: boolean, msg: string): void {
    if (c.st !== ST_CONNECTING) return;
    if (c.timer) clearTimeout(c.timer);
    c.timer = null;
    c.st = ST_CLOSED;
    this.pending--;
    if (refused) this.c.refused++;
    else this.c.failed++;
    this.error(msg);
    c.conn?.destroy();
    this.afterAttempt();
  }

  private afterAttempt(): void {
    if (this.connTimer === null && this.nextConn < this.clients.length && !this.stopping) this.connectTick();
    else this.checkConnectDone();
  }

  private onClose(c: Client): void {
    if (c.wsPoll) clearTimeout(c.wsPoll);
    if (c.st === ST_CONNECTING) {
      const refused = c.lastCode === 'ECONNREFUSED';
      this.connFail(c, refused, c.lastErr ? `connect: ${c.lastErr}` : 'connection closed before CONNACK');
      return;
    }
    if (c.st !== ST_CONNECTED) return;
    c.st = ST_CLOSED;
    this.c.open--;
    if (!this.stopping) {
      this.c.dropped++;
      this.error(`connection lost: ${c.lastErr ?? 'closed by the broker'}`);
      if (c.subState === 1) this.subResolved(c, false, 'subscriber disconnected before SUBACK');
      if (c.inWin) {
        c.inWin = false;
        this.winSet.delete(c);
      }
    } else if (this.c.open === 0 && this.pending === 0) this.done();
  }

  // ---- receive ----

  private onData(c: Client, d: Buffer): void {
    this.rxNow = this.relNow();
    let b = d;
    if (c.parts) {
      c.parts.push(d);
      c.partsLen += d.length;
      if (c.need > 0 && c.partsLen < c.need) return;
      b = Buffer.concat(c.parts, c.partsLen);
      c.parts = null;
      c.partsLen = 0;
      c.need = 0;
    }
    const off = this.parse(c, b);
    if (off < b.length && c.st !== ST_CLOSED) {
      const rest = Buffer.from(b.subarray(off));
      c.parts = [rest];
      c.partsLen = rest.length;
      c.need = this.needOut;
    }
    if (c.acks.length) this.flushAcks(c);
  }

  /** Handles the complete packets in b; returns the offset of the first incomplete one. */
  private parse(c: Client, b: Buffer): number {
    const len = b.length;
    let off = 0;
    this.needOut = 0;
    while (off < len) {
      if (len - off < 2) return off;
      let p = off + 1;
      let rl = 0;
      let mul = 1;
      let complete = false;
      for (let k = 0; k < 4; k++) {
        if (p >= len) return off;
        const x = b[p++]!;
        rl += (x & 0x7f) * mul;
        mul *= 128;
        if ((x & 0x80) === 0) {
          complete = true;
          break;
        }
      }
      if (!complete) {
        this.protocolError(c, 'malformed remaining length');
        return len;
      }
      const end = p + rl;
      if (end > len) {
        this.needOut = end - off;
        return off;
      }
      this.packet(c, b[off]!, b, p, end);
      if (c.st === ST_CLOSED) return len;
      off = end;
    }
    return off;
  }

  private protocolError(c: Client, msg: string): void {
    this.error(`protocol error from broker: ${msg}`);
    c.lastErr = msg;
    c.conn?.destroy();
  }

  private packet(c: Client, h: number, b: Buffer, p: number, end: number): void {
    switch (h >> 4) {
      case 3:
        this.onPublish(c, h, b, p, end);
        break;
      case 4: // PUBACK
        if (end - p >= 3 && b[p + 2]! >= 0x80) this.error(`PUBACK reason ${connackReason(5, b[p + 2]!)}`);
        this.acked(c);
        break;
      case 5: // PUBREC
        if (end - p >= 3 && b[p + 2]! >= 0x80) {
          this.error(`PUBREC reason ${connackReason(5, b[p + 2]!)}`);
          this.acked(c);
        } else c.acks.push((0x62 << 16) | b.readUInt16BE(p));
        break;
      case 6: // PUBREL
        c.acks.push((0x70 << 16) | b.readUInt16BE(p));
        break;
      case 7: // PUBCOMP
        this.acked(c);
        break;
      case 2:
        this.onConnack(c, b, p, end);
        break;
      case 9:
        this.onSuback(c, b, p, end);
        break;
      case 13: // PINGRESP
        break;
      case 14: {
        const rc = end > p ? b[p]! : 0;
        c.lastErr = `DISCONNECT from broker, reason ${connackReason(5, rc)}`;
        break;
      }
      default:
        this.protocolError(c, `unexpected packet type ${h >> 4}`);
    }
  }

  private flushAcks(c: Client): void {
    const n = c.acks.length;
    const out = Buffer.allocUnsafe(4 * n);
    for (let j = 0; j < n; j++) {
      const a = c.acks[j]!;
      out[4 * j] = a >>> 16;
      out[4 * j + 1] = 2;
      out.writeUInt16BE(a & 0xffff, 4 * j + 2);
    }
    c.acks.length = 0;
    c.wrote = true;
    if (c.st === ST_CONNECTED) c.conn!.write(out);
  }

  private onPublish(c: Client, h: number, b: Buffer, p: number, end: number): void {
    const qos = (h >> 1) & 3;
    let q = p + 2 + b.readUInt16BE(p);
    if (qos > 0) {
      const pid = b.readUInt16BE(q);
      q += 2;
      c.acks.push(((qos === 1 ? 0x40 : 0x50) << 16) | pid);
    }
    if (this.v5) {
      q = skipProps(b, q, end);
      if (q < 0) {
        this.protocolError(c, 'malformed PUBLISH properties');
        return;
      }
    }
    this.c.recvAll++;
    if (this.o.ts && end - q >= 12) {
      const ts = (b.readUInt32BE(q) - this.bhi) * 4294967296 + (b.readUInt32BE(q + 4) - this.blo);
      const us = Math.round((this.rxNow - ts) / 1000);
      record(this.ihist, us);
      if (ts >= this.ms && ts < this.me) {
        this.c.recvM++;
        record(this.hist, us);
      }
      if (this.winOn) this.receipt(b.readUInt32BE(q + 8));
    } else if (this.rxNow >= this.ms && this.rxNow < this.me) this.c.recvM++;
  }

  /** A delivery of a message of publisher `seq` arrived: count it against its window. */
  private receipt(seq: number): void {
    const pp = this.task.procPubs;
    const li = seq - pp.first;
    if (li >= 0 && li < pp.count) {
      Atomics.add(this.recv, RCV + li, 1);
      const wi = seq - this.task.slice.pubs.first;
      if (wi >= 0 && wi < this.pubs.length) {
        const pub = this.pubs[wi]!;
        if (pub.inWin) this.recheck(pub);
      }
    } else if (this.task.relay) {
      this.remote.set(seq, (this.remote.get(seq) ?? 0) + 1);
      this.remoteTimer ??= setTimeout(() => this.flushRemote(), 2);
    }
  }

  private flushRemote(): void {
    this.remoteTimer = null;
    const d: number[] = [];
    for (const [seq, n] of this.remote) d.push(seq, n);
    this.remote.clear();
    if (d.length) this.post({ t: 'rcpt', d });
  }

  private onConnack(c: Client, b: Buffer, p: number, end: number): void {
    if (c.st !== ST_CONNECTING) return;
    const rc = end - p >= 2 ? b[p + 1]! : 0xff;
    if (rc !== 0) {
      this.connFail(c, true, `CONNACK refused: ${connackReason(this.o.V, rc)}`);
      return;
    }
    if (c.timer) clearTimeout(c.timer);
    c.timer = null;
    c.st = ST_CONNECTED;
    this.pending--;
    this.c.connected++;
    this.c.open++;
    record(this.chist, Math.round((this.rxNow - c.t0) / 1000));
    if (this.v5) {
      const props = readConnackProps(b, p + 2, end);
      if (props.receiveMaximum !== undefined && props.receiveMaximum < c.cap) c.cap = props.receiveMaximum;
      if (props.maximumQoS !== undefined && props.maximumQoS < this.o.q) this.error(`broker's Maximum QoS is ${props.maximumQoS} (< -q ${this.o.q})`);
    }
    this.afterAttempt();
  }

  // ---- subscribe ----

  private startSubscribing(): void {
    this.subDone = false;
    for (const s of this.subs) {
      if (s.st !== ST_CONNECTED) {
        s.subState = 3;
        continue;
      }
      s.subState = 1;
      this.subPending++;
      s.wrote = true;
      s.conn!.write(encodeSubscribe(this.o.V, 1, s.filter, this.o.q));
    }
    if (this.subPending > 0) {
      this.subTimer = setTimeout(() => {
        for (const s of this.subs) if (s.subState === 1) this.subResolved(s, false, `no SUBACK within ${this.o.connectTimeout} s`);
      }, this.o.connectTimeout * 1000);
    }
    this.checkSubDone();
  }

  private onSuback(c: Client, b: Buffer, p: number, end: number): void {
    if (c.subState !== 1) return;
    let q = p + 2;
    if (this.v5) q = skipProps(b, q, end);
    const code = q >= 0 && q < end ? b[q]! : 0x80;
    if (code < 0x80) this.subResolved(c, true, '');
    else this.subResolved(c, false, `SUBACK refused ${c.filter.replace(/\d+/g, 'N')}: ${(this.v5 ? connackReason(5, code) : `failure 0x${code.toString(16)}`)}`);
  }

  private subResolved(c: Client, ok: boolean, msg: string): void {
    if (c.subState !== 1) return;
    c.subState = ok ? 2 : 3;
    this.subPending--;
    if (ok) this.c.subscribed++;
    else {
      this.c.subFailed++;
      this.error(msg);
    }
    this.checkSubDone();
  }

  private checkSubDone(): void {
    if (this.subDone || this.subPending > 0) return;
    this.subDone = true;
    if (this.subTimer) clearTimeout(this.subTimer);
    this.subTimer = null;
    for (const p of this.pubs) if (p.partner && p.partner.subState !== 2) p.enabled = false;
    const idle = this.pubs.filter((p) => p.st === ST_CONNECTED && !p.enabled).length;
    if (idle > 0) this.error(`publisher idle: its subscriber is not subscribed`, idle);
    this.sendStats();
    this.post({ t: 'ready', stage: 'subscribe' });
  }

  // ---- publish ----

  private startPublishing(start: number, ms: number, me: number, match: number): void {
    this.ms = ms;
    this.me = me;
    this.match = Math.max(1, match);
    this.eligible = this.pubs.filter((p) => p.st === ST_CONNECTED && p.enabled);
    if (this.eligible.length === 0) {
      this.stopPublishing();
      return;
    }
    this.publishing = true;
    this.endTimer = setTimeout(() => this.stopPublishing(), Math.max(0, (me - this.relNow()) / 1e6) + 1);
    if (this.winOn && this.crossWorker) this.pollTimer = setInterval(() => this.poll(), 1);
    if (this.flood) {
      for (const p of this.eligible) this.enqueue(p);
    } else {
      const P = this.eligible.length;
      this.slotNs = (this.o.I * 1e6) / P;
      this.slot0 = start + (this.task.wIndex / this.task.wTotal) * this.slotNs;
      this.nextSlot = 0;
      this.rateTick();
    }
  }

  private stopPublishing(): void {
    if (this.c.pubDone && !this.publishing) return;
    this.publishing = false;
    if (this.rateTimer) clearTimeout(this.rateTimer);
    if (this.endTimer) clearTimeout(this.endTimer);
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.rateTimer = this.endTimer = this.pollTimer = null;
    this.ready = [];
    for (const p of this.pubs) p.inReady = false;
    this.c.pubDone = 1;
    this.sendStats();
  }

  private enqueue(p: Client): void {
    if (p.inReady || !this.flood || !this.publishing) return;
    p.inReady = true;
    this.ready.push(p);
    if (!this.floodScheduled) {
      this.floodScheduled = true;
      setImmediate(this.runFlood);
    }
  }

  private floodRound(): void {
    this.floodScheduled = false;
    if (!this.publishing) return;
    const q = this.ready;
    this.ready = [];
    let budget = ROUND_BUDGET;
    let k = 0;
    for (; k < q.length && budget > 0 && this.publishing; k++) {
      const p = q[k]!;
      p.inReady = false;
      const n = this.trySend(p, Math.min(BURST, budget));
      budget -= n;
      if (n > 0 && !p.wBlocked) this.enqueue(p);
    }
    for (; k < q.length; k++) this.ready.push(q[k]!); // still marked inReady
    if (this.ready.length && this.publishing && !this.floodScheduled) {
      this.floodScheduled = true;
      setImmediate(this.runFlood);
    }
  }

  private rateTick(): void {
    this.rateTimer = null;
    if (!this.publishing) return;
    const now = this.relNow();
    if (now >= this.me) {
      this.stopPublishing();
      return;
    }
    const P = this.eligible.length;
    const target = Math.floor((now - this.slot0) / this.slotNs) + 1;
    if (target - this.nextSlot > P) {
      // More than a whole round behind (a stalled event loop): skip to the last round.
      if (now >= this.ms) this.c.skippedM += target - P - this.nextSlot;
      this.nextSlot = target - P;
    }
    while (this.nextSlot < target && this.publishing) {
      const p = this.eligible[this.nextSlot % P]!;
      this.nextSlot++;
      if (p.st === ST_CONNECTED && this.trySend(p, 1) === 0 && this.publishing && now >= this.ms) this.c.skippedM++;
    }
    if (!this.publishing) return;
    const next = this.slot0 + this.nextSlot * this.slotNs;
    this.rateTimer = setTimeout(this.runRate, Math.max(0, (next - this.relNow()) / 1e6));
  }

  /** Messages publisher p may send now under its end-to-end window (deliveries outstanding / match). */
  private winRoom(p: Client): number {
    const outstanding = (p.sent * this.match - p.forgiven - Atomics.load(this.recv, p.li)) | 0;
    return this.o.window - Math.ceil(outstanding / this.match);
  }

  /** Sends up to `max` messages of publisher p in one write; returns how many. */
  private trySend(p: Client, max: number): number {
    if (p.st !== ST_CONNECTED || !p.enabled || p.wBlocked || !this.publishing) return 0;
    let k = max;
    if (this.winOn) {
      const room = this.winRoom(p);
      if (room <= 0) {
        if (!p.inWin) {
          p.inWin = true;
          p.winSince = performance.now();
          this.winSet.add(p);
        }
        return 0;
      }
      if (room < k) k = room;
    }
    if (this.o.q > 0) {
      const room = p.cap - p.inflight;
      if (room <= 0) return 0;
      if (room < k) k = room;
    }
    const tpl = p.tpl!;
    const L = tpl.buf.length;
    const maxK = Math.max(1, Math.floor(65536 / L));
    if (k > maxK) k = maxK;
    const now = process.hrtime.bigint();
    const rel = Number(now - this.base);
    if (rel >= this.me) {
      this.stopPublishing();
      return 0;
    }
    if (this.task.limited) {
      k = this.take(k);
      if (k === 0) {
        if (!this.limitHit) {
          this.limitHit = true;
          this.post({ t: 'limit' });
        }
        this.stopPublishing();
        return 0;
      }
    }
    const out = Buffer.allocUnsafe(L * k);
    const hi = Number(now >> 32n) >>> 0;
    const lo = Number(now & 0xffffffffn) >>> 0;
    const ts = this.o.ts;
    const pidOff = tpl.pidOff;
    for (let j = 0, o = 0; j < k; j++, o += L) {
      tpl.buf.copy(out, o);
      if (ts) {
        out.writeUInt32BE(hi, o + tpl.payOff);
        out.writeUInt32BE(lo, o + tpl.payOff + 4);
      }
      if (pidOff >= 0) {
        p.nextPid = p.nextPid >= 65535 ? 1 : p.nextPid + 1;
        out.writeUInt16BE(p.nextPid, o + pidOff);
      }
    }
    p.sent += k;
    if (pidOff >= 0) p.inflight += k;
    this.c.sentAll += k;
    if (rel >= this.ms) this.c.sentM += k;
    p.wrote = true;
    if (!p.conn!.write(out)) {
      p.wBlocked = true;
      if (p.ws) this.pollWsDrain(p);
    }
    return k;
  }

  /** Takes up to k messages from the -L budget shared by the process's workers. */
  private take(k: number): number {
    for (;;) {
      const cur = Atomics.load(this.recv, 0);
      if (cur <= 0) return 0;
      const n = Math.min(cur, k);
      if (Atomics.compareExchange(this.recv, 0, cur, cur - n) === cur) return n;
    }
  }

  private recheck(p: Client): void {
    if (this.winRoom(p) > 0) {
      p.inWin = false;
      this.winSet.delete(p);
      this.enqueue(p);
    }
  }

  /** Receipts may come from other workers (fanout, fanin-shared): look at blocked publishers. */
  private poll(): void {
    for (const p of this.winSet) this.recheck(p);
  }

  private checkStalls(): void {
    const now = performance.now();
    let released = 0;
    for (const p of this.winSet) {
      if (this.winRoom(p) > 0) {
        this.recheck(p);
        continue;
      }
      if (now - p.winSince < STALL_MS) continue;
      const outstanding = (p.sent * this.match - p.forgiven - Atomics.load(this.recv, p.li)) | 0;
      p.forgiven += outstanding;
      released += Math.ceil(outstanding / this.match);
      this.recheck(p);
    }
    if (released > 0) this.error(`window: messages unreceived for ${STALL_MS / 1000} s released from the window (lost unless they arrive later)`, released);
  }

  private acked(c: Client): void {
    if (c.inflight > 0) c.inflight--;
    if (c.inflight === c.cap - 1) this.enqueue(c);
  }

  private onDrain(c: Client): void {
    if (!c.wBlocked) return;
    c.wBlocked = false;
    this.enqueue(c);
  }

  private pollWsDrain(c: Client): void {
    c.wsPoll = setTimeout(() => {
      c.wsPoll = null;
      if (c.st !== ST_CONNECTED) return;
      if (c.ws!.bufferedAmount < WS_HIGH_WATER / 4) this.onDrain(c);
      else this.pollWsDrain(c);
    }, 2);
  }

  private ping(): void {
    for (const c of this.clients) {
      if (c.st !== ST_CONNECTED) continue;
      if (!c.wrote) c.conn!.write(PINGREQ);
      c.wrote = false;
    }
  }

  // ---- stop ----

  private async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.stopPublishing();
    if (this.connTimer) clearTimeout(this.connTimer);
    if (this.subTimer) clearTimeout(this.subTimer);
    if (this.pingTimer) clearInterval(this.pingTimer);
    if (this.remoteTimer) {
      clearTimeout(this.remoteTimer);
      this.flushRemote();
    }
    for (const c of this.clients) {
      if (c.st === ST_CONNECTING) this.connFail(c, false, 'connect aborted: run stopped');
      else if (c.st === ST_CONNECTED) {
        if (c.acks.length) this.flushAcks(c);
        c.conn!.write(DISCONNECT);
        c.conn!.end();
      }
    }
    if (this.c.open === 0) {
      this.done();
      return;
    }
    // Sockets the broker does not close in time are destroyed.
    setTimeout(() => {
      for (const c of this.clients) if (c.st === ST_CONNECTED) c.conn!.destroy();
      setTimeout(() => this.done(), 200);
    }, 2000);
  }

  private done(): void {
    const finish = this.finish;
    if (!finish) return;
    this.finish = null;
    if (this.statsTimer) clearInterval(this.statsTimer);
    this.statsTimer = null;
    for (const c of this.clients) {
      if (c.timer) clearTimeout(c.timer);
      if (c.wsPoll) clearTimeout(c.wsPoll);
    }
    const c = { ...this.c };
    this.port.close();
    finish({ c, hist: encode(this.hist), chist: encode(this.chist), errors: [...this.errs] });
  }
}

export default function runWorker(task: WorkerTask): Promise<UnitResult> {
  return new Engine(task).run();
}
