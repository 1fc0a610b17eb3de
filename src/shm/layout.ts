// The memory layout of an SPSC byte ring in a SharedArrayBuffer (docs/shm.md, "Layout").
//
// Four 64-byte lines of control words, then the data region:
//
//   line 0  [0, 64)     constants, written once by createRing before the SAB is shared
//   line 1  [64, 128)   producer line: head + producer counters (written only by the producer)
//   line 2  [128, 192)  consumer line: tail + consumer counters (written only by the consumer)
//   line 3  [192, 256)  doorbell line: the consumer's waiting flag + bell, the producer's
//                       space-wanted word + space bell (written only around a sleep)
//   data    [256, 256 + capacity)
//
// Why separate lines: a core that writes a line takes it exclusive and invalidates the other
// core's copy. head and tail each have one writer; on one line every write by either side
// would bounce the line back and forth ("false sharing"). The doorbell line is read by the
// producer on every write, so it must not share a line with anything written often: it then
// stays cached (shared) in both cores and the read costs an L1 hit. Likewise the consumer
// reads the space-wanted word once per drain.
//
// Offsets below are in units of the view they index: I_* into the Int32Array over
// [0, 256), F_* into the Float64Array over [0, 256).
import { ShmError } from './errors.js';

export const LINE = 64;
export const DATA_OFFSET = 4 * LINE;
export const MAGIC = 0x464d5152; // 'FMQR'
export const VERSION = 1;
/** Smallest and largest data region, bytes (powers of two). */
export const MIN_CAPACITY = 64;
export const MAX_CAPACITY = 2 ** 30;

/** Length word of a record header, bytes. Records start on 4-byte boundaries. */
export const HEADER = 4;
/** Length word meaning "the rest of this lap is padding; the next record is at data offset 0". */
export const SKIP = 0xffffffff;

// line 0: constants (Int32 indices)
export const I_MAGIC = 0;
export const I_VERSION = 1;
export const I_CAPACITY = 2;
export const I_DATA_OFFSET = 3;
// line 1: producer (byte 64)
export const I_HEAD = 16;
export const F_RECORDS_WRITTEN = 9; // byte 72
export const F_BYTES_WRITTEN = 10; // byte 80
export const F_FULL = 11; // byte 88
export const F_DROPPED = 12; // byte 96
export const F_BELLS = 13; // byte 104
export const F_SPACE_WAITS = 14; // byte 112
// line 2: consumer (byte 128)
export const I_TAIL = 32;
export const F_RECORDS_READ = 17; // byte 136
export const F_BYTES_READ = 18; // byte 144
export const F_SLEEPS = 19; // byte 152
export const F_WAKEUPS = 20; // byte 160
export const F_SPACE_BELLS = 21; // byte 168
// line 3: doorbell (byte 192)
export const I_WAITING = 48;
export const I_BELL = 49;
export const I_SPACE_WANTED = 50;
export const I_SPACE_BELL = 51;

export interface CreateRingOptions {
  /**
   * Testing aid: the value head and tail start at (they are free-running u32 byte counters),
   * e.g. 2**32 - 100 to cross the u32 wrap within a few records. Default 0.
   */
  initialIndex?: number;
}

export function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/** Bytes of the whole SharedArrayBuffer for a data region of `capacity` bytes. */
export function ringByteLength(capacity: number): number {
  return DATA_OFFSET + capacity;
}

/** Allocates and initialises a ring with a data region of `capacity` bytes (a power of two). */
export function createRing(capacity: number, opts: CreateRingOptions = {}): SharedArrayBuffer {
  if (!isPowerOfTwo(capacity) || capacity < MIN_CAPACITY || capacity > MAX_CAPACITY) {
    throw new ShmError(
      'ERR_SHM_BAD_CAPACITY',
      `ring capacity must be a power of two from ${MIN_CAPACITY} to ${MAX_CAPACITY} bytes, got ${String(capacity)}`,
    );
  }
  const start = opts.initialIndex ?? 0;
  if (!Number.isInteger(start) || start < 0 || start > 0xffffffff || start % HEADER !== 0) {
    throw new ShmError('ERR_SHM_BAD_CAPACITY', `initialIndex must be a multiple of 4 in [0, 2**32), got ${String(start)}`);
  }
  const sab = new SharedArrayBuffer(ringByteLength(capacity));
  const i32 = new Int32Array(sab, 0, DATA_OFFSET >> 2);
  i32[I_MAGIC] = MAGIC;
  i32[I_VERSION] = VERSION;
  i32[I_CAPACITY] = capacity;
  i32[I_DATA_OFFSET] = DATA_OFFSET;
  i32[I_HEAD] = start | 0;
  i32[I_TAIL] = start | 0;
  // Plain writes are enough: the SAB reaches other threads by postMessage/workerData, which
  // happens-after these writes.
  return sab;
}

/** Checks that `sab` is a ring made by createRing and returns its capacity. */
export function ringCapacity(sab: SharedArrayBuffer): number {
  if (!(sab instanceof SharedArrayBuffer) || sab.byteLength < DATA_OFFSET + MIN_CAPACITY) {
    throw new ShmError('ERR_SHM_BAD_RING', 'not a ring: expected a SharedArrayBuffer made by createRing');
  }
  const i32 = new Int32Array(sab, 0, DATA_OFFSET >> 2);
  const cap = i32[I_CAPACITY] ?? 0;
  if (i32[I_MAGIC] !== MAGIC || i32[I_VERSION] !== VERSION || i32[I_DATA_OFFSET] !== DATA_OFFSET ||
    !isPowerOfTwo(cap) || sab.byteLength !== ringByteLength(cap)) {
    throw new ShmError('ERR_SHM_BAD_RING', 'not a ring (bad magic, version or size): expected a SharedArrayBuffer made by createRing');
  }
  return cap;
}

/** Largest record payload a ring of `capacity` bytes accepts (see docs/shm.md, "The wrap rule"). */
export function maxRecordBytes(capacity: number): number {
  return capacity / 2 - HEADER;
}

/** Bytes a record of `len` payload bytes takes in the ring: header + payload, rounded up to 4. */
export function recordSize(len: number): number {
  return (len + HEADER + 3) & ~3;
}

export interface RingStats {
  capacity: number;
  /** Bytes between tail and head right now (records, headers, padding). */
  usedBytes: number;
  recordsWritten: number;
  /** Payload bytes (without headers and padding). */
  bytesWritten: number;
  recordsRead: number;
  bytesRead: number;
  /** tryWrite calls refused because the ring was full. */
  fullEvents: number;
  /** Records the producer's caller dropped and reported with countDrop (QoS 0 policy). */
  dropped: number;
  /** Doorbell rings (Atomics.notify calls) by the producer. */
  bells: number;
  /** Times the consumer loop went to sleep on the doorbell. */
  sleeps: number;
  /** Sleeps ended by a bell (the rest ended by stop()). */
  wakeups: number;
  /** Times the producer waited for space (waitForSpace found the ring too full). */
  spaceWaits: number;
  /** Space bells rung by the consumer (it freed what a waiting producer asked for). */
  spaceBells: number;
}

/**
 * The ring's counters, from any thread. The counters are Float64 fields each written by one
 * side only, with plain stores, and read here without synchronisation: they are statistics,
 * not synchronisation. V8 on x64 and arm64 emits one aligned 8-byte load/store for them, so a
 * value is never torn in practice (the ECMAScript memory model only promises that for
 * Atomics, which do not exist for Float64). head and tail are read with Atomics.load.
 */
export function ringStats(sab: SharedArrayBuffer): RingStats {
  const capacity = ringCapacity(sab);
  const i32 = new Int32Array(sab, 0, DATA_OFFSET >> 2);
  const f64 = new Float64Array(sab, 0, DATA_OFFSET >> 3);
  const tail = Atomics.load(i32, I_TAIL);
  const head = Atomics.load(i32, I_HEAD);
  const f = (i: number): number => f64[i] ?? 0;
  return {
    capacity,
    usedBytes: (head - tail) >>> 0,
    recordsWritten: f(F_RECORDS_WRITTEN),
    bytesWritten: f(F_BYTES_WRITTEN),
    recordsRead: f(F_RECORDS_READ),
    bytesRead: f(F_BYTES_READ),
    fullEvents: f(F_FULL),
    dropped: f(F_DROPPED),
    bells: f(F_BELLS),
    sleeps: f(F_SLEEPS),
    wakeups: f(F_WAKEUPS),
    spaceWaits: f(F_SPACE_WAITS),
    spaceBells: f(F_SPACE_BELLS),
  };
}
