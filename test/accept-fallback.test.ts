// The accept path without the SO_REUSEPORT addon (docs/workers.md, "Accept paths"): a node
// whose addon cannot load still starts, logs one warning naming the cause and the fix,
// says `"accept": "shared-fd"` on /status, and every worker accepts connections from the
// one listening socket they share; a worker that dies then stops the node (onFatal).
// Also scripts/build-addon.mjs, npm's install step: a missing compiler is recorded and
// reported without failing the install (exit 1 only with --strict).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { MqttClient } from 'mqtt';
import { tempDir } from './helpers/tmp.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const MISSING = join(ROOT, 'native/reuseport/build/Release/absent-for-test.node');
// Read when the transport module loads (here and in every worker thread): set it first.
process.env['FLEETMQ_REUSEPORT_ADDON'] = MISSING;
process.env['FLEETMQ_FAULT_INJECTION'] = '1';
const { startBroker, waitFor } = await import('./helpers/broker.js');
const { BrokerEnv, inbox, uid } = await import('./helpers/clients.js');
const { mqttOn } = await import('./helpers/placement.js');
type TestBroker = Awaited<ReturnType<typeof startBroker>>;

const T = { timeout: 30_000 };

function logLines(b: TestBroker, msg: string): Record<string, unknown>[] {
  return b.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l['msg'] === msg);
}

async function status(b: TestBroker): Promise<Record<string, unknown>> {
  const res = await fetch(`http://127.0.0.1:${b.httpPort}/status`, { signal: AbortSignal.timeout(3000) });
  assert.equal(res.status, 200);
  return (await res.json()) as Record<string, unknown>;
}

describe('accept path without the reuseport addon', () => {
  let b: TestBroker;
  let env: InstanceType<typeof BrokerEnv>;
  let fatal: string | null = null;
  before(async () => {
    env = new BrokerEnv();
    await env.start({ node: { workers: 2 } });
    b = env.b;
    b.node.onFatal((reason) => (fatal = reason));
  });
  after(() => env.close());

  test('the node starts with one warning that names the cause and the fix; /status says shared-fd', T, async () => {
    assert.equal(b.node.accept, 'shared-fd');
    const warn = logLines(b, 'accept.reuseport_unavailable');
    assert.equal(warn.length, 1, 'one warning for the node, not one per worker');
    assert.equal(warn[0]?.['level'], 'warn');
    assert.match(String(warn[0]?.['cause']), new RegExp(`${MISSING.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} does not exist`));
    assert.match(String(warn[0]?.['fix']), /apt-get install -y make g\+\+ python3.*npm run build:reuseport/);
    assert.equal(warn[0]?.['accept'], 'shared-fd');
    const st = await status(b);
    assert.equal(st['accept'], 'shared-fd');
    assert.equal(st['workers'], 2);
  });

  test('both workers accept from the shared socket, and a message crosses between them', T, async () => {
    const subOn0 = await mqttOn(b, 0, { clientId: uid('fb-sub'), protocolVersion: 5 }, 'tcp');
    const pubOn1 = await mqttOn(b, 1, { clientId: uid('fb-pub'), protocolVersion: 4 }, 'tcp');
    const sub: MqttClient = env.track(subOn0.client);
    const pub: MqttClient = env.track(pubOn1.client);
    const got = inbox(sub);
    await sub.subscribeAsync('fallback/t', { qos: 1 });
    await pub.publishAsync('fallback/t', 'across', { qos: 1 });
    await waitFor(() => got.length === 1, 'the message on worker 0');
    assert.equal(got[0]?.payload.toString(), 'across');
    const stats = (await b.node.pool!.stats()) as { workers: { connections: number }[] };
    assert.ok(stats.workers.every((w) => w.connections >= 1), JSON.stringify(stats.workers));
  });

  test('a worker that dies stops the node (its thread closed the shared socket) instead of restarting', T, async () => {
    assert.equal(fatal, null);
    b.node.pool!.injectFault(1, 'exit');
    await waitFor(() => fatal !== null, 'onFatal', 10_000);
    assert.match(String(fatal), /worker 1 exited .*share one listening socket/);
    const lines = logLines(b, 'node.fatal');
    assert.equal(lines.length, 1);
    assert.equal(lines[0]?.['level'], 'error');
    assert.equal(logLines(b, 'worker.restarted').length, 0);
  });
});

describe('inline node (workers = 0)', () => {
  test('needs no addon: accept path single, no warning', T, async () => {
    const b = await startBroker({ node: { workers: 0 } });
    try {
      assert.equal(b.node.accept, 'single');
      assert.equal(logLines(b, 'accept.reuseport_unavailable').length, 0);
      assert.equal((await status(b))['accept'], 'single');
    } finally {
      await b.stop();
    }
  });
});

describe('scripts/build-addon.mjs (npm install step)', () => {
  // A copy of the script and the addon's sources in the repository's layout, so that the
  // checkout's own build stays as it is.
  const tmp = tempDir('fleetmq-addon-build-');
  let n = 0;
  const copy = (): string => {
    const dir = tmp.file(String(++n));
    mkdirSync(dir);
    mkdirSync(join(dir, 'scripts'));
    cpSync(join(ROOT, 'scripts/build-addon.mjs'), join(dir, 'scripts/build-addon.mjs'));
    mkdirSync(join(dir, 'native/reuseport'), { recursive: true });
    for (const f of ['binding.gyp', 'reuseport.c']) cpSync(join(ROOT, 'native/reuseport', f), join(dir, 'native/reuseport', f));
    return dir;
  };
  const run = (dir: string, env: NodeJS.ProcessEnv, args: string[] = []) =>
    spawnSync(process.execPath, [join(dir, 'scripts/build-addon.mjs'), ...args], { env, encoding: 'utf8', timeout: 180_000 });
  const statusOf = (dir: string) => JSON.parse(readFileSync(join(dir, 'native/reuseport/build-status.json'), 'utf8')) as { ok: boolean; cause: string | null };

  test('without a compiler: exit 0, the cause recorded and printed with the fix; --strict exits 1', T, () => {
    const dir = copy();
    const r = run(dir, { PATH: '/nonexistent' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /SO_REUSEPORT addon was not built: make, python3, g\+\+ not found on PATH/);
    assert.match(r.stderr, /Fix: install make, g\+\+ and python3/);
    assert.deepEqual(statusOf(dir), { ...statusOf(dir), ok: false, cause: 'make, python3, g++ not found on PATH' });
    const strict = run(dir, { PATH: '/nonexistent' }, ['--strict']);
    assert.equal(strict.status, 1);
  });

  test('with the toolchain: builds reuseport.node offline and records ok', { timeout: 200_000 }, () => {
    const dir = copy();
    const r = run(dir, { ...process.env });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(existsSync(join(dir, 'native/reuseport/build/Release/reuseport.node')), r.stderr);
    assert.equal(statusOf(dir).ok, true);
  });
});
