#!/usr/bin/env node
// The `fleetmq` binary. Exit codes: 0 ok, 1 runtime failure (start-up error, unclean
// stop, uncaught exception), 2 bad command line or invalid configuration.
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { runPasswd } from '../auth/passwd-cli.js';
import { ConfigError, loadConfig, type LoadOptions } from '../config/load.js';
import type { Config } from '../config/types.js';
import { Logger } from '../log/logger.js';
import { parseCommandLine, UsageError, type CliStartOptions } from './args.js';

export interface MainIo {
  stdin: NodeJS.ReadableStream;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

/** What main() needs from the outside world; tests replace parts of it. */
export interface MainDeps {
  io: MainIo;
  env: NodeJS.ProcessEnv;
  /** Where SIGTERM / SIGINT arrive (process). */
  signals: {
    on(event: 'SIGTERM' | 'SIGINT', fn: () => void): unknown;
    off(event: 'SIGTERM' | 'SIGINT', fn: () => void): unknown;
  };
  loadConfig: (opts: LoadOptions) => Config;
  startNode: (cfg: Config, log: Logger) => Promise<StartedNode>;
  runPasswd: (args: string[], io: MainIo) => Promise<number>;
  /** Called with the node's logger once it exists (the entry point logs uncaught exceptions with it). */
  onLogger?: (log: Logger) => void;
}

export interface StartedNode {
  stop(reason: string): Promise<void>;
  /**
   * Ends worker threads at once, before a forced process exit (each closes its uWebSockets.js
   * sockets first: this build aborts the process when a thread ends holding one).
   */
  abort?(): Promise<void>;
  /** `fn` runs if the node cannot go on: it is then stopped and the process exits 1. */
  onFatal?(fn: (reason: string) => void): void;
}

export function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

/** Runs one command line (process.argv.slice(2)); resolves to the exit code. */
export async function main(argv: readonly string[], overrides: Partial<MainDeps> = {}): Promise<number> {
  const deps: MainDeps = {
    io: { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr },
    env: process.env,
    signals: process,
    loadConfig,
    // Loaded on demand: --help, --version and passwd do not need the broker (or uWS).
    startNode: async (cfg, log) => (await import('../runtime/node.js')).startNode(cfg, log),
    runPasswd,
    ...overrides,
  };
  const { stdout, stderr } = deps.io;
  let cmd;
  try {
    cmd = parseCommandLine(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    stderr.write(`fleetmq: ${e.message}\nRun 'fleetmq --help' for usage.\n`);
    return e.exitCode;
  }
  switch (cmd.kind) {
    case 'help':
      stdout.write(cmd.text);
      return 0;
    case 'version':
      stdout.write(`fleetmq ${version()}\n`);
      return 0;
    case 'passwd':
      return deps.runPasswd(cmd.args, deps.io);
    case 'ctl':
      return (await import('./ctl.js')).runCtl(cmd.args, deps.io, deps.env);
    case 'start':
      return runStart(cmd.options, deps);
  }
}

async function runStart(options: CliStartOptions, deps: MainDeps): Promise<number> {
  const stderr = deps.io.stderr;
  const sink = (line: string): void => {
    stderr.write(line + '\n');
  };
  const warnings: string[] = [];
  let cfg: Config;
  try {
    cfg = deps.loadConfig({ argv: options, env: deps.env, onWarning: (w) => warnings.push(w) });
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    new Logger('info', {}, sink).error('config.invalid', { error: e.message });
    return 2;
  }
  const log = new Logger(cfg.log.level, { node: cfg.node.name }, sink);
  deps.onLogger?.(log);
  for (const w of warnings) log.warn('config.warning', { warning: w });

  let resolveExit!: (code: number) => void;
  const exited = new Promise<number>((r) => (resolveExit = r));
  let node: StartedNode | undefined;
  const forceExit = (): void => {
    const abort = node?.abort?.() ?? Promise.resolve();
    void abort.catch(() => undefined).then(() => resolveExit(1));
  };
  let pendingSignal: string | undefined;
  let stopping = false;

  /** Stops the node; the process then exits `code` (1 after a fatal error, else 0). */
  const stop = (signal: string, code = 0): void => {
    if (!node) return;
    stopping = true;
    if (code === 0) log.info('node.signal', { signal });
    const budget = cfg.node.shutdown_timeout_ms + 1000;
    const timer = setTimeout(() => {
      log.error('node.stop_timeout', { timeout_ms: budget });
      forceExit();
    }, budget);
    node.stop(code === 0 ? 'signal' : signal).then(
      () => {
        clearTimeout(timer);
        resolveExit(code); // the node logs node.stopped itself
      },
      (err: unknown) => {
        clearTimeout(timer);
        log.error('node.stop_failed', { error: errorMessage(err) });
        resolveExit(1);
      },
    );
  };
  const onSignal = (signal: string): void => {
    if (stopping || pendingSignal !== undefined) {
      // A second signal: stop waiting.
      log.warn('node.stop_forced', { signal });
      forceExit();
    } else if (node) stop(signal);
    else pendingSignal = signal; // still starting: stop as soon as it is up
  };
  const onTerm = (): void => onSignal('SIGTERM');
  const onInt = (): void => onSignal('SIGINT');
  deps.signals.on('SIGTERM', onTerm);
  deps.signals.on('SIGINT', onInt);
  try {
    const started = await Promise.race([
      deps.startNode(cfg, log).then(
        (n) => ({ node: n }),
        (err: unknown) => ({ err }),
      ),
      exited.then((code) => ({ code })),
    ]);
    if ('code' in started) return started.code;
    if ('err' in started) {
      const code = (started.err as { code?: unknown } | null)?.code;
      log.error('node.start_failed', { error: errorMessage(started.err), ...(code !== undefined ? { code } : {}) });
      return 1;
    }
    node = started.node;
    node.onFatal?.((reason) => {
      if (!stopping) stop(`fatal: ${reason}`, 1);
    });
    if (pendingSignal !== undefined) stop(pendingSignal);
    return await exited;
  } finally {
    deps.signals.off('SIGTERM', onTerm);
    deps.signals.off('SIGINT', onInt);
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return realpathSync(script) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

/** Exits once stdout and stderr have flushed what was written to them. */
function exit(code: number): void {
  let pending = 2;
  const done = (): void => {
    if (--pending === 0) process.exit(code);
  };
  process.stdout.write('', done);
  process.stderr.write('', done);
}

if (isEntryPoint()) {
  let log = new Logger('info');
  const fatal = (kind: string) => (err: unknown) => {
    log.error(kind, { error: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) });
    process.exit(1);
  };
  process.on('uncaughtException', fatal('process.uncaught_exception'));
  process.on('unhandledRejection', fatal('process.unhandled_rejection'));
  main(process.argv.slice(2), { onLogger: (l) => (log = l) }).then(exit, fatal('process.uncaught_exception'));
}
