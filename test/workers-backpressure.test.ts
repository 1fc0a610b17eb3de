// A full ring between two workers (issue 4, point 3): the publisher's socket is paused, the
// QoS 1 messages wait in order behind the ring, nothing is lost, and once the consuming
// worker drains again everything arrives in order. The consumer is made slow by blocking
// its thread (fault injection 'stall'); the ring is its smallest size (1 MiB).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { MqttClient } from 'mqtt';
import { sleep, startBroker, waitFor, type TestBroker } from './helpers/broker.js';
import { uid } from './helpers/clients.js';
import { mqttOn } from './helpers/placement.js';

// injectFault() needs this before the node starts (the supervisor reads it at start-up).
process.env['FLEETMQ_FAULT_INJECTION'] = '1';

const N = 3000;
const PAYLOAD = 1024; // 3,000 × ~1.1 KiB records: about three times the 1 MiB ring

describe('[workers] a full ring to another worker', () => {
  let b: TestBroker;
  const clients: MqttClient[] = [];
  before(async () => {
    b = await startBroker({
      // max_packet_size 16 KiB keeps the rings at their 1 MiB minimum; the subscriber's
      // queue must hold the whole burst (it is over its inflight window meanwhile).
      node: { workers: 2 },
      mqtt: { max_packet_size: 16 * 1024, max_queued_messages: 2 * N },
    });
  });
  after(async () => {
    for (const c of clients) c.end(true);
    await b?.stop();
  });

  test(`[workers] [v3.1.1 MQTT-4.3.3-2 MQTT-4.6.0-6] QoS 1 burst of ${N} into a stalled worker: publisher paused, none lost, order kept`, { timeout: 60_000 }, async () => {
    const topic = `${uid('bp')}/t`;
    const sub = await mqttOn(b, 1, { clientId: uid('bp-sub'), protocolVersion: 4, clean: true });
    clients.push(sub.client);
    const seqs: number[] = [];
    sub.client.on('message', (_t, payload) => seqs.push(payload.readUInt32BE(0)));
    await sub.client.subscribeAsync(topic, { qos: 1 });
    const pub = await mqttOn(b, 0, { clientId: uid('bp-pub'), protocolVersion: 4, clean: true });
    clients.push(pub.client);
    const c = b.counters;
    const before = { paused: c.forwardPaused, ringFull: c.droppedRingFull, queueFull: c.droppedQueueFull };

    // Worker 1 serves nothing for 1.5 s: its inbound ring fills, worker 0 keeps the rest in
    // order and stops reading the publisher.
    b.node.pool!.injectFault(1, 'stall', 1500);
    await sleep(50);
    const sends: Promise<unknown>[] = [];
    for (let i = 0; i < N; i++) {
      const p = Buffer.alloc(PAYLOAD, 0x61);
      p.writeUInt32BE(i, 0);
      sends.push(pub.client.publishAsync(topic, p, { qos: 1 }));
    }
    await waitFor(() => c.forwardPaused > before.paused, 'the publisher paused behind the full ring', 5000);
    await Promise.all(sends); // every PUBACK: the broker owns all of them
    await waitFor(() => seqs.length >= N, `${N} messages at the subscriber on worker 1`, 30_000)
      .catch((e: unknown) => assert.fail(`${String(e)}: got ${seqs.length}`));
    await sleep(100);
    assert.equal(seqs.length, N, 'no duplicates');
    for (let i = 0; i < N; i++) if (seqs[i] !== i) assert.fail(`message ${i} arrived as ${String(seqs[i])}`);
    assert.equal(c.droppedRingFull - before.ringFull, 0, 'QoS 1 is never dropped at a full ring');
    assert.equal(c.droppedQueueFull - before.queueFull, 0, 'nothing dropped from a full queue');
    const stats = await (await fetch(`http://127.0.0.1:${b.httpPort}/api/v1/stats`)).json() as { workers: { forwardPaused: number }[] };
    assert.ok((stats.workers[0]?.forwardPaused ?? 0) >= 1, 'the pause is counted on the publishing worker');
  });
});
