// src/cluster building blocks, in process and without etcd: the replicated shard (apply,
// snapshots, the resumption log, lag), the codecs (kv ops, retained messages, session
// transfers, RLOG frames), the etcd key layout, the etcd decoders (plain, sessions, route
// logs and bases), node sets in shared memory (interning, refcounts, quarantine, shared
// groups), this node's route batches (NodeRoutes), remote routes, membership and the node's
// own retained writes on their way (OwnRetained).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { SessionTransfer } from '../src/broker/transfer.js';
import type { Message } from '../src/broker/message.js';
import { PlainDecoder, RoutesDecoder, SessionsDecoder, type EtcdEvent } from '../src/cluster/etcd/source.js';
import {
  clusterPrefix, incPrefix, liveKey, memberKey, parseRouteKey, routeAliveKey, routeBaseKey, routeLogKey,
  routeShardKey, seqKey, shardPrefix, splitRouteShardKey, TICK, tickKey, type NodeInfo,
} from '../src/cluster/keys.js';
import { decodeOps, encodeOps, KvCodecError, opsByteLength, readOps, writeOps } from '../src/cluster/kv-codec.js';
import { Membership } from '../src/cluster/membership.js';
import { MAX_BATCH_OPS, NodeRoutes } from '../src/cluster/node-routes.js';
import {
  forEachSlot, GROUP_ENTRIES, groupRemoteBytes, groupRemoteSet, GroupRemoteWriter, MAX_NODES, MAX_SETS,
  NodeSetWriter, nodeSetsBytes, orNodeSet, SET_WORDS,
} from '../src/cluster/node-sets.js';
import { OwnRetained } from '../src/cluster/own-retained.js';
import { RemoteRoutes } from '../src/cluster/remote-routes.js';
import { decodeRetained, encodeRetained } from '../src/cluster/retained-codec.js';
import {
  F_CHANGE, F_PROGRESS, F_SNAP_BEGIN, F_SNAP_DATA, F_SNAP_END, f64, json, parseJson,
  R_CLAIM, R_FORCE_LEAVE, R_JOIN_ETCD, R_KV, R_LEAVE, R_RELEASE, R_ROUTES, R_STATUS, R_SUBSCRIBE,
} from '../src/cluster/rlog/protocol.js';
import { encodeChange } from '../src/cluster/rlog/server.js';
import { SHARDS, shardId, shardName, ShardState, type KvOp, type ShardChange } from '../src/cluster/shard.js';
import { decodeTransfer, encodeTransfer } from '../src/cluster/transfer-codec.js';
import { F_ACK, F_MSG } from '../src/cluster/wire/forward.js';
import { FIRST_APP_TYPE } from '../src/cluster/wire/frames.js';
import { mulberry32 as prng } from './helpers/prng.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean, what: string, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(2);
  }
}

const B = (s: string): Buffer => Buffer.from(s);
const EMPTY = Buffer.alloc(0);
const set = (k: string, v: string | Buffer): KvOp => ({ k, v: typeof v === 'string' ? B(v) : v });
const del = (k: string): KvOp => ({ k, v: null });
const ch = (rev: number, ...ops: KvOp[]): ShardChange => ({ rev, ts: 1000 + rev, ops });
/** Ops as comparable tuples. */
const view = (ops: readonly KvOp[]): [string, string | null][] => ops.map((o) => [o.k, o.v === null ? null : o.v.toString()]);
const mapView = (m: ReadonlyMap<string, Buffer>): Record<string, string> => Object.fromEntries([...m].map(([k, v]) => [k, v.toString()]));

/** Temporarily moves Date.now() forward. */
function withClock<T>(offsetMs: number, f: () => T): T {
  const real = Date.now;
  Date.now = () => real() + offsetMs;
  try {
    return f();
  } finally {
    Date.now = real;
  }
}

// ---------------------------------------------------------------------------- shards

describe('ShardState', () => {
  it('applies sets and deletes in order; older revisions are ignored', () => {
    const s = new ShardState('config');
    assert.equal(s.apply(ch(5, set('a', '1'), set('b', '2'))), true);
    assert.equal(s.apply(ch(6, del('a'), set('b', '3'), set('c', '4'))), true);
    assert.deepEqual(mapView(s.data), { b: '3', c: '4' });
    assert.deepEqual([s.rev, s.ts], [6, 1006]);
    assert.equal(s.apply(ch(6, set('x', 'dup'))), false);
    assert.equal(s.apply(ch(2, set('x', 'old'))), false);
    assert.deepEqual(mapView(s.data), { b: '3', c: '4' }, 'ignored changes changed nothing');
    assert.equal(s.rev, 6);
  });

  it('listeners get each change with the values its keys had before it', () => {
    const s = new ShardState('config');
    const seen: { rev: number; ops: [string, string | null][]; before: Record<string, string> }[] = [];
    s.onChange((c, before) => seen.push({ rev: c.rev, ops: view(c.ops), before: mapView(before) }));
    s.apply(ch(1, set('a', '1')));
    s.apply(ch(2, set('a', '2'), set('a', '3'), del('b'), set('c', 'x')));
    assert.deepEqual(seen, [
      { rev: 1, ops: [['a', '1']], before: {} },
      { rev: 2, ops: [['a', '2'], ['a', '3'], ['b', null], ['c', 'x']], before: { a: '1' } },
    ]);
    s.apply(ch(1, set('z', 'no')));
    assert.equal(seen.length, 2, 'an ignored change is not announced');
  });

  it('reset() on an empty shard announces every entry as a set', () => {
    const s = new ShardState('retained');
    const seen: [ShardChange, ReadonlyMap<string, Buffer>][] = [];
    s.onChange((c, b) => seen.push([c, b]));
    s.reset([['t/1', B('a')], ['t/2', B('b')]], 40, 777);
    assert.deepEqual(mapView(s.data), { 't/1': 'a', 't/2': 'b' });
    assert.deepEqual([s.rev, s.ts, s.sourceRev], [40, 777, 40]);
    assert.equal(seen.length, 1);
    assert.deepEqual(view(seen[0]![0].ops), [['t/1', 'a'], ['t/2', 'b']]);
    assert.deepEqual([seen[0]![0].rev, seen[0]![1].size], [40, 0]);
    const empty = new ShardState('retained');
    let calls = 0;
    empty.onChange(() => calls++);
    empty.reset([], 41);
    assert.deepEqual([calls, empty.rev], [0, 41], 'an empty snapshot of an empty shard is no change');
  });

  it('reset() over existing data announces the difference only', () => {
    const s = new ShardState('retained');
    s.apply(ch(1, set('keep', 'k'), set('change', 'old'), set('drop', 'd')));
    const seen: [ShardChange, ReadonlyMap<string, Buffer>][] = [];
    s.onChange((c, b) => seen.push([c, b]));
    s.reset([['keep', B('k')], ['change', B('new')], ['add', B('a')]], 10);
    assert.deepEqual(mapView(s.data), { keep: 'k', change: 'new', add: 'a' });
    assert.equal(seen.length, 1);
    const [c, before] = seen[0]!;
    assert.deepEqual(view(c.ops).sort(), [['add', 'a'], ['change', 'new'], ['drop', null]]);
    assert.deepEqual(mapView(before), { change: 'old', drop: 'd' });
    s.reset([['keep', B('k')], ['change', B('new')], ['add', B('a')]], 11);
    assert.equal(seen.length, 1, 'the same snapshot again is no change');
    assert.equal(s.rev, 11);
  });

  it('loadPart() fills an empty shard batch by batch; loadedAt() sets the revision', () => {
    const s = new ShardState('routes');
    const seen: [string[], number][] = [];
    s.onChange((c, b) => seen.push([c.ops.map((o) => o.k), b.size]));
    s.loadPart([set('a', '1'), del('ignored'), set('b', '2')]);
    s.loadPart([set('c', '3'), set('a', '1')]);
    assert.deepEqual(seen, [[['a', 'b'], 0], [['c'], 0]], 'deletes and keys already loaded are not announced');
    assert.equal(s.rev, 0);
    s.loadedAt(90, 5);
    assert.deepEqual([s.rev, s.ts, s.data.size], [90, 5, 3]);
    assert.deepEqual(s.changesSince(90), []);
    assert.equal(s.apply(ch(90, set('late', 'x'))), false, 'changes up to the snapshot revision are in it');
    assert.equal(s.apply(ch(91, set('d', '4'))), true);
    assert.deepEqual(s.changesSince(90)!.map((c) => c.rev), [91]);
  });

  it('changesSince(): the changes after a revision, [] when current, null once trimmed away', () => {
    const s = new ShardState('sessions', { maxChanges: 3 });
    s.reset([], 10);
    for (let r = 11; r <= 16; r++) s.apply(ch(r, set(`k${r}`, 'v')));
    assert.deepEqual(s.changesSince(16), []);
    assert.deepEqual(s.changesSince(99), []);
    assert.deepEqual(s.changesSince(15)!.map((c) => c.rev), [16]);
    // 3 kept (14, 15, 16): 13 is the oldest revision the log still resumes from.
    assert.deepEqual(s.changesSince(13)!.map((c) => c.rev), [14, 15, 16]);
    assert.equal(s.changesSince(12), null);
    assert.equal(s.changesSince(10), null);
    assert.deepEqual(s.stats(), { name: 'sessions', revision: 16, keys: 6, logChanges: 3, logFrom: 13 });
  });

  it('changesSince() reaches back to the bootstrap revision until the log is trimmed', () => {
    const s = new ShardState('sessions');
    s.reset([['x', B('1')]], 100);
    assert.equal(s.changesSince(99), null, 'before the snapshot: not in the log');
    s.apply(ch(105, set('y', '2')));
    s.apply(ch(107, del('x')));
    assert.deepEqual(s.changesSince(100)!.map((c) => c.rev), [105, 107]);
    assert.deepEqual(s.changesSince(106)!.map((c) => c.rev), [107]);
    s.reset([['z', B('3')]], 200);
    assert.equal(s.changesSince(150), null, 'a new snapshot restarts the log');
  });

  it('the byte bound trims the log but keeps the newest change', () => {
    const s = new ShardState('retained', { maxBytes: 1000 });
    s.reset([], 0);
    const big = Buffer.alloc(600);
    s.apply(ch(1, set('a', big)));
    s.apply(ch(2, set('b', big)));
    assert.equal(s.changesSince(0), null, 'change 1 was dropped for change 2');
    assert.deepEqual(s.changesSince(1)!.map((c) => c.rev), [2]);
    s.apply(ch(3, set('c', Buffer.alloc(5000))));
    assert.deepEqual(s.changesSince(2)!.map((c) => c.rev), [3], 'a change bigger than the bound is still kept');
  });

  it('lag: revisions and time behind the source, zero once caught up', () => {
    const s = new ShardState('nodes');
    s.reset([], 10);
    assert.deepEqual(s.lag(), { revisions: 0, ms: 0 });
    s.progress(15);
    assert.equal(s.lag().revisions, 5);
    const ms = s.lag(Date.now() + 500).ms;
    assert.ok(ms >= 500 && ms < 600, `behind for ~500 ms (${ms})`);
    s.apply(ch(12, set('a', '1')));
    assert.equal(s.lag().revisions, 3);
    assert.ok(s.lag(Date.now() + 500).ms >= 500, 'still behind since the same moment');
    s.caughtUp(15);
    assert.equal(s.rev, 15, 'nothing of this shard between 12 and 15');
    assert.deepEqual(s.lag(Date.now() + 500), { revisions: 0, ms: 0 });
    s.progress(14);
    assert.equal(s.sourceRev, 15, 'sourceRev never goes back');
  });

  it('caughtUp() while bootstrapping raises only the source revision', () => {
    const s = new ShardState('nodes');
    s.reset([], 10);
    s.bootstrapping = true;
    s.caughtUp(20);
    assert.deepEqual([s.rev, s.sourceRev, s.lag().revisions], [10, 20, 10]);
    s.bootstrapping = false;
    s.caughtUp(20);
    assert.deepEqual([s.rev, s.lag().revisions], [20, 0]);
  });

  it('shard ids and names round-trip; membership comes first', () => {
    assert.equal(SHARDS[0], 'nodes');
    assert.deepEqual(SHARDS.map((n) => shardName(shardId(n))), [...SHARDS]);
    assert.deepEqual(SHARDS.map(shardId), [0, 1, 2, 3, 4, 5]);
    assert.equal(shardName(SHARDS.length), undefined);
  });
});

// ---------------------------------------------------------------------------- codecs

describe('kv-codec', () => {
  const sample: KvOp[] = [
    set('a/b', 'value'),
    del('gone'),
    set('', EMPTY),
    set('é/日本/😀', Buffer.from([0, 255, 1, 254])),
    set('$share/g/a/#', Buffer.alloc(70_000, 7)),
    set('n1\u0000inc\u0000x/+', EMPTY),
  ];

  it('round-trips keys (UTF-8, empty, NUL-separated) and values (empty, binary, large, deleted)', () => {
    const b = encodeOps(sample);
    assert.equal(b.length, opsByteLength(sample));
    const back = decodeOps(b);
    assert.equal(back.length, sample.length);
    for (let i = 0; i < sample.length; i++) {
      assert.equal(back[i]!.k, sample[i]!.k);
      if (sample[i]!.v === null) assert.equal(back[i]!.v, null);
      else assert.ok(back[i]!.v!.equals(sample[i]!.v!), `value ${i}`);
    }
    assert.deepEqual(decodeOps(encodeOps([])), []);
    // Empty values share one buffer; non-empty ones are copies, not views of the frame.
    const frame = encodeOps([set('x', EMPTY), set('y', EMPTY), set('z', Buffer.from('abc'))]);
    const got = decodeOps(frame);
    assert.equal(got[0]!.v, got[1]!.v);
    assert.equal(got[0]!.v!.length, 0);
    frame.fill(0);
    assert.equal(got[2]!.v!.toString(), 'abc');
    assert.deepEqual([...encodeOps([])], [0, 0, 0, 0]);
  });

  it('writes the documented layout: u32 count, u32 keyLen, key, i32 valueLen (-1 = delete), value', () => {
    const b = encodeOps([set('é', 'xy'), del('k')]);
    assert.deepEqual([...b], [0, 0, 0, 2, 0, 0, 0, 2, 0xc3, 0xa9, 0, 0, 0, 2, 0x78, 0x79, 0, 0, 0, 1, 0x6b, 0xff, 0xff, 0xff, 0xff]);
  });

  it('writeOps/readOps work at an offset inside a larger buffer', () => {
    const out = Buffer.alloc(3 + opsByteLength(sample) + 2, 0xee);
    const end = writeOps(out, 3, sample);
    assert.equal(end, 3 + opsByteLength(sample));
    const { ops, end: rend } = readOps(out, 3);
    assert.equal(rend, end);
    assert.deepEqual(view(ops.slice(0, 4)), view(sample.slice(0, 4)));
    assert.deepEqual([out[end], out[end + 1]], [0xee, 0xee], 'nothing written past the end');
  });

  it('decoded values are copies', () => {
    const b = encodeOps([set('k', 'abc')]);
    const [op] = decodeOps(b);
    b.fill(0);
    assert.equal(op!.v!.toString(), 'abc');
  });

  it('every truncation is rejected with KvCodecError', () => {
    const b = encodeOps(sample.slice(0, 4));
    for (let n = 0; n < b.length; n++) {
      assert.throws(() => decodeOps(b.subarray(0, n)), KvCodecError, `truncated to ${n}`);
    }
  });

  it('trailing bytes, a bad value length and an impossible count are rejected', () => {
    const b = encodeOps([set('k', 'v')]);
    const kvError = (re: RegExp) => (e: unknown): boolean => e instanceof KvCodecError && re.test(e.message);
    assert.throws(() => decodeOps(Buffer.concat([b, Buffer.from([0])])), kvError(/1 bytes after the last op/));
    const bad = Buffer.from(b);
    bad.writeInt32BE(-2, 4 + 4 + 1); // count, key length, 'k', then the value length
    assert.throws(() => decodeOps(bad), kvError(/bad value length -2/));
    const huge = Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    assert.throws(() => decodeOps(huge), (e: unknown) => e instanceof KvCodecError && e.code === 'CLUSTER_BAD_KV' && /count 4294967295 does not fit/.test(e.message));
  });

  it('seeded random garbage never escapes as anything but KvCodecError', () => {
    const rnd = prng(0xc0dec);
    let decoded = 0;
    for (let i = 0; i < 3000; i++) {
      const len = Math.floor(rnd() * 40);
      const g = Buffer.alloc(len);
      for (let j = 0; j < len; j++) g[j] = rnd() < 0.5 ? 0 : Math.floor(rnd() * 256);
      try {
        decodeOps(g);
        decoded++;
      } catch (e) {
        assert.ok(e instanceof KvCodecError, `input ${g.toString('hex')}: ${String(e)}`);
      }
    }
    assert.ok(decoded > 0, 'some inputs were valid');
  });
});

describe('retained-codec', () => {
  const full: Message = {
    topic: 'sensors/é/1', payload: Buffer.from([0, 1, 2, 255]), qos: 1, retain: true, from: 'client-7', expiresAt: 1_900_000_000_123,
    props: {
      payloadFormatIndicator: true, contentType: 'application/json', responseTopic: 'reply/to',
      correlationData: Buffer.from([9, 8, 0, 7]), userProperties: [['k', 'v1'], ['k', 'v2'], ['é', '日本']],
    },
  };

  it('round-trips a message with every property, and its origin', () => {
    const b = encodeRetained(full, { node: 'n1', seq: 42 });
    const { msg, origin } = decodeRetained(full.topic, b);
    assert.deepEqual(origin, { node: 'n1', seq: 42 });
    assert.deepEqual(msg, full);
    assert.ok(Buffer.isBuffer(msg.props!.correlationData));
  });

  it('round-trips a bare message: no props, QoS 0, empty sender, no expiry, empty payload', () => {
    const bare: Message = { topic: 't', payload: EMPTY, qos: 0, retain: true, from: '', props: undefined, expiresAt: 0 };
    const { msg, origin } = decodeRetained('t', encodeRetained(bare, { node: '', seq: 0 }));
    assert.deepEqual(msg, bare);
    assert.deepEqual(origin, { node: '', seq: 0 });
    const withEmptyProps = decodeRetained('t', encodeRetained({ ...bare, props: {} }, { node: 'n', seq: 1 })).msg;
    assert.deepEqual(withEmptyProps.props, {});
  });

  it('the decoded payload is a copy; the topic is the key given', () => {
    const b = encodeRetained({ ...full, payload: B('payload') }, { node: 'n', seq: 1 });
    const { msg } = decodeRetained('other/topic', b);
    b.fill(0x20);
    assert.equal(msg.payload.toString(), 'payload');
    assert.equal(msg.topic, 'other/topic');
    assert.equal(msg.retain, true);
  });

  it('a malformed value throws (empty, truncated header, bad JSON) instead of decoding garbage', () => {
    const good = encodeRetained(full, { node: 'n', seq: 1 });
    assert.throws(() => decodeRetained('t', EMPTY), RangeError);
    assert.throws(() => decodeRetained('t', good.subarray(0, 20)), SyntaxError);
    const badJson = Buffer.concat([Buffer.from([0, 0, 0, 3]), B('{x}')]);
    assert.throws(() => decodeRetained('t', badJson), SyntaxError);
  });
});

describe('transfer-codec', () => {
  const transfer: SessionTransfer = {
    expiryInterval: 3600,
    subscriptions: [
      { clientId: 'c', key: 'a/+', filter: 'a/+', group: null, qos: 1, noLocal: false, retainAsPublished: true, retainHandling: 0, subscriptionId: 5 },
      { clientId: 'c', key: '$share/g/b/#', filter: 'b/#', group: 'g', qos: 2, noLocal: true, retainAsPublished: false, retainHandling: 2, subscriptionId: 9 },
    ],
    queue: [{
      msg: { topic: 'a/1', payload: Buffer.from([1, 2, 3]), qos: 1, retain: false, from: 'p', expiresAt: 0, props: { correlationData: Buffer.from('corr'), userProperties: [['x', 'y']] } },
      qos: 1, retain: false, subIds: [5], shared: { group: 'g', filter: 'b/#' },
    }],
    inflight: [[7, {
      msg: { topic: 'a/2', payload: Buffer.alloc(0), qos: 2, retain: true, from: '', expiresAt: 123, props: { contentType: 'text/plain' } },
      qos: 2, retain: true, subIds: [1, 2], shared: { group: 'h', filter: 'z' },
    }, 'pubrel']],
    inboundQos2: [3, 65535],
    nextId: 8,
  };

  it('round-trips a session with Buffers (as base64) and null', () => {
    const b = encodeTransfer(transfer);
    assert.ok(b.toString().includes('"$b64":"AQID"'), 'payload as base64');
    const back = decodeTransfer(b)!;
    assert.deepEqual(back, transfer);
    assert.ok(Buffer.isBuffer(back.queue[0]!.msg.payload));
    assert.ok(Buffer.isBuffer(back.queue[0]!.msg.props!.correlationData));
    assert.ok(Buffer.isBuffer(back.inflight[0]![1].msg.payload));
    assert.equal(decodeTransfer(encodeTransfer(null)), null);
  });

  it('a Uint8Array (a Buffer after structured clone) comes back as a Buffer', () => {
    const u8 = new Uint8Array([5, 6, 7]);
    const t = { ...transfer, queue: [{ ...transfer.queue[0]!, msg: { ...transfer.queue[0]!.msg, payload: u8 as unknown as Buffer } }] };
    const back = decodeTransfer(encodeTransfer(t))!;
    assert.ok(Buffer.isBuffer(back.queue[0]!.msg.payload));
    assert.deepEqual([...back.queue[0]!.msg.payload], [5, 6, 7]);
  });

  it('undefined fields are left out (they read back as undefined); bad JSON throws', () => {
    const q = transfer.queue[0]!;
    const t: SessionTransfer = { ...transfer, queue: [{ ...q, subIds: undefined, shared: undefined, msg: { ...q.msg, props: undefined } }] };
    const back = decodeTransfer(encodeTransfer(t))!;
    assert.equal(back.queue[0]!.subIds, undefined);
    assert.equal(back.queue[0]!.shared, undefined);
    assert.equal(back.queue[0]!.msg.props, undefined);
    assert.throws(() => decodeTransfer(B('{"expiryInterval":')), SyntaxError);
  });
});

describe('rlog protocol', () => {
  it('frame types are application types, distinct, and apart from the forward channel', () => {
    const frames = [F_SNAP_BEGIN, F_SNAP_DATA, F_SNAP_END, F_CHANGE, F_PROGRESS];
    assert.equal(new Set(frames).size, frames.length);
    for (const f of frames) assert.ok(f >= FIRST_APP_TYPE && f <= 255, `frame type ${f}`);
    assert.ok(!frames.includes(F_MSG) && !frames.includes(F_ACK));
    const kinds = [R_SUBSCRIBE, R_ROUTES, R_CLAIM, R_RELEASE, R_KV, R_STATUS, R_JOIN_ETCD, R_FORCE_LEAVE, R_LEAVE];
    assert.equal(new Set(kinds).size, kinds.length);
    for (const k of kinds) assert.ok(Number.isInteger(k) && k > 0 && k <= 0xffff);
  });

  it('CHANGE: u8 shard, f64 rev, f64 ts, kv ops, as the replicant reads it', () => {
    const c: ShardChange = { rev: 2 ** 53 - 1, ts: 1_700_000_000_000.5, ops: [set('a', 'x'), del('b')] };
    const b = encodeChange(shardId('retained'), c);
    assert.equal(b[0], shardId('retained'));
    assert.equal(b.readDoubleBE(1), 2 ** 53 - 1);
    assert.equal(b.readDoubleBE(9), 1_700_000_000_000.5);
    const { ops, end } = readOps(b, 17);
    assert.equal(end, b.length);
    assert.deepEqual(view(ops), [['a', 'x'], ['b', null]]);
  });

  it('f64 and json helpers round-trip', () => {
    for (const n of [0, 1, -1, 2 ** 53 - 1, 0.25]) assert.equal(f64(n).readDoubleBE(0), n);
    assert.equal(f64(5).length, 8);
    const o = { lease: '7fa', shards: { nodes: 12, routes: null }, s: 'é' };
    assert.deepEqual(parseJson(json(o)), o);
    assert.throws(() => parseJson(B('{')), SyntaxError);
  });
});

// ---------------------------------------------------------------------------- keys

describe('keys', () => {
  const routes = shardPrefix('c1', 'routes');
  const rest = (k: string): string => {
    assert.ok(k.startsWith(routes), k);
    return k.slice(routes.length);
  };

  it('builds every key under /fleetmq/<cluster>/', () => {
    assert.equal(clusterPrefix('c1'), '/fleetmq/c1/');
    assert.equal(shardPrefix('c1', 'sessions'), '/fleetmq/c1/sessions/');
    assert.equal(liveKey('c1', 'n1'), '/fleetmq/c1/nodes/live/n1');
    assert.equal(memberKey('c1', 'n1'), '/fleetmq/c1/nodes/member/n1');
    assert.equal(routeAliveKey('c1', 'n1', 'i1'), '/fleetmq/c1/routes/n1/i1/alive');
    assert.equal(routeLogKey('c1', 'n1', 'i1', 255), '/fleetmq/c1/routes/n1/i1/l/00000000000000ff');
    assert.equal(routeBaseKey('c1', 'n1', 'i1', 16, 10), '/fleetmq/c1/routes/n1/i1/b/0000000000000010/00000a');
    assert.equal(routeBaseKey('c1', 'n1', 'i1', 16, 'end'), '/fleetmq/c1/routes/n1/i1/b/0000000000000010/end');
    assert.ok(routeLogKey('c1', 'n1', 'i1', 3).startsWith(incPrefix('c1', 'n1', 'i1')));
    assert.equal(tickKey('c1', 'auth', 'core-1'), `/fleetmq/c1/auth/${TICK}core-1`);
    assert.ok(TICK.startsWith('\u0000'), 'a tick key cannot be a client id, topic or config key');
  });

  it('sequence keys sort as their numbers do', () => {
    const seqs = [0, 1, 9, 10, 15, 16, 255, 4096, 2 ** 40, Number.MAX_SAFE_INTEGER];
    const keys = seqs.map(seqKey);
    assert.ok(keys.every((k) => k.length === 16));
    assert.deepEqual([...keys].sort(), keys);
  });

  it('parseRouteKey() reads back what the builders write', () => {
    assert.deepEqual(parseRouteKey(rest(routeAliveKey('c1', 'n1', 'i1'))), { kind: 'alive', node: 'n1', inc: 'i1' });
    assert.deepEqual(parseRouteKey(rest(routeLogKey('c1', 'n1', 'i1', 0x1234))), { kind: 'log', node: 'n1', inc: 'i1', seq: 0x1234 });
    assert.deepEqual(parseRouteKey(rest(routeLogKey('c1', 'n', 'i', Number.MAX_SAFE_INTEGER))), { kind: 'log', node: 'n', inc: 'i', seq: Number.MAX_SAFE_INTEGER });
    assert.deepEqual(parseRouteKey(rest(routeBaseKey('c1', 'n1', 'i1', 7, 0x2f))), { kind: 'base', node: 'n1', inc: 'i1', seq: 7, chunk: 0x2f });
    assert.deepEqual(parseRouteKey(rest(routeBaseKey('c1', 'n1', 'i1', 7, 'end'))), { kind: 'base', node: 'n1', inc: 'i1', seq: 7, chunk: 'end' });
  });

  it('parseRouteKey() returns null for keys that are not ours', () => {
    for (const k of ['', 'n1', 'n1/i1', '/i1/alive', 'n1//alive', 'n1/i1/', 'n1/i1/other', 'n1/i1/l/', 'n1/i1/l/zz',
      'n1/i1/l/' + 'f'.repeat(16), 'n1/i1/b/', 'n1/i1/b/0001', 'n1/i1/b/0001/xyz', 'n1/i1/b/zz/end', 'n1/i1/alive2']) {
      assert.equal(parseRouteKey(k), null, JSON.stringify(k));
    }
  });

  it('route shard keys split back into node, incarnation and route', () => {
    for (const route of ['a/b', '$share/g/a/+', '#', '', '/a//b/']) {
      const k = routeShardKey('n1', 'inc-7', route);
      assert.deepEqual(splitRouteShardKey(k), { node: 'n1', inc: 'inc-7', route });
    }
    assert.equal(splitRouteShardKey('no separators'), null);
    assert.equal(splitRouteShardKey('one\u0000separator'), null);
  });
});

// ---------------------------------------------------------------------------- etcd decoders

describe('etcd decoders', () => {
  const put = (key: string, value: Buffer | string, rev = 1): EtcdEvent => ({ type: 'put', key, value: typeof value === 'string' ? B(value) : value, rev });
  const gone = (key: string, rev = 1): EtcdEvent => ({ type: 'delete', key, value: EMPTY, rev });

  it('PlainDecoder: one etcd key is one shard key', () => {
    const d = new PlainDecoder();
    assert.deepEqual(mapView(d.snapshot([put('a', '1'), put('b', '2')])), { a: '1', b: '2' });
    assert.deepEqual(view(d.events([put('a', '3', 5), gone('b', 5)])), [['a', '3'], ['b', null]]);
  });

  it('SessionsDecoder: the owner plus its epoch (the key\'s mod revision)', () => {
    const d = new SessionsDecoder();
    const owner = JSON.stringify({ node: 'n1', inc: 'i1', persistent: true });
    const snap = d.snapshot([put('client-1', owner, 17)]);
    assert.deepEqual(JSON.parse(snap.get('client-1')!.toString()), { node: 'n1', inc: 'i1', persistent: true, epoch: 17 });
    const ops = d.events([put('client-1', JSON.stringify({ node: 'n2', inc: 'i2', persistent: false, epoch: 3 }), 30), gone('client-2', 30)]);
    assert.deepEqual(JSON.parse(ops[0]!.v!.toString()), { node: 'n2', inc: 'i2', persistent: false, epoch: 30 }, 'the revision wins over a stored epoch');
    assert.deepEqual(ops[1], { k: 'client-2', v: null });
  });

  it('SessionsDecoder: a malformed owner becomes an ownerless entry, not a crash', () => {
    const d = new SessionsDecoder();
    const [op] = d.events([put('c', 'not json', 9)]);
    assert.deepEqual(JSON.parse(op!.v!.toString()), { node: '', inc: '', persistent: false, epoch: 9 });
  });

  describe('RoutesDecoder', () => {
    const C = 'c1';
    const k = (full: string): string => full.slice(shardPrefix(C, 'routes').length);
    const alive = (node: string, inc: string): string => k(routeAliveKey(C, node, inc));
    const log = (node: string, inc: string, seq: number): string => k(routeLogKey(C, node, inc, seq));
    const base = (node: string, inc: string, seq: number, chunk: number | 'end'): string => k(routeBaseKey(C, node, inc, seq, chunk));
    const adds = (...rs: string[]): Buffer => encodeOps(rs.map((r) => ({ k: r, v: EMPTY })));
    const ops = (...o: KvOp[]): Buffer => encodeOps(o);
    const routesIn = (m: ReadonlyMap<string, Buffer>): string[] => [...m.keys()].map((x) => {
      const p = splitRouteShardKey(x)!;
      return `${p.node}/${p.inc}:${p.route}`;
    }).sort();

    it('snapshot: replays each live incarnation\'s log in seq order (not key order)', () => {
      const d = new RoutesDecoder();
      const snap = d.snapshot([
        put(alive('n1', 'i1'), ''),
        put(log('n1', 'i1', 0x10), ops(del('a'), set('c', EMPTY))),
        put(log('n1', 'i1', 0x9), adds('a', 'b')),
        put(log('n1', 'i1', 0x11), adds('d')),
      ]);
      assert.deepEqual(routesIn(snap), ['n1/i1:b', 'n1/i1:c', 'n1/i1:d']);
      assert.ok([...snap.values()].every((v) => v.length === 0));
      assert.deepEqual([...d.routesOf('n1', 'i1')!].sort(), ['b', 'c', 'd']);
    });

    it('snapshot: an incarnation without its alive key is left out; tick-like and foreign keys are skipped', () => {
      const d = new RoutesDecoder();
      const snap = d.snapshot([
        put(log('n1', 'dead', 1), adds('x')),
        put(alive('n2', 'i2'), ''),
        put(log('n2', 'i2', 1), adds('y')),
        put('garbage', 'zz'),
        put(`${TICK}core`, '{}'),
      ]);
      assert.deepEqual(routesIn(snap), ['n2/i2:y']);
      assert.equal(d.routesOf('n1', 'dead'), undefined);
    });

    it('snapshot: the newest complete base, then only the entries after it', () => {
      const d = new RoutesDecoder();
      const snap = d.snapshot([
        put(alive('n1', 'i1'), ''),
        // Complete bases at 4 and 6, an incomplete one at 9 (no end key): 6 counts.
        put(base('n1', 'i1', 4, 0), adds('old-base')),
        put(base('n1', 'i1', 4, 'end'), ''),
        put(base('n1', 'i1', 6, 1), adds('b2')),
        put(base('n1', 'i1', 6, 0), adds('b1')),
        put(base('n1', 'i1', 6, 'end'), ''),
        put(base('n1', 'i1', 9, 0), adds('incomplete')),
        put(log('n1', 'i1', 5), adds('before-base')),
        put(log('n1', 'i1', 6), adds('at-base')),
        put(log('n1', 'i1', 7), ops(del('b1'), set('after', EMPTY))),
      ]);
      assert.deepEqual(routesIn(snap), ['n1/i1:after', 'n1/i1:b2']);
    });

    it('events: new routes and removed ones become shard ops; repeats become none', () => {
      const d = new RoutesDecoder();
      d.snapshot([put(alive('n1', 'i1'), ''), put(log('n1', 'i1', 1), adds('a'))]);
      const o1 = d.events([put(log('n1', 'i1', 2), ops(set('a', EMPTY), set('b', EMPTY), del('zz'), del('a')), 50)]);
      assert.deepEqual(o1.map((o) => [splitRouteShardKey(o.k)!.route, o.v === null ? 'del' : 'set']), [['b', 'set'], ['a', 'del']]);
      assert.deepEqual([...d.routesOf('n1', 'i1')!], ['b']);
      // Bases and deleted entries are compaction: no ops.
      assert.deepEqual(d.events([put(base('n1', 'i1', 2, 0), adds('b')), put(base('n1', 'i1', 2, 'end'), ''), gone(log('n1', 'i1', 1))]), []);
    });

    it('events: the alive key going takes every route of its incarnation with it', () => {
      const d = new RoutesDecoder();
      d.snapshot([]);
      assert.deepEqual(d.events([put(alive('n3', 'i3'), '', 60)]), []);
      const added = d.events([put(log('n3', 'i3', 1), adds('x', 'y'), 61), put(log('n4', 'i4', 1), adds('other'), 61)]);
      assert.equal(added.length, 3);
      const removed = d.events([gone(alive('n3', 'i3'), 70)]);
      assert.deepEqual(removed.map((o) => [o.k, o.v]).sort(), [[routeShardKey('n3', 'i3', 'x'), null], [routeShardKey('n3', 'i3', 'y'), null]]);
      assert.equal(d.routesOf('n3', 'i3'), undefined);
      assert.deepEqual([...d.routesOf('n4', 'i4')!], ['other']);
      assert.deepEqual(d.events([gone(alive('n3', 'i3'), 71)]), [], 'a second delete removes nothing');
    });

    it('a corrupt log entry is rejected with KvCodecError', () => {
      const d = new RoutesDecoder();
      assert.throws(() => d.snapshot([put(alive('n', 'i'), ''), put(log('n', 'i', 1), B('junk'))]), KvCodecError);
      assert.throws(() => d.events([put(log('n', 'i', 2), Buffer.from([0, 0, 0, 1]))]), KvCodecError);
    });

    it('through a ShardState: the shard holds exactly the routes the logs say', () => {
      const d = new RoutesDecoder();
      const shard = new ShardState('routes');
      shard.reset(d.snapshot([put(alive('n1', 'i1'), ''), put(log('n1', 'i1', 1), adds('a', 'b'))]), 10);
      const evs = [put(log('n1', 'i1', 2), ops(del('a'), set('c', EMPTY)), 11)];
      shard.apply({ rev: 11, ts: 0, ops: d.events(evs) });
      shard.apply({ rev: 12, ts: 0, ops: d.events([put(alive('n2', 'i2'), '', 12), put(log('n2', 'i2', 1), adds('a'), 12)]) });
      assert.deepEqual(routesIn(shard.data), ['n1/i1:b', 'n1/i1:c', 'n2/i2:a']);
      shard.apply({ rev: 13, ts: 0, ops: d.events([gone(alive('n1', 'i1'), 13)]) });
      assert.deepEqual(routesIn(shard.data), ['n2/i2:a']);
    });
  });
});

// ---------------------------------------------------------------------------- node sets

describe('node sets', () => {
  const slotsOf = (words: Int32Array, id: number): number[] => {
    const acc = new Int32Array(SET_WORDS);
    orNodeSet(words, id, acc);
    const out: number[] = [];
    forEachSlot(acc, (s) => out.push(s));
    return out;
  };
  const fresh = (): { w: NodeSetWriter; words: Int32Array } => {
    const sab = new SharedArrayBuffer(nodeSetsBytes());
    return { w: new NodeSetWriter(sab), words: new Int32Array(sab) };
  };

  it('the empty set is id 0; a set is interned whatever the order of its slots', () => {
    const { w, words } = fresh();
    assert.equal(w.acquire([]), 0);
    const a = w.acquire([3, 1, 200]);
    const b = w.acquire([200, 3, 1]);
    assert.ok(a !== 0);
    assert.equal(a, b);
    assert.notEqual(w.acquire([1, 3]), a);
    assert.equal(w.size, 2);
    assert.deepEqual(slotsOf(words, a), [1, 3, 200]);
    assert.deepEqual(slotsOf(words, 0), []);
  });

  it('every slot, including word edges and the sign bit, reads back', () => {
    const { w, words } = fresh();
    const edge = [0, 31, 32, 63, 64, 127, 128, 254, MAX_NODES - 1];
    assert.deepEqual(slotsOf(words, w.acquire(edge)), edge);
    for (const s of edge) assert.deepEqual(slotsOf(words, w.acquire([s])), [s], `single slot ${s}`);
    assert.throws(() => w.acquire([MAX_NODES]), RangeError);
    assert.throws(() => w.acquire([2, -1]), RangeError);
  });

  it('orNodeSet accumulates several sets', () => {
    const { w, words } = fresh();
    const acc = new Int32Array(SET_WORDS);
    orNodeSet(words, w.acquire([1, 40]), acc);
    orNodeSet(words, w.acquire([40, 255]), acc);
    const out: number[] = [];
    forEachSlot(acc, (s) => out.push(s));
    assert.deepEqual(out, [1, 40, 255]);
  });

  it('a set lives while referenced; a freed id is quarantined before reuse, its words kept', () => {
    const { w, words } = fresh();
    const id = w.acquire([5, 6]);
    w.acquire([6, 5]);
    w.release(id);
    assert.equal(w.acquire([5, 6]), id, 'still referenced once: same id');
    w.release(id);
    w.release(id);
    assert.equal(w.size, 0);
    assert.deepEqual(slotsOf(words, id), [5, 6], 'a reader that loaded the id still reads the old set');
    const next = w.acquire([7]);
    assert.notEqual(next, id, 'not reused within the quarantine');
    const again = w.acquire([5, 6]);
    assert.notEqual(again, id, 'the same set gets a fresh id too');
    const reused = withClock(2_500, () => w.acquire([8, 9]));
    assert.equal(reused, id, 'reused once the quarantine is over');
    assert.deepEqual(slotsOf(words, reused), [8, 9], 'with its words rewritten');
  });

  it('single-slot sets: shared while held, forgotten once released', () => {
    const { w, words } = fresh();
    const a = w.acquire([9]);
    assert.equal(w.acquire([9]), a);
    w.release(a);
    w.release(a);
    const b = w.acquire([9]);
    assert.notEqual(b, a, 'a released single set is not handed out again from the shortcut');
    assert.deepEqual(slotsOf(words, b), [9]);
    assert.equal(w.acquire([9]), b);
    assert.equal(w.size, 1);
  });

  it('running out of ids is a RangeError', () => {
    const { w } = fresh();
    let n = 0;
    for (let i = 0; i < MAX_NODES && n < MAX_SETS - 1; i++) {
      for (let j = i; j < MAX_NODES && n < MAX_SETS - 1; j++, n++) w.acquire(i === j ? [i] : [i, j]);
    }
    assert.equal(w.size, MAX_SETS - 1);
    assert.throws(() => w.acquire([254, 255, 0]), /more than 32767 distinct sets of nodes/);
  });

  it('a slot out of range costs no set id', () => {
    const { w } = fresh();
    const first = w.acquire([1, 2]);
    assert.throws(() => w.acquire([3, MAX_NODES]), RangeError);
    assert.equal(w.acquire([1, 4]), first + 1, 'the failed acquire used an id up');
  });

  it('groups: set, read, tell apart two groups on one route id, clear', () => {
    const t = new Int32Array(new SharedArrayBuffer(groupRemoteBytes()));
    const g = new GroupRemoteWriter(t.buffer as SharedArrayBuffer);
    assert.equal(groupRemoteSet(t, 12345, 'g1'), 0);
    assert.equal(g.set(12345, 'g1', 7), true);
    assert.equal(g.set(12345, 'g2', 8), true);
    assert.equal(g.set(12346, 'g1', 9), true, 'the next route id, which probes into the same run');
    assert.deepEqual([groupRemoteSet(t, 12345, 'g1'), groupRemoteSet(t, 12345, 'g2'), groupRemoteSet(t, 12346, 'g1'), groupRemoteSet(t, 12345, 'g3')], [7, 8, 9, 0]);
    g.set(12345, 'g1', 11);
    assert.equal(groupRemoteSet(t, 12345, 'g1'), 11);
    g.set(12345, 'g1', 0);
    assert.equal(groupRemoteSet(t, 12345, 'g1'), 0);
    assert.equal(groupRemoteSet(t, 12345, 'g2'), 8, 'clearing one group leaves the other');
    assert.equal(g.set(999, 'never', 0), true);
    assert.equal(groupRemoteSet(t, 999, 'never'), 0);
    const hi = 0x7fffffff;
    g.set(hi, 'top', 3);
    assert.equal(groupRemoteSet(t, hi, 'top'), 3, 'the largest route id');
    assert.equal(g.full, false);
  });

  it('groups: a full probe run says so', () => {
    const t = new Int32Array(new SharedArrayBuffer(groupRemoteBytes()));
    const g = new GroupRemoteWriter(t.buffer as SharedArrayBuffer);
    const route = GROUP_ENTRIES * 3 + 17; // any route id; its run starts at entry 17
    let ok = 0;
    for (let i = 0; i < 200 && g.set(route, `g${i}`, i + 1); i++) ok++;
    assert.equal(ok, 128);
    assert.equal(g.full, true);
    assert.equal(groupRemoteSet(t, route, 'g0'), 1);
    assert.equal(groupRemoteSet(t, route, 'g127'), 128);
    assert.equal(groupRemoteSet(t, route, 'g128'), 0);
  });
});

// ---------------------------------------------------------------------------- node routes

describe('NodeRoutes', () => {
  interface Harness {
    nr: NodeRoutes;
    writes: { seq: number; ops: [string, string | null][] }[];
    commits: [number, number][];
    after: number[];
    /** Pending writes: resolve them by hand (gate = true). */
    release(): void;
  }

  function harness(o: { workers?: number; gate?: boolean; firstSeq?: number } = {}): Harness {
    const writes: Harness['writes'] = [];
    const commits: [number, number][] = [];
    const after: number[] = [];
    let pending: (() => void)[] = [];
    const nr = new NodeRoutes(o.workers ?? 2, (seq, ops) => {
      writes.push({ seq, ops: ops.map((op) => [op.k, op.v === null ? null : op.v.toString('hex')]) });
      if (!o.gate) return Promise.resolve();
      return new Promise<void>((r) => pending.push(r));
    }, 3, (w, seq) => commits.push([w, seq]), (seq) => after.push(seq), o.firstSeq);
    return {
      nr, writes, commits, after,
      release() {
        for (const r of pending.splice(0)) r();
        pending = [];
      },
    };
  }

  it('a first reference is written in the next batch; the op commits once it is', async () => {
    const h = harness();
    h.nr.change(0, 1, 'a/b', 1);
    assert.deepEqual(h.commits, [], 'waits for the batch');
    assert.equal(h.nr.committed(0), 0);
    await waitFor(() => h.commits.length === 1, 'the commit');
    assert.deepEqual(h.writes, [{ seq: 1, ops: [['a/b', '']] }], 'a set with an empty value');
    assert.deepEqual(h.commits, [[0, 1]]);
    assert.deepEqual(h.after, [1]);
    assert.deepEqual([h.nr.committed(0), h.nr.lastSeq, h.nr.size, h.nr.batchesWritten, h.nr.opsWritten], [1, 1, 1, 1, 1]);
    assert.deepEqual([...h.nr.sent], ['a/b']);
  });

  it('a key another worker already holds needs no write: the op commits at once', async () => {
    const h = harness();
    h.nr.change(0, 1, 'k', 1);
    await waitFor(() => h.commits.length === 1, 'first commit');
    h.nr.change(1, 1, 'k', 1);
    assert.deepEqual(h.commits, [[0, 1], [1, 1]], 'synchronously');
    h.nr.change(0, 2, 'k', -1);
    assert.deepEqual(h.commits.at(-1), [0, 2]);
    await sleep(15);
    assert.equal(h.writes.length, 1, 'the key stayed in the cluster: nothing to write');
    h.nr.change(1, 2, 'k', -1);
    await waitFor(() => h.commits.length === 4, 'the removal');
    assert.deepEqual(h.writes[1], { seq: 2, ops: [['k', null]] });
    assert.deepEqual(h.commits.at(-1), [1, 2]);
    assert.equal(h.nr.size, 0);
  });

  it('an op on a key whose batch is on its way waits for that batch', async () => {
    const h = harness();
    h.nr.change(0, 1, 'k', 1);
    h.nr.change(1, 7, 'k', 1); // held by worker 0 already, but not in the cluster yet
    assert.deepEqual(h.commits, []);
    await waitFor(() => h.commits.length === 2, 'both commits');
    assert.deepEqual(h.writes, [{ seq: 1, ops: [['k', '']] }]);
    assert.deepEqual(h.commits.sort(), [[0, 1], [1, 7]]);
  });

  it('added and removed within one batch window: nothing written, both ops commit', async () => {
    const h = harness();
    h.nr.change(0, 1, 'flap', 1);
    h.nr.change(0, 2, 'flap', -1);
    await waitFor(() => h.commits.length > 0, 'the commit');
    await sleep(10);
    assert.deepEqual(h.writes, []);
    assert.deepEqual(h.commits, [[0, 2]], 'the highest op seq of the worker');
    assert.equal(h.nr.lastSeq, 0);
  });

  it('a worker\'s ops commit in order: one that needs nothing waits behind one that does', async () => {
    const h = harness({ gate: true });
    h.nr.change(0, 1, 'x', 1);
    h.nr.change(0, 2, null, 0);
    h.nr.change(1, 1, null, 0);
    assert.deepEqual(h.commits, [[1, 1]], 'worker 1 had nothing pending');
    await waitFor(() => h.writes.length === 1, 'the write');
    await sleep(10);
    assert.deepEqual(h.commits, [[1, 1]], 'worker 0 waits for its write');
    h.release();
    await waitFor(() => h.commits.length === 2, 'worker 0');
    assert.deepEqual(h.commits[1], [0, 2]);
  });

  it('one entry in flight at a time: changes meanwhile go in the next one, in order', async () => {
    const h = harness({ gate: true });
    h.nr.change(0, 1, 'k1', 1);
    await waitFor(() => h.writes.length === 1, 'first write');
    h.nr.change(0, 2, 'k2', 1);
    h.nr.change(1, 1, 'k1', 1); // rides on the write in flight
    await sleep(15);
    assert.equal(h.writes.length, 1, 'no second write while the first is in flight');
    assert.deepEqual(h.commits, []);
    h.release();
    await waitFor(() => h.writes.length === 2, 'second write');
    assert.deepEqual(h.commits.sort(), [[0, 1], [1, 1]]);
    assert.deepEqual(h.writes[1], { seq: 2, ops: [['k2', '']] });
    h.release();
    await waitFor(() => h.commits.length === 3, 'second commit');
    assert.deepEqual(h.commits[2], [0, 2]);
    assert.deepEqual(h.after, [1, 2]);
  });

  it(`more than ${MAX_BATCH_OPS} changes go in several entries; the ops commit after the last`, async () => {
    const h = harness({ gate: true });
    const n = MAX_BATCH_OPS + 5;
    for (let i = 1; i <= n; i++) h.nr.change(0, i, `t/${i}`, 1);
    await waitFor(() => h.writes.length === 1, 'first entry');
    assert.equal(h.writes[0]!.ops.length, MAX_BATCH_OPS);
    h.release();
    await waitFor(() => h.writes.length === 2, 'second entry');
    assert.deepEqual(h.commits, [], 'not before the whole round is written');
    assert.deepEqual([h.writes[1]!.seq, h.writes[1]!.ops.length], [2, 5]);
    h.release();
    await waitFor(() => h.commits.length === 1, 'the commit');
    assert.deepEqual(h.commits, [[0, n]]);
    assert.equal(new Set(h.writes.flatMap((w) => w.ops.map((o) => o[0]))).size, n, 'every key once');
  });

  it('rewriteAll(): every key held goes again, under the new writer, from firstSeq', async () => {
    const h = harness();
    h.nr.change(0, 1, 'a', 1);
    h.nr.change(1, 1, 'b', 1);
    h.nr.change(1, 2, 'b', 1);
    await waitFor(() => h.nr.committed(0) === 1 && h.nr.committed(1) === 2, 'commits');
    assert.deepEqual(h.commits.sort(), [[0, 1], [1, 2]], 'one commit per worker: its highest op seq');
    const second: { seq: number; keys: string[] }[] = [];
    h.nr.rewriteAll(async (seq, ops) => {
      second.push({ seq, keys: ops.map((o) => o.k).sort() });
    }, 1);
    await waitFor(() => second.length === 1, 'the rewrite');
    assert.deepEqual(second, [{ seq: 1, keys: ['a', 'b'] }]);
    assert.equal(h.writes.length, 1, 'the old writer is not used again');
    assert.equal(h.nr.lastSeq, 1);
  });

  it('firstSeq numbers the first entry; dropWorker() forgets a dead worker\'s ops', async () => {
    const h = harness({ firstSeq: 42, gate: true });
    assert.equal(h.nr.lastSeq, 41);
    h.nr.change(0, 1, 'a', 1);
    h.nr.change(1, 1, 'b', 1);
    await waitFor(() => h.writes.length === 1, 'the write');
    assert.equal(h.writes[0]!.seq, 42);
    h.nr.dropWorker(1);
    h.release();
    await waitFor(() => h.commits.length === 1, 'worker 0');
    await sleep(10);
    assert.deepEqual(h.commits, [[0, 1]]);
  });

  it('a failed write neither escapes as a rejection nor loses its routes', async () => {
    const written: string[] = [];
    let calls = 0;
    const commits: [number, number][] = [];
    const nr = new NodeRoutes(1, async (_seq, ops) => {
      if (++calls === 1) throw new Error('core refused the write');
      for (const op of ops) written.push(op.k);
    }, 3, (w, seq) => commits.push([w, seq]));
    // kick() starts flush() with `void`: catch here what would otherwise be an unhandled
    // rejection (fatal in the broker: src/cli/main.ts).
    const inner = nr as unknown as { flush(): Promise<void> };
    const flush = inner.flush.bind(nr);
    const escaped: unknown[] = [];
    inner.flush = () => flush().catch((e: unknown) => {
      escaped.push(e);
    });
    nr.change(0, 1, 'lost/route', 1);
    await waitFor(() => calls >= 1, 'the first write');
    await sleep(20);
    nr.change(0, 2, 'other/route', 1);
    await waitFor(() => commits.length > 0 || calls >= 3, 'a later write', 1000).catch(() => undefined);
    await sleep(20);
    assert.deepEqual(escaped.map(String), [], 'flush() rejected');
    assert.ok(written.includes('lost/route'), `the route of the failed write never reached the cluster (written: ${written.join(', ')})`);
  });
});

// ---------------------------------------------------------------------------- remote routes

describe('RemoteRoutes', () => {
  interface Target { now: Map<string, number[]>; calls: [string, number[]][] }

  function setup(self = 'me'): { m: Membership; rr: RemoteRoutes; t: Target; shard: ShardState } {
    const m = new Membership(self);
    const t: Target = { now: new Map(), calls: [] };
    const rr = new RemoteRoutes(self, (n) => m.slotOf(n), {
      setRemote(route, slots) {
        const copy = [...slots].sort((a, b) => a - b);
        t.calls.push([route, copy]);
        if (copy.length === 0) t.now.delete(route);
        else t.now.set(route, copy);
      },
    });
    const shard = new ShardState('routes');
    shard.onChange((c, before) => rr.apply(c, before));
    return { m, rr, t, shard };
  }
  const r = (node: string, inc: string, route: string): string => routeShardKey(node, inc, route);
  let rev = 0;
  const apply = (shard: ShardState, ...ops: KvOp[]): void => {
    assert.equal(shard.apply({ rev: ++rev, ts: 0, ops }), true);
  };

  it('routes of other nodes give their slots; this node\'s own are skipped', () => {
    const { m, rr, t, shard } = setup();
    apply(shard, set(r('n1', 'i', 'a/+'), EMPTY), set(r('me', 'i', 'a/+'), EMPTY), set(r('me', 'i', 'mine'), EMPTY));
    assert.deepEqual(Object.fromEntries(t.now), { 'a/+': [m.slotOf('n1')] });
    assert.deepEqual(rr.nodesOf('mine'), []);
    assert.equal(rr.routes, 1);
    assert.notEqual(m.slotOf('n1'), m.slotOf('me'));
  });

  it('several holders, then one by one they go', () => {
    const { m, rr, t, shard } = setup();
    apply(shard, set(r('n1', 'i', 'x'), EMPTY), set(r('n2', 'i', 'x'), EMPTY), set(r('n3', 'i', 'y'), EMPTY));
    const [s1, s2, s3] = ['n1', 'n2', 'n3'].map((n) => m.slotOf(n));
    assert.deepEqual(Object.fromEntries(t.now), { x: [s1, s2], y: [s3] });
    apply(shard, del(r('n1', 'i', 'x')));
    assert.deepEqual(t.now.get('x'), [s2]);
    assert.deepEqual(rr.nodesOf('x'), [s2]);
    apply(shard, del(r('n2', 'i', 'x')));
    assert.deepEqual(t.calls.at(-1), ['x', []], 'told that nobody holds it');
    assert.deepEqual([rr.nodesOf('x'), rr.routes], [[], 1]);
  });

  it('two incarnations of one node count twice', () => {
    const { m, rr, t, shard } = setup();
    apply(shard, set(r('n1', 'old', 'x'), EMPTY), set(r('n1', 'new', 'x'), EMPTY));
    assert.deepEqual(rr.nodesOf('x'), [m.slotOf('n1')]);
    apply(shard, del(r('n1', 'old', 'x')));
    assert.deepEqual(rr.nodesOf('x'), [m.slotOf('n1')], 'the new incarnation still holds it');
    assert.deepEqual(t.now.get('x'), [m.slotOf('n1')]);
    apply(shard, del(r('n1', 'new', 'x')));
    assert.deepEqual(rr.nodesOf('x'), []);
    assert.equal(t.now.has('x'), false);
  });

  it('ops that change no holder make no call; malformed keys and nodes without a slot are skipped', () => {
    const { m, rr, t, shard } = setup();
    apply(shard, set(r('n1', 'i', 'x'), EMPTY));
    const n = t.calls.length;
    apply(shard, set(r('n1', 'i', 'x'), EMPTY)); // set again
    apply(shard, del(r('n9', 'i', 'never-held')));
    apply(shard, set('no separators', EMPTY), set('one\u0000sep', EMPTY));
    assert.equal(t.calls.length, n);
    for (let i = m.live.size; i < MAX_NODES + 5; i++) m.slotOf(`filler-${i}`);
    apply(shard, set(r('one-too-many', 'i', 'z'), EMPTY));
    assert.equal(m.slotOf('one-too-many'), -1);
    assert.deepEqual(rr.nodesOf('z'), []);
    assert.equal(t.calls.length, n);
  });

  it('a snapshot announces each route once, with all its holders', () => {
    const { m, t, shard } = setup();
    shard.reset([[r('n1', 'i', 'a'), EMPTY], [r('n2', 'i', 'a'), EMPTY], [r('n2', 'i', 'b'), EMPTY], [r('me', 'i', 'c'), EMPTY]], 5);
    assert.deepEqual(t.calls.sort(), [['a', [m.slotOf('n1'), m.slotOf('n2')]], ['b', [m.slotOf('n2')]]]);
  });

  it('a bootstrap in parts (loadPart) ends with every holder, a route across parts included, and later changes apply', () => {
    const { m, rr, t, shard } = setup();
    shard.bootstrapping = true;
    shard.loadPart([set(r('n1', 'i', 'a'), EMPTY), set(r('n1', 'i', 'b'), EMPTY), set(r('me', 'i', 'a'), EMPTY)]);
    assert.deepEqual(Object.fromEntries(t.now), { a: [m.slotOf('n1')], b: [m.slotOf('n1')] }, 'written as the first part arrives');
    shard.loadPart([set(r('n2', 'i', 'a'), EMPTY), set(r('n1', 'i', 'a'), EMPTY), del(r('n3', 'i', 'x'))]);
    shard.bootstrapping = false;
    shard.loadedAt(7);
    assert.deepEqual(t.now.get('a'), [m.slotOf('n1'), m.slotOf('n2')], 'the second part adds its holder; a key sent twice counts once');
    // Each call only grows the holders of its route: a reader never sees a route vanish.
    const seenA = t.calls.filter(([k]) => k === 'a').map(([, v]) => v.length);
    assert.deepEqual(seenA, [1, 2]);
    assert.equal(shard.rev, 7);
    apply(shard, del(r('n1', 'i', 'a')));
    assert.deepEqual(t.now.get('a'), [m.slotOf('n2')]);
    assert.deepEqual(rr.nodesOf('b'), [m.slotOf('n1')]);
  });

  it('a re-bootstrap (reset over data) updates only what changed', () => {
    const { m, t, shard } = setup();
    shard.reset([[r('n1', 'i', 'a'), EMPTY], [r('n1', 'i', 'b'), EMPTY]], 5);
    t.calls.length = 0;
    shard.reset([[r('n1', 'i', 'a'), EMPTY], [r('n2', 'i', 'c'), EMPTY]], 9);
    assert.deepEqual(t.calls.sort(), [['b', []], ['c', [m.slotOf('n2')]]]);
    assert.deepEqual(Object.fromEntries(t.now), { a: [m.slotOf('n1')], c: [m.slotOf('n2')] });
  });

  it('routes removed down to nothing, then a new one: still announced', () => {
    const { m, rr, t, shard } = setup();
    apply(shard, set(r('n1', 'i', 'a'), EMPTY));
    apply(shard, del(r('n1', 'i', 'a')));
    assert.equal(rr.routes, 0);
    apply(shard, set(r('n2', 'i', 'b'), EMPTY), del(r('n1', 'i', 'zz')));
    assert.deepEqual(Object.fromEntries(t.now), { b: [m.slotOf('n2')] });
  });

  it('clear() tells the target every route is gone', () => {
    const { rr, t, shard } = setup();
    apply(shard, set(r('n1', 'i', 'a'), EMPTY), set(r('n2', 'i', 'b'), EMPTY));
    rr.clear();
    assert.equal(t.now.size, 0);
    assert.equal(rr.routes, 0);
    assert.deepEqual(t.calls.slice(-2).sort(), [['a', []], ['b', []]]);
  });

  it('holds(slot): whether a node still holds any route, through single and shared holders', () => {
    const { m, rr, shard } = setup();
    const [s1, s2] = [m.slotOf('n1'), m.slotOf('n2')];
    apply(shard, set(r('n1', 'i', 'x'), EMPTY), set(r('n2', 'i', 'x'), EMPTY), set(r('n1', 'i', 'y'), EMPTY));
    assert.deepEqual([rr.holds(s1), rr.holds(s2)], [true, true]);
    apply(shard, del(r('n2', 'i', 'x')));
    assert.equal(rr.holds(s2), false);
    apply(shard, del(r('n1', 'i', 'x')));
    assert.equal(rr.holds(s1), true, 'y is still held');
    apply(shard, set(r('n1', 'j', 'y'), EMPTY), del(r('n1', 'i', 'y')));
    assert.equal(rr.holds(s1), true, 'the other incarnation holds y');
    apply(shard, del(r('n1', 'j', 'y')));
    assert.equal(rr.holds(s1), false);
    apply(shard, set(r('n2', 'i', 'z'), EMPTY));
    rr.clear();
    assert.equal(rr.holds(s2), false);
  });

  it('a route held by 65,536 incarnations of one node (past the packed count) counts right', () => {
    const { m, rr } = setup();
    const slot = m.slotOf('n1');
    const N = 1 << 16;
    const keys = Array.from({ length: N + 1 }, (_, i) => r('n1', `i${i}`, 'hot'));
    rr.apply({ rev: 1, ts: 0, ops: keys.map((k) => ({ k, v: EMPTY })) }, new Map());
    assert.deepEqual(rr.nodesOf('hot'), [slot]);
    const before = new Map(keys.map((k) => [k, EMPTY]));
    rr.apply({ rev: 2, ts: 0, ops: keys.slice(0, N).map((k) => ({ k, v: null })) }, before);
    assert.deepEqual(rr.nodesOf('hot'), [slot], 'one incarnation left');
    rr.apply({ rev: 3, ts: 0, ops: [{ k: keys[N]!, v: null }] }, before);
    assert.deepEqual(rr.nodesOf('hot'), []);
    assert.equal(rr.routes, 0);
  });
});

// ---------------------------------------------------------------------------- membership

describe('Membership', () => {
  const info = (name: string, role: 'core' | 'replicant', extra: Partial<NodeInfo> = {}): Buffer => B(JSON.stringify({
    name, role, incarnation: `inc-${name}`, cluster: `${name}:4370`, forward: `${name}:4371`, workers: 2, started_at: 1, ...extra,
  } satisfies NodeInfo));

  it('slots: this node is 0, others numbered on first sight and stable; none past MAX_NODES', () => {
    const m = new Membership('me');
    assert.equal(m.slotOf('me'), 0);
    assert.deepEqual(['b', 'a', 'b', 'c'].map((n) => m.slotOf(n)), [1, 2, 1, 3]);
    assert.deepEqual([m.nameOf(0), m.nameOf(2), m.nameOf(99)], ['me', 'a', undefined]);
    for (let i = 4; i < MAX_NODES; i++) assert.equal(m.slotOf(`n${i}`), i);
    assert.equal(m.slotOf('one-more'), -1);
    assert.equal(m.slotOf('one-more'), -1);
    assert.equal(m.slotOf('a'), 2, 'known names keep their slot');
  });

  it('reclaim(): a node gone for the quarantine, holding no routes, gives its slot to the next new name', () => {
    const shard = new ShardState('nodes');
    shard.reset([['live/a', info('a', 'replicant')], ['live/b', info('b', 'replicant')], ['member/b', B(JSON.stringify({ name: 'b', role: 'replicant', joined_at: 1 }))]], 1);
    const m = new Membership('me');
    m.attach(shard);
    const [sa, sb] = [m.slotOf('a'), m.slotOf('b')];
    shard.apply({ rev: 2, ts: 0, ops: [del('live/a'), del('live/b')] });
    let held = new Set([sa]);
    assert.deepEqual(m.reclaim(1000, 60_000, (s) => held.has(s)), [], 'first seen gone');
    assert.deepEqual(m.reclaim(30_000, 60_000, (s) => held.has(s)), [], 'within the quarantine');
    assert.deepEqual(m.reclaim(61_000, 60_000, (s) => held.has(s)), [], 'a still holds routes; b is still a member');
    held = new Set();
    assert.deepEqual(m.reclaim(62_000, 60_000, (s) => held.has(s)), ['a']);
    assert.equal(m.slotsReclaimed, 1);
    assert.equal(m.nameOf(sa), undefined);
    assert.equal(m.slotOf('newcomer'), sa, 'the freed slot is used first');
    assert.equal(m.slotOf('b'), sb, 'a stopped member keeps its slot');
    // Back before the quarantine ends: the clock starts again when it goes next time.
    shard.apply({ rev: 3, ts: 0, ops: [set('live/newcomer', info('newcomer', 'replicant'))] });
    shard.apply({ rev: 4, ts: 0, ops: [del('live/newcomer')] });
    assert.deepEqual(m.reclaim(63_000, 60_000, () => false), []);
    shard.apply({ rev: 5, ts: 0, ops: [set('live/newcomer', info('newcomer', 'replicant'))] });
    assert.deepEqual(m.reclaim(200_000, 60_000, () => false), [], 'live again');
    assert.equal(m.slotOf('me'), 0);
  });

  it('past MAX_NODES names, a reclaimed slot is what a new name gets', () => {
    const m = new Membership('me');
    for (let i = 1; i < MAX_NODES; i++) m.slotOf(`n${i}`);
    assert.equal(m.slotOf('late'), -1);
    m.reclaim(0, 10, () => false);
    const freed = m.reclaim(20, 10, (s) => s !== 7);
    assert.deepEqual(freed, ['n7']);
    assert.equal(m.slotOf('late'), 7);
  });

  it('attach(): loads the shard, then follows its changes', () => {
    const shard = new ShardState('nodes');
    shard.reset([['live/core-1', info('core-1', 'core')], ['member/core-1', B(JSON.stringify({ name: 'core-1', role: 'core', joined_at: 5 }))]], 10);
    const m = new Membership('me');
    let changes = 0;
    m.onChange(() => changes++);
    m.attach(shard);
    assert.deepEqual([...m.live.keys()], ['core-1']);
    assert.deepEqual(m.members.get('core-1'), { name: 'core-1', role: 'core', joined_at: 5 });
    shard.apply({ rev: 11, ts: 0, ops: [set('live/rep-1', info('rep-1', 'replicant', { core: 'core-1' })), set('live/me', info('me', 'core'))] });
    assert.equal(changes, 1);
    assert.deepEqual([...m.live.keys()].sort(), ['core-1', 'me', 'rep-1']);
    assert.equal(m.live.get('rep-1')!.core, 'core-1');
    shard.apply({ rev: 12, ts: 0, ops: [del('live/core-1'), set('member/rep-1', B(JSON.stringify({ name: 'rep-1', role: 'replicant', joined_at: 6, leaving: true })))] });
    assert.equal(changes, 2);
    assert.deepEqual([...m.live.keys()].sort(), ['me', 'rep-1']);
    assert.equal(m.members.get('rep-1')!.leaving, true);
    assert.equal(m.members.has('core-1'), true, 'a stopped member is still a member');
    assert.equal(m.slotOf('core-1'), 1, 'its slot stays');
    shard.apply({ rev: 13, ts: 0, ops: [del('member/core-1')] });
    assert.equal(m.members.has('core-1'), false);
  });

  it('peers() are the live nodes but this one; cores() the live cores by name', () => {
    const shard = new ShardState('nodes');
    shard.reset([
      ['live/me', info('me', 'core')], ['live/zeta', info('zeta', 'core')], ['live/alpha', info('alpha', 'core')],
      ['live/rep', info('rep', 'replicant')],
    ], 3);
    const m = new Membership('me');
    m.attach(shard);
    const peers = m.peers().sort((a, b) => a.name.localeCompare(b.name));
    assert.deepEqual(peers.map((p) => p.name), ['alpha', 'rep', 'zeta']);
    assert.deepEqual(peers[0], { slot: m.slotOf('alpha'), name: 'alpha', role: 'core', incarnation: 'inc-alpha', forward: 'alpha:4371', cluster: 'alpha:4370' });
    assert.ok(peers.every((p) => p.slot > 0));
    assert.deepEqual(m.cores().map((c) => c.name), ['alpha', 'me', 'zeta']);
  });

  it('malformed entries are skipped; the rest of the change still applies; other keys are ignored', () => {
    const shard = new ShardState('nodes');
    const m = new Membership('me');
    m.attach(shard);
    shard.apply({ rev: 1, ts: 0, ops: [set('live/bad', '{not json'), set('live/good', info('good', 'core')), set('member/bad', 'nope'), set('other/x', '{}')] });
    assert.deepEqual([...m.live.keys()], ['good']);
    assert.equal(m.members.size, 0);
    assert.equal(m.nameOf(1), 'good', 'no slot was given to the malformed one');
  });
});

// ---------------------------------------------------------------------------- own retained writes

describe('OwnRetained', () => {
  const me = (seq: number) => ({ node: 'a', seq });

  it('a clear and a set at once: the clear coming back from etcd does not hide the set', () => {
    const o = new OwnRetained('a');
    o.wrote('t', 1, true); // clear, in one transaction
    assert.equal(o.written('t', 1, 10, 9), false);
    o.wrote('t', 2, false); // set, in the next one (before the clear came back)
    assert.equal(o.change('t', 10, null), false, 'the clear (rev 10) is older than the set on its way');
    o.reached(10);
    assert.equal(o.written('t', 2, 11, 10), false);
    assert.equal(o.change('t', 11, me(2)), true, 'the set itself');
    assert.equal(o.size, 0);
  });

  it('the same, with the watch faster than the answers', () => {
    const o = new OwnRetained('a');
    o.wrote('t', 1, true);
    o.wrote('t', 2, false);
    assert.equal(o.change('t', 10, null), false);
    assert.equal(o.written('t', 1, 10, 10), false, 'an older write of the topic: nothing to do');
    assert.equal(o.change('t', 11, me(2)), true);
    assert.equal(o.written('t', 2, 11, 11), false);
    assert.equal(o.size, 0);
  });

  it('older changes of other nodes are skipped while our write is on its way; newer ones apply', () => {
    const o = new OwnRetained('a');
    o.wrote('t', 5, false);
    assert.equal(o.change('t', 20, { node: 'b', seq: 3 }), false, 'b wrote before us (revision unknown yet)');
    assert.equal(o.written('t', 5, 22, 21), false, 'the shard is below our revision: what was skipped was older');
    assert.equal(o.change('t', 21, { node: 'b', seq: 4 }), false, 'below our revision');
    assert.equal(o.change('t', 23, { node: 'b', seq: 5 }), true, 'at or above our revision: newer than ours');
    assert.equal(o.size, 0);
    assert.equal(o.change('t', 24, null), true, 'nothing of ours on its way: everything applies');
  });

  it('a change skipped before etcd answered may be newer: the shard value goes again', () => {
    const o = new OwnRetained('a');
    o.wrote('t', 5, false);
    assert.equal(o.change('t', 31, { node: 'b', seq: 9 }), false);
    // Our write was at 30, but its change came in a snapshot that also held b's newer one.
    assert.equal(o.written('t', 5, 30, 31), true);
    assert.equal(o.size, 0);
  });

  it('a clear of an absent topic (etcd echoes nothing) ends once the shard passes its revision', () => {
    const o = new OwnRetained('a');
    o.wrote('t', 1, true);
    assert.equal(o.written('t', 1, 40, 39), false);
    assert.equal(o.size, 1);
    o.reached(39);
    assert.equal(o.size, 1);
    o.reached(41); // a change of another topic
    assert.equal(o.size, 0);
    assert.equal(o.change('t', 42, { node: 'b', seq: 1 }), true);
  });

  it('a write etcd never took ends at once and the shard value goes back', () => {
    const o = new OwnRetained('a');
    o.wrote('t', 1, false);
    assert.equal(o.written('t', 1, 0, 50), true);
    assert.equal(o.size, 0);
    o.wrote('u', 2, false);
    o.wrote('u', 3, false);
    assert.equal(o.written('u', 2, 0, 50), false, 'a newer write of the topic is on its way');
    assert.equal(o.size, 1);
  });
});
