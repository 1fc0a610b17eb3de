// src/shm: the SPSC ring (unit, model-checked wrap rule, doorbell, keep-alive), a cross-thread
// seeded stream verified byte for byte (ringbuf.js style), and route-op encoding.
//
// This file is also the script of its own worker threads (workerData.shmRole): the test
// runner only picks up *.test.js files, so a helper script would need a file of its own.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import {
  RingConsumer, RingProducer, ShmError, createRing, decodeRouteOp, encodeRouteOp, maxRecordBytes,
  recordSize, ringStats, routeOpByteLength, tryWriteRouteOp, type RouteOp,
} from '../src/shm/index.js';
import { mulberry32 as prng } from './helpers/prng.js';

// ---------------------------------------------------------------------------------------
// Seeded records, generated identically in the producer thread and the verifying thread.

/** Length of the next record: tiny, medium, large, and the two edges (0 and max). */
function nextLength(rnd: () => number, max: number): number {
  const r = rnd();
  if (r < 0.03) return 0;
  if (r < 0.06) return max;
  if (r < 0.35) return Math.floor(rnd() * 17);
  if (r < 0.85) return 17 + Math.floor(rnd() * 496);
  return 513 + Math.floor(rnd() * (max - 512));
}

/** Fills `out[0, len)` with record `i`'s bytes: its index (u32 LE) then a per-record stream. */
function fillRecord(out: Buffer, seed: number, i: number, len: number): void {
  let x = (Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(i + 1, 0xc2b2ae35)) | 1;
  for (let j = 0; j < len; j++) {
    if (j < 4) {
      out[j] = (i >>> (8 * j)) & 0xff;
      continue;
    }
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[j] = x & 0xff;
  }
}

interface StreamPlan {
  seed: number;
  count: number;
  /** Average records between producer pauses (the consumer empties the ring and sleeps). */
  pauseEvery: number;
}

interface ProducerReport { fullRetries: number; spaceWaits: number; partsWrites: number; pauses: number }

/** Producer side of the cross-thread test. */
async function produce(sab: SharedArrayBuffer, plan: StreamPlan): Promise<ProducerReport> {
  const p = new RingProducer(sab);
  const lenRnd = prng(plan.seed);
  const rnd = prng(plan.seed ^ 0x5bd1e995);
  const scratch = Buffer.alloc(p.maxRecordBytes);
  const nap = new Int32Array(new SharedArrayBuffer(4));
  const r: ProducerReport = { fullRetries: 0, spaceWaits: 0, partsWrites: 0, pauses: 0 };
  for (let i = 0; i < plan.count; i++) {
    const len = nextLength(lenRnd, p.maxRecordBytes);
    fillRecord(scratch, plan.seed, i, len);
    const rec = scratch.subarray(0, len);
    let parts: Uint8Array[] | null = null;
    if (rnd() < 0.25) {
      // Up to three parts, some possibly empty: the ring must see one record.
      const a = Math.floor(rnd() * (len + 1));
      const b = a + Math.floor(rnd() * (len - a + 1));
      parts = [rec.subarray(0, a), rec.subarray(a, b), rec.subarray(b)];
      r.partsWrites++;
    }
    let spins = 0;
    while (!(parts ? p.tryWrite(parts) : p.tryWrite(rec))) {
      r.fullRetries++;
      // Full: the broker would pause the client's socket and wait for the space bell. Half
      // the time do that (for this record, or for the default quarter ring), else retry and
      // back off for 50 µs (a 1 ms nap per full ring would cap the stream at one ring per ms).
      if (rnd() < 0.5) {
        r.spaceWaits++;
        await p.waitForSpace(rnd() < 0.5 ? recordSize(len) : undefined);
      } else if (++spins > 200) Atomics.wait(nap, 0, 0, 0.05);
    }
    if (rnd() < 1 / plan.pauseEvery) {
      r.pauses++;
      Atomics.wait(nap, 0, 0, 2 + Math.floor(rnd() * 4)); // the consumer runs dry and sleeps
    }
  }
  return r;
}

/** Verifying consumer: record `expected.i` must equal the regenerated one. */
class Verifier {
  i = 0;
  bytes = 0;
  private readonly lenRnd: () => number;
  private readonly want: Buffer;
  constructor(private readonly plan: StreamPlan, private readonly max: number) {
    this.lenRnd = prng(plan.seed);
    this.want = Buffer.alloc(max);
  }
  check(data: Buffer, start: number, length: number): void {
    const len = nextLength(this.lenRnd, this.max);
    if (length !== len) throw new Error(`record ${this.i}: length ${length}, expected ${len}`);
    fillRecord(this.want, this.plan.seed, this.i, len);
    if (data.compare(this.want, 0, len, start, start + length) !== 0) {
      let j = 0;
      while (data[start + j] === this.want[j]) j++;
      throw new Error(`record ${this.i} (${len} bytes): first difference at byte ${j}`);
    }
    this.i++;
    this.bytes += len;
  }
}

// ---------------------------------------------------------------------------------------
// Worker roles.

type Role =
  | { shmRole: 'producer'; sab: SharedArrayBuffer; plan: StreamPlan }
  | { shmRole: 'sleeper'; sab: SharedArrayBuffer; ref: boolean };

async function runRole(role: Role): Promise<void> {
  if (role.shmRole === 'producer') {
    parentPort?.postMessage(await produce(role.sab, role.plan));
    return;
  }
  // A consumer loop and nothing else: no socket, no 'message' listener on parentPort.
  const c = new RingConsumer(role.sab);
  const loop = c.start((data, start, length) => {
    if (data.toString('utf8', start, start + length) === 'stop') void loop.stop();
  }, { ref: role.ref });
  parentPort?.postMessage('ready');
}

const role = isMainThread ? undefined : (workerData as Partial<Role> | undefined);
if (role?.shmRole) {
  await runRole(role as Role);
} else {
  registerTests();
}

// ---------------------------------------------------------------------------------------

function drainAll(c: RingConsumer, max?: number): Buffer[] {
  const got: Buffer[] = [];
  c.drain((data, start, length) => got.push(Buffer.from(data.subarray(start, start + length))), max);
  return got;
}

function bytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed * 13) & 0xff;
  return b;
}

function code(c: string): (e: unknown) => boolean {
  return (e: unknown) => e instanceof ShmError && e.code === c;
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

function exitOf(w: Worker): Promise<number> {
  return new Promise((resolve, reject) => {
    w.once('error', reject);
    w.once('exit', resolve);
  });
}

function registerTests(): void {
  test('createRing refuses a capacity that is not a power of two in range', () => {
    for (const bad of [0, 32, 100, 1000, 2 ** 31, 1.5, Number.NaN]) {
      assert.throws(() => createRing(bad), code('ERR_SHM_BAD_CAPACITY'), `capacity ${bad}`);
    }
    assert.equal(createRing(64).byteLength, 256 + 64);
    assert.equal(maxRecordBytes(256), 124);
  });

  test('attaching to something that is not a ring is refused', () => {
    assert.throws(() => new RingProducer(new SharedArrayBuffer(512)), code('ERR_SHM_BAD_RING'));
    assert.throws(() => new RingConsumer(new SharedArrayBuffer(8)), code('ERR_SHM_BAD_RING'));
    const sab = createRing(256);
    new Int32Array(sab)[2] = 512; // capacity word no longer matches the size
    assert.throws(() => new RingConsumer(sab), code('ERR_SHM_BAD_RING'));
  });

  test('an empty ring drains nothing and says so', () => {
    const sab = createRing(256);
    const c = new RingConsumer(sab);
    let calls = 0;
    assert.equal(c.drain(() => calls++), 0);
    assert.equal(calls, 0);
    assert.equal(c.isEmpty(), true);
    const s = ringStats(sab);
    assert.equal(s.usedBytes, 0);
    assert.equal(s.recordsRead, 0);
  });

  test('records come out in order, zero-length included, as views into the ring', () => {
    const sab = createRing(1024);
    const p = new RingProducer(sab);
    const c = new RingConsumer(sab);
    const recs = [bytes(5, 1), Buffer.alloc(0), bytes(64, 2), bytes(1, 3)];
    for (const r of recs) assert.equal(p.tryWrite(r), true);
    assert.equal(c.isEmpty(), false);
    assert.deepEqual(drainAll(c), recs);
    assert.equal(c.isEmpty(), true);
  });

  test('a record written as parts is one record', () => {
    const sab = createRing(1024);
    const p = new RingProducer(sab);
    const c = new RingConsumer(sab);
    const a = bytes(10, 1);
    const b = bytes(0, 2);
    const d = bytes(33, 3);
    assert.equal(p.tryWrite([a, b, d]), true);
    assert.equal(p.tryWrite([]), true);
    assert.deepEqual(drainAll(c), [Buffer.concat([a, b, d]), Buffer.alloc(0)]);
    assert.equal(ringStats(sab).bytesWritten, 43);
  });

  test('exact-full: two maximum records fill a ring exactly; nothing more fits until a drain', () => {
    const sab = createRing(256);
    const p = new RingProducer(sab);
    const c = new RingConsumer(sab);
    assert.equal(p.maxRecordBytes, 124);
    assert.equal(recordSize(124), 128);
    assert.equal(p.tryWrite(bytes(124, 1)), true);
    assert.equal(p.tryWrite(bytes(124, 2)), true);
    assert.equal(ringStats(sab).usedBytes, 256);
    assert.equal(p.canWrite(0), false);
    assert.equal(p.tryWrite(Buffer.alloc(0)), false, 'even a zero-length record needs its 4-byte header');
    assert.equal(p.tryWrite([bytes(1, 3)]), false);
    assert.equal(ringStats(sab).fullEvents, 2);
    assert.deepEqual(drainAll(c, 1), [bytes(124, 1)]);
    assert.equal(p.canWrite(124), true);
    assert.equal(p.tryWrite(bytes(124, 3)), true);
    assert.deepEqual(drainAll(c), [bytes(124, 2), bytes(124, 3)]);
  });

  test('wrap-around: a record that does not fit before the end skips to offset 0, never split', () => {
    const sab = createRing(256);
    const p = new RingProducer(sab);
    const c = new RingConsumer(sab);
    assert.equal(p.tryWrite(bytes(100, 1)), true); // [0, 104)
    assert.equal(p.tryWrite(bytes(100, 2)), true); // [104, 208)
    assert.equal(drainAll(c).length, 2);
    // 48 bytes left before the end: the 104-byte record goes to [0, 104) behind a skip marker.
    assert.equal(p.tryWrite(bytes(100, 3)), true);
    assert.equal(ringStats(sab).usedBytes, 48 + 104);
    let start = -1;
    c.drain((_d, s) => (start = s));
    assert.equal(start, 4, 'the payload sits right after its header at offset 0');
    assert.equal(ringStats(sab).usedBytes, 0);
  });

  test('wrap rule model: random writes and drains match a reference queue and the documented free-space rule', () => {
    for (const [cap, start] of [[256, 0], [512, 2 ** 32 - 300], [4096, 2 ** 32 - 4]] as const) {
      const sab = createRing(cap, { initialIndex: start });
      const p = new RingProducer(sab);
      const c = new RingConsumer(sab);
      const rnd = prng(cap + start);
      // Reference: the queued records with the bytes each consumes (its skip included).
      const queue: Array<{ rec: Buffer; need: number }> = [];
      let head = start;
      let tail = start;
      let seq = 0;
      for (let step = 0; step < 20_000; step++) {
        if (rnd() < 0.6) {
          const len = Math.floor(rnd() * (p.maxRecordBytes + 1));
          const rec = bytes(len, seq);
          // The rule of docs/shm.md: size = 4 + len rounded up to 4; if it does not fit before
          // the end, the rest of the lap is skipped too.
          const size = recordSize(len);
          const toEnd = cap - (head % cap);
          const need = size <= toEnd ? size : toEnd + size;
          const fits = need <= cap - (head - tail);
          assert.equal(p.tryWrite(rec), fits, `step ${step}: len ${len}, used ${head - tail}`);
          if (queue.length === 0) assert.equal(fits, true, 'an empty ring takes any record up to the maximum');
          if (fits) {
            queue.push({ rec, need });
            head += need;
            seq++;
          }
        } else {
          const max = 1 + Math.floor(rnd() * 4);
          const want = queue.splice(0, max);
          assert.deepEqual(drainAll(c, max), want.map((q) => q.rec), `step ${step}`);
          for (const q of want) tail += q.need;
        }
        assert.equal(ringStats(sab).usedBytes, head - tail);
      }
      assert.ok(head - start > 10 * cap, 'many laps');
      assert.ok(start === 0 || head > 2 ** 32, 'crossed the u32 wrap of the indices');
    }
  });

  test('a record that can never fit is refused with a clear error, and nothing is written', () => {
    const sab = createRing(256);
    const p = new RingProducer(sab);
    for (const rec of [Buffer.alloc(125), Buffer.alloc(256), Buffer.alloc(10_000)]) {
      assert.throws(() => p.tryWrite(rec), (e: unknown) =>
        e instanceof ShmError && e.code === 'ERR_SHM_RECORD_TOO_LARGE' &&
        e.message.includes(`record of ${rec.length} bytes is larger than this ring's maximum of 124 bytes`));
    }
    assert.throws(() => p.tryWrite([Buffer.alloc(100), Buffer.alloc(25)]), code('ERR_SHM_RECORD_TOO_LARGE'));
    assert.equal(p.canWrite(125), false);
    const s = ringStats(sab);
    assert.equal(s.usedBytes, 0);
    assert.equal(s.recordsWritten, 0);
    assert.equal(s.fullEvents, 0, 'too large is an error, not a full ring');
  });

  test('batch drain takes at most max records and publishes the tail once per batch', () => {
    const sab = createRing(1024);
    const p = new RingProducer(sab);
    const c = new RingConsumer(sab);
    for (let i = 0; i < 10; i++) p.tryWrite(bytes(i, i));
    const sizes: number[] = [];
    for (;;) {
      const before = ringStats(sab).usedBytes;
      let seenUsed = -1;
      const n = c.drain(() => {
        // Inside the batch the tail is not yet published: the producer sees no new room.
        if (seenUsed < 0) seenUsed = ringStats(sab).usedBytes;
        else assert.equal(ringStats(sab).usedBytes, seenUsed);
      }, 3);
      if (n === 0) break;
      assert.equal(seenUsed, before);
      sizes.push(n);
    }
    assert.deepEqual(sizes, [3, 3, 3, 1]);
  });

  test('counters: records, bytes, full events, drops', () => {
    const sab = createRing(256);
    const p = new RingProducer(sab);
    const c = new RingConsumer(sab);
    p.tryWrite(bytes(100, 1));
    p.tryWrite([bytes(20, 2), bytes(4, 3)]);
    assert.equal(p.tryWrite(bytes(124, 4)), false);
    p.countDrop();
    p.countDrop(2);
    c.drain(() => {}, 1);
    let s = ringStats(sab);
    assert.deepEqual(
      [s.recordsWritten, s.bytesWritten, s.recordsRead, s.bytesRead, s.fullEvents, s.dropped, s.bells, s.sleeps],
      [2, 124, 1, 100, 1, 3, 0, 0],
    );
    c.drain(() => {});
    s = ringStats(sab);
    assert.equal(s.recordsRead, 2);
    assert.equal(s.bytesRead, 124);
    // A new end attached to the same ring carries on from the counters in the SAB.
    const p2 = new RingProducer(sab);
    p2.tryWrite(bytes(1, 1));
    assert.equal(ringStats(sab).recordsWritten, 3);
  });

  test('a throwing onRecord consumes its record and the ones before it; drain is not re-entrant', () => {
    const sab = createRing(1024);
    const p = new RingProducer(sab);
    const c = new RingConsumer(sab);
    for (let i = 0; i < 5; i++) p.tryWrite(bytes(1, i));
    let seen = 0;
    assert.throws(() => c.drain(() => {
      if (++seen === 3) throw new Error('boom');
    }), /boom/);
    assert.equal(ringStats(sab).recordsRead, 3);
    assert.deepEqual(drainAll(c), [bytes(1, 3), bytes(1, 4)]);
    p.tryWrite(bytes(1, 0));
    assert.throws(() => c.drain(() => c.drain(() => {})), code('ERR_SHM_REENTRANT'));
  });

  test('waitForSpace: resolves at once with room, else when a drain frees what was asked (hysteresis)', async () => {
    const sab = createRing(256);
    const p = new RingProducer(sab);
    const c = new RingConsumer(sab);
    await p.waitForSpace(256); // empty: no wait
    assert.equal(ringStats(sab).spaceWaits, 0);
    p.tryWrite(bytes(124, 1));
    p.tryWrite(bytes(124, 2));
    assert.equal(p.freeBytes(), 0);
    let done = false;
    const w = p.waitForSpace(200).then(() => (done = true));
    assert.equal(ringStats(sab).spaceWaits, 1);
    c.drain(() => {}, 1); // frees 128 < 200: no bell
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(done, false);
    assert.equal(ringStats(sab).spaceBells, 0);
    c.drain(() => {}, 1); // frees 256
    assert.equal(ringStats(sab).spaceBells, 1);
    await w;
    assert.equal(p.freeBytes(), 256);
    // The default asks for a quarter of the ring; two waiters wake on one bell.
    p.tryWrite(bytes(124, 3));
    p.tryWrite(bytes(124, 4));
    const both = Promise.all([p.waitForSpace(), p.waitForSpace(64)]);
    c.drain(() => {}, 1);
    await both;
    assert.equal(ringStats(sab).spaceBells, 2);
    c.drain(() => {});
    p.tryWrite(bytes(1, 1));
    c.drain(() => {});
    assert.equal(ringStats(sab).spaceBells, 2, 'no bell when nobody waits');
  });

  test('waitForSpace: concurrent waiters with different requests are all served, none left asleep', async () => {
    const sab = createRing(256);
    const p = new RingProducer(sab);
    const c = new RingConsumer(sab);
    assert.equal(p.tryWrite(bytes(124, 5)), true);
    assert.equal(p.tryWrite(bytes(120, 6)), true);
    // The smaller request is served first; the larger one asks again and is served later.
    let big = false;
    let small = false;
    const wBig = p.waitForSpace(256).then(() => (big = true));
    const wSmall = p.waitForSpace(100).then(() => (small = true));
    c.drain(() => {}, 1);
    await wSmall;
    await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual([small, big], [true, false]);
    c.drain(() => {});
    await wBig;
    assert.equal(ringStats(sab).spaceBells, 2);
    p.tryWrite(bytes(1, 1));
    c.drain(() => {});
    assert.equal(ringStats(sab).spaceBells, 2, 'the word was cleared when the last waiter left');
  });

  test('doorbell in one thread: the loop sleeps when empty, one write rings once, stop wakes it', async () => {
    const sab = createRing(1024);
    const p = new RingProducer(sab);
    const c = new RingConsumer(sab);
    const got: string[] = [];
    const loop = c.start((d, s, l) => got.push(d.toString('utf8', s, s + l)), { batch: 2 });
    await until(() => ringStats(sab).sleeps === 1, 2000, 'the loop to sleep');
    assert.equal(ringStats(sab).bells, 0);
    for (const s of ['a', 'b', 'c']) p.tryWrite(Buffer.from(s));
    assert.equal(ringStats(sab).bells, 1, 'one notify for the three records: the flag was taken by the first');
    await until(() => got.length === 3, 2000, 'the records');
    await until(() => ringStats(sab).sleeps === 2, 2000, 'the loop to sleep again');
    assert.equal(ringStats(sab).wakeups, 1);
    assert.throws(() => c.start(() => {}), code('ERR_SHM_LOOP_RUNNING'));
    await loop.stop();
    assert.deepEqual(got, ['a', 'b', 'c']);
    assert.equal(ringStats(sab).wakeups, 1, 'a stop is not counted as a bell');
    p.tryWrite(Buffer.from('late'));
    assert.equal(ringStats(sab).bells, 1, 'no ring after the loop stopped (flag cleared)');
    assert.deepEqual(drainAll(c).map(String), ['late']);
  });

  test('the loop rejects `done` with the error of onRecord and stops', async () => {
    const sab = createRing(1024);
    const p = new RingProducer(sab);
    const c = new RingConsumer(sab);
    const loop = c.start(() => {
      throw new Error('bad record');
    });
    p.tryWrite(Buffer.from('x'));
    await assert.rejects(loop.done, /bad record/);
    await assert.rejects(loop.stop(), /bad record/);
    await c.start(() => {}).stop(); // and it may start again
  });

  test('Atomics.waitAsync alone does not keep a worker alive; the loop\'s ref does', { timeout: 10_000 }, async () => {
    // ref: false: nothing else is ref'd in that worker, so it exits while its consumer sleeps.
    const sab1 = createRing(256);
    const w1 = new Worker(new URL(import.meta.url), { workerData: { shmRole: 'sleeper', sab: sab1, ref: false } });
    assert.equal(await exitOf(w1), 0);
    assert.equal(ringStats(sab1).sleeps, 1, 'it was asleep on the doorbell when it exited');

    // ref: true (the default): it stays until a record tells it to stop, woken by the bell.
    const sab2 = createRing(256);
    const w2 = new Worker(new URL(import.meta.url), { workerData: { shmRole: 'sleeper', sab: sab2, ref: true } });
    let exited = false;
    const exit2 = exitOf(w2).finally(() => (exited = true));
    await until(() => ringStats(sab2).sleeps === 1, 5000, 'the worker to sleep');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(exited, false, 'still alive while asleep');
    assert.equal(new RingProducer(sab2).tryWrite(Buffer.from('stop')), true);
    assert.equal(await exit2, 0);
    const s = ringStats(sab2);
    assert.deepEqual([s.bells, s.wakeups, s.recordsRead], [1, 1, 1]);
  });

  test('cross-thread: a seeded stream from a producer worker arrives complete and in order, with full-ring retries and doorbell wake-ups', { timeout: 15_000 }, async () => {
    const plan: StreamPlan = { seed: 0x5eed_0004, count: 60_000, pauseEvery: 1500 };
    const sab = createRing(8192);
    const c = new RingConsumer(sab);
    const v = new Verifier(plan, c.maxRecordBytes);
    let slow = 0;
    let finished!: () => void;
    const all = new Promise<void>((r) => (finished = r));
    const loop = c.start((data, start, length) => {
      v.check(data, start, length);
      // Now and then the consumer is slow, so the producer meets a full ring.
      if (v.i % 5000 === 0) {
        slow++;
        const end = Date.now() + 5;
        while (Date.now() < end);
      }
      if (v.i === plan.count) finished();
    }, { batch: 64 });
    const w = new Worker(new URL(import.meta.url), { workerData: { shmRole: 'producer', sab, plan } });
    const exited = exitOf(w); // listen now: the worker exits right after its report
    const report = new Promise<ProducerReport>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    });
    const deadline = new Promise<never>((_r, reject) => {
      const t = setTimeout(() => reject(new Error(`stream stalled at record ${v.i} of ${plan.count}`)), 12_000);
      t.unref();
    });
    await Promise.race([Promise.all([all, report]), loop.done.then(() => assert.fail('loop ended early')), deadline]);
    const r = await report;
    await loop.stop();
    assert.equal(await exited, 0);
    const s = ringStats(sab);
    assert.equal(v.i, plan.count);
    assert.deepEqual([s.recordsWritten, s.recordsRead], [plan.count, plan.count]);
    assert.deepEqual([s.bytesWritten, s.bytesRead], [v.bytes, v.bytes]);
    assert.equal(s.usedBytes, 0);
    assert.equal(s.fullEvents, r.fullRetries);
    assert.ok(r.fullRetries > 0, 'the producer met a full ring');
    assert.ok(r.partsWrites > 0 && r.pauses > 0 && slow > 0);
    assert.ok(r.spaceWaits > 0 && s.spaceBells > 0, `space bell used: ${JSON.stringify(s)}`);
    assert.ok(s.spaceWaits <= r.spaceWaits, 'waitForSpace sleeps only when the ring is still too full');
    assert.ok(s.sleeps > 0 && s.bells > 0 && s.wakeups > 0, `doorbell used: ${JSON.stringify(s)}`);
    // A bell can also hit the short window between the consumer raising `waiting` and its
    // re-check finding a record (no sleep then), so bells may slightly exceed sleeps.
    assert.ok(s.bells <= s.sleeps + s.recordsRead / 10, 'about one ring per sleep, not one per record');
  });

  // -------------------------------------------------------------------------------------
  // Route operations.

  const golden: Array<[string, RouteOp, string]> = [
    ['subscribe, not shared', { kind: 'subscribe', worker: 3, seq: 7, filter: 'a/+' },
      '01 00 0300 07000000 0300 0000 612f2b'],
    ['unsubscribe, shared', { kind: 'unsubscribe', worker: 0x0102, seq: 0xa0b0c0d0, filter: 'x/#', group: 'g1' },
      '02 01 0201 d0c0b0a0 0300 0200 782f23 6731'],
  ];
  for (const [name, op, hex] of golden) {
    test(`route op golden bytes both ways: ${name}`, () => {
      const b = Buffer.from(hex.replace(/ /g, ''), 'hex');
      assert.deepEqual(encodeRouteOp(op), b);
      assert.deepEqual(decodeRouteOp(b), op);
      assert.equal(routeOpByteLength(op), b.length);
    });
  }

  test('route op round trip: UTF-8, $-topics, the largest fields', () => {
    const ops: RouteOp[] = [
      { kind: 'subscribe', worker: 0, seq: 0, filter: '#' },
      { kind: 'subscribe', worker: 65535, seq: 2 ** 32 - 1, filter: 'capteur/température/+', group: 'grüppe' },
      { kind: 'unsubscribe', worker: 9, seq: 1, filter: '$SYS/broker/#' },
      { kind: 'subscribe', worker: 1, seq: 2, filter: 'f'.repeat(65535), group: 'g'.repeat(65535) },
    ];
    for (const op of ops) assert.deepEqual(decodeRouteOp(encodeRouteOp(op)), op);
    const wide = decodeRouteOp(encodeRouteOp({ kind: 'subscribe', worker: 1, seq: 1, filter: '温'.repeat(21845) }));
    assert.equal(wide.filter.length, 21845, '65535 bytes of 3-byte characters');
  });

  test('route op encoding refuses out-of-range fields', () => {
    const ok: RouteOp = { kind: 'subscribe', worker: 1, seq: 1, filter: 'a' };
    const bad: RouteOp[] = [
      { ...ok, worker: 65536 },
      { ...ok, worker: -1 },
      { ...ok, worker: 1.5 },
      { ...ok, seq: 2 ** 32 },
      { ...ok, seq: -1 },
      { ...ok, filter: '' },
      { ...ok, filter: 'a'.repeat(65536) },
      { ...ok, filter: '温'.repeat(21846) },
      { ...ok, group: '' },
      { ...ok, kind: 'publish' as unknown as RouteOp['kind'] },
    ];
    for (const op of bad) assert.throws(() => encodeRouteOp(op), code('ERR_SHM_ROUTE_OP'), JSON.stringify(op).slice(0, 80));
  });

  test('route op decoding refuses malformed records', () => {
    const good = encodeRouteOp({ kind: 'subscribe', worker: 1, seq: 1, filter: 'a/b', group: 'g' });
    const mut = (f: (b: Buffer) => void, b = Buffer.from(good)): Buffer => (f(b), b);
    const cases: Array<[string, Buffer]> = [
      ['short', good.subarray(0, 11)],
      ['kind 0', mut((b) => (b[0] = 0))],
      ['kind 5', mut((b) => (b[0] = 5))],
      ['unknown flag', mut((b) => (b[1] = 3))],
      ['shared without group', mut((b) => b.writeUInt16LE(0, 10), Buffer.from(good.subarray(0, 15)))],
      ['group without shared flag', mut((b) => (b[1] = 0))],
      ['empty filter', mut((b) => { b.writeUInt16LE(0, 8); b.writeUInt16LE(4, 10); })],
      ['lengths too long', mut((b) => b.writeUInt16LE(4, 8))],
      ['trailing byte', Buffer.concat([good, Buffer.from([0])])],
    ];
    for (const [name, b] of cases) assert.throws(() => decodeRouteOp(b), code('ERR_SHM_ROUTE_OP'), name);
    assert.throws(() => decodeRouteOp(good, 10, good.length), code('ERR_SHM_ROUTE_OP'), 'outside the buffer');
    // online / offline name a shared group: without one they are refused at both ends.
    assert.throws(() => encodeRouteOp({ kind: 'online', worker: 1, seq: 2, filter: 'a/b' }), code('ERR_SHM_ROUTE_OP'));
    const on = encodeRouteOp({ kind: 'offline', worker: 1, seq: 2, filter: 'a/b', group: 'g' });
    assert.deepEqual(decodeRouteOp(on), { kind: 'offline', worker: 1, seq: 2, filter: 'a/b', group: 'g' });
  });

  test('route ops through a ring decode in place from the drain callback', () => {
    const sab = createRing(256);
    const p = new RingProducer(sab);
    const c = new RingConsumer(sab);
    const sent: RouteOp[] = [];
    const got: RouteOp[] = [];
    for (let seq = 1; seq <= 200; seq++) {
      const op: RouteOp = seq % 3 === 0
        ? { kind: 'unsubscribe', worker: 2, seq, filter: `room/${seq}/+` }
        : { kind: 'subscribe', worker: 2, seq, filter: `room/${seq}/#`, group: `g${seq % 5}` };
      while (!tryWriteRouteOp(p, op)) c.drain((d, s, l) => got.push(decodeRouteOp(d, s, l)), 2);
      sent.push(op);
    }
    c.drain((d, s, l) => got.push(decodeRouteOp(d, s, l)));
    assert.deepEqual(got, sent);
  });
}
