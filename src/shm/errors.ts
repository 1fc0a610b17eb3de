// Errors of src/shm. Each carries a stable `code` (it survives being copied between
// threads by structured clone, unlike the class).

export type ShmErrorCode =
  /** createRing: the capacity is not a power of two in [MIN_CAPACITY, MAX_CAPACITY]. */
  | 'ERR_SHM_BAD_CAPACITY'
  /** RingProducer/RingConsumer: the SharedArrayBuffer is not a ring made by createRing. */
  | 'ERR_SHM_BAD_RING'
  /** tryWrite: the record can never fit (larger than the ring's maxRecordBytes). */
  | 'ERR_SHM_RECORD_TOO_LARGE'
  /** drain called from inside its own onRecord callback. */
  | 'ERR_SHM_REENTRANT'
  /** start() while a loop already runs. */
  | 'ERR_SHM_LOOP_RUNNING'
  /** encodeRouteOp: a field out of range; decodeRouteOp: a malformed record. */
  | 'ERR_SHM_ROUTE_OP';

export class ShmError extends Error {
  readonly code: ShmErrorCode;
  constructor(code: ShmErrorCode, message: string) {
    super(message);
    this.name = 'ShmError';
    this.code = code;
  }
}
