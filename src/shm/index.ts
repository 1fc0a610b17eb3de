// Shared-memory queues between threads (docs/shm.md). No I/O here.
export { ShmError, type ShmErrorCode } from './errors.js';
export {
  createRing, maxRecordBytes, recordSize, ringByteLength, ringCapacity, ringStats,
  MAX_CAPACITY, MIN_CAPACITY, type CreateRingOptions, type RingStats,
} from './layout.js';
export { RingConsumer, RingProducer, type LoopOptions, type OnRecord, type RingLoop } from './ring.js';
export {
  decodeRouteOp, encodeRouteOp, routeOpByteLength, tryWriteRouteOp, ROUTE_OP_HEADER,
  type RouteOp, type RouteOpKind,
} from './route-op.js';
