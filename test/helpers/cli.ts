// The compiled `fleetmq` entry point as a child process.
import { fileURLToPath } from 'node:url';
import { spawnBounded, type Run } from './process.js';

/** dist/src/cli/main.js */
export const CLI_MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/** The environment without FLEETMQ_* variables (so the caller's shell cannot change results), plus `extra`. */
export function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('FLEETMQ_')) env[k] = v;
  return { ...env, ...extra };
}

/** `fleetmq passwd ARGS` to completion (killed after 15 s); `input` is its stdin. */
export function fleetmqPasswd(args: string[], input?: string): Promise<Run> {
  return spawnBounded(process.execPath, [CLI_MAIN, 'passwd', ...args], { timeoutMs: 15_000, input }).done;
}
