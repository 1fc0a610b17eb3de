// mqtt-subscribe, with the whole broker on the main thread (node.workers = 0, the inline mode kept
// for debugging and as a benchmark baseline); test/mqtt-subscribe.test.ts runs it with 1 worker.
process.env['FLEETMQ_TEST_WORKERS'] ??= '0';
await import('../mqtt-subscribe.test.js');
