// src/trie: the shared-memory route trie, single-threaded: matching rules against
// src/protocol/topic.ts over a seeded random corpus, reference counts, route ids, shared
// groups, the generation-checked cache, growth from empty, free-list reuse and the grace
// period. The cross-thread race test is test/trie-race.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseShare, topicMatches } from '../src/protocol/topic.js';
import { TrieReader, TrieWriter, type TrieMatch } from '../src/trie/index.js';
import { READER_BASE, READER_STRIDE, R_COUNTER } from '../src/trie/layout.js';
import { mulberry32 as prng } from './helpers/prng.js';

// Levels: empty, '$' ones (the [MQTT-4.7.2-1] rule), Latin-1 and wide (UTF-16) characters.
const LEVELS = ['a', 'b', 'c', 'ab', '', '$SYS', '$x', 'é', '日本', '😀', 'a-b', 'sport'];

function randTopic(rnd: () => number): string {
  const depth = 1 + Math.floor(rnd() * 5);
  const parts: string[] = [];
  for (let i = 0; i < depth; i++) parts.push(LEVELS[Math.floor(rnd() * LEVELS.length)]!);
  return parts.join('/');
}

function randFilter(rnd: () => number): string {
  const depth = 1 + Math.floor(rnd() * 4);
  const parts: string[] = [];
  for (let i = 0; i < depth; i++) {
    const r = rnd();
    if (i === depth - 1 && r < 0.2) parts.push('#');
    else if (r < 0.35) parts.push('+');
    else parts.push(LEVELS[Math.floor(rnd() * LEVELS.length)]!);
  }
  return parts.join('/');
}

function sortedRoutes(m: TrieMatch): number[] {
  return [...m.routes].sort((x, y) => x - y);
}

function groupKeys(m: TrieMatch): string[] {
  return m.groups.map((g) => `${g.group}|${g.route}|${g.mask}`).sort();
}

test('setRoute returns the route id the filter had before', () => {
  const w = new TrieWriter({ initialBytes: 64 * 1024, maxBytes: 1 << 20 });
  assert.equal(w.setRoute('a/+/c', 5), 0);
  assert.equal(w.setRoute('a/+/c', 9), 5);
  assert.equal(w.setRoute('a/+/c', 9), 9);
  assert.equal(w.route('a/+/c'), 9);
  assert.equal(w.setRoute('a/+/c', 0), 9);
  assert.equal(w.setRoute('a/+/c', 0), 0, 'cleared: nothing before');
  assert.equal(w.setRoute('never/seen', 0), 0);
  assert.equal(w.setRoute('$share/g/x/#', 3), 0);
  assert.equal(w.setRoute('$share/g/x/#', 4), 3);
  assert.equal(w.setRoute('x/#', 8), 0, 'the plain filter beside the group has its own id');
});

test('matching rules equal topicMatches over a seeded random corpus (plain and shared filters)', () => {
  const rnd = prng(0x7a11e);
  const w = new TrieWriter({ initialBytes: 64 * 1024, maxBytes: 64 << 20 });
  const filters = new Map<string, number>(); // filter → index
  while (filters.size < 600) {
    const f = randFilter(rnd);
    if (f !== '' && !filters.has(f)) filters.set(f, filters.size);
  }
  const shared: string[] = [];
  for (const [f, i] of filters) {
    assert.equal(w.insert(f, i % 32), true, f);
    w.setRoute(f, i + 1);
    if (i % 5 === 0) {
      const s = i % 10 === 0 ? `$share/g${i % 3}/${f}` : `$queue/${f}`;
      shared.push(s);
      w.insert(s, (i + 7) % 32);
      w.setRoute(s, 100_000 + shared.length);
    }
  }
  const list = [...filters.keys()];
  const cached = new TrieReader(w.buffers());
  const uncached = new TrieReader(w.buffers(), { cacheSize: 0 });
  // Topics from the level alphabet plus every filter with its wildcards filled in.
  const topics: string[] = [];
  for (let i = 0; i < 3000; i++) topics.push(randTopic(rnd));
  for (const f of list) topics.push(f.replace(/#/g, 'a/b').replace(/\+/g, () => LEVELS[Math.floor(rnd() * LEVELS.length)]!));
  let nonEmpty = 0;
  for (const t of topics) {
    let mask = 0;
    const routes: number[] = [];
    list.forEach((f, i) => {
      if (topicMatches(f, t)) {
        mask |= 1 << (i % 32);
        routes.push(i + 1);
      }
    });
    const groups: string[] = [];
    shared.forEach((s, k) => {
      const p = parseShare(s);
      assert.ok(!('error' in p));
      if (topicMatches(p.filter, t)) {
        const i = filters.get(p.filter)!;
        groups.push(`${p.group}|${100_000 + k + 1}|${(1 << ((i + 7) % 32)) >>> 0}`);
      }
    });
    groups.sort();
    if (routes.length > 0) nonEmpty++;
    for (const r of [uncached, cached, cached]) {
      const m = r.match(t);
      assert.equal(m.mask, mask >>> 0, `mask for ${JSON.stringify(t)}`);
      assert.deepEqual(sortedRoutes(m), routes, `routes for ${JSON.stringify(t)}`);
      assert.deepEqual(groupKeys(m), groups, `groups for ${JSON.stringify(t)}`);
    }
  }
  assert.ok(nonEmpty > 1000, `corpus too sparse: ${nonEmpty}`);
  assert.ok(cached.stats().cacheHits >= topics.length - 50);
  cached.close();
  uncached.close();
});

test('the rules, case by case: +, #, parent level, $ topics, empty levels', () => {
  const w = new TrieWriter();
  const r = new TrieReader(w.buffers(), { cacheSize: 0 });
  const cases: [string, string[], string[]][] = [
    ['#', ['a', 'a/b', '/', 'a/'], ['$SYS', '$SYS/x']],
    ['+', ['a', ''.concat('x')], ['a/b', '/', '$SYS']],
    ['+/#', ['a', 'a/b'], ['$SYS/a']],
    ['a/#', ['a', 'a/', 'a/b/c'], ['b', 'ab']],
    ['a/+', ['a/b', 'a/'], ['a', 'a/b/c']],
    ['+/+', ['/', 'a/b', '/a'], ['a', '$SYS/a']],
    ['$SYS/#', ['$SYS', '$SYS/a/b'], ['SYS/a']],
    ['$SYS/+/x', ['$SYS/a/x'], ['$SYS/a/y']],
    ['a//b', ['a//b'], ['a/b', 'a/x/b']],
    ['a/+/b', ['a//b', 'a/x/b'], ['a/b']],
    ['/#', ['/', '/a'], ['a']],
  ];
  cases.forEach(([f], i) => w.insert(f, i));
  for (const [f, yes, no] of cases) {
    const bit = 1 << cases.findIndex((c) => c[0] === f);
    for (const t of yes) {
      assert.equal(topicMatches(f, t), true, `${f} ~ ${t} (reference)`);
      assert.ok((r.match(t).mask & bit) !== 0, `${f} should match ${t}`);
    }
    for (const t of no) {
      assert.equal(topicMatches(f, t), false, `${f} !~ ${t} (reference)`);
      assert.equal(r.match(t).mask & bit, 0, `${f} should not match ${t}`);
    }
  }
  r.close();
});

test('reference counts per worker: one bit plus a count', () => {
  const w = new TrieWriter();
  const r = new TrieReader(w.buffers(), { cacheSize: 0 });
  assert.equal(w.insert('s/+/t', 3), true);
  assert.equal(w.insert('s/+/t', 3), false);
  assert.equal(w.insert('s/+/t', 3), false);
  assert.equal(w.insert('s/+/t', 31), true);
  assert.equal(w.count('s/+/t', 3), 3);
  assert.equal(w.count('s/+/t', 31), 1);
  assert.equal(w.count('s/+/t', 4), 0);
  assert.equal(r.match('s/x/t').mask, ((1 << 3) | (1 << 31)) >>> 0);
  let st = w.stats();
  assert.deepEqual([st.filters, st.subscriptions, st.references], [1, 2, 4]);
  assert.equal(w.remove('s/+/t', 3), false);
  assert.equal(w.remove('s/+/t', 3), false);
  assert.equal(r.match('s/x/t').mask, ((1 << 3) | (1 << 31)) >>> 0);
  assert.equal(w.remove('s/+/t', 3), true, 'last reference');
  assert.equal(w.remove('s/+/t', 3), false, 'none left');
  assert.equal(w.remove('s/nope/t', 3), false);
  assert.equal(r.match('s/x/t').mask, (1 << 31) >>> 0);
  assert.equal(w.remove('s/+/t', 31), true);
  assert.equal(r.match('s/x/t').mask, 0);
  st = w.stats();
  assert.deepEqual([st.filters, st.subscriptions, st.references, st.nodes, st.strings], [0, 0, 0, 1, 0]);
  r.close();
});

test('route ids: remote-only filters match, clearing a route prunes', () => {
  const w = new TrieWriter();
  const r = new TrieReader(w.buffers(), { cacheSize: 0 });
  w.setRoute('remote/+/x', 7);
  w.setRoute('remote/#', 9);
  w.insert('remote/a/x', 1);
  w.setRoute('remote/a/x', 11);
  let m = r.match('remote/a/x');
  assert.equal(m.mask, 2);
  assert.deepEqual(sortedRoutes(m), [7, 9, 11]);
  assert.equal(w.route('remote/+/x'), 7);
  w.setRoute('remote/+/x', 0);
  w.setRoute('remote/#', 0);
  w.setRoute('remote/nothing', 0);
  m = r.match('remote/a/x');
  assert.deepEqual(sortedRoutes(m), [11]);
  w.remove('remote/a/x', 1);
  assert.deepEqual(sortedRoutes(r.match('remote/a/x')), [11], 'the route keeps the filter');
  w.setRoute('remote/a/x', 0);
  assert.deepEqual(r.match('remote/a/x'), { mask: 0, routes: [], groups: [] });
  const st = w.stats();
  assert.deepEqual([st.nodes, st.strings, st.extensions], [1, 0, 0]);
  r.close();
});

test('shared groups: reported per (group, filter), not in the plain mask', () => {
  const w = new TrieWriter();
  const r = new TrieReader(w.buffers(), { cacheSize: 0 });
  assert.equal(w.insert('$share/g1/a/+', 2), true);
  assert.equal(w.insert('$share/g1/a/+', 2), false);
  assert.equal(w.insert('$share/g1/a/+', 5), true);
  assert.equal(w.insert('$share/g2/a/#', 1), true);
  assert.equal(w.insert('$queue/a/b', 0), true);
  w.setRoute('$share/g1/a/+', 41);
  w.insert('a/b', 9);
  const m = r.match('a/b');
  assert.equal(m.mask, 1 << 9);
  assert.deepEqual(groupKeys(m), ['$queue|0|1', 'g1|41|36', 'g2|0|2']);
  assert.deepEqual(groupKeys(r.match('a')), ['g2|0|2']);
  assert.deepEqual(groupKeys(r.match('$x/a/b')), []);
  w.remove('$share/g1/a/+', 2);
  w.remove('$share/g1/a/+', 2);
  w.remove('$share/g1/a/+', 5);
  assert.deepEqual(groupKeys(r.match('a/b')), ['$queue|0|1', 'g1|41|0', 'g2|0|2'], 'kept by its route id');
  w.setRoute('$share/g1/a/+', 0);
  w.remove('$share/g2/a/#', 1);
  w.remove('$queue/a/b', 0);
  w.remove('a/b', 9);
  assert.deepEqual(r.match('a/b'), { mask: 0, routes: [], groups: [] });
  const st = w.stats();
  assert.deepEqual([st.nodes, st.strings, st.extensions, st.filters], [1, 0, 0, 0]);
  r.close();
});

test('invalid filters and workers are refused', () => {
  const w = new TrieWriter();
  for (const f of ['', 'a/#/b', 'a+', '#a', '$share/g', '$share//a', '$share/g/', 'a\u0000']) {
    assert.throws(() => w.insert(f, 0), TypeError, JSON.stringify(f));
  }
  assert.throws(() => w.insert('a', 32), RangeError);
  assert.throws(() => w.insert('a', -1), RangeError);
  assert.throws(() => w.insert('a', 1.5), RangeError);
  assert.throws(() => w.setRoute('a', -1), RangeError);
  assert.equal(w.stats().nodes, 1);
});

test('generation-checked cache: hits while unchanged, recomputed after any change', () => {
  const w = new TrieWriter();
  const r = new TrieReader(w.buffers(), { cacheSize: 2 });
  w.insert('c/+', 1);
  assert.equal(r.match('c/x').mask, 2);
  assert.equal(r.match('c/x').mask, 2);
  assert.equal(r.stats().cacheHits, 1);
  const g = r.generation();
  assert.equal(w.insert('c/+', 1), false);
  assert.equal(r.generation(), g, 'a second reference changes no result');
  assert.equal(r.match('c/x').mask, 2);
  assert.equal(r.stats().cacheHits, 2);
  w.insert('c/x', 4);
  assert.notEqual(r.generation(), g);
  assert.equal(r.match('c/x').mask, 2 | 16);
  assert.equal(r.stats().cacheHits, 2);
  assert.equal(r.stats().cacheInvalidations, 1);
  r.match('c/y');
  r.match('c/z'); // evicts c/x (2 entries)
  r.match('c/x');
  assert.equal(r.stats().cacheHits, 2);
  r.close();
});

test('grows from empty to 200k filters; a reader made before the growth follows it', () => {
  const w = new TrieWriter({ initialBytes: 64 * 1024, maxBytes: 256 << 20 });
  const r = new TrieReader(w.buffers(), { cacheSize: 0 });
  const before = w.stats().heapBytes;
  const N = 200_000;
  for (let i = 0; i < N; i++) {
    const f = i % 4 === 0 ? `grow/${i}/#` : i % 4 === 1 ? `grow/+/${i}` : i % 4 === 2 ? `g/${i % 1000}/+/${i}` : `+/x${i}/y`;
    assert.equal(w.insert(f, i % 32), true);
  }
  const st = w.stats();
  assert.equal(st.filters, N);
  assert.ok(st.heapBytes > before * 50, `heap ${st.heapBytes} from ${before}`);
  assert.ok(st.grows > 5);
  for (let i = 0; i < N; i += 97) {
    const t = i % 4 === 0 ? `grow/${i}/z` : i % 4 === 1 ? `grow/q/${i}` : i % 4 === 2 ? `g/${i % 1000}/k/${i}` : `p/x${i}/y`;
    assert.ok((r.match(t).mask & (1 << (i % 32))) !== 0, t);
  }
  assert.equal(r.match('grow/none/none').mask, 0);
  assert.ok(r.stats().refreshes >= 1);
  r.close();
});

test('free lists: insert N, remove N, insert N does not grow the heap', () => {
  const w = new TrieWriter({ initialBytes: 64 * 1024, maxBytes: 256 << 20 });
  const r = new TrieReader(w.buffers(), { cacheSize: 0 });
  const N = 60_000;
  const filters: string[] = [];
  for (let i = 0; i < N; i++) filters.push(i % 3 === 0 ? `reuse/${i}/#` : i % 3 === 1 ? `reuse/+/${i}/x` : `$share/g${i % 7}/r/${i}`);
  const base = w.stats();
  for (const f of filters) w.insert(f, 1);
  r.match('reuse/1/x');
  const full = w.stats();
  for (const f of filters) assert.equal(w.remove(f, 1), true, f);
  r.match('reuse/1/x');
  w.reclaim();
  const empty = w.stats();
  assert.deepEqual([empty.nodes, empty.strings, empty.extensions, empty.filters], [1, 0, 0, 0]);
  assert.equal(empty.limboBytes, 0);
  assert.equal(empty.usedBytes, base.usedBytes, 'every block back');
  for (const f of filters) w.insert(f, 2);
  const again = w.stats();
  assert.equal(again.heapBytes, full.heapBytes, `heap grew from ${full.heapBytes} to ${again.heapBytes}`);
  assert.equal(again.usedBytes, full.usedBytes);
  assert.equal(r.match(`reuse/3/zz`).mask, 4);
  r.close();
});

test('a retired block waits for a reader inside a match (grace period)', () => {
  const w = new TrieWriter();
  const r = new TrieReader(w.buffers(), { cacheSize: 0 });
  for (let i = 0; i < 20; i++) w.insert(`gp/${i}`, 0);
  // Pretend the reader is inside a match: make its counter odd.
  const words = new Int32Array(w.buffers().heap);
  const ctr = READER_BASE + r.slot * READER_STRIDE + R_COUNTER;
  Atomics.add(words, ctr, 1);
  w.remove('gp/3', 0);
  assert.ok(w.stats().limboBytes > 0, 'held back');
  assert.ok(w.reclaim() > 0);
  Atomics.add(words, ctr, 1); // leaves the match
  assert.equal(w.reclaim(), 0);
  assert.equal(w.stats().limboBytes, 0);
  // A dead reader's slot can be released by its owner.
  Atomics.add(words, ctr, 1);
  w.remove('gp/4', 0);
  assert.ok(w.stats().limboBytes > 0);
  w.releaseReader(r.slot);
  assert.equal(w.stats().limboBytes, 0);
  assert.equal(w.stats().readers, 0);
});

test('reader slots are limited and given back on close', () => {
  const w = new TrieWriter({ maxReaders: 2 });
  const a = new TrieReader(w.buffers());
  const b = new TrieReader(w.buffers());
  assert.throws(() => new TrieReader(w.buffers()), /slots/);
  assert.equal(w.stats().readers, 2);
  a.close();
  const c = new TrieReader(w.buffers());
  assert.equal(c.slot, a.slot);
  b.close();
  c.close();
});

test('very deep filters and topics (no recursion limit)', () => {
  const w = new TrieWriter();
  const r = new TrieReader(w.buffers(), { cacheSize: 0 });
  const deep = Array.from({ length: 20_000 }, (_, i) => (i % 2 === 0 ? 'd' : '+')).join('/');
  w.insert(deep, 6);
  w.insert(`${deep}/#`, 7);
  const topic = Array.from({ length: 20_000 }, () => 'd').join('/');
  assert.equal(r.match(topic).mask, (1 << 6) | (1 << 7));
  assert.equal(r.match(`${topic}/e/f`).mask, 1 << 7);
  assert.equal(w.remove(deep, 6), true);
  assert.equal(w.remove(`${deep}/#`, 7), true);
  assert.equal(w.stats().nodes, 1);
  r.close();
});
