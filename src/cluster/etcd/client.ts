// The etcd client of a core (npm etcd3, over @grpc/grpc-js), with bounded waits: a call
// that etcd does not answer fails after a few seconds instead of hanging, so that writers
// can report "etcd unreachable" and retry (docs/cluster.md, "When etcd is lost").
import { ExponentialBackoff } from 'cockatiel';
import { Etcd3, type IOptions } from 'etcd3';
import { etcdCredentials } from './tls.js';

/** Deadline of one unary call (a put, a txn, a range page). */
export const CALL_TIMEOUT_MS = 5_000;

export function etcdClient(endpoints: readonly string[], extra: Partial<IOptions> = {}): Etcd3 {
  const credentials = etcdCredentials();
  return new Etcd3({
    hosts: [...endpoints],
    ...(credentials ? { credentials } : {}),
    dialTimeout: 2_000,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + CALL_TIMEOUT_MS }),
    grpcOptions: {
      // Notice a dead member fast (the default waits for the OS).
      'grpc.keepalive_time_ms': 2_000,
      'grpc.keepalive_timeout_ms': 2_000,
      'grpc.keepalive_permit_without_calls': 1,
      // Route log batches and snapshots pages can be large.
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      'grpc.max_send_message_length': 16 * 1024 * 1024,
    },
    // Watches come back within a second of etcd (the default backoff grows to 30 s).
    // (etcd3 types it as an IBackoff but calls next() on it first, as on cockatiel's factory.)
    faultHandling: { watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 1000 }) as unknown as NonNullable<NonNullable<IOptions['faultHandling']>['watchBackoff']> },
    ...extra,
  });
}

/** etcd's revisions are int64 strings in the protos: numbers here (< 2^53 for a long time). */
export function num(x: string | number | undefined | null): number {
  if (x === undefined || x === null || x === '') return 0;
  return typeof x === 'number' ? x : Number(x);
}

/** Whether an error means "etcd did not answer" (as opposed to "etcd said no"). */
export function isUnavailable(e: unknown): boolean {
  const name = (e as Error | undefined)?.name ?? '';
  const msg = (e as Error | undefined)?.message ?? '';
  return /Unavailable|DeadlineExceeded|ClientClosed|BrokenCircuit|ECONNREFUSED|No connection established|TaskCancelled/i.test(name + ' ' + msg);
}
