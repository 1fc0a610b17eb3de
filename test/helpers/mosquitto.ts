// The Debian mosquitto clients (mosquitto_pub / mosquitto_sub) against a test broker on
// loopback, each killed after a bounded time.
import { runBounded, spawnBounded, type Proc, type Run } from './process.js';

export type { Proc, Run } from './process.js';

const hostPort = (port: number): string[] => ['-h', '127.0.0.1', '-p', String(port)];

/** mosquitto_pub against 127.0.0.1:`port`, to completion. */
export function mosquittoPub(port: number, args: string[], timeoutMs?: number): Promise<Run> {
  return runBounded('mosquitto_pub', [...hostPort(port), ...args], timeoutMs);
}

/** mosquitto_sub against 127.0.0.1:`port`; `done` resolves when it exits (or is killed). */
export function mosquittoSub(port: number, args: string[], timeoutMs?: number): Proc {
  return spawnBounded('mosquitto_sub', [...hostPort(port), ...args], { timeoutMs });
}
