// The broker's own PUBLISH encoder and the ordered User Property reader, checked
// against mqtt-packet's decoder (via decodeFrame) for every field combination.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeFrame, type DecodedPublish } from '../src/protocol/codec.js';
import { encodePublish, readUserProperties, type PublishFields } from '../src/protocol/publish.js';

const variants: PublishFields[] = [];
for (const qos of [0, 1, 2] as const) {
  for (const retain of [false, true]) {
    for (const payload of [Buffer.alloc(0), Buffer.from('hello'), Buffer.alloc(300, 7), Buffer.alloc(20000, 1)]) {
      variants.push({ topic: 'a/b/ü', payload, qos, retain, dup: qos > 0 && retain, packetId: qos ? 0x1234 : 0 });
    }
  }
}

test('[v3.1.1 §3.3] encodePublish decodes back to the same fields (every QoS, retain, dup, payload size)', () => {
  for (const f of variants) {
    for (const v of [3, 4] as const) {
      const r = decodeFrame(encodePublish(f, v), v);
      assert.ok(r.ok, `decode failed for ${JSON.stringify({ ...f, payload: f.payload.length })}`);
      const p = r.packet as DecodedPublish;
      assert.equal(p.topic, f.topic);
      assert.equal(p.qos, f.qos);
      assert.equal(p.retain, f.retain);
      assert.equal(p.dup, f.dup);
      assert.equal(Buffer.compare(p.payload as Buffer, f.payload), 0);
      if (f.qos) assert.equal(p.messageId, f.packetId);
    }
  }
});

test('[v5 §3.3.2.3] encodePublish writes every 5.0 PUBLISH property the broker forwards', () => {
  const f: PublishFields = {
    topic: 't/1', payload: Buffer.from('x'), qos: 1, retain: false, dup: false, packetId: 7,
    props: {
      payloadFormatIndicator: true, messageExpiryInterval: 3600, contentType: 'text/plain',
      responseTopic: 'r/1', correlationData: Buffer.from([1, 2, 3]), topicAlias: 3,
      subscriptionIds: [1, 200, 70000], userProperties: [['a', '1'], ['b', 'ü'], ['a', '2']],
    },
  };
  const r = decodeFrame(encodePublish(f, 5), 5);
  assert.ok(r.ok, r.ok ? '' : r.message);
  const p = r.packet as DecodedPublish;
  const q = p.properties!;
  assert.equal(q.payloadFormatIndicator, true);
  assert.equal(q.messageExpiryInterval, 3600);
  assert.equal(q.contentType, 'text/plain');
  assert.equal(q.responseTopic, 'r/1');
  assert.deepEqual([...q.correlationData!], [1, 2, 3]);
  assert.equal(q.topicAlias, 3);
  assert.deepEqual(q.subscriptionIdentifier, [1, 200, 70000]);
  // [MQTT-3.3.2-18 v5] the order of User Properties is kept, repeated names included.
  assert.deepEqual(p.userPropertyPairs, [['a', '1'], ['b', 'ü'], ['a', '2']]);
});

test('[v5 §3.3.2.3] an empty topic with a Topic Alias and no other property', () => {
  const buf = encodePublish({ topic: '', payload: Buffer.from('y'), qos: 0, retain: false, dup: false, packetId: 0, props: { topicAlias: 9 } }, 5);
  const r = decodeFrame(buf, 5);
  assert.ok(r.ok, r.ok ? '' : r.message);
  assert.equal((r.packet as DecodedPublish).properties?.topicAlias, 9);
  assert.equal(readUserProperties(buf), undefined);
});

test('[v5 MQTT-3.3.2-18] readUserProperties keeps wire order around other properties', () => {
  const buf = encodePublish({
    topic: 'z', payload: Buffer.alloc(0), qos: 2, retain: false, dup: false, packetId: 1,
    props: { contentType: 'c', userProperties: [['k', 'v1'], ['j', ''], ['k', 'v2']], subscriptionIds: [300] },
  }, 5);
  assert.deepEqual(readUserProperties(buf), [['k', 'v1'], ['j', ''], ['k', 'v2']]);
});
