// Listeners end to end: MQTT over TCP, TLS, WebSocket and WSS with real clients, MQTT over
// WebSocket as a byte stream, and write backpressure towards a client that stops reading.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { IClientOptions, MqttClient } from 'mqtt';
import mqttPacket, { type Packet } from 'mqtt-packet';
import WebSocket from 'ws';
import { startBroker, sleep, waitFor, type TestBroker } from './helpers/broker.js';
import { makeTestPki } from './helpers/certs.js';
import { messages, trackClients, type Message } from './helpers/clients.js';
import { field } from './helpers/raw-client.js';
import { tempDir } from './helpers/tmp.js';
import { wsRefusal } from './helpers/ws.js';

const T = { timeout: 30_000 };

const tmp = tempDir('fleetmq-listeners-');
const f = tmp.file;

// ---------------------------------------------------------------- helpers

const clients = trackClients();
const sockets: WebSocket[] = [];
after(() => {
  for (const s of sockets) s.terminate();
});

const connectMqtt = (url: string, opts: IClientOptions): Promise<MqttClient> =>
  clients.mqtt(url, { connectTimeout: 5000, ...opts }, false);

/** A `ws` client speaking raw MQTT bytes; incoming frames are parsed as one byte stream. */
class WsMqtt {
  readonly packets: Packet[] = [];
  readonly frames: Buffer[] = [];
  private constructor(readonly ws: WebSocket, version: 4 | 5) {
    const parser = mqttPacket.parser({ protocolVersion: version });
    parser.on('packet', (p: Packet) => this.packets.push(p));
    parser.on('error', () => undefined);
    ws.on('message', (d: Buffer) => {
      this.frames.push(d);
      parser.parse(d);
    });
  }

  static open(url: string, version: 4 | 5, protocols: string[] = ['mqtt']): Promise<WsMqtt> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, protocols);
      sockets.push(ws);
      ws.binaryType = 'nodebuffer';
      ws.once('open', () => resolve(new WsMqtt(ws, version)));
      ws.once('error', reject);
    });
  }

  async nextPackets(n: number, what: string): Promise<Packet[]> {
    await waitFor(() => this.packets.length >= n, what);
    return this.packets.splice(0, n);
  }
}

const gen = (p: Record<string, unknown>, version: 4 | 5): Buffer =>
  mqttPacket.generate(p as unknown as Packet, { protocolVersion: version });

// ---------------------------------------------------------------- TCP / TLS / WS / WSS

describe('listeners: TLS, WebSocket and WSS carry MQTT end to end', () => {
  let b: TestBroker;
  let ca: Buffer;
  before(async () => {
    makeTestPki(tmp.path, 'fleetmq listeners test CA');
    ca = readFileSync(f('ca.crt'));
    b = await startBroker({
      listeners: { tls: { cert: f('server.crt'), key: f('server.key'), ca: f('ca.crt'), request_cert: false } },
    });
  });
  after(async () => {
    await b?.stop();
  });

  const urls = () => ({
    tcp: b.url,
    tls: `mqtts://127.0.0.1:${b.mqttsPort}`,
    ws: `ws://127.0.0.1:${b.wsPort}/mqtt`,
    wss: `wss://127.0.0.1:${b.wssPort}/mqtt`,
  });

  /** Subscribe at QoS 2 and publish QoS 0/1/2 through one client; checks the transport kind the broker saw. */
  async function roundTrip(kind: 'tls' | 'ws' | 'wss', version: 4 | 5): Promise<void> {
    const id = `${kind}-rt-${version}`;
    const c = await connectMqtt(urls()[kind], { protocolVersion: version, clientId: id, ca, rejectUnauthorized: true });
    const conn = (await b.clients()).find((x) => x.clientId === id);
    assert.equal(conn?.transport, kind);
    assert.equal(conn?.protocol, version);
    const got = messages(c);
    const topic = `rt/${kind}/${version}`;
    await c.subscribeAsync(topic, { qos: 2 });
    for (const qos of [0, 1, 2] as const) await c.publishAsync(topic, `q${qos}`, { qos });
    await waitFor(() => got.length === 3, `${kind} v${version} round trip`);
    assert.deepEqual(got.map((m) => [m.payload, m.qos]).sort(), [['q0', 0], ['q1', 1], ['q2', 2]]);
    await c.endAsync();
  }

  test('[v3.1.1 §4.2] [v5 §4.2] MQTT over TLS (mqtts:// verified with the test CA): QoS 0/1/2 round trips, 3.1.1 and 5.0', T, async () => {
    await roundTrip('tls', 4);
    await roundTrip('tls', 5);
  });

  test('[v3.1.1 §6.0] [v5 §6.0] MQTT over WebSocket (ws://…/mqtt): QoS 0/1/2 round trips, 3.1.1 and 5.0', T, async () => {
    await roundTrip('ws', 4);
    await roundTrip('ws', 5);
  });

  test('[v3.1.1 §6.0] [v5 §6.0] MQTT over WSS (wss://…/mqtt with the test CA): QoS 0/1/2 round trips, 3.1.1 and 5.0', T, async () => {
    await roundTrip('wss', 4);
    await roundTrip('wss', 5);
  });

  test('[v3.1.1 §4.2] [v5 §4.2] transports interoperate: every publisher reaches every subscriber (TCP, TLS, WS, WSS)', T, async () => {
    const u = urls();
    const kinds = [['tcp', 4], ['tls', 5], ['ws', 5], ['wss', 4]] as const;
    const clients = new Map<string, { c: MqttClient; got: Message[] }>();
    for (const [kind, version] of kinds) {
      const c = await connectMqtt(u[kind], { protocolVersion: version, clientId: `mix-${kind}`, ca });
      const got = messages(c);
      await c.subscribeAsync('mix/#', { qos: 1 });
      clients.set(kind, { c, got });
    }
    for (const [kind] of kinds) await clients.get(kind)!.c.publishAsync(`mix/${kind}`, `from ${kind}`, { qos: 1 });
    for (const [kind] of kinds) {
      const { got } = clients.get(kind)!;
      await waitFor(() => got.length === 4, `4 messages at the ${kind} subscriber`);
      assert.deepEqual(got.map((m) => `${m.topic}=${m.payload}`).sort(),
        ['mix/tcp=from tcp', 'mix/tls=from tls', 'mix/ws=from ws', 'mix/wss=from wss']);
    }
    await Promise.all([...clients.values()].map(({ c }) => c.endAsync()));
  });

  for (const version of [4, 5] as const) {
    const tag = version === 4 ? '[v3.1.1 MQTT-6.0.0-2/4]' : '[v5 MQTT-6.0.0-2/4]';
    test(`${tag} WebSocket frames are a byte stream: two packets in one frame, one packet over two frames (protocol ${version})`, T, async () => {
      const c = await WsMqtt.open(`ws://127.0.0.1:${b.wsPort}/mqtt`, version);
      assert.equal(c.ws.protocol, 'mqtt');
      const topic = `wsbytes/${version}`;
      // CONNECT + SUBSCRIBE in a single frame.
      c.ws.send(Buffer.concat([
        gen({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clean: true, clientId: `wsbytes-${version}`, keepalive: 30 }, version),
        gen({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic, qos: 1 }] }, version),
      ]), { binary: true });
      const [connack, suback] = await c.nextPackets(2, 'CONNACK + SUBACK');
      assert.equal(field(connack, 'cmd'), 'connack');
      assert.equal(field(connack, version === 5 ? 'reasonCode' : 'returnCode'), 0);
      assert.equal(field(suback, 'cmd'), 'suback');
      assert.deepEqual(field(suback, 'granted'), [1]);
      // One PUBLISH split over two frames, the second frame also carrying a PINGREQ.
      const publish = gen({ cmd: 'publish', topic, payload: Buffer.from('split payload'), qos: 1, messageId: 9, retain: false, dup: false }, version);
      c.ws.send(publish.subarray(0, 3), { binary: true });
      await sleep(30);
      c.ws.send(Buffer.concat([publish.subarray(3), gen({ cmd: 'pingreq' }, version)]), { binary: true });
      await waitFor(() => c.packets.length >= 3, 'PUBACK, PUBLISH and PINGRESP');
      const cmds = c.packets.map((p) => p.cmd).sort();
      assert.deepEqual(cmds, ['pingresp', 'puback', 'publish']);
      const pub = c.packets.find((p) => p.cmd === 'publish');
      assert.equal(field(pub, 'topic'), topic);
      assert.equal((field(pub, 'payload') as Buffer).toString(), 'split payload');
      assert.equal(field(c.packets.find((p) => p.cmd === 'puback'), 'messageId'), 9);
      c.ws.close(1000);
    });
  }

  test('[v3.1.1 MQTT-6.0.0-1/3] [v5 MQTT-6.0.0-1/3] no "mqtt" subprotocol or a wrong path is refused; a text frame closes the connection', T, async () => {
    const base = `ws://127.0.0.1:${b.wsPort}`;
    const accepted = b.counters.connectionsAccepted;
    assert.equal(await wsRefusal(`${base}/mqtt`), 400);
    assert.equal(await wsRefusal(`${base}/mqtt`, ['chat']), 400);
    assert.equal(await wsRefusal(`${base}/other`, ['mqtt']), 404);
    assert.equal(b.counters.connectionsAccepted, accepted, 'refused upgrades never reach the broker');

    const c = await WsMqtt.open(`${base}/mqtt`, 4);
    c.ws.send(gen({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'ws-text', keepalive: 30 }, 4));
    const [connack] = await c.nextPackets(1, 'CONNACK');
    assert.equal(field(connack, 'returnCode'), 0);
    const closed = new Promise<number>((r) => c.ws.once('close', (code: number) => r(code)));
    c.ws.send('not binary'); // text frame
    await closed;
    await waitFor(async () => (await b.session('ws-text')) === null, 'session gone');
  });
});

// ---------------------------------------------------------------- write backpressure

describe('write backpressure towards a client that stops reading', () => {
  const MAX_WRITE = 256 * 1024;
  const MAX_QUEUED = 100;
  const PAYLOAD = Buffer.alloc(1024, 0x61);
  let b: TestBroker;
  before(async () => {
    b = await startBroker({ mqtt: { max_write_buffer: MAX_WRITE, max_queued_messages: MAX_QUEUED } });
  });
  after(async () => {
    await b?.stop();
  });

  /** Sends `n` PUBLISH packets from a raw 3.1.1 client in big writes; waits until the broker routed them. */
  async function flood(topic: string, n: number, qos: 0 | 1): Promise<void> {
    const { c } = await clients.rawConnect(b.port, 4, { clientId: `flood-${topic}` });
    const received = b.counters.messagesReceived;
    const batch: Buffer[] = [];
    for (let i = 0; i < n; i++) {
      const payload = Buffer.from(PAYLOAD);
      payload.writeUInt32BE(i, 0);
      batch.push(gen({ cmd: 'publish', topic, payload, qos, retain: false, dup: false, ...(qos ? { messageId: (i % 65535) + 1 } : {}) }, 4));
      if (batch.length === 500) c.sendRaw(Buffer.concat(batch.splice(0)));
    }
    if (batch.length) c.sendRaw(Buffer.concat(batch));
    await waitFor(() => b.counters.messagesReceived - received >= n, `${n} messages routed`, 20_000);
    c.destroy();
  }

  /**
   * Waits until every one of `n` flooded QoS 0 messages was either written to the subscriber
   * or dropped at its write buffer (delivery may trail routing when it is on another worker).
   */
  async function writtenAndDropped(sent0: number, dropped0: number, n: number): Promise<{ written: number; dropped: number }> {
    const ctr = b.counters;
    const now = () => ({ written: ctr.messagesSent - sent0, dropped: ctr.droppedWriteBuffer - dropped0 });
    await waitFor(() => now().written + now().dropped >= n, `${n} messages written or dropped`, 10_000);
    return now();
  }

  /**
   * Samples the broker-side write buffer (unsent transport bytes) of `clientId` every few ms
   * until `stop()`, which takes one last sample and resolves to the largest value seen and
   * how many samples found the connection.
   */
  function sampleBuffered(clientId: string): { stop(): Promise<{ max: number; seen: number }> } {
    let running = true;
    let max = 0;
    let seen = 0;
    const sample = async (): Promise<void> => {
      const conn = (await b.clients()).find((x) => x.clientId === clientId);
      if (!conn) return;
      seen++;
      max = Math.max(max, conn.bufferedBytes);
    };
    const loop = (async () => {
      while (running) {
        await sample();
        await sleep(2);
      }
    })();
    return {
      async stop() {
        running = false;
        await loop;
        await sample();
        return { max, seen };
      },
    };
  }

  test('[v3.1.1 §4.3.1] QoS 0: past max_write_buffer messages are dropped (droppedWriteBuffer); buffers stay bounded; the rest arrives after resume', T, async () => {
    const ctr = b.counters;
    const { c: sub } = await clients.rawConnect(b.port, 4, { clientId: 'bp-q0' });
    sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'bp/q0', qos: 0 }] } as Packet);
    assert.deepEqual(field(await sub.next(), 'granted'), [0]);
    sub.socket.pause();
    const dropped0 = ctr.droppedWriteBuffer;
    const sent0 = ctr.messagesSent;
    const N = 20_000;
    // Sample while the flood is routed and delivered (delivery may trail routing on another worker).
    const sampler = sampleBuffered('bp-q0');
    let counts: { written: number; dropped: number };
    let buffered: { max: number; seen: number };
    try {
      await flood('bp/q0', N, 0);
      counts = await writtenAndDropped(sent0, dropped0, N);
    } finally {
      buffered = await sampler.stop();
    }
    const { written, dropped } = counts;
    assert.ok(dropped > 0, 'some messages were dropped at the write buffer');
    assert.equal(written + dropped, N, 'every message was either written or dropped (counted)');
    assert.ok(buffered.seen > 0, 'the subscriber connection was sampled');
    assert.ok(buffered.max <= MAX_WRITE + 2 * 1024, `write buffer bounded: ${buffered.max}`);
    const bound = MAX_QUEUED * (PAYLOAD.length + 'bp/q0'.length);
    assert.ok(ctr.queuedBytes <= bound, `queuedBytes ${ctr.queuedBytes}`);
    assert.ok(ctr.queuedBytesPeak <= bound, `queuedBytesPeak ${ctr.queuedBytesPeak}`);

    // Resume: exactly what was written arrives, in order.
    const seq: number[] = [];
    const collect = async (): Promise<void> => {
      while (seq.length < written) {
        const p = await sub.next(5000);
        if (p === null) throw new Error('subscriber closed');
        if (p.cmd === 'publish') seq.push((p.payload as Buffer).readUInt32BE(0));
      }
    };
    sub.socket.resume();
    await collect();
    await sleep(100);
    assert.equal(await sub.next(200).then(() => 'extra', () => 'none'), 'none', 'nothing beyond what was kept');
    for (let i = 1; i < seq.length; i++) assert.ok(seq[i]! > seq[i - 1]!, 'in publish order');
    assert.equal(seq[0], 0, 'the first messages were written before the buffer filled');
    sub.destroy();
  });

  test('[v3.1.1 §4.3.1] [v3.1.1 MQTT-6.0.0-2] QoS 0 over WebSocket: a subscriber that stops reading is bounded by max_write_buffer too', T, async () => {
    const ctr = b.counters;
    const c = await WsMqtt.open(`ws://127.0.0.1:${b.wsPort}/mqtt`, 4);
    c.ws.send(Buffer.concat([
      gen({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'bp-ws', keepalive: 60 }, 4),
      gen({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'bp/ws', qos: 0 }] }, 4),
    ]));
    await c.nextPackets(2, 'CONNACK + SUBACK');
    const tcp = (c.ws as unknown as { _socket: import('node:net').Socket })._socket;
    tcp.pause();
    const dropped0 = ctr.droppedWriteBuffer;
    const sent0 = ctr.messagesSent;
    const N = 20_000;
    // Sample while the flood is routed and delivered (delivery may trail routing on another worker).
    const sampler = sampleBuffered('bp-ws');
    let counts: { written: number; dropped: number };
    let buffered: { max: number; seen: number };
    try {
      await flood('bp/ws', N, 0);
      counts = await writtenAndDropped(sent0, dropped0, N);
    } finally {
      buffered = await sampler.stop();
    }
    const { written, dropped } = counts;
    assert.ok(dropped > 0, 'some messages were dropped at the write buffer');
    assert.equal(written + dropped, N);
    assert.ok(buffered.seen > 0, 'the subscriber connection was sampled');
    assert.ok(buffered.max <= MAX_WRITE + 2 * 1024, `write buffer bounded: ${buffered.max}`);
    tcp.resume();
    await waitFor(() => c.packets.filter((p) => p.cmd === 'publish').length === written, 'kept messages after resume', 10_000);
    const seq = c.packets.filter((p) => p.cmd === 'publish').map((p) => (field(p, 'payload') as Buffer).readUInt32BE(0));
    for (let i = 1; i < seq.length; i++) assert.ok(seq[i]! > seq[i - 1]!, 'in publish order');
    c.ws.close(1000);
  });

  test('[v3.1.1 MQTT-4.6.0-6] QoS 1: inflight window + max_queued_messages bound the session; droppedQueueFull counted; kept messages arrive in order', T, async () => {
    const ctr = b.counters;
    const WINDOW = b.cfg.mqtt.max_inflight; // 3.1.1 clients get the configured window
    const { c: sub } = await clients.rawConnect(b.port, 4, { clientId: 'bp-q1' });
    sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'bp/q1', qos: 1 }] } as Packet);
    assert.deepEqual(field(await sub.next(), 'granted'), [1]);
    sub.socket.pause();
    const full0 = ctr.droppedQueueFull;
    const N = 5000;
    await flood('bp/q1', N, 1);
    // Routed is not yet delivered when the subscriber's session lives on another worker:
    // the last delivery drops the oldest queued message, so wait for the final drop count.
    await waitFor(() => ctr.droppedQueueFull - full0 >= N - WINDOW - MAX_QUEUED, 'every message delivered to bp-q1', 10_000);
    const session = await b.session('bp-q1');
    assert.ok(session, 'session of bp-q1');
    assert.equal(session.inflight.length, WINDOW);
    assert.equal(session.queue.length, MAX_QUEUED);
    assert.equal(ctr.droppedQueueFull - full0, N - WINDOW - MAX_QUEUED);
    const bound = MAX_QUEUED * (PAYLOAD.length + 'bp/q1'.length);
    assert.equal(session.queueBytes, bound);
    assert.ok(ctr.queuedBytes <= bound, `queuedBytes ${ctr.queuedBytes}`);
    assert.ok(ctr.queuedBytesPeak <= bound, `queuedBytesPeak ${ctr.queuedBytesPeak}`);

    // Resume and acknowledge: the window's messages, then the newest MAX_QUEUED (drop_oldest).
    sub.socket.resume();
    const seq: number[] = [];
    while (seq.length < WINDOW + MAX_QUEUED) {
      const p = await sub.next(5000);
      assert.ok(p, 'subscriber closed');
      if (p.cmd !== 'publish') continue;
      seq.push((p.payload as Buffer).readUInt32BE(0));
      sub.send({ cmd: 'puback', messageId: p.messageId } as Packet);
    }
    const expected = [
      ...Array.from({ length: WINDOW }, (_, i) => i),
      ...Array.from({ length: MAX_QUEUED }, (_, i) => N - MAX_QUEUED + i),
    ];
    assert.deepEqual(seq, expected);
    assert.equal(await sub.next(300).then(() => 'extra', () => 'none'), 'none');
    await waitFor(async () => {
      const s = await b.session('bp-q1');
      return s?.inflight.length === 0 && s.queue.length === 0;
    }, 'session drained');
    assert.equal(ctr.queuedBytes, 0);
    sub.destroy();
  });
});

describe('write backpressure: max_write_buffer below the transport high-water mark (64 KiB)', () => {
  let b: TestBroker;
  const N = 10_000;
  before(async () => {
    b = await startBroker({ mqtt: { max_write_buffer: 8 * 1024, max_queued_messages: 2 * N, queue_qos0: true } });
  });
  after(async () => {
    await b?.stop();
  });

  test('[v3.1.1 MQTT-3.1.2-4] a large offline queue is fully delivered on reconnect (no stall once the buffer fills)', T, async () => {
    const id = 'small-wb';
    let { c } = await clients.rawConnect(b.port, 4, { clientId: id, clean: false });
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'swb/#', qos: 0 }] } as Packet);
    assert.deepEqual(field(await c.next(), 'granted'), [0]);
    c.send({ cmd: 'disconnect' } as Packet);
    await c.waitClose();
    const { c: p } = await clients.rawConnect(b.port, 4, { clientId: 'small-wb-pub' });
    const one = gen({ cmd: 'publish', topic: 'swb/x', payload: Buffer.alloc(1024, 0x62), qos: 0, retain: false, dup: false }, 4);
    p.sendRaw(Buffer.concat(Array.from({ length: N }, () => one)));
    const queued = async (): Promise<number | undefined> => (await b.session(id))?.queue.length;
    await waitFor(async () => (await queued()) === N, 'offline queue filled', 10_000);

    ({ c } = await clients.rawConnect(b.port, 4, { clientId: id, clean: false }));
    let got = 0;
    for (;;) {
      const x = await c.next(2000).catch(() => null);
      if (x === null) break;
      if (x.cmd === 'publish') got++;
      if (got === N) break;
    }
    assert.equal(await queued(), 0, 'nothing left behind in the session queue');
    assert.equal(got, N);
    c.destroy();
    p.destroy();
  });
});
