// MQTT.js and RawClient connections for the end-to-end tests: unique client ids, a pool
// that closes every client (and broker) it made, brokers with their clients, and
// collectors for the messages an MQTT.js client receives.
import { after } from 'node:test';
import assert from 'node:assert/strict';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import type { IConnackPacket, IPublishPacket, Packet } from 'mqtt-packet';
import type { Config } from '../../src/config/types.js';
import { sleep, startBroker, type DeepPartial, type TestBroker } from './broker.js';
import { RawClient } from './raw-client.js';

let seq = 0;
/** `<prefix>-<pid>-<n>`: unique within the test process (and across parallel test files). */
export const uid = (prefix: string): string => `${prefix}-${process.pid}-${++seq}`;

type Version = 3 | 4 | 5;

/** MQTT 3.1.1 and 5.0 as the suites loop over them: protocol level, tag for test names, mosquitto client -V. */
export const VERSIONS: readonly { v: 4 | 5; tag: string; mosq: string }[] = [
  { v: 4, tag: 'v3.1.1', mosq: 'mqttv311' },
  { v: 5, tag: 'v5', mosq: 'mqttv5' },
];

/**
 * The clients (and brokers) a test file or suite made, all closed by `closeAll()`.
 * Methods are bound, so they can be destructured.
 */
export class Clients {
  private readonly mqttClients = new Set<MqttClient>();
  private readonly raws = new Set<RawClient>();
  private readonly brokers = new Set<TestBroker>();

  /** Remembers `c` for `closeAll()`; returns it. */
  readonly track = <C extends MqttClient | RawClient>(c: C): C => {
    if (c instanceof RawClient) this.raws.add(c);
    else this.mqttClients.add(c as MqttClient);
    return c;
  };

  /** A broker stopped by `closeAll()`. */
  readonly broker = async (overrides: DeepPartial<Config> = {}): Promise<TestBroker> => {
    const b = await startBroker(overrides);
    this.brokers.add(b);
    return b;
  };

  /** MQTT.js connectAsync without reconnects (connect timeout 3 s unless `opts` says otherwise). */
  readonly mqtt = async (url: string, opts: IClientOptions = {}, allowRetries = true): Promise<MqttClient> => {
    const c = await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 3000, ...opts }, allowRetries);
    return this.track(c);
  };

  /** An MQTT.js client of protocol version `v` on `b`, with a unique client id. */
  readonly client = (b: TestBroker, v: Version, opts: IClientOptions = {}): Promise<MqttClient> =>
    this.mqtt(b.url, { protocolVersion: v, clientId: uid('js'), ...opts });

  /**
   * MQTT.js connect (no reconnects) resolving with the client and its CONNACK; `setup`
   * runs on the client before its CONNECT is sent (e.g. to attach a message handler).
   */
  readonly connack = (
    url: string, opts: IClientOptions, setup?: (c: MqttClient) => void,
  ): Promise<{ client: MqttClient; connack: IConnackPacket }> => new Promise((resolve, reject) => {
    const client = this.track(mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 4000, ...opts }));
    setup?.(client);
    const t = setTimeout(() => {
      client.end(true);
      reject(new Error('MQTT.js: no CONNACK'));
    }, 5000);
    client.once('connect', (connack) => {
      clearTimeout(t);
      resolve({ client, connack: connack as IConnackPacket });
    });
    client.once('error', (e) => {
      clearTimeout(t);
      client.end(true);
      reject(e);
    });
  });

  /** A RawClient past its CONNACK (whatever the CONNACK says); client id unique unless given. */
  readonly rawConnect = async (
    port: number, version: Version, connect: Record<string, unknown> = {},
  ): Promise<{ c: RawClient; connack: Packet }> => {
    const r = await RawClient.connected(port, version, { clientId: uid('raw'), ...connect } as Partial<Packet>);
    this.track(r.c);
    return r;
  };

  /** A RawClient on `b` whose CONNECT was answered by a CONNACK. */
  readonly rawClient = async (b: TestBroker, v: Version, connect: Record<string, unknown> = {}): Promise<RawClient> => {
    const { c, connack } = await this.rawConnect(b.port, v, connect);
    assert.equal(connack.cmd, 'connack');
    return c;
  };

  /** Destroys the RawClients, ends the MQTT.js clients (bounded), then stops the brokers. */
  readonly closeAll = async (): Promise<void> => {
    for (const r of this.raws) r.destroy();
    const clients = [...this.mqttClients];
    const brokers = [...this.brokers];
    this.raws.clear();
    this.mqttClients.clear();
    this.brokers.clear();
    await Promise.all(clients.map((c) => Promise.race([c.endAsync(true).catch(() => undefined), sleep(1000)])));
    await Promise.all(brokers.map((b) => b.stop()));
  };
}

/** A `Clients` pool closed after all tests of the file (or of the enclosing describe). */
export function trackClients(): Clients {
  const clients = new Clients();
  after(() => clients.closeAll());
  return clients;
}

/** One broker and the clients made on it: `start()` in `before`, `close()` in `after`. */
export class BrokerEnv extends Clients {
  b!: TestBroker;

  async start(overrides: DeepPartial<Config> = {}): Promise<void> {
    this.b = await this.broker(overrides);
  }

  close(): Promise<void> {
    return this.closeAll();
  }

  /** An MQTT.js client on the broker (5.0 unless `opts` says otherwise). */
  mq(opts: IClientOptions = {}): Promise<MqttClient> {
    return this.mqtt(this.b.url, { protocolVersion: 5, clientId: uid('mq'), ...opts });
  }

  /** A RawClient on the broker past its CONNACK. */
  async raw(version: 4 | 5 = 5, connect: Record<string, unknown> = {}): Promise<{ c: RawClient; connack: IConnackPacket }> {
    const r = await this.rawConnect(this.b.port, version, connect);
    return { c: r.c, connack: r.connack as IConnackPacket };
  }
}

// ---------------------------------------------------------------- received messages

/** A message as MQTT.js delivered it, payload as text. */
export interface Message { topic: string; payload: string; qos: number }
/** A message with its RETAIN flag and the whole PUBLISH packet. */
export interface Received extends Message { retain: boolean; packet: IPublishPacket }

/** Records every message `c` receives from now on: topic, payload (text) and QoS. */
export function messages(c: MqttClient): Message[] {
  const got: Message[] = [];
  c.on('message', (topic, payload, packet) => got.push({ topic, payload: payload.toString(), qos: packet.qos }));
  return got;
}

/** Records every message `c` receives from now on, with its RETAIN flag and packet. */
export function inbox(c: MqttClient): Received[] {
  const out: Received[] = [];
  c.on('message', (topic, payload, packet) => {
    out.push({ topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain, packet });
  });
  return out;
}
