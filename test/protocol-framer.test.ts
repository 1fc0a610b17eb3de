import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Framer, MAX_PACKET_SIZE_LIMIT, type FrameError } from '../src/protocol/framer.js';
import { varint } from './helpers/packets.js';


/** A packet of the given type with a body of `bodyLen` bytes (pattern-filled). */
function packet(type: number, bodyLen: number, seed = 0): Buffer {
  const flags = type === 6 || type === 8 || type === 10 ? 2 : 0;
  const body = Buffer.alloc(bodyLen);
  for (let i = 0; i < bodyLen; i++) body[i] = (i * 31 + seed) & 0xff;
  return Buffer.concat([Buffer.from([(type << 4) | flags, ...varint(bodyLen)]), body]);
}

interface Got { frames: Buffer[]; types: number[] }

function collect(): Got & { on: (f: Buffer, t: number) => void } {
  const g: Got = { frames: [], types: [] };
  return Object.assign(g, {
    on: (f: Buffer, t: number) => {
      g.frames.push(Buffer.from(f)); // copy: the test checks contents, not identity
      g.types.push(t);
    },
  });
}

test('[MQTT-6.0.0-2] several packets in one chunk are delivered in order', () => {
  const a = packet(3, 10, 1);
  const b = packet(12, 0);
  const c = packet(8, 300, 2);
  const fr = new Framer(1024);
  const g = collect();
  assert.equal(fr.push(Buffer.concat([a, b, c]), g.on), null);
  assert.deepEqual(g.frames, [a, b, c]);
  assert.deepEqual(g.types, [3, 12, 8]);
  assert.equal(fr.buffered, 0);
});

test('[MQTT-6.0.0-2] a packet fed one byte at a time is reassembled', () => {
  const a = packet(3, 200, 3);
  const b = packet(13, 0);
  const all = Buffer.concat([a, b]);
  const fr = new Framer(1024);
  const g = collect();
  for (let i = 0; i < all.length; i++) {
    assert.equal(fr.push(all.subarray(i, i + 1), g.on), null);
    if (i < a.length - 1) assert.equal(g.frames.length, 0, `no frame before byte ${i + 1}`);
  }
  assert.deepEqual(g.frames, [a, b]);
  assert.equal(fr.buffered, 0);
});

test('header split inside the remaining-length varint is reassembled', () => {
  const a = packet(3, 20000, 4); // 3-byte remaining length
  const fr = new Framer(100000);
  const g = collect();
  assert.equal(fr.push(a.subarray(0, 2), g.on), null);
  assert.equal(fr.buffered, 2);
  assert.equal(fr.push(a.subarray(2, 3), g.on), null);
  assert.equal(fr.push(a.subarray(3, 100), g.on), null);
  assert.equal(fr.buffered, 100);
  assert.equal(fr.push(a.subarray(100), g.on), null);
  assert.deepEqual(g.frames, [a]);
});

test('a 2-byte packet whose second byte arrives alone is delivered at once', () => {
  const fr = new Framer(100);
  const g = collect();
  fr.push(Buffer.from([0xc0]), g.on);
  assert.equal(g.frames.length, 0);
  fr.push(Buffer.from([0x00]), g.on);
  assert.deepEqual(g.frames, [Buffer.from([0xc0, 0x00])]);
});

test('random splits of a random packet stream give back exactly the packets', () => {
  let seed = 12345;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  for (let round = 0; round < 50; round++) {
    const pkts: Buffer[] = [];
    const sizes = [0, 1, 2, 126, 127, 128, 129, 16383, 16384, 70000];
    for (let i = 0; i < 20; i++) {
      pkts.push(packet(1 + rnd(14), sizes[rnd(sizes.length)]! + (rnd(2) ? 0 : rnd(5)), round * 100 + i));
    }
    const all = Buffer.concat(pkts);
    const fr = new Framer(200000);
    const g = collect();
    let off = 0;
    while (off < all.length) {
      const n = 1 + rnd(rnd(4) === 0 ? 10 : 40000);
      assert.equal(fr.push(all.subarray(off, off + n), g.on), null);
      off += n;
    }
    assert.equal(g.frames.length, pkts.length, `round ${round}`);
    for (let i = 0; i < pkts.length; i++) assert.ok(g.frames[i]!.equals(pkts[i]!), `round ${round} packet ${i}`);
    assert.equal(fr.buffered, 0);
  }
});

test('zero-copy: a packet wholly inside a chunk is a view of the chunk; a spanning one is a copy', () => {
  const a = packet(3, 50, 5);
  const b = packet(3, 50, 6);
  const chunk = Buffer.concat([a, b.subarray(0, 10)]);
  const fr = new Framer(1000);
  const seen: Buffer[] = [];
  fr.push(chunk, (f) => { seen.push(f); });
  assert.equal(seen.length, 1);
  assert.equal(seen[0]!.buffer, chunk.buffer, 'same ArrayBuffer');
  assert.equal(seen[0]!.byteOffset, chunk.byteOffset);
  const rest = Buffer.from(b.subarray(10));
  fr.push(rest, (f) => { seen.push(f); });
  assert.equal(seen.length, 2);
  assert.ok(seen[1]!.equals(b));
  assert.equal(seen[1]!.length, b.length);
  // The spanning frame owns its bytes: scribbling over both input chunks leaves it intact.
  chunk.fill(0xee);
  rest.fill(0xee);
  assert.ok(seen[1]!.equals(b), 'spanning frame is a copy');
  assert.equal(seen[0]![0], 0xee, 'first frame was a view of the chunk');
});

test('[v5 MQTT-3.1.2-24 / 0x95] packet larger than the maximum is refused from its header alone', () => {
  const fr = new Framer(100);
  const g = collect();
  // Header says 1,000,000 body bytes; only the header is pushed.
  const hdr = Buffer.from([0x30, ...varint(1_000_000)]);
  const err = fr.push(hdr, g.on);
  assert.ok(err);
  assert.equal(err.reasonCode, 0x95);
  assert.equal(g.frames.length, 0);
  assert.equal(fr.buffered, 0, 'nothing buffered');
  // Sticky: further input returns the same error and delivers nothing.
  const again = fr.push(packet(12, 0), g.on);
  assert.deepEqual(again, err);
  assert.equal(g.frames.length, 0);
});

test('0x95 limit counts the whole packet (header included); exact fit passes', () => {
  const fr = new Framer(12); // 2 header bytes + 10 body
  const g = collect();
  assert.equal(fr.push(packet(3, 10), g.on), null);
  assert.equal(g.frames.length, 1);
  const err = fr.push(packet(3, 11), g.on);
  assert.equal(err?.reasonCode, 0x95);
  assert.equal(g.frames.length, 1);
});

test('0x95 is detected when the header completes in a later chunk', () => {
  const fr = new Framer(1000);
  const g = collect();
  const hdr = Buffer.from([0x30, ...varint(5000)]);
  assert.equal(fr.push(hdr.subarray(0, 2), g.on), null);
  assert.equal(fr.push(hdr.subarray(2), g.on)?.reasonCode, 0x95);
});

test('packets before an oversized one are still delivered', () => {
  const fr = new Framer(100);
  const g = collect();
  const ok = packet(12, 0);
  const err = fr.push(Buffer.concat([ok, Buffer.from([0x30, ...varint(500)])]), g.on);
  assert.equal(err?.reasonCode, 0x95);
  assert.deepEqual(g.frames, [ok]);
});

test('setMaxPacketSize applies to the next packet', () => {
  const fr = new Framer(10);
  const g = collect();
  assert.equal(fr.push(packet(3, 20), g.on)?.reasonCode, 0x95);
  const fr2 = new Framer(10);
  fr2.setMaxPacketSize(100);
  assert.equal(fr2.push(packet(3, 20), g.on), null);
  fr2.setMaxPacketSize(5);
  assert.equal(fr2.push(packet(3, 20), g.on)?.reasonCode, 0x95);
});

test('max packet size <= 0 means the protocol maximum', () => {
  const fr = new Framer(0);
  const g = collect();
  assert.equal(fr.push(packet(3, 300000), g.on), null);
  assert.equal(g.frames.length, 1);
  assert.equal(MAX_PACKET_SIZE_LIMIT, 268_435_460);
});

test('[MQTT-1.5.5-1 / 0x81] remaining length with a 5th continuation byte is malformed', () => {
  const fr = new Framer(0);
  const g = collect();
  const err = fr.push(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]), g.on);
  assert.equal(err?.reasonCode, 0x81);
  assert.match(err!.message, /4 bytes/);
});

test('[MQTT-1.5.5-1 / 0x81] 5-byte remaining length split across chunks is malformed', () => {
  const fr = new Framer(0);
  const g = collect();
  assert.equal(fr.push(Buffer.from([0x30, 0xff, 0xff]), g.on), null);
  const err = fr.push(Buffer.from([0xff, 0xff, 0x01]), g.on);
  assert.equal(err?.reasonCode, 0x81);
});

test('[MQTT-1.5.5-1 / 0x81] non-minimal remaining length is malformed', () => {
  for (const bytes of [[0x30, 0x80, 0x00], [0xc0, 0x80, 0x80, 0x00], [0x30, 0x85, 0x80, 0x00]]) {
    const fr = new Framer(0);
    const err = fr.push(Buffer.from(bytes), () => undefined);
    assert.equal(err?.reasonCode, 0x81, JSON.stringify(bytes));
    assert.match(err!.message, /minimal/);
  }
  // The largest 4-byte value is fine (only the header is pushed).
  const fr = new Framer(0);
  assert.equal(fr.push(Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f]), () => undefined), null);
  assert.equal(fr.buffered, 5);
});

test('backpressure: onFrame returning false stops delivery; push(empty) resumes', () => {
  const pk = [packet(3, 5, 1), packet(3, 6, 2), packet(3, 7, 3), packet(3, 8, 4)];
  const all = Buffer.concat(pk);
  const fr = new Framer(1000);
  const got: Buffer[] = [];
  let allow = 1;
  const on = (f: Buffer): boolean => {
    got.push(Buffer.from(f));
    allow--;
    return allow > 0;
  };
  assert.equal(fr.push(all, on), null);
  assert.equal(got.length, 1, 'paused after the first frame');
  assert.equal(fr.buffered, all.length - pk[0]!.length);
  allow = 2;
  assert.equal(fr.push(Buffer.alloc(0), on), null);
  assert.equal(got.length, 3);
  // pk[3] is still unread; new data pushed now goes behind it.
  const extra = packet(12, 0);
  allow = 1;
  assert.equal(fr.push(extra, on), null);
  assert.equal(got.length, 4, 'pk[3] delivered first, then paused again');
  assert.ok(got[3]!.equals(pk[3]!));
  assert.equal(fr.buffered, extra.length);
  allow = 100;
  assert.equal(fr.push(Buffer.alloc(0), on), null);
  assert.equal(got.length, 5);
  assert.ok(got[4]!.equals(extra));
  assert.deepEqual(got.slice(0, 4), pk);
  assert.equal(fr.buffered, 0);
});

test('backpressure: pending input spanning chunks is delivered in order after resume', () => {
  const pk = [packet(3, 100, 1), packet(3, 100, 2), packet(3, 100, 3)];
  const all = Buffer.concat(pk);
  const fr = new Framer(1000);
  const got: Buffer[] = [];
  let paused = true;
  const on = (f: Buffer): boolean => {
    got.push(Buffer.from(f));
    return !paused;
  };
  fr.push(all.subarray(0, 150), on); // delivers pk0, pauses; 48 bytes of pk1 unread
  assert.equal(got.length, 1);
  fr.push(all.subarray(150, 250), on); // resumes: delivers pk1 (unread tail + new bytes), pauses again
  assert.equal(got.length, 2);
  paused = false;
  fr.push(all.subarray(250), on);
  assert.equal(got.length, 3);
  assert.deepEqual(got, pk);
  assert.equal(fr.buffered, 0);
});

test('an error from a bad header discards buffered data', () => {
  const fr = new Framer(50);
  const g = collect();
  fr.push(packet(3, 40).subarray(0, 20), g.on);
  assert.equal(fr.buffered, 20);
  const err: FrameError | null = fr.push(Buffer.concat([packet(3, 40).subarray(20), Buffer.from([0x30, 100])]), g.on);
  assert.equal(err?.reasonCode, 0x95);
  assert.equal(g.frames.length, 1);
  assert.equal(fr.buffered, 0);
});

test('backpressure: a pause at the exact end of a queued chunk holds back later queued chunks', () => {
  const pk = [packet(3, 4, 1), packet(3, 5, 2), packet(3, 6, 3)];
  const fr = new Framer(1000);
  const got: Buffer[] = [];
  const pauseEach = (f: Buffer): boolean => {
    got.push(Buffer.from(f));
    return false;
  };
  fr.push(Buffer.concat([pk[0]!, pk[1]!]), pauseEach); // pk0 delivered; pk1 queued
  assert.equal(got.length, 1);
  fr.push(pk[2]!, pauseEach); // pk1 delivered (end of the queued chunk), pause holds pk2
  assert.equal(got.length, 2);
  assert.equal(fr.buffered, pk[2]!.length);
  fr.push(Buffer.alloc(0), pauseEach);
  assert.deepEqual(got, pk);
  assert.equal(fr.buffered, 0);
});
