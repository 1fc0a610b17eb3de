// A byte-level MQTT client for tests that need exact packets (malformed input, precise
// flows). Decodes what the broker sends with mqtt-packet's parser.
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import mqttPacket from 'mqtt-packet';
import type { IDisconnectPacket, ISubscription, Packet } from 'mqtt-packet';

export class RawClient {
  private readonly queue: Packet[] = [];
  private waiters: ((p: Packet | null) => void)[] = [];
  private parser: ReturnType<typeof mqttPacket.parser>;
  closed = false;
  private closeWaiters: (() => void)[] = [];

  private constructor(readonly socket: Socket, readonly version: 3 | 4 | 5) {
    this.parser = mqttPacket.parser({ protocolVersion: version });
    this.parser.on('packet', (p: Packet) => {
      const w = this.waiters.shift();
      if (w) w(p);
      else this.queue.push(p);
    });
    this.parser.on('error', () => undefined);
    socket.on('data', (d) => this.parser.parse(d));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.waiters.splice(0)) w(null);
      for (const w of this.closeWaiters.splice(0)) w();
    });
  }

  static open(port: number, version: 3 | 4 | 5 = 4, host = '127.0.0.1'): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = connect({ port, host }, () => resolve(new RawClient(s, version)));
      s.once('error', reject);
    });
  }

  /** Opens and completes a CONNECT; returns the client and the CONNACK. */
  static async connected(port: number, version: 3 | 4 | 5, connect: Partial<Packet> = {}): Promise<{ c: RawClient; connack: Packet }> {
    const c = await RawClient.open(port, version);
    c.send({
      cmd: 'connect', protocolId: version === 3 ? 'MQIsdp' : 'MQTT', protocolVersion: version,
      clean: true, clientId: 'raw-' + Math.random().toString(36).slice(2), keepalive: 60, ...connect,
    } as Packet);
    const connack = await c.next();
    if (!connack) throw new Error('closed before CONNACK');
    return { c, connack };
  }

  send(p: Packet): void {
    this.socket.write(mqttPacket.generate(p, { protocolVersion: this.version }));
  }

  sendRaw(b: Buffer | number[]): void {
    this.socket.write(Buffer.isBuffer(b) ? b : Buffer.from(b));
  }

  /** Next packet from the broker; null when the socket closed first; throws on timeout. */
  next(timeoutMs = 3000): Promise<Packet | null> {
    const p = this.queue.shift();
    if (p) return Promise.resolve(p);
    if (this.closed) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        reject(new Error(`no packet within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (x: Packet | null) => {
        clearTimeout(t);
        resolve(x);
      };
      this.waiters.push(done);
    });
  }

  /** Resolves when the broker closes the connection; throws on timeout. */
  waitClose(timeoutMs = 3000): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`still open after ${timeoutMs} ms`)), timeoutMs);
      this.closeWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  /** Packets received until the socket closes (or the timeout). */
  async drainUntilClose(timeoutMs = 3000): Promise<Packet[]> {
    const out: Packet[] = [];
    const end = Date.now() + timeoutMs;
    for (;;) {
      const left = end - Date.now();
      if (left <= 0) throw new Error('socket did not close');
      const p = await this.next(left).catch(() => null);
      if (p === null) {
        if (this.closed) return out;
        throw new Error('socket did not close');
      }
      out.push(p);
    }
  }

  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** The next packet from the broker, asserted to be a `cmd` (fails when the connection closes first). */
export async function expectPacket<C extends Packet['cmd']>(c: RawClient, cmd: C, timeoutMs = 3000): Promise<Extract<Packet, { cmd: C }>> {
  const p = await c.next(timeoutMs);
  assert.ok(p, `connection closed while waiting for ${cmd}`);
  assert.equal(p.cmd, cmd, `expected ${cmd}, got ${JSON.stringify(p)}`);
  return p as Extract<Packet, { cmd: C }>;
}

/** Asserts that nothing arrives for `ms` (a bounded negative check). */
export async function expectNothing(c: RawClient, ms = 300): Promise<void> {
  const p = await c.next(ms).catch(() => 'none' as const);
  assert.equal(p, 'none', `unexpected packet ${JSON.stringify(p)}`);
}

/** A DISCONNECT with reason `code`, then the broker closes the connection. */
export async function expectDisconnect(c: RawClient, code: number): Promise<IDisconnectPacket> {
  const d = await expectPacket(c, 'disconnect');
  assert.equal(d.reasonCode, code, `DISCONNECT reason 0x${(d.reasonCode ?? 0).toString(16)}`);
  await c.waitClose();
  return d;
}

let subscribeId = 1;
/** SUBSCRIBE with a fresh packet identifier; asserts the SUBACK carries it; returns the granted codes. */
export async function rawSubscribe(c: RawClient, subs: ISubscription[], properties?: Record<string, unknown>): Promise<number[]> {
  const messageId = subscribeId++;
  c.send({ cmd: 'subscribe', messageId, subscriptions: subs, ...(properties ? { properties } : {}) } as Packet);
  const ack = await expectPacket(c, 'suback');
  assert.equal(ack.messageId, messageId, 'SUBACK carries the SUBSCRIBE packet identifier');
  return ack.granted as number[];
}

/** A field of a decoded packet, by name (asserts that there is a packet). */
export function field(p: Packet | null | undefined, name: string): unknown {
  assert.ok(p, 'expected a packet, the connection closed');
  return (p as unknown as Record<string, unknown>)[name];
}
