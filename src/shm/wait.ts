// Atomics.waitAsync for the threads of a node, and the timer that must go with it.

/** Atomics.waitAsync: in Node 20 (V8 11.3) but not in TypeScript's ES2022 lib. */
export type WaitAsyncResult = { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
export const waitAsync = (Atomics as unknown as {
  waitAsync: (ta: Int32Array, index: number, value: number, timeout?: number) => WaitAsyncResult;
}).waitAsync;

// The longest timer Node accepts: a ref'd handle that never fires and costs no CPU.
const KEEPALIVE_MS = 2 ** 31 - 1;

function noop(): void {}

/**
 * A ref'd timer that keeps this thread's event loop alive while it waits: a pending
 * Atomics.waitAsync does not (Node 20). clearInterval() it when the wait ends.
 */
export function keepAliveTimer(): NodeJS.Timeout {
  return setInterval(noop, KEEPALIVE_MS);
}
