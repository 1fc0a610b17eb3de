// Growable SharedArrayBuffer (ES2024 `new SharedArrayBuffer(n, { maxByteLength })`, in V8
// since 11.1, so in Node 20). The address range up to maxByteLength is reserved up front and
// committed as the buffer grows; the buffer never moves, so pointers (word indices) stay valid
// and every thread that holds the SharedArrayBuffer sees the same, growing memory.
// TypeScript's ES2022 lib has no types for it, hence the narrow interface below.

export interface GrowableSharedArrayBuffer extends SharedArrayBuffer {
  readonly growable: boolean;
  readonly maxByteLength: number;
  grow(newByteLength: number): void;
}

type GrowableCtor = new (length: number, options?: { maxByteLength: number }) => GrowableSharedArrayBuffer;

export function isGrowable(b: SharedArrayBuffer): b is GrowableSharedArrayBuffer {
  return (b as Partial<GrowableSharedArrayBuffer>).growable === true &&
    typeof (b as Partial<GrowableSharedArrayBuffer>).grow === 'function';
}

/** A growable SharedArrayBuffer of `initial` bytes that may grow to `max`; throws if unsupported. */
export function createGrowable(initial: number, max: number): GrowableSharedArrayBuffer {
  const b = new (SharedArrayBuffer as unknown as GrowableCtor)(initial, { maxByteLength: max });
  if (!isGrowable(b)) throw new Error('this runtime has no growable SharedArrayBuffer (needs Node >= 20)');
  return b;
}
