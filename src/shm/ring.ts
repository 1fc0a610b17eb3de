// Single-producer single-consumer byte ring over a SharedArrayBuffer, for encoded messages
// between worker threads (docs/shm.md). One RingProducer in one thread, one RingConsumer in
// another, both attached to a SAB made by createRing.
//
// Memory ordering (all JS Atomics are sequentially consistent):
// - The producer writes a record's bytes and length word with plain stores, THEN publishes
//   the new head with Atomics.store. The consumer reads head with Atomics.load before it reads
//   any record up to that head. The store/load pair is a release/acquire edge: the plain
//   writes happen-before the plain reads, so a record is never seen half-written.
// - Symmetrically the consumer reads records (plain loads), THEN publishes the new tail with
//   Atomics.store; the producer reads tail with Atomics.load before it reuses that space, so it
//   never overwrites bytes the consumer is still reading.
// - Each side caches the other side's index and re-reads it only when the cache says "no
//   room" (producer) or once per drain (consumer): the other side's line crosses between cores
//   only when needed.
// - Doorbell: see RingConsumer.start and RingProducer.ringBell; the no-lost-wakeup argument
//   relies on sequential consistency (store head → load waiting vs store waiting → load head).
//   The space bell (RingProducer.waitForSpace, RingConsumer.ringSpace) is its mirror image.
import { ShmError } from './errors.js';
import {
  DATA_OFFSET, F_BELLS, F_BYTES_READ, F_BYTES_WRITTEN, F_DROPPED, F_FULL, F_RECORDS_READ,
  F_RECORDS_WRITTEN, F_SLEEPS, F_SPACE_BELLS, F_SPACE_WAITS, F_WAKEUPS, HEADER, I_BELL, I_HEAD,
  I_SPACE_BELL, I_SPACE_WANTED, I_TAIL, I_WAITING, SKIP, maxRecordBytes, ringCapacity,
} from './layout.js';
import { keepAliveTimer, waitAsync } from './wait.js';

/**
 * Called once per record with the ring's data region and the record's place in it. The view
 * is valid only during the call (the space is handed back to the producer when drain
 * returns): copy what you keep. `data.subarray(start, start + length)` gives a view,
 * `data.toString('utf8', start, start + length)` decodes text without a copy.
 */
export type OnRecord = (data: Buffer, start: number, length: number) => void;

class RingEnd {
  readonly capacity: number;
  /** Largest payload tryWrite accepts (capacity / 2 - 4). */
  readonly maxRecordBytes: number;
  protected readonly mask: number;
  /** Control words [0, 256) as Int32 (indices, doorbell) and Float64 (counters). */
  protected readonly ctl: Int32Array;
  protected readonly f64: Float64Array;
  /** The data region as bytes (records) and as u32 (length words: records are 4-aligned). */
  protected readonly data: Buffer;
  protected readonly words: Uint32Array;

  constructor(sab: SharedArrayBuffer) {
    this.capacity = ringCapacity(sab);
    this.maxRecordBytes = maxRecordBytes(this.capacity);
    this.mask = this.capacity - 1;
    this.ctl = new Int32Array(sab, 0, DATA_OFFSET >> 2);
    this.f64 = new Float64Array(sab, 0, DATA_OFFSET >> 3);
    this.data = Buffer.from(sab, DATA_OFFSET, this.capacity);
    this.words = new Uint32Array(sab, DATA_OFFSET, this.capacity >> 2);
  }
}

export class RingProducer extends RingEnd {
  /** Our own head (we are its only writer, so the local copy is always current). */
  private head: number;
  /** Last tail read from the SAB; stale means "less room than there is", never more. */
  private tailCache: number;
  private recordsWritten: number;
  private bytesWritten: number;
  private full: number;
  private dropped: number;
  private bells: number;
  private spaceWaits: number;
  /** Callers of waitForSpace pending in this thread (they share the spaceWanted word). */
  private spaceWaiters = 0;

  constructor(sab: SharedArrayBuffer) {
    super(sab);
    this.head = Atomics.load(this.ctl, I_HEAD) >>> 0;
    this.tailCache = Atomics.load(this.ctl, I_TAIL) >>> 0;
    this.recordsWritten = this.f64[F_RECORDS_WRITTEN] ?? 0;
    this.bytesWritten = this.f64[F_BYTES_WRITTEN] ?? 0;
    this.full = this.f64[F_FULL] ?? 0;
    this.dropped = this.f64[F_DROPPED] ?? 0;
    this.bells = this.f64[F_BELLS] ?? 0;
    this.spaceWaits = this.f64[F_SPACE_WAITS] ?? 0;
  }

  /**
   * Appends one record: `rec`, or the concatenation of `rec`'s parts (e.g. a header and a
   * payload, without concatenating them first). Returns false, writing nothing, when the ring
   * has no room now; never blocks. Throws ShmError ERR_SHM_RECORD_TOO_LARGE for a record
   * that could never fit (more than maxRecordBytes).
   */
  tryWrite(rec: Uint8Array | readonly Uint8Array[]): boolean {
    if (rec instanceof Uint8Array) {
      const start = this.reserve(rec.length);
      if (start < 0) return false;
      // TypedArray.set between two Uint8Arrays is a memcpy (no per-byte JS).
      this.data.set(rec, start);
      this.commit(rec.length);
      return true;
    }
    let len = 0;
    for (const p of rec) len += p.length;
    const head = this.head;
    const start = this.reserve(len);
    if (start < 0) return false;
    try {
      let at = start;
      for (const p of rec) {
        this.data.set(p, at);
        at += p.length;
      }
    } catch (e) {
      this.head = head; // nothing was published: forget the reservation
      throw e;
    }
    this.commit(len);
    return true;
  }

  /** Whether a record of `len` payload bytes fits right now (re-reads tail if needed). */
  canWrite(len: number): boolean {
    if (len > this.maxRecordBytes) return false;
    const size = (len + HEADER + 3) & ~3;
    const toEnd = this.capacity - (this.head & this.mask);
    return (size <= toEnd ? size : toEnd + size) <= this.free(true);
  }

  /** Bytes of the data region free right now (re-reads tail). */
  freeBytes(): number {
    return this.free(true);
  }

  /**
   * Resolves once at least `bytes` of the data region are free (default: a quarter of it).
   * For a caller that met a full ring and paused (docs/shm.md, "Full-ring policy"): instead of
   * polling, it sleeps on the space bell, which the consumer rings after a drain that leaves
   * that much room. Waiting for a quarter rather than for one record is hysteresis: one wake-up
   * per quarter ring, not one per record. After it resolves, tryWrite may still refuse a record
   * that needs the skip at the end of a lap: call it again.
   *
   * Like the consumer's loop, a pending wait holds a ref'd timer (`ref: false` to drop it): a
   * pending Atomics.waitAsync alone does not keep the thread alive. Several callers may wait at
   * once: the word holds the latest request, all wake at each bell, and the ones not yet
   * satisfied ask again and sleep again.
   */
  async waitForSpace(bytes = this.capacity / 4, opts: { ref?: boolean } = {}): Promise<void> {
    const want = Math.min(this.capacity, Math.max(HEADER, Math.ceil(bytes)));
    if (this.free(true) >= want) return;
    const keepAlive = opts.ref === false ? null : keepAliveTimer();
    const ctl = this.ctl;
    this.spaceWaiters++;
    try {
      for (;;) {
        // Mirror of the consumer's sleep: read the bell, say what we want, re-check, wait.
        const bell = Atomics.load(ctl, I_SPACE_BELL);
        Atomics.store(ctl, I_SPACE_WANTED, want);
        if (this.free(true) >= want) return;
        this.f64[F_SPACE_WAITS] = ++this.spaceWaits;
        const r = waitAsync(ctl, I_SPACE_BELL, bell);
        if (r.async) await r.value;
        if (this.free(true) >= want) return;
      }
    } finally {
      // The word is cleared only when no other caller of this thread still waits: clearing it
      // under a sleeping waiter would leave that one without a bell. A stale word costs at
      // most one bell for nobody.
      if (--this.spaceWaiters === 0) Atomics.store(ctl, I_SPACE_WANTED, 0);
      if (keepAlive) clearInterval(keepAlive);
    }
  }

  /** Counts records the caller dropped instead of writing (QoS 0 on a full ring), for stats. */
  countDrop(n = 1): void {
    this.dropped += n;
    this.f64[F_DROPPED] = this.dropped;
  }

  /** Bytes of the ring's data region free right now, as far as this producer knows. */
  private free(reload: boolean): number {
    if (reload) this.tailCache = Atomics.load(this.ctl, I_TAIL) >>> 0;
    return this.capacity - ((this.head - this.tailCache) >>> 0);
  }

  /**
   * Makes room for a record of `len` payload bytes: writes the skip marker if the record does
   * not fit before the end of the data region, then the length word. Returns the data offset
   * of the payload, or -1 when the ring is full. Nothing is visible to the consumer until
   * commit publishes head.
   */
  private reserve(len: number): number {
    if (len > this.maxRecordBytes) {
      throw new ShmError(
        'ERR_SHM_RECORD_TOO_LARGE',
        `record of ${len} bytes is larger than this ring's maximum of ${this.maxRecordBytes} bytes ` +
        `(capacity ${this.capacity} / 2 - ${HEADER}); use a larger ring or split the message`,
      );
    }
    // Positions are byte counters masked into the power-of-two region: `& mask`, no division.
    const size = (len + HEADER + 3) & ~3;
    let pos = this.head & this.mask;
    const toEnd = this.capacity - pos;
    const need = size <= toEnd ? size : toEnd + size;
    // The cached tail is usually enough; only when it says "full" do we read the consumer's line.
    if (need > this.free(false) && need > this.free(true)) {
      this.f64[F_FULL] = ++this.full;
      return -1;
    }
    if (size > toEnd) {
      // Wrap rule: a record never straddles the end. Mark the rest of the lap as padding
      // (there are always >= 4 bytes left: positions are 4-aligned) and start at offset 0.
      this.words[pos >> 2] = SKIP;
      this.head = (this.head + toEnd) >>> 0;
      pos = 0;
    }
    this.words[pos >> 2] = len;
    return pos + HEADER;
  }

  private commit(len: number): void {
    this.head = (this.head + ((len + HEADER + 3) & ~3)) >>> 0;
    // Publish: every plain write of the record above happens-before this store (release).
    Atomics.store(this.ctl, I_HEAD, this.head | 0);
    this.f64[F_RECORDS_WRITTEN] = ++this.recordsWritten;
    this.f64[F_BYTES_WRITTEN] = this.bytesWritten += len;
    // Doorbell check: Atomics.load of a line that changes only when the consumer sleeps, so
    // it stays in our cache and costs about as much as a plain load (x64: a plain mov).
    // Sequentially consistent after the head store above: if the consumer raised `waiting`
    // before it re-checked head, we see waiting = 1 here, or it sees our head (docs/shm.md).
    if (Atomics.load(this.ctl, I_WAITING) !== 0) this.ringBell();
  }

  /** Wakes a sleeping consumer: taking the flag makes one notify per sleep, not per record. */
  private ringBell(): void {
    if (Atomics.exchange(this.ctl, I_WAITING, 0) === 0) return;
    Atomics.add(this.ctl, I_BELL, 1);
    Atomics.notify(this.ctl, I_BELL, 1);
    this.f64[F_BELLS] = ++this.bells;
  }
}

export interface LoopOptions {
  /** Records per drain before the loop yields to the event loop (setImmediate). Default 256. */
  batch?: number;
  /**
   * Keep the thread's event loop alive while the loop runs (a ref'd timer). Default true.
   * A pending Atomics.waitAsync does not ref the event loop in Node 20: without this, or
   * another ref'd handle (a server socket, a MessagePort with a 'message' listener), a worker
   * whose consumer sleeps on the doorbell has nothing keeping it alive and exits.
   */
  ref?: boolean;
}

export interface RingLoop {
  /** Stops the loop (wakes it if asleep); resolves when it has stopped. */
  stop(): Promise<void>;
  /** Settles when the loop stops: rejects with the error if onRecord threw. */
  readonly done: Promise<void>;
  ref(): void;
  unref(): void;
}

export class RingConsumer extends RingEnd {
  /** Our own tail (we are its only writer). */
  private tail: number;
  private draining = false;
  private looping = false;
  private stopping = false;
  private recordsRead: number;
  private bytesRead: number;
  private sleeps: number;
  private wakeups: number;
  private spaceBells: number;

  constructor(sab: SharedArrayBuffer) {
    super(sab);
    this.tail = Atomics.load(this.ctl, I_TAIL) >>> 0;
    this.recordsRead = this.f64[F_RECORDS_READ] ?? 0;
    this.bytesRead = this.f64[F_BYTES_READ] ?? 0;
    this.sleeps = this.f64[F_SLEEPS] ?? 0;
    this.wakeups = this.f64[F_WAKEUPS] ?? 0;
    this.spaceBells = this.f64[F_SPACE_BELLS] ?? 0;
  }

  /** Whether the ring holds no record right now. */
  isEmpty(): boolean {
    return (Atomics.load(this.ctl, I_HEAD) >>> 0) === this.tail;
  }

  /**
   * Hands up to `max` records to `onRecord`, in order, and returns how many. Reads head once
   * and publishes the new tail once for the whole batch (two atomic operations per batch, not
   * per record). A record whose onRecord throws counts as consumed (no poison-pill loop):
   * the tail is published up to and including it, then the error propagates.
   */
  drain(onRecord: OnRecord, max = 0x7fffffff): number {
    if (this.draining) throw new ShmError('ERR_SHM_REENTRANT', 'drain called from inside its own onRecord callback');
    // Acquire: records up to this head are completely written.
    const head = Atomics.load(this.ctl, I_HEAD) >>> 0;
    let tail = this.tail;
    if (tail === head) return 0;
    const data = this.data;
    const words = this.words;
    const mask = this.mask;
    let n = 0;
    let bytes = 0;
    this.draining = true;
    try {
      while (tail !== head && n < max) {
        const pos = tail & mask;
        const len = words[pos >> 2] ?? 0;
        if (len === SKIP) {
          tail = (tail + (this.capacity - pos)) >>> 0;
          continue;
        }
        tail = (tail + ((len + HEADER + 3) & ~3)) >>> 0;
        n++;
        bytes += len;
        onRecord(data, pos + HEADER, len);
      }
    } finally {
      this.draining = false;
      if (tail !== this.tail) {
        this.tail = tail;
        // Release: our reads of the records above happen-before the producer reuses the space.
        Atomics.store(this.ctl, I_TAIL, tail | 0);
        this.f64[F_RECORDS_READ] = this.recordsRead += n;
        this.f64[F_BYTES_READ] = this.bytesRead += bytes;
        // Space bell check, once per batch: a load of the doorbell line (cached, rarely
        // written). SC after the tail store: if the producer said what it wants before it
        // re-checked tail, we see it here, or it sees our tail.
        if (Atomics.load(this.ctl, I_SPACE_WANTED) !== 0) this.ringSpace();
      }
    }
    return n;
  }

  /** Wakes a producer waiting for space, if the ring now has what it asked for. */
  private ringSpace(): void {
    const ctl = this.ctl;
    const want = Atomics.load(ctl, I_SPACE_WANTED);
    const free = this.capacity - (((Atomics.load(ctl, I_HEAD) >>> 0) - this.tail) >>> 0);
    if (want === 0 || free < want) return; // later drains free more and check again
    if (Atomics.exchange(ctl, I_SPACE_WANTED, 0) === 0) return;
    Atomics.add(ctl, I_SPACE_BELL, 1);
    Atomics.notify(ctl, I_SPACE_BELL); // all: several paused callers may wait
    this.f64[F_SPACE_BELLS] = ++this.spaceBells;
  }

  /**
   * Runs an asynchronous consumer loop on this thread: drains batches while records keep
   * coming (yielding to the event loop between batches, so sockets and timers still run) and
   * sleeps on the doorbell with Atomics.waitAsync when a drain finds the ring empty. The
   * producer notifies only when it sees the consumer's `waiting` flag, so a busy ring costs
   * no notify at all.
   */
  start(onRecord: OnRecord, opts: LoopOptions = {}): RingLoop {
    if (this.looping) throw new ShmError('ERR_SHM_LOOP_RUNNING', 'this consumer already runs a loop');
    const batch = opts.batch ?? 256;
    if (!Number.isInteger(batch) || batch < 1) throw new RangeError(`batch must be a positive integer, got ${String(batch)}`);
    this.looping = true;
    this.stopping = false;
    let keepAlive: NodeJS.Timeout | null = keepAliveTimer();
    if (opts.ref === false) keepAlive.unref();
    const done = this.run(onRecord, batch).finally(() => {
      this.looping = false;
      if (keepAlive) clearInterval(keepAlive);
      keepAlive = null;
    });
    // `done` is awaited by stop(); a caller that never looks at it must not get an
    // unhandled rejection for an error it can still read from `done`.
    done.catch(noop);
    return {
      stop: async (): Promise<void> => {
        this.stopping = true;
        // Wake our own pending waitAsync (notify works on waiters of this thread too).
        Atomics.notify(this.ctl, I_BELL);
        await done;
      },
      done,
      ref: () => void keepAlive?.ref(),
      unref: () => void keepAlive?.unref(),
    };
  }

  private async run(onRecord: OnRecord, batch: number): Promise<void> {
    const ctl = this.ctl;
    while (!this.stopping) {
      const n = this.drain(onRecord, batch);
      if (n >= POLL_AGAIN) {
        // A burst: more may be coming. Poll again after one event-loop turn rather than
        // sleeping (a sleep would make the producer pay a notify for its next record).
        await nextTurn();
        continue;
      }
      // Empty, or a trickle (a few records per wake-up, as at low rates: an extra turn would
      // only find the ring empty). Sleep protocol (docs/shm.md, "Doorbell"):
      // 1. read the bell BEFORE raising the flag, so a ring after step 2 changes it;
      // 2. raise `waiting`; 3. re-check head: a record published before the producer could
      //    see the flag is caught here; 4. wait while the bell still has the value of step 1.
      const bell = Atomics.load(ctl, I_BELL);
      Atomics.store(ctl, I_WAITING, 1);
      if ((Atomics.load(ctl, I_HEAD) >>> 0) !== this.tail || this.stopping) {
        Atomics.store(ctl, I_WAITING, 0);
        // Records keep trickling in: yield to the event loop between drains, never spin.
        if (n > 0) await nextTurn();
        continue;
      }
      this.f64[F_SLEEPS] = ++this.sleeps;
      const r = waitAsync(ctl, I_BELL, bell);
      const how = r.async ? await r.value : r.value;
      if (how !== 'timed-out' && !this.stopping) this.f64[F_WAKEUPS] = ++this.wakeups;
      // Usually already cleared by the producer when it rang; clear it after stop() or a
      // not-equal return so the producer does not ring for nobody.
      Atomics.store(ctl, I_WAITING, 0);
    }
  }
}

/** Records in one drain that count as a burst (see run). */
const POLL_AGAIN = 8;

function noop(): void {}

function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
