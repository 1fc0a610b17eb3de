// Malformed packets and protocol errors over real sockets, MQTT 3.1.1 and 5.0.
//
// Each case: a RawClient connects (with a will), sends hand-built bytes, and must be
// closed on its own — 5.0 past CONNACK: DISCONNECT with the reason code first; 3.1.1:
// a plain close, no packet. The will is published (the server closed the connection
// [MQTT-3.1.2-8 v3.1.1 / v5]), the counter moves, and an MQTT.js client connected
// before keeps being served (publishes and receives after the bad one is gone).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import mqtt, { type MqttClient } from 'mqtt';
import type { IConnackPacket, IDisconnectPacket, Packet } from 'mqtt-packet';
import { startBroker, waitFor, type TestBroker } from './helpers/broker.js';
import { frame, lenPrefixed, u16, varint } from './helpers/packets.js';
import { RawClient } from './helpers/raw-client.js';

const MAX_PACKET = 1024;

let b: TestBroker;
before(async () => {
  b = await startBroker({ mqtt: { max_packet_size: MAX_PACKET } });
});
after(async () => {
  await b.stop();
});

// ---------------------------------------------------------------- byte builders

type V = 4 | 5;
/** Empty property block in 5.0, nothing in 3.1.1. */
const noProps = (v: V): number[] => (v === 5 ? [0] : []);

function publish(v: V, topic: Buffer | number[], qos: number, id: number, payload = 'x', flags = qos << 1): Buffer {
  return frame(0x30 | flags, lenPrefixed(topic), qos > 0 ? u16(id) : [], noProps(v), Buffer.from(payload));
}
function subscribe(v: V, id: number, filter: string | Buffer | number[], b0 = 0x82): Buffer {
  return frame(b0, u16(id), noProps(v), lenPrefixed(filter), [1]);
}
function unsubscribe(v: V, id: number, filter: string | Buffer | number[], b0 = 0xa2): Buffer {
  return frame(b0, u16(id), noProps(v), lenPrefixed(filter));
}
const bytes = (s: string, ...raw: number[]) => [...Buffer.from(s), ...raw];

// ---------------------------------------------------------------- harness per version

const VERSIONS: { v: V; label: string }[] = [
  { v: 4, label: 'v3.1.1' },
  { v: 5, label: 'v5' },
];

/** One MQTT.js client per version, subscribed to mal/<v>/#, counting its closes. */
class Observer {
  client!: MqttClient;
  closes = 0;
  private seq = 0;
  private readonly seen = new Map<string, Buffer>();
  private waiters = new Map<string, (p: Buffer) => void>();

  constructor(readonly v: V) {}

  async open(url: string): Promise<void> {
    this.client = await mqtt.connectAsync(url, {
      protocolVersion: this.v, clientId: `mal-observer-${this.v}`, clean: true, reconnectPeriod: 0, connectTimeout: 3000,
    });
    this.client.on('close', () => this.closes++);
    this.client.on('message', (topic, payload) => {
      const w = this.waiters.get(topic);
      if (w) {
        this.waiters.delete(topic);
        w(payload);
      } else this.seen.set(topic, payload);
    });
    await this.client.subscribeAsync(`mal/${this.v}/#`, { qos: 1 });
  }

  /** Resolves with the payload of the first message on `topic` (bounded). */
  message(topic: string, ms = 3000): Promise<Buffer> {
    const got = this.seen.get(topic);
    if (got) {
      this.seen.delete(topic);
      return Promise.resolve(got);
    }
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiters.delete(topic);
        reject(new Error(`no message on ${topic} within ${ms} ms`));
      }, ms);
      this.waiters.set(topic, (p) => {
        clearTimeout(t);
        resolve(p);
      });
    });
  }

  /** The observer still publishes and receives, and never lost its connection. */
  async stillServed(): Promise<void> {
    assert.equal(this.closes, 0, 'the well-behaved client was disconnected');
    assert.equal(this.client.connected, true);
    const topic = `mal/${this.v}/served/${++this.seq}`;
    const got = this.message(topic);
    await this.client.publishAsync(topic, `ok-${this.seq}`, { qos: 1 });
    assert.equal((await got).toString(), `ok-${this.seq}`);
  }
}

let nextId = 0;

/**
 * Connects a RawClient (with a will), sends `raw`, and checks: 5.0 → exactly one
 * DISCONNECT with `code`, 3.1.1 → closed with no packet; the will is published; the
 * counter named moved by one; the observer is still served.
 */
async function expectDropped(
  obs: Observer, raw: Buffer | number[], code: number, counter: 'malformedPackets' | 'protocolErrors' = 'malformedPackets',
): Promise<void> {
  const v = obs.v;
  const id = `mal-${v}-${++nextId}`;
  const willTopic = `mal/${v}/will/${id}`;
  const { c, connack } = await RawClient.connected(b.port, v, {
    clientId: id, will: { topic: willTopic, payload: Buffer.from('gone'), qos: 0, retain: false },
  } as Partial<Packet>);
  try {
    assert.equal(connack.cmd, 'connack');
    const before = b.counters[counter];
    const will = obs.message(willTopic);
    c.sendRaw(raw);
    const got = await c.drainUntilClose(3000);
    if (v === 5) {
      assert.deepEqual(got.map((p) => p.cmd), ['disconnect'], 'one DISCONNECT, then close');
      assert.equal((got[0] as IDisconnectPacket).reasonCode, code,
        `reason code 0x${((got[0] as IDisconnectPacket).reasonCode ?? 0).toString(16)}`);
    } else {
      assert.deepEqual(got.map((p) => p.cmd), [], '3.1.1: a plain close');
    }
    assert.equal(b.counters[counter], before + 1, `${counter} incremented`);
    assert.equal((await will).toString(), 'gone', 'will published after the server closed the connection');
    await waitFor(async () => (await b.session(id)) === null, 'the bad session to end');
    await obs.stillServed();
  } finally {
    c.destroy();
  }
}

for (const { v, label } of VERSIONS) {
  const v5 = v === 5;
  const hex = (n: number) => '0x' + n.toString(16);
  /** "→ DISCONNECT 0x81" in 5.0, "→ closed" in 3.1.1. */
  const outcome = (code: number) => (v5 ? `DISCONNECT ${hex(code)} and close` : 'closed, no packet');
  // Tags that differ by version.
  const T_VIOLATION = v5 ? 'MQTT-4.13.1-1' : 'MQTT-4.8.0-1';
  const T_FLAGS = v5 ? 'MQTT-2.1.3-1' : 'MQTT-2.2.2-2';
  const T_UTF8 = v5 ? 'MQTT-1.5.4-1' : 'MQTT-1.5.3-1';
  const T_NUL = v5 ? 'MQTT-1.5.4-2' : 'MQTT-1.5.3-2';
  const T_PID = v5 ? 'MQTT-2.2.1-3' : 'MQTT-2.3.1-1';
  const PID_CODE = 0x82; // 5.0 calls a zero Packet Identifier a Protocol Error

  describe(`${label}: malformed packets close only the offending connection`, () => {
    const obs = new Observer(v);
    before(async () => {
      await obs.open(b.url);
    });
    after(async () => {
      await obs.client.endAsync();
    });

    test(`[${label} ${T_VIOLATION}] remaining length with a 5th continuation byte → ${outcome(0x81)}`, async () => {
      await expectDropped(obs, [0x30, 0x80, 0x80, 0x80, 0x80, 0x01], 0x81);
    });

    if (v5) {
      test('[v5 MQTT-1.5.5-1] remaining length not minimally encoded → DISCONNECT 0x81', async () => {
        // 0x80 0x00 encodes 0 in two bytes.
        await expectDropped(obs, [0xc0, 0x80, 0x00], 0x81);
      });
    }

    test(`[${label} ${T_VIOLATION}] PUBLISH whose topic length runs past the packet (truncated body) → ${outcome(0x81)}`, async () => {
      // Remaining length 3 but the topic claims 16 bytes.
      await expectDropped(obs, [0x30, 0x03, 0x00, 0x10, 0x61], 0x81);
    });

    test(`[${label} MQTT-3.1.2-8] truncated packet, then the client closes: only that connection goes, its will is published`, async () => {
      const id = `mal-${v}-trunc`;
      const willTopic = `mal/${v}/will/${id}`;
      const { c } = await RawClient.connected(b.port, v, {
        clientId: id, will: { topic: willTopic, payload: Buffer.from('cut'), qos: 1, retain: false },
      } as Partial<Packet>);
      const before = b.connectionCount();
      const will = obs.message(willTopic);
      // Header says 10 bytes; only 4 follow before the client half-closes.
      c.sendRaw([0x30, 10, 0x00, 0x03, 0x61, 0x62]);
      c.end();
      await c.waitClose(3000);
      assert.equal((await will).toString(), 'cut');
      await waitFor(() => b.connectionCount() === before - 1, 'the connection to be released');
      await waitFor(async () => (await b.session(id)) === null, 'the session to end');
      await obs.stillServed();
    });

    test(`[${label} ${T_FLAGS}] SUBSCRIBE with fixed-header flags 0000 → ${outcome(0x81)}`, async () => {
      await expectDropped(obs, subscribe(v, 7, `mal/${v}/flags`, 0x80), 0x81);
    });

    test(`[${label} ${T_FLAGS}] UNSUBSCRIBE with fixed-header flags 0000 → ${outcome(0x81)}`, async () => {
      await expectDropped(obs, unsubscribe(v, 7, `mal/${v}/flags`, 0xa0), 0x81);
    });

    test(`[${label} ${T_FLAGS}] PUBREL with fixed-header flags 0000 → ${outcome(0x81)}`, async () => {
      await expectDropped(obs, [0x60, 0x02, 0x00, 0x01], 0x81);
    });

    test(`[${label} ${T_FLAGS}] PINGREQ with fixed-header flags 0001 → ${outcome(0x81)}`, async () => {
      await expectDropped(obs, [0xc1, 0x00], 0x81);
    });

    const badTopics: [string, string, number[]][] = [
      [T_UTF8, 'overlong C0 AF', bytes(`mal/${v}/`, 0xc0, 0xaf)],
      [T_UTF8, 'lone surrogate ED A0 80', bytes(`mal/${v}/`, 0xed, 0xa0, 0x80)],
      [T_UTF8, 'truncated sequence E2 82', bytes(`mal/${v}/`, 0xe2, 0x82)],
      [T_NUL, 'U+0000', bytes(`mal/${v}/a`, 0x00, 0x62)],
    ];
    for (const [tag, what, topic] of badTopics) {
      test(`[${label} ${tag}] PUBLISH topic with ${what} → ${outcome(0x81)}`, async () => {
        await expectDropped(obs, publish(v, topic, 0, 0), 0x81);
      });
      test(`[${label} ${tag}] SUBSCRIBE filter with ${what} → ${outcome(0x81)}`, async () => {
        await expectDropped(obs, subscribe(v, 3, topic), 0x81);
      });
    }

    test(`[${label} ${T_UTF8}] UNSUBSCRIBE filter with a lone surrogate → ${outcome(0x81)}`, async () => {
      await expectDropped(obs, unsubscribe(v, 3, bytes(`mal/${v}/`, 0xed, 0xb0, 0x80)), 0x81);
    });

    for (const topic of [`mal/${v}/+`, `mal/${v}/#`, `mal/${v}/a+b`]) {
      test(`[${label} MQTT-3.3.2-2] PUBLISH topic "${topic}" with a wildcard → ${outcome(0x90)}`, async () => {
        await expectDropped(obs, publish(v, Buffer.from(topic), 1, 5), 0x90);
      });
    }

    test(`[${label} ${T_PID}] PUBLISH QoS 1 with packet identifier 0 → ${outcome(PID_CODE)}`, async () => {
      await expectDropped(obs, publish(v, Buffer.from(`mal/${v}/pid0`), 1, 0), PID_CODE);
    });

    test(`[${label} ${T_PID}] PUBLISH QoS 2 with packet identifier 0 → ${outcome(PID_CODE)}`, async () => {
      await expectDropped(obs, publish(v, Buffer.from(`mal/${v}/pid0`), 2, 0), PID_CODE);
    });

    test(`[${label} ${T_PID}] SUBSCRIBE with packet identifier 0 → ${outcome(PID_CODE)}`, async () => {
      await expectDropped(obs, subscribe(v, 0, Buffer.from(`mal/${v}/pid0`)), PID_CODE);
    });

    test(`[${label} ${T_PID}] UNSUBSCRIBE with packet identifier 0 → ${outcome(PID_CODE)}`, async () => {
      await expectDropped(obs, unsubscribe(v, 0, Buffer.from(`mal/${v}/pid0`)), PID_CODE);
    });

    test(`[${label} MQTT-3.3.1-4] PUBLISH with QoS 3 → ${outcome(0x81)}`, async () => {
      await expectDropped(obs, publish(v, Buffer.from(`mal/${v}/qos3`), 3, 9), 0x81);
    });

    test(`[${label} MQTT-3.3.1-2] PUBLISH QoS 0 with DUP set → ${outcome(0x82)}`, async () => {
      await expectDropped(obs, publish(v, Buffer.from(`mal/${v}/dup`), 0, 0, 'x', 0x08), 0x82);
    });

    if (v5) {
      test('[v5 MQTT-3.3.2-1, §3.3.2.3.4] PUBLISH with an empty topic and no Topic Alias → DISCONNECT 0x82', async () => {
        await expectDropped(obs, publish(v, [], 0, 0), 0x82, 'protocolErrors');
      });
    } else {
      test('[v3.1.1 MQTT-4.7.3-1] PUBLISH with an empty topic → closed, no packet', async () => {
        await expectDropped(obs, publish(v, [], 0, 0), 0x90);
      });
    }

    test(`[${label} ${v5 ? 'MQTT-3.8.3-2' : 'MQTT-3.8.3-3'}] SUBSCRIBE without any topic filter → ${outcome(0x82)}`, async () => {
      await expectDropped(obs, frame(0x82, u16(12), noProps(v)), 0x82);
    });

    test(`[${label} MQTT-3.10.3-2] UNSUBSCRIBE without any topic filter → ${outcome(0x82)}`, async () => {
      await expectDropped(obs, frame(0xa2, u16(12), noProps(v)), 0x82);
    });

    test(`[${label} ${v5 ? 'MQTT-3.8.3-5' : 'MQTT-3.8.3-4'}] SUBSCRIBE options with reserved bits set → ${outcome(0x81)}`, async () => {
      await expectDropped(obs, frame(0x82, u16(12), noProps(v), lenPrefixed(`mal/${v}/opts`), [v5 ? 0xc1 : 0x41]), 0x81);
    });

    if (!v5) {
      test('[v3.1.1 MQTT-3.8.3-4] SUBSCRIBE requesting QoS 3 → closed, no packet', async () => {
        await expectDropped(obs, frame(0x82, u16(12), lenPrefixed('mal/4/qos3'), [3]), 0x81);
      });
      test('[v3.1.1 MQTT-4.8.0-1] PUBACK with remaining length 3 → closed, no packet', async () => {
        await expectDropped(obs, [0x40, 0x03, 0x00, 0x01, 0x00], 0x81);
      });
    } else {
      // Property blocks (5.0 §2.2.2.2): an identifier not valid for the packet, or
      // unknown, is malformed; a single-valued property twice is a protocol error.
      const pub = (props: number[]) => frame(0x30, lenPrefixed(`mal/5/props`), varint(props.length), props, Buffer.from('x'));
      test('[v5 §2.2.2.2] PUBLISH with Session Expiry Interval (not a PUBLISH property) → DISCONNECT 0x81', async () => {
        await expectDropped(obs, pub([0x11, 0, 0, 0, 5]), 0x81);
      });
      test('[v5 §2.2.2.2] PUBLISH with unknown property identifier 0x7F → DISCONNECT 0x81', async () => {
        await expectDropped(obs, pub([0x7f, 0]), 0x81);
      });
      test('[v5 §3.3.2.3.2] PUBLISH with Payload Format Indicator twice → DISCONNECT 0x82', async () => {
        await expectDropped(obs, pub([0x01, 1, 0x01, 1]), 0x82);
      });
      test('[v5 §2.2.2.1] PUBLISH whose property length runs past the packet → DISCONNECT 0x81', async () => {
        await expectDropped(obs, frame(0x30, lenPrefixed('mal/5/props'), [0x20, 0x01, 0x01]), 0x81);
      });
      test('[v5 MQTT-1.5.4-1] PUBLISH with a Content Type that is ill-formed UTF-8 → DISCONNECT 0x81', async () => {
        await expectDropped(obs, pub([0x03, 0, 2, 0xc0, 0x80]), 0x81);
      });
      test('[v5 MQTT-1.5.5-1] PUBLISH with a non-minimal Subscription Identifier varint → DISCONNECT 0x81', async () => {
        await expectDropped(obs, pub([0x0b, 0x81, 0x00]), 0x81);
      });
    }

    test(`[${label} ${T_VIOLATION}] reserved packet type 0 → ${outcome(0x81)}`, async () => {
      await expectDropped(obs, [0x00, 0x00], 0x81);
    });

    if (!v5) {
      test('[v3.1.1 MQTT-4.8.0-1] packet type 15 (reserved before 5.0) → closed, no packet', async () => {
        await expectDropped(obs, [0xf0, 0x00], 0x81);
      });
    }

    test(`[${label} ${T_VIOLATION}] second CONNECT → ${outcome(0x82)}`, async () => {
      const connect = frame(0x10, lenPrefixed('MQTT'), [v, 0x02, 0, 60], noProps(v), lenPrefixed(`mal-${v}-again`));
      await expectDropped(obs, connect, 0x82, 'protocolErrors');
    });

    // Packets only the server may send.
    const serverOnly: [string, Buffer][] = [
      ['CONNACK', frame(0x20, [0, 0], noProps(v))],
      ['SUBACK', frame(0x90, u16(4), noProps(v), [0])],
      ['UNSUBACK', frame(0xb0, u16(4), v5 ? [0, 0] : [])],
      ['PINGRESP', Buffer.from([0xd0, 0x00])],
    ];
    for (const [name, raw] of serverOnly) {
      test(`[${label} ${T_VIOLATION}] ${name} sent by a client (server-to-client only) → ${outcome(0x82)}`, async () => {
        await expectDropped(obs, raw, 0x82, 'protocolErrors');
      });
    }

    test(`[${label} ${v5 ? 'MQTT-3.2.2-15' : T_VIOLATION}] packet above max_packet_size (${MAX_PACKET}) → ${outcome(0x95)} without the body being read`, async () => {
      const declared = 5000;
      // Only the fixed header and the start of the topic are ever sent: had the broker
      // waited for the declared body, no close would come.
      const head = Buffer.from([0x30, ...varint(declared), ...u16(10), ...Buffer.from('mal/')]);
      const rx0 = b.counters.bytesReceived;
      await expectDropped(obs, head, 0x95);
      assert.ok(b.counters.bytesReceived - rx0 < declared);
    });

    test(`[${label} ${v5 ? 'MQTT-3.2.2-15' : T_VIOLATION}] largest encodable remaining length (268,435,455) → ${outcome(0x95)} at once`, async () => {
      await expectDropped(obs, [0x32, 0xff, 0xff, 0xff, 0x7f, 0x00, 0x01], 0x95);
    });

    test(`[${label} ${v5 ? 'MQTT-3.2.2-15' : '§2.2.3, server limit'}] a packet of exactly max_packet_size is accepted`, async () => {
      // Whole packet = MAX_PACKET bytes: 1 type byte + 2 length bytes + body.
      const topic = `mal/${v}/exact`;
      const bodyLen = MAX_PACKET - 3;
      const payloadLen = bodyLen - 2 - topic.length - 2 - noProps(v).length;
      const pkt = publish(v, Buffer.from(topic), 1, 11, 'p'.repeat(payloadLen));
      assert.equal(pkt.length, MAX_PACKET);
      const { c } = await RawClient.connected(b.port, v, { clientId: `mal-${v}-exact` } as Partial<Packet>);
      try {
        const got = obs.message(topic);
        c.sendRaw(pkt);
        const ack = await c.next();
        assert.equal(ack?.cmd, 'puback');
        assert.equal((await got).length, payloadLen);
      } finally {
        c.destroy();
      }
    });

    if (v5) {
      test('[v5 MQTT-3.2.2-15] CONNACK advertises Maximum Packet Size = max_packet_size', async () => {
        const { c, connack } = await RawClient.connected(b.port, 5, { clientId: 'mal-5-maxsize' } as Partial<Packet>);
        try {
          assert.equal((connack as IConnackPacket).properties?.maximumPacketSize, MAX_PACKET);
        } finally {
          c.destroy();
        }
      });
    }
  });
}

describe('before CONNACK: a malformed first packet', () => {
  for (const { v, label } of VERSIONS) {
    test(`[${label} ${v === 5 ? 'MQTT-4.13.1-1' : 'MQTT-4.8.0-1'}] CONNECT and a malformed packet in one write: CONNACK first, then ${v === 5 ? 'DISCONNECT 0x81' : 'a plain close'}`, async () => {
      const before = b.counters.malformedPackets;
      const c = await RawClient.open(b.port, v);
      try {
        const connect = frame(0x10, lenPrefixed('MQTT'), [v, 0x02, 0, 60], noProps(v), lenPrefixed(`mal-${v}-pipelined`));
        // The second packet is held while CONNECT is authenticated, then refused.
        c.sendRaw(Buffer.concat([connect, publish(v, bytes('mal/x/', 0xed, 0xa0, 0x80), 0, 0)]));
        const got = await c.drainUntilClose(3000);
        assert.deepEqual(got.map((p) => p.cmd), v === 5 ? ['connack', 'disconnect'] : ['connack']);
        if (v === 5) assert.equal((got[1] as IDisconnectPacket).reasonCode, 0x81);
        assert.equal(b.counters.malformedPackets, before + 1);
      } finally {
        c.destroy();
      }
    });

    test(`[${label} ${v === 5 ? 'MQTT-3.1.4-1, MQTT-3.14.0-1' : 'MQTT-3.1.4-1'}] broken remaining length as the first bytes → closed with no CONNACK/DISCONNECT`, async () => {
      const before = b.counters.malformedPackets;
      const c = await RawClient.open(b.port, v);
      try {
        c.sendRaw([0x10, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert.deepEqual((await c.drainUntilClose(3000)).map((p) => p.cmd), []);
        assert.equal(b.counters.malformedPackets, before + 1);
      } finally {
        c.destroy();
      }
    });

    test(`[${label} MQTT-3.1.4-1] CONNECT above max_packet_size → closed with no packet`, async () => {
      const before = b.counters.malformedPackets;
      const c = await RawClient.open(b.port, v);
      try {
        c.sendRaw([0x10, ...varint(MAX_PACKET * 4), ...lenPrefixed('MQTT'), v]);
        assert.deepEqual((await c.drainUntilClose(3000)).map((p) => p.cmd), []);
        assert.equal(b.counters.malformedPackets, before + 1);
      } finally {
        c.destroy();
      }
    });
  }
});
