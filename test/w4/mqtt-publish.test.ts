// mqtt-publish, with 4 connection worker threads (FLEETMQ_TEST_WORKERS is read by
// test/helpers/broker.ts; the file in test/ runs the same tests with 1).
process.env['FLEETMQ_TEST_WORKERS'] ??= '4';
await import('../mqtt-publish.test.js');
