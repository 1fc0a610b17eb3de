import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';

import { parseCommandLine, UsageError } from '../src/cli/args.js';
import { main, type MainDeps } from '../src/cli/main.js';
import { OPTIONS } from '../src/config/load.js';
import type { Config } from '../src/config/types.js';
import type { Logger } from '../src/log/logger.js';
import { canConnect, freePort } from './helpers/broker.js';
import { CLI_MAIN, cleanEnv } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const tmp = tempDir('fleetmq-cli-');

function run(args: string[], env: NodeJS.ProcessEnv = {}, input?: string): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI_MAIN, ...args], { env: cleanEnv(env), encoding: 'utf8', timeout: 20_000, input, cwd: tmp.path });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function jsonLines(text: string): Array<Record<string, unknown>> {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('fleetmq binary: usage errors exit 2 and name the flag', () => {
  const cases: Array<[string[], string]> = [
    [['--bogus'], '--bogus'],
    [['start', '--bogus'], '--bogus'],
    [['start', '--mqtt-port', 'abc'], '--mqtt-port: expected an integer 0..65535, got "abc"'],
    [['start', '--mqtt-port=70000'], '--mqtt-port: expected an integer 0..65535, got 70000'],
    [['start', '--http-port', '-1'], '--http-port: expected an integer 0..65535, got -1'],
    [['start', '--log-level', 'loud'], '--log-level: expected one of "debug", "info", "warn", "error", got "loud"'],
    [['start', '--bind', 'a b'], '--bind: expected an IP address or host name, got "a b"'],
    [['start', '--ws-port'], '--ws-port: missing value'],
    [['start', '--config'], '--config: missing value'],
    [['start', 'extra'], 'unexpected argument "extra"'],
    [['strat'], 'unknown command "strat"'],
    [['--version', 'x'], 'unexpected argument "x"'],
    [[], 'no command given'],
  ];
  for (const [args, expected] of cases) {
    test(`fleetmq ${args.join(' ') || '(nothing)'}`, () => {
      const r = run(args);
      assert.equal(r.code, 2, r.stderr);
      assert.ok(r.stderr.includes(expected), `stderr lacks ${JSON.stringify(expected)}:\n${r.stderr}`);
      assert.equal(r.stdout, '');
    });
  }
});

describe('fleetmq binary: help and version', () => {
  test('--help lists the commands on stdout, exit 0', () => {
    for (const flag of ['--help', '-h', 'help']) {
      const r = run([flag]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /fleetmq start/);
      assert.match(r.stdout, /fleetmq passwd/);
      assert.match(r.stdout, /fleetmq --version/);
      assert.equal(r.stderr, '');
    }
  });

  test('start --help lists every start flag', () => {
    const r = run(['start', '--help']);
    assert.equal(r.code, 0, r.stderr);
    const flags = OPTIONS.flatMap((o) => (o.cli ? [o.cli.flag] : []));
    assert.ok(flags.length >= 9);
    for (const f of ['--config', ...flags]) assert.ok(r.stdout.includes(f), `${f} missing from:\n${r.stdout}`);
  });

  test('--version prints the package version', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const r = run(['--version']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, `fleetmq ${pkg.version}\n`);
  });

  test('the bin entry starts with a shebang', () => {
    assert.ok(readFileSync(CLI_MAIN, 'utf8').startsWith('#!/usr/bin/env node\n'));
  });
});

describe('fleetmq start: bad configuration exits 2 with one JSON log line', () => {
  test('--config with a bad option value', () => {
    const bad = tmp.file('bad.json');
    writeFileSync(bad, JSON.stringify({ mqtt: { max_qos: 3 } }));
    const r = run(['start', '--config', bad]);
    assert.equal(r.code, 2, r.stderr);
    const lines = jsonLines(r.stderr);
    assert.equal(lines.length, 1, r.stderr);
    const line = lines[0] ?? {};
    assert.equal(line['level'], 'error');
    assert.equal(line['msg'], 'config.invalid');
    assert.match(String(line['error']), /option "mqtt\.max_qos": expected an integer 0\.\.2, got 3/);
  });

  test('--config with invalid JSON names the file', () => {
    const bad = tmp.file('broken.json');
    writeFileSync(bad, '{ "mqtt": ');
    const r = run(['start', '--config', bad]);
    assert.equal(r.code, 2, r.stderr);
    const line = jsonLines(r.stderr)[0] ?? {};
    assert.equal(line['msg'], 'config.invalid');
    assert.ok(String(line['error']).includes(bad), r.stderr);
  });

  test('an unknown key via FLEETMQ_CONFIG, and a bad env override', () => {
    const bad = tmp.file('unknown.json');
    writeFileSync(bad, JSON.stringify({ listeners: { mqtt_prot: 1 } }));
    const r = run(['start'], { FLEETMQ_CONFIG: bad });
    assert.equal(r.code, 2, r.stderr);
    assert.match(String(jsonLines(r.stderr)[0]?.['error']), /unknown option "listeners\.mqtt_prot"/);
    const r2 = run(['start'], { FLEETMQ_LISTENERS__MQTT_PORT: 'abc' });
    assert.equal(r2.code, 2, r2.stderr);
    assert.match(String(jsonLines(r2.stderr)[0]?.['error']), /option "listeners\.mqtt_port": expected an integer 0\.\.65535, got "abc" \(from environment variable FLEETMQ_LISTENERS__MQTT_PORT\)/);
  });
});

describe('fleetmq passwd delegates to runPasswd', () => {
  test('-b adds a user; exit code passed through', () => {
    const file = tmp.file('passwd');
    const r = run(['passwd', '-b', 's3cret', file, 'alice']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(readFileSync(file, 'utf8'), /^alice:/m);
    const bad = run(['passwd']);
    assert.equal(bad.code, 2, bad.stderr);
  });
});

// ---------------------------------------------------------------------------------------
// main() in-process, with a fake node and fake signals.

interface Harness {
  deps: Partial<MainDeps>;
  signals: EventEmitter;
  stderr: () => Array<Record<string, unknown>>;
  started: Array<{ cfg: Config; log: Logger }>;
  stops: string[];
  /** What the node's onFatal() was given (the fake node reports a fatal error through it). */
  fatal: ((reason: string) => void) | null;
}

function harness(node: { start?: () => Promise<void>; stop?: () => Promise<void> } = {}, env: NodeJS.ProcessEnv = {}): Harness {
  let err = '';
  const sink = (append: (s: string) => void): Writable =>
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        append(chunk.toString());
        cb();
      },
    });
  const signals = new EventEmitter();
  const h: Harness = {
    signals,
    started: [],
    stops: [],
    fatal: null,
    stderr: () => jsonLines(err),
    deps: {
      io: { stdin: new PassThrough(), stdout: sink(() => undefined), stderr: sink((s) => (err += s)) },
      env,
      signals,
      startNode: async (cfg, log) => {
        h.started.push({ cfg, log });
        await node.start?.();
        return {
          stop: async (reason: string) => {
            h.stops.push(reason);
            await node.stop?.();
          },
          onFatal: (fn: (reason: string) => void) => {
            h.fatal = fn;
          },
        };
      },
    },
  };
  return h;
}

const tick = (ms = 10): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('main(): start and stop', () => {
  test('loads the config, starts the node with a logger, stops on SIGTERM with exit 0', async () => {
    const h = harness({}, { FLEETMQ_NODE__NAME: 'n-test' });
    const done = main(['start', '--mqtt-port', '1999'], h.deps);
    await tick();
    assert.equal(h.started.length, 1);
    assert.equal(h.started[0]?.cfg.listeners.mqtt_port, 1999);
    assert.equal(h.signals.listenerCount('SIGTERM'), 1);
    h.signals.emit('SIGTERM');
    assert.equal(await done, 0);
    assert.deepEqual(h.stops, ['signal']);
    const msgs = h.stderr();
    const stopping = msgs.find((l) => l['msg'] === 'node.signal');
    assert.ok(stopping, JSON.stringify(msgs));
    assert.equal(stopping['node'], 'n-test');
    assert.equal(stopping['signal'], 'SIGTERM');
    assert.equal(h.signals.listenerCount('SIGTERM') + h.signals.listenerCount('SIGINT'), 0, 'signal handlers removed');
  });

  test('a fatal error of the node stops it and exits 1', async () => {
    const h = harness();
    const done = main(['start'], h.deps);
    await tick();
    assert.ok(h.fatal, 'main() registered onFatal');
    h.fatal('worker 1 exited');
    assert.equal(await done, 1);
    assert.deepEqual(h.stops, ['fatal: worker 1 exited']);
    assert.equal(h.stderr().some((l) => l['msg'] === 'node.signal'), false);
  });

  test('SIGINT works the same way', async () => {
    const h = harness();
    const done = main(['start'], h.deps);
    await tick();
    h.signals.emit('SIGINT');
    assert.equal(await done, 0);
    assert.deepEqual(h.stops, ['signal']);
  });

  test('a stop that does not finish within shutdown_timeout_ms + 1 s exits 1', async () => {
    const h = harness({ stop: () => new Promise(() => undefined) }, { FLEETMQ_NODE__SHUTDOWN_TIMEOUT_MS: '0' });
    const done = main(['start'], h.deps);
    await tick();
    const t0 = Date.now();
    h.signals.emit('SIGTERM');
    assert.equal(await done, 1);
    const took = Date.now() - t0;
    assert.ok(took >= 950 && took < 3000, `took ${took} ms`);
    assert.ok(h.stderr().some((l) => l['msg'] === 'node.stop_timeout' && l['level'] === 'error'));
  });

  test('a stop that fails exits 1', async () => {
    const h = harness({ stop: () => Promise.reject(new Error('boom')) });
    const done = main(['start'], h.deps);
    await tick();
    h.signals.emit('SIGTERM');
    assert.equal(await done, 1);
    assert.ok(h.stderr().some((l) => l['msg'] === 'node.stop_failed' && l['error'] === 'boom'));
  });

  test('a start-up error (EADDRINUSE) is logged with its message and code, exit 1', async () => {
    const h = harness({ start: () => Promise.reject(Object.assign(new Error('listen EADDRINUSE: address already in use 0.0.0.0:1883'), { code: 'EADDRINUSE' })) });
    assert.equal(await main(['start'], h.deps), 1);
    const line = h.stderr().find((l) => l['msg'] === 'node.start_failed');
    assert.ok(line, JSON.stringify(h.stderr()));
    assert.equal(line['level'], 'error');
    assert.equal(line['code'], 'EADDRINUSE');
    assert.match(String(line['error']), /EADDRINUSE/);
    assert.equal(h.signals.listenerCount('SIGTERM'), 0);
  });

  test('a signal during start-up stops the node as soon as it is up', async () => {
    let finishStart!: () => void;
    const h = harness({ start: () => new Promise<void>((r) => (finishStart = r)) });
    const done = main(['start'], h.deps);
    await tick();
    h.signals.emit('SIGTERM');
    await tick();
    assert.deepEqual(h.stops, []);
    finishStart();
    assert.equal(await done, 0);
    assert.deepEqual(h.stops, ['signal']);
  });

  test('a second signal while stopping forces exit 1', async () => {
    const h = harness({ stop: () => new Promise(() => undefined) });
    const done = main(['start'], h.deps);
    await tick();
    h.signals.emit('SIGTERM');
    h.signals.emit('SIGINT');
    assert.equal(await done, 1);
    assert.ok(h.stderr().some((l) => l['msg'] === 'node.stop_forced'));
  });

  test('invalid configuration: exit 2, config.invalid, node never started', async () => {
    const h = harness({}, { FLEETMQ_MQTT__MAX_QOS: '3' });
    assert.equal(await main(['start'], h.deps), 2);
    assert.equal(h.started.length, 0);
    const lines = h.stderr();
    assert.equal(lines.length, 1);
    assert.equal(lines[0]?.['msg'], 'config.invalid');
    assert.match(String(lines[0]?.['error']), /mqtt\.max_qos/);
  });

  test('config warnings are logged', async () => {
    const h = harness({}, { FLEETMQ_LISTENERS__MQTTS_PORT: '9999' });
    const done = main(['start'], h.deps);
    await tick();
    h.signals.emit('SIGTERM');
    assert.equal(await done, 0);
    assert.equal(h.started[0]?.cfg.listeners.mqtts_port, 0);
    assert.ok(h.stderr().some((l) => l['msg'] === 'config.warning' && String(l['warning']).includes('mqtts_port')));
  });
});

describe('parseCommandLine', () => {
  test('start flags become typed options', () => {
    const c = parseCommandLine(['start', '--config', 'f.json', '--node-name=n1', '--mqtt-port', '0', '--log-level', 'debug', '--data-dir', '/d']);
    assert.deepEqual(c, { kind: 'start', options: { config: 'f.json', nodeName: 'n1', mqttPort: 0, logLevel: 'debug', dataDir: '/d' } });
  });
  test('passwd arguments pass through untouched', () => {
    assert.deepEqual(parseCommandLine(['passwd', '-D', 'f', 'u', '--weird']), { kind: 'passwd', args: ['-D', 'f', 'u', '--weird'] });
  });
  test('usage errors carry exit code 2', () => {
    assert.throws(() => parseCommandLine(['start', '--nope']), (e: unknown) => e instanceof UsageError && e.exitCode === 2 && e.message.includes('--nope'));
  });
});

// ---------------------------------------------------------------------------------------
// The real node (src/runtime/node.ts), as a separate process.

describe('fleetmq start: real process', () => {
  test('listens, and on SIGTERM logs node.stopping and exits 0', async () => {
    const [mqtt, http] = [await freePort(), await freePort()];
    const child = spawn(process.execPath, [CLI_MAIN, 'start', '--bind', '127.0.0.1', '--mqtt-port', String(mqtt), '--http-port', String(http), '--ws-port', '0', '--data-dir', tmp.path], {
      env: cleanEnv(),
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    let exitCode: number | null | undefined;
    void exited.then((c) => (exitCode = c));
    const deadline = Date.now() + 15_000;
    while (!(await canConnect(mqtt))) {
      assert.equal(exitCode, undefined, `node exited early (${String(exitCode)}):\n${stderr}`);
      assert.ok(Date.now() < deadline, `node did not listen on ${mqtt}:\n${stderr}`);
      await tick(50);
    }
    child.kill('SIGTERM');
    assert.equal(await exited, 0, stderr);
    assert.ok(jsonLines(stderr).some((l) => l['msg'] === 'node.stopping'), stderr);
  });

  test('a port in use: exit 1 with the error logged', async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const addr = blocker.address();
    const port = typeof addr === 'object' && addr ? addr.port : 0;
    try {
      const http = await freePort();
      const r = spawnSync(process.execPath, [CLI_MAIN, 'start', '--bind', '127.0.0.1', '--mqtt-port', String(port), '--http-port', String(http), '--ws-port', '0'], {
        env: cleanEnv(),
        encoding: 'utf8',
        timeout: 20_000,
        cwd: tmp.path,
      });
      assert.equal(r.status, 1, r.stderr);
      const errors = jsonLines(r.stderr).filter((l) => l['level'] === 'error');
      assert.ok(errors.length > 0 && errors.some((l) => JSON.stringify(l).includes('EADDRINUSE')), r.stderr);
    } finally {
      blocker.close();
    }
  });
});
