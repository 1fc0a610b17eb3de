#!/usr/bin/env node
// fleetmq-bench: MQTT load generator (docs/bench.md, contract in docs/bench-format.md).
import { runChild } from './child.js';
import { runDriver } from './driver.js';
import { helpText, parseArgs, UsageError, type Options } from './options.js';

async function main(argv: string[]): Promise<number> {
  let o: Options | 'help';
  try {
    o = parseArgs(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`fleetmq-bench: ${e.message}\nRun "fleetmq-bench --help" for the flags.\n`);
      return 2;
    }
    throw e;
  }
  if (o === 'help') {
    process.stdout.write(helpText());
    return 0;
  }
  return o.child ? runChild(o) : runDriver(o);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(`fleetmq-bench: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  },
);
