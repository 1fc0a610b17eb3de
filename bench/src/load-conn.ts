// A minimal MQTT 3.1.1 client for the standalone bench tools that drive a broker from their
// own process (cross-worker, cluster): raw packets from ./mqtt.ts, incoming PUBLISHes handed
// to a callback with the payload offset (QoS 1 acknowledged at once), PUBACKs counted,
// SUBACKs to a callback or to whoever waits for the next packet of a type. Plus the small
// promise helpers these tools share.
import net from 'node:net';
import { newHist, record, type Histogram } from './hist.js';
import { DISCONNECT, encodeConnect, type PublishTemplate } from './mqtt.js';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
export const nowNs = (): bigint => process.hrtime.bigint();

/** Rejects after `ms` with `what` in the message. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Runs `f` over `items` with at most `limit` at a time. */
export async function eachLimited<T>(items: T[], limit: number, f: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await f(items[next++]!);
  });
  await Promise.all(lanes);
}

/** Bytes a publisher may leave unsent in its socket before it skips a message (broker not reading). */
export const WRITE_BOUND = 4 << 20;

export class Conn {
  readonly sock: net.Socket;
  private rest: Buffer | null = null;
  private waiting: Array<{ type: number; resolve: (b: Buffer) => void }> = [];
  private closedP: Promise<void>;
  onPublish: ((b: Buffer, payOff: number) => void) | null = null;
  /** When set, SUBACKs go here (packet id, last return code) instead of to next(9). */
  onSuback: ((pid: number, rc: number) => void) | null = null;
  pubacks = 0;

  constructor(port: number, host = '127.0.0.1') {
    this.sock = net.connect({ host, port });
    this.sock.setNoDelay(true);
    this.sock.on('data', (d: Buffer) => this.feed(d));
    this.sock.on('error', () => {});
    this.closedP = new Promise((r) => this.sock.once('close', () => r()));
  }

  /** Resolves with the next packet of `type` (4-bit packet type). */
  next(type: number, what: string, ms = 10_000): Promise<Buffer> {
    return withTimeout(new Promise<Buffer>((r) => this.waiting.push({ type, resolve: r })), ms, what);
  }

  closed(): Promise<void> {
    return this.closedP;
  }

  private feed(d: Buffer): void {
    const b = this.rest === null ? d : Buffer.concat([this.rest, d]);
    let p = 0;
    for (;;) {
      if (b.length - p < 2) break;
      let rl = 0;
      let mul = 1;
      let q = p + 1;
      let ok = false;
      for (let k = 0; k < 4 && q < b.length; k++) {
        const x = b[q++]!;
        rl += (x & 0x7f) * mul;
        mul *= 128;
        if ((x & 0x80) === 0) {
          ok = true;
          break;
        }
      }
      if (!ok || q + rl > b.length) break;
      this.packet(b, p, q, q + rl);
      p = q + rl;
    }
    this.rest = p < b.length ? b.subarray(p) : null;
    if (this.rest !== null && p > 0) this.rest = Buffer.from(this.rest); // do not pin the whole chunk
  }

  /** One packet: fixed header at `p`, variable header at `v`, end at `end`. */
  private packet(b: Buffer, p: number, v: number, end: number): void {
    const h = b[p]!;
    const type = h >> 4;
    if (type === 3) {
      const qos = (h >> 1) & 3;
      const tl = b.readUInt16BE(v);
      let off = v + 2 + tl;
      if (qos > 0) {
        const pid = b.readUInt16BE(off);
        off += 2;
        this.sock.write(Buffer.from([0x40, 0x02, pid >> 8, pid & 0xff]));
      }
      this.onPublish?.(b, off);
      return;
    }
    if (type === 4) {
      this.pubacks++;
      return;
    }
    if (type === 9 && this.onSuback !== null) {
      this.onSuback(b.readUInt16BE(v), b[end - 1]!);
      return;
    }
    const i = this.waiting.findIndex((w) => w.type === type);
    if (i >= 0) {
      const w = this.waiting[i]!;
      this.waiting.splice(i, 1);
      w.resolve(Buffer.from(b.subarray(p, end)));
    }
  }
}

export async function mqttConnect(port: number, clientId: string, host = '127.0.0.1'): Promise<Conn> {
  const c = new Conn(port, host);
  try {
    await withTimeout(new Promise<void>((r, reject) => {
      c.sock.once('connect', () => r());
      c.sock.once('error', reject);
    }), 10_000, `${clientId}: TCP connect`);
    const ack = c.next(2, `${clientId}: CONNACK`);
    c.sock.write(encodeConnect({ V: 4, clientId, clean: true, keepalive: 0, username: null, password: null, sessionExpiry: 0 }));
    const connack = await ack;
    if (connack[3] !== 0) throw new Error(`${clientId}: CONNACK return code ${connack[3]}`);
    return c;
  } catch (e) {
    c.sock.destroy();
    throw e;
  }
}

/** DISCONNECT, then wait until the broker has closed the socket (so it has dropped the session). */
export async function mqttDisconnect(c: Conn): Promise<void> {
  c.sock.end(DISCONNECT);
  await withTimeout(c.closed(), 5_000, 'close after DISCONNECT').catch(() => c.sock.destroy());
}

export interface Paced {
  /** Messages due (written or skipped). */
  sent: number;
  /** Of those, due inside the measured window (from `wStartNs`). */
  sentInWindow: number;
  /** Not written: the publisher's socket held more than WRITE_BOUND bytes. */
  skipped: number;
}

/**
 * Publishes `rate` messages/s in total, round robin over `pubs` (publisher i sends
 * `tpl[i]`, a fresh packet id for QoS > 0 and the send time in ns since `base` in its
 * payload), paced by a 5 ms timer from `base` until `wEndNs`; writes of one tick are corked
 * per socket. `onTick(t, paced)` runs on every tick after its writes. Resolves right after
 * the last tick.
 */
export function publishPaced(
  pubs: readonly Conn[], tpl: readonly PublishTemplate[], rate: number, base: bigint, wStartNs: number, wEndNs: number,
  onTick?: (t: number, p: Paced) => void,
): Promise<Paced> {
  const pid = new Uint16Array(pubs.length);
  const p: Paced = { sent: 0, sentInWindow: 0, skipped: 0 };
  return new Promise<Paced>((done) => {
    const timer = setInterval(() => {
      const t = Number(nowNs() - base);
      const due = Math.floor((Math.min(t, wEndNs) / 1e9) * rate);
      const touched = new Set<Conn>();
      while (p.sent < due) {
        const i = p.sent % pubs.length;
        const c = pubs[i]!;
        p.sent++;
        if (c.sock.writableLength > WRITE_BOUND) {
          p.skipped++;
          continue;
        }
        const tp = tpl[i]!;
        const buf = Buffer.from(tp.buf);
        if (tp.pidOff >= 0) {
          pid[i] = pid[i]! === 0xffff ? 1 : pid[i]! + 1;
          buf.writeUInt16BE(pid[i]!, tp.pidOff);
        }
        buf.writeDoubleBE(Number(nowNs() - base), tp.payOff);
        if (!touched.has(c)) {
          touched.add(c);
          c.sock.cork();
        }
        c.sock.write(buf);
        if (t >= wStartNs) p.sentInWindow++;
      }
      for (const c of touched) c.sock.uncork();
      onTick?.(t, p);
      if (t >= wEndNs) {
        clearInterval(timer);
        done(p);
      }
    }, 5);
  });
}

/**
 * The receive side of a paced run: every PUBLISH counted, and those received inside the
 * measured window [wStart, wEnd) (ns after `base`) counted again with their latency (the
 * send time the publisher wrote into the payload at the template's offset).
 */
export class ReceiveWindow {
  base = 0n;
  wStart = Infinity;
  wEnd = Infinity;
  all = 0;
  inWindow = 0;
  readonly hist: Histogram = newHist();

  readonly onPublish = (b: Buffer, off: number): void => {
    this.all++;
    const t = Number(nowNs() - this.base);
    if (t >= this.wStart && t < this.wEnd) {
      this.inWindow++;
      record(this.hist, (t - b.readDoubleBE(off)) / 1000);
    }
  };
}
