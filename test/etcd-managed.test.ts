// The managed etcd member (src/cluster/etcd/managed.ts) and its membership helpers
// (members.ts) against the real etcd 3.4 binary: start, health, restart on the same data,
// supervision after a kill -9, a 3-member cluster losing and regaining a member, joining
// and removing a member, and the start errors.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { etcdClient } from '../src/cluster/etcd/client.js';
import {
  ManagedEtcdError,
  startManagedEtcd,
  type ManagedEtcd,
  type ManagedEtcdOptions,
  type ManagedEtcdState,
} from '../src/cluster/etcd/managed.js';
import { addMember, joinManagedEtcd, listMembers, removeMember } from '../src/cluster/etcd/members.js';
import { waitFor } from './helpers/broker.js';
import { TEST_ETCD_ARGS, etcdTempDir, freePorts, startEtcdCluster, testLogger, trackEtcd, useEtcdCluster, type EtcdCluster } from './helpers/etcd.js';

// ---------------------------------------------------------------- shared bits

let tmp: ReturnType<typeof etcdTempDir> | null = null;
let root = '';
before(() => {
  tmp = etcdTempDir('fleetmq-etcd-managed-');
  root = tmp.path;
});
after(() => tmp?.remove());

/** Every member a test starts by hand: stopped in the file's `after` even when a test failed. */
const started = new Set<ManagedEtcd>();
after(async () => {
  await Promise.all([...started].map((m) => m.stop(5000)));
});
function own<T extends ManagedEtcd>(m: T): T {
  started.add(trackEtcd(m));
  return m;
}

const clients = new Set<Etcd3>();
after(() => {
  for (const c of clients) c.close();
});
function client(endpoints: readonly string[]): Etcd3 {
  const c = etcdClient(endpoints);
  clients.add(c);
  return c;
}

const logs: string[] = [];
const log = testLogger(logs);

async function memberOptions(name: string, extra: Partial<ManagedEtcdOptions> = {}): Promise<ManagedEtcdOptions> {
  const [clientPort, peerPort] = (await freePorts(2)) as [number, number];
  return {
    name,
    dataDir: join(root, name),
    host: '127.0.0.1',
    clientPort,
    peerPort,
    clusterToken: 'fleetmq-test',
    clusterState: 'new',
    log,
    extraArgs: TEST_ETCD_ARGS,
    startTimeoutMs: 20_000,
    ...extra,
  };
}

function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

function logRecords(msg: string): Record<string, unknown>[] {
  return logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((r) => r['msg'] === msg);
}

async function rejectsWith(p: Promise<unknown>, code: string, match?: RegExp): Promise<ManagedEtcdError> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof ManagedEtcdError, `expected a ManagedEtcdError ${code}, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  if (match) assert.match(err.message, match);
  return err;
}

/** A net server holding a loopback port. */
async function hold(port: number): Promise<Server> {
  const s = createServer();
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(port, '127.0.0.1', () => resolve());
  });
  return s;
}

// ---------------------------------------------------------------- one member

describe('managed etcd: one member', () => {
  let opts: ManagedEtcdOptions;
  before(async () => {
    opts = await memberOptions('single');
  });

  test('starts, is healthy, serves a put and a get; stop() ends the process', async () => {
    const m = own(await startManagedEtcd(opts));
    assert.equal(m.state, 'running');
    assert.equal(m.clientUrl, `http://127.0.0.1:${opts.clientPort}`);
    assert.equal(m.peerUrl, `http://127.0.0.1:${opts.peerPort}`);
    assert.equal(await m.healthy(), true);
    const pid = m.pid;
    assert.ok(typeof pid === 'number' && pid > 0);

    const c = client([m.clientUrl]);
    await c.put('/fleetmq/test/k').value('v1');
    assert.equal(await c.get('/fleetmq/test/k').string(), 'v1');
    c.close();

    // etcd's zap lines come back through the Logger as etcd.log.
    const lines = logRecords('etcd.log');
    assert.ok(lines.length > 5, 'etcd.log lines');
    assert.ok(lines.every((r) => typeof r['etcd_level'] === 'string' && typeof r['etcd_msg'] === 'string' && r['etcd_member'] === 'single'));
    assert.ok(m.logTail().length > 0 && m.logTail().length <= 50);

    await m.stop();
    assert.equal(m.state, 'stopped');
    assert.equal(m.pid, undefined);
    assert.ok(processGone(pid), 'etcd process gone after stop()');
    assert.equal(await m.healthy(300), false);
  });

  test('a restart on the same data dir keeps the key', async () => {
    // The data dir holds the member: etcd ignores the initial-cluster flags.
    const m = own(await startManagedEtcd(opts));
    const c = client([m.clientUrl]);
    assert.equal(await c.get('/fleetmq/test/k').string(), 'v1');
    c.close();
    await m.stop();
  });

  test('kill -9 of etcd: the supervisor restarts it (restarting → running), the key is still there', async () => {
    const m = own(await startManagedEtcd({ ...opts, restartInitialMs: 200 }));
    const states: ManagedEtcdState[] = [];
    m.onState((s) => states.push(s));
    const pid1 = m.pid!;
    process.kill(pid1, 'SIGKILL');
    await waitFor(() => m.state === 'running' && m.pid !== undefined && m.pid !== pid1, 'etcd restarted', 15_000);
    assert.deepEqual(states, ['restarting', 'running']);
    assert.equal(m.restarts, 1);
    const exited = logRecords('etcd.exited').at(-1);
    assert.equal(exited?.['level'], 'error');
    assert.equal(exited?.['signal'], 'SIGKILL');
    assert.ok(Array.isArray(exited?.['last_lines']));
    const c = client([m.clientUrl]);
    assert.equal(await c.get('/fleetmq/test/k').string(), 'v1');
    c.close();
    await m.stop();
    assert.equal(m.state, 'stopped');
  });

  test('too many restarts within a minute: the state becomes failed', async () => {
    const m = own(await startManagedEtcd({ ...opts, restartInitialMs: 100, maxRestartsPerMinute: 1 }));
    const pid1 = m.pid!;
    process.kill(pid1, 'SIGKILL');
    await waitFor(() => m.state === 'running' && m.pid !== pid1, 'first restart', 15_000);
    process.kill(m.pid!, 'SIGKILL');
    await waitFor(() => m.state === 'failed', 'failed state', 5_000);
    assert.equal(m.error?.code, 'ETCD_START_FAILED');
    assert.match(m.error?.message ?? '', /2 times within a minute/);
    assert.equal(m.pid, undefined);
    await m.stop();
  });
});

// ---------------------------------------------------------------- a 3-member cluster

describe('managed etcd: a 3-member cluster from the harness', () => {
  const h = useEtcdCluster(3);

  test('a put on one member reads back on another', async () => {
    const c = h.cluster;
    assert.equal(c.endpoints.length, 3);
    assert.ok(c.members.every((m) => typeof m.pid === 'number'));
    const members = await listMembers(c.endpoints);
    assert.deepEqual(members.map((m) => m.name).sort(), ['m0', 'm1', 'm2']);
    assert.ok(members.every((m) => m.started));
    await client([c.endpoints[0]!]).put('/fleetmq/test/three').value('a');
    assert.equal(await client([c.endpoints[2]!]).get('/fleetmq/test/three').string(), 'a');
  });

  test('with the leader killed the other two elect one and serve reads and writes; it comes back with the data', async () => {
    const c = h.cluster;
    // The leader: the harder case (a new election). A request in flight to a dead leader
    // waits for its deadline (5 s), so the test waits for the new leader first.
    const k = await c.waitLeader();
    const pid = c.members[k]!.pid!;
    await c.kill(k);
    assert.ok(processGone(pid));
    const newLeader = await c.waitLeader();
    assert.notEqual(newLeader, k);
    const others = c.endpoints.filter((_, i) => i !== k);
    const two = client(others);
    await two.put('/fleetmq/test/while-down').value('b');
    assert.equal(await two.get('/fleetmq/test/while-down').string(), 'b');
    assert.equal(await two.get('/fleetmq/test/three').string(), 'a');

    await c.start(k);
    assert.equal(c.members[k]!.etcd.state, 'running');
    assert.notEqual(c.members[k]!.pid, pid);
    const back = client([c.endpoints[k]!]);
    assert.equal(await back.get('/fleetmq/test/while-down').string(), 'b');
    await back.put('/fleetmq/test/after').value('c');
    assert.equal(await two.get('/fleetmq/test/after').string(), 'c');
    assert.ok((await listMembers(c.endpoints)).every((m) => m.started));
  });
});

// ---------------------------------------------------------------- join and remove

describe('managed etcd: join and remove', () => {
  let c: EtcdCluster | null = null;
  after(async () => {
    await c?.stop();
  });

  test('a new managed member joins a running 1-member cluster, then is removed', async () => {
    c = await startEtcdCluster(1);
    await client(c.endpoints).put('/fleetmq/test/before-join').value('x');

    const opts = await memberOptions('joiner', { clusterToken: c.token });
    const { clusterState: _s, ...joinOpts } = opts;
    const j = own(await joinManagedEtcd({ ...joinOpts, clientUrls: c.endpoints }));
    assert.equal(j.state, 'running');

    const members = await listMembers(c.endpoints);
    assert.equal(members.length, 2);
    assert.ok(members.every((m) => m.started && !m.isLearner), JSON.stringify(members));
    assert.equal(logRecords('etcd.member_promoted').length, 1, 'joined as a learner, then promoted');
    assert.deepEqual(members.map((m) => m.name).sort(), ['joiner', 'm0']);
    const mine = members.find((m) => m.name === 'joiner')!;
    assert.deepEqual(mine.peerURLs, [j.peerUrl]);
    assert.deepEqual(mine.clientURLs, [j.clientUrl]);
    assert.match(mine.id, /^[0-9a-f]+$/);

    // Written before the join, read from the new member alone.
    assert.equal(await client([j.clientUrl]).get('/fleetmq/test/before-join').string(), 'x');

    await rejectsWith(removeMember(c.endpoints, 'nobody'), 'ETCD_MEMBER_NOT_FOUND', /nobody/);
    const removed = await removeMember(c.endpoints, 'joiner');
    assert.equal(removed.id, mine.id);
    const left = await listMembers(c.endpoints);
    assert.deepEqual(left.map((m) => m.name), ['m0']);
    // A removed member stops by itself; the supervisor does not restart it.
    const state = (): ManagedEtcdState => j.state;
    await waitFor(() => state() === 'failed', 'removed member exits', 10_000);
    assert.equal(j.error?.code, 'ETCD_MEMBER_REMOVED');
    assert.equal(logRecords('etcd.restart_scheduled').filter((r) => r['etcd_member'] === 'joiner').length, 0);
    await j.stop();
    // The remaining member alone is a quorum again.
    await client(c.endpoints).put('/fleetmq/test/after-remove').value('y');

    // Its data dir now holds a member the cluster does not know: a join is refused.
    const err = await rejectsWith(
      joinManagedEtcd({ ...joinOpts, clientUrls: c.endpoints }),
      'ETCD_DATA_DIR_IN_USE',
      /already holds a member/,
    );
    assert.match(err.message, new RegExp(opts.dataDir.replace(/[/.]/g, '\\$&')));
    assert.equal((await listMembers(c.endpoints)).length, 1, 'nothing added by the refused join');
  });

  test('addMember is idempotent for a retry; an unstarted learner is removed at once', async () => {
    assert.ok(c, 'the cluster of the previous test');
    const [ghost] = (await freePorts(1)) as [number];
    const peerUrl = `http://127.0.0.1:${ghost}`;
    // A learner: an unstarted one does not count in the quorum of the 1-member cluster.
    const a = await addMember(c.endpoints, peerUrl, 'ghost', { learner: true });
    assert.equal(a.reused, false);
    assert.equal(a.isLearner, true);
    // Every member by its name (the new one by the name given), in etcd's order.
    assert.deepEqual(a.initialCluster.split(',').sort(), [`ghost=${peerUrl}`, `m0=${c.members[0]!.peerUrl}`]);
    const b = await addMember(c.endpoints, peerUrl, 'ghost', { learner: true });
    assert.equal(b.reused, true);
    assert.equal(b.memberId, a.memberId);
    assert.equal(b.initialCluster, a.initialCluster);
    const listed = await listMembers(c.endpoints);
    assert.deepEqual(listed.find((m) => m.id === a.memberId), { id: a.memberId, name: '', peerURLs: [peerUrl], clientURLs: [], started: false, isLearner: true });
    await client(c.endpoints).put('/fleetmq/test/with-learner').value('z');
    assert.equal((await removeMember(c.endpoints, a.memberId)).id, a.memberId);
    assert.equal((await listMembers(c.endpoints)).length, 1);
  });
});

// ---------------------------------------------------------------- start errors

describe('managed etcd: start errors', () => {
  test('a missing binary', async () => {
    const opts = await memberOptions('nobin', { binary: join(root, 'no', 'etcd') });
    await rejectsWith(startManagedEtcd(opts), 'ETCD_BINARY_MISSING', /apt-get install -y etcd-server/);
  });

  test('a port in use (checked before spawning), client and peer', async () => {
    const opts = await memberOptions('busy');
    const s = await hold(opts.clientPort);
    try {
      const e = await rejectsWith(startManagedEtcd(opts), 'ETCD_PORT_IN_USE', new RegExp(`client port ${opts.clientPort}\\b`));
      assert.equal(e.port, opts.clientPort);
    } finally {
      s.close();
    }
    const p = await hold(opts.peerPort);
    try {
      await rejectsWith(startManagedEtcd(opts), 'ETCD_PORT_IN_USE', new RegExp(`peer port ${opts.peerPort}\\b`));
    } finally {
      p.close();
    }
  });

  test("etcd's own 'address already in use' is recognised", async () => {
    // A port that only etcd binds (its metrics listener): the pre-check does not see it.
    const [metrics] = (await freePorts(1)) as [number];
    const s = await hold(metrics);
    try {
      const opts = await memberOptions('busy-metrics', { extraArgs: [...TEST_ETCD_ARGS, `--listen-metrics-urls=http://127.0.0.1:${metrics}`] });
      const e = await rejectsWith(startManagedEtcd(opts), 'ETCD_PORT_IN_USE', new RegExp(`port ${metrics}\\b`));
      assert.equal(e.port, metrics);
      assert.ok(e.logTail.some((l) => l.includes('address already in use')));
    } finally {
      s.close();
    }
  });

  test('a bad data dir (a file)', async () => {
    const file = join(root, 'a-file');
    writeFileSync(file, 'not a directory');
    const opts = await memberOptions('baddir', { dataDir: file });
    await rejectsWith(startManagedEtcd(opts), 'ETCD_BAD_DATA_DIR', /not a directory/);
  });

  test('bad options', async () => {
    const opts = await memberOptions('badopts');
    await rejectsWith(startManagedEtcd({ ...opts, extraArgs: ['--data-dir=/tmp/x'] }), 'ETCD_BAD_OPTIONS', /--data-dir/);
    await rejectsWith(startManagedEtcd({ ...opts, host: 'localhost' }), 'ETCD_BAD_OPTIONS', /IP address/);
    await rejectsWith(startManagedEtcd({ ...opts, name: 'a=b' }), 'ETCD_BAD_OPTIONS', /name/);
  });

  test('etcd exits during its start: ETCD_START_FAILED with its last lines', async () => {
    // "existing" with nobody else to ask for the cluster: etcd gives up and exits.
    const opts = await memberOptions('lonely', { clusterState: 'existing' });
    const e = await rejectsWith(startManagedEtcd(opts), 'ETCD_START_FAILED', /exited during its start.*last etcd lines/);
    assert.ok(e.logTail.length > 0);
  });

  test('no quorum within startTimeoutMs: ETCD_START_TIMEOUT, and the process is stopped', async () => {
    const opts = await memberOptions('half', { startTimeoutMs: 1500 });
    const [ghostPeer] = (await freePorts(1)) as [number];
    const initialCluster = `half=http://127.0.0.1:${opts.peerPort},ghost=http://127.0.0.1:${ghostPeer}`;
    const states: ManagedEtcdState[] = [];
    const e = await rejectsWith(startManagedEtcd({ ...opts, initialCluster }), 'ETCD_START_TIMEOUT', /not healthy after 1500 ms/);
    assert.ok(e.logTail.length > 0);
    // The member behind the timeout is gone: its ports are free again.
    const again = own(await startManagedEtcd({ ...opts, initialCluster, waitHealthy: false }));
    again.onState((s) => states.push(s));
    await rejectsWith(again.waitHealthy(300), 'ETCD_START_TIMEOUT');
    await again.stop();
    assert.deepEqual(states, ['stopped']);
  });
});
