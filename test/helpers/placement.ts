// Puts a test client on a chosen worker thread of a worker-threaded node. Each connection
// comes from a loopback source address of its own (all of 127.0.0.0/8 reaches lo), so the
// node's connection list (ConnInfo.remote) names it before it sends CONNECT: a connection
// that landed on another worker is dropped unseen (no session is touched, which a takeover
// test needs) and a new one opened, a bounded number of times. The MQTT.js client is then
// built on the placed TCP socket or WebSocket stream.
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { MqttClient, type IClientOptions } from 'mqtt';
import type { IConnackPacket } from 'mqtt-packet';
import WebSocket, { createWebSocketStream } from 'ws';
import { waitFor, type TestBroker } from './broker.js';

export type Transport = 'tcp' | 'ws';

/** Connections that land elsewhere are retried at most this many times in all. */
export const MAX_TRIES = 50;

let sources = 0;
/** A loopback source address not used before by this process: 127.42.0.1, 127.42.0.2, … */
export function loopbackSource(): string {
  const n = ++sources;
  return `127.${42 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`;
}

/** The worker that holds the connection from `source` (waits until the node lists it). */
export async function workerOfSource(b: TestBroker, source: string): Promise<number> {
  let worker = -2;
  await waitFor(async () => {
    const c = (await b.clients()).find((x) => x.remote === source);
    if (c) worker = c.worker;
    return c !== undefined;
  }, `the connection from ${source} in the node's client list`);
  return worker;
}

/** The worker of the connected client `clientId` (waits until it is listed as connected). */
export async function workerOfClient(b: TestBroker, clientId: string): Promise<number> {
  let worker = -2;
  await waitFor(async () => {
    const c = (await b.clients()).find((x) => x.clientId === clientId && x.state === 'connected');
    if (c) worker = c.worker;
    return c !== undefined;
  }, `client ${clientId} connected`);
  return worker;
}

/** An open byte stream to the node's MQTT port (TCP) or MQTT WebSocket path, before CONNECT. */
interface OpenStream {
  stream: Duplex;
  /** Drops the connection at once. */
  destroy(): void;
}

function openTcp(b: TestBroker, source: string): Promise<OpenStream> {
  return new Promise((resolve, reject) => {
    const s: Socket = connect({ port: b.port, host: '127.0.0.1', localAddress: source }, () => {
      s.off('error', reject);
      resolve({ stream: s, destroy: () => s.destroy() });
    });
    s.once('error', reject);
  });
}

function openWs(b: TestBroker, source: string): Promise<OpenStream> {
  return new Promise((resolve, reject) => {
    const url = `ws://127.0.0.1:${b.wsPort}${b.cfg.listeners.ws_path}`;
    const ws = new WebSocket(url, ['mqtt'], { localAddress: source });
    ws.once('open', () => {
      ws.off('error', reject);
      const stream = createWebSocketStream(ws);
      stream.on('error', () => undefined);
      // The stream does not end itself when the WebSocket closes (as MQTT.js's own builder does).
      ws.once('close', () => stream.destroy());
      resolve({ stream, destroy: () => ws.terminate() });
    });
    ws.once('error', reject);
  });
}

/** Opens connections until one lands on worker `worker`; the others are dropped before CONNECT. */
export async function openOn(b: TestBroker, worker: number, transport: Transport = 'tcp'): Promise<OpenStream & { source: string; tries: number }> {
  const landed: number[] = [];
  for (let tries = 1; tries <= MAX_TRIES; tries++) {
    const source = loopbackSource();
    const conn = transport === 'tcp' ? await openTcp(b, source) : await openWs(b, source);
    let at: number;
    try {
      at = await workerOfSource(b, source);
    } catch (e) {
      conn.destroy();
      throw e;
    }
    if (at === worker) return { ...conn, source, tries };
    conn.destroy();
    landed.push(at);
  }
  throw new Error(`no ${transport} connection landed on worker ${worker} in ${MAX_TRIES} tries (they landed on workers ${landed.join(',')})`);
}

/** An MQTT.js client on a placed connection. */
export interface Placed {
  client: MqttClient;
  connack: IConnackPacket;
  /** Connections it took to land there. */
  tries: number;
  source: string;
}

/**
 * An MQTT.js client (no reconnects) whose connection sits on worker `worker`, past its
 * CONNACK; `setup` runs before CONNECT is sent (e.g. to attach handlers). `opts.clientId`
 * is required: placement must not depend on an id the client makes up.
 */
export async function mqttOn(
  b: TestBroker, worker: number, opts: IClientOptions & { clientId: string },
  transport: Transport = 'tcp', setup?: (c: MqttClient) => void,
): Promise<Placed> {
  const conn = await openOn(b, worker, transport);
  const client = new MqttClient(() => conn.stream, { reconnectPeriod: 0, connectTimeout: 5000, ...opts });
  // MQTT.js emits 'error' for a refused CONNACK or a server DISCONNECT: never unhandled.
  client.on('error', () => undefined);
  setup?.(client);
  const connack = await new Promise<IConnackPacket>((resolve, reject) => {
    const done = (): void => {
      client.off('connect', ok);
      client.off('error', fail);
      client.off('close', closed);
    };
    const ok = (p: IConnackPacket): void => {
      done();
      resolve(p);
    };
    const fail = (e: Error): void => {
      done();
      client.end(true);
      reject(e);
    };
    const closed = (): void => fail(new Error(`${opts.clientId}: closed before CONNACK`));
    client.on('connect', ok);
    client.on('error', fail);
    client.on('close', closed);
  });
  return { client, connack, tries: conn.tries, source: conn.source };
}
