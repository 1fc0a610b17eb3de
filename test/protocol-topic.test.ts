import { test } from 'node:test';
import assert from 'node:assert/strict';
import { validateTopicName, validateTopicFilter, parseShare, topicMatches, isWildcard } from '../src/protocol/topic.js';

test('[MQTT-4.7.3-1] topic names: valid ones pass', () => {
  for (const t of ['a', 'a/b', '/', '/a', 'a/', 'a//b', '$SYS/broker', 'sport/tennis/player1', 'añ/€/😀', ' ']) {
    assert.equal(validateTopicName(t, 0, 0), null, JSON.stringify(t));
  }
});

test('[MQTT-4.7.3-1] empty topic name is refused', () => {
  assert.match(validateTopicName('', 0, 0) ?? '', /empty/);
});

test('[MQTT-3.3.2-2] wildcards in a topic name are refused', () => {
  for (const t of ['+', '#', 'a/+', 'a/#', 'a+b', 'a/b#']) {
    assert.match(validateTopicName(t, 0, 0) ?? '', /wildcard/, t);
  }
});

test('[MQTT-1.5.4-2] U+0000 in a topic name or filter is refused', () => {
  assert.match(validateTopicName('a\u0000b', 0, 0) ?? '', /U\+0000/);
  assert.match(validateTopicFilter('a/\u0000', 0, 0) ?? '', /U\+0000/);
});

test('topic name level and byte-length limits', () => {
  assert.equal(validateTopicName('a/b/c', 3, 0), null);
  assert.match(validateTopicName('a/b/c/d', 3, 0) ?? '', /levels/);
  assert.match(validateTopicName('a/', 1, 0) ?? '', /levels/, 'trailing slash makes an empty level');
  assert.equal(validateTopicName('abcde', 0, 5), null);
  assert.match(validateTopicName('abcdef', 0, 5) ?? '', /longer/);
  // Limit is in UTF-8 bytes: '€' is 3 bytes.
  assert.equal(validateTopicName('€€', 0, 6), null);
  assert.match(validateTopicName('€€', 0, 5) ?? '', /longer/);
  assert.match(validateTopicName('😀', 0, 3) ?? '', /longer/);
  // Protocol maximum applies even without a configured limit.
  assert.match(validateTopicName('x'.repeat(65536), 0, 0) ?? '', /longer/);
  assert.equal(validateTopicName('x'.repeat(65535), 0, 0), null);
});

test('[MQTT-4.7.1-2] [MQTT-4.7.1-3] topic filters: valid ones pass', () => {
  for (const f of ['#', '+', 'a/#', 'a/+', '+/+', '+/#', '/+', 'a/+/b', 'sport/tennis/#', '$SYS/#', 'a//b', '/', '+/', '$share']) {
    assert.equal(validateTopicFilter(f, 0, 0), null, f);
  }
});

test('[MQTT-4.7.3-1] empty topic filter is refused', () => {
  assert.match(validateTopicFilter('', 0, 0) ?? '', /empty/);
});

test('[MQTT-4.7.1-2] # must be alone in the last level', () => {
  for (const f of ['a#', 'a/#/b', '#/a', 'a/b#', '##', 'a/#/']) {
    assert.match(validateTopicFilter(f, 0, 0) ?? '', /#/, f);
  }
});

test('[MQTT-4.7.1-3] + must be alone in its level', () => {
  for (const f of ['a+', '+a', 'a/b+/c', '++', 'a/+b']) {
    assert.match(validateTopicFilter(f, 0, 0) ?? '', /\+/, f);
  }
});

test('topic filter level and length limits', () => {
  assert.equal(validateTopicFilter('a/+/#', 3, 0), null);
  assert.match(validateTopicFilter('a/+/b/#', 3, 0) ?? '', /levels/);
  assert.match(validateTopicFilter('abc/#', 0, 4) ?? '', /longer/);
});

test('[v5 MQTT-4.8.2-1] parseShare: $share/<group>/<filter>', () => {
  assert.deepEqual(parseShare('$share/g1/a/+/c'), { group: 'g1', filter: 'a/+/c' });
  assert.deepEqual(parseShare('$share/g/#'), { group: 'g', filter: '#' });
  assert.deepEqual(parseShare('$share/g//'), { group: 'g', filter: '/' });
  assert.deepEqual(parseShare('$share/grp/$SYS/x'), { group: 'grp', filter: '$SYS/x' });
});

test('parseShare: $queue/<filter> uses the group "$queue"', () => {
  assert.deepEqual(parseShare('$queue/jobs/+'), { group: '$queue', filter: 'jobs/+' });
  assert.ok('error' in parseShare('$queue/'));
  assert.ok('error' in parseShare('$queue/a#'));
});

test('parseShare: non-shared filters pass through unchanged', () => {
  for (const f of ['a/b', '#', '$SYS/#', '$share', '$sharex/g/a', 'x/$share/g/a']) {
    assert.deepEqual(parseShare(f), { group: null, filter: f }, f);
  }
});

test('[v5 MQTT-4.8.2-1] [MQTT-4.8.2-2] parseShare refuses malformed shared filters', () => {
  const cases: [string, RegExp][] = [
    ['$share/', /\$share\/<group>/],
    ['$share/g', /\$share\/<group>/],
    ['$share//a', /group is empty/],
    ['$share/g/', /filter is empty/],
    ['$share/g+/a', /group/],
    ['$share/g#/a', /group/],
    ['$share/+/a', /group/],
    ['$share/g/a/#/b', /#/],
    ['$share/g/a+', /\+/],
  ];
  for (const [f, re] of cases) {
    const r = parseShare(f);
    assert.ok('error' in r, `${f} must be refused`);
    assert.match(r.error, re, f);
  }
});

test('isWildcard', () => {
  assert.equal(isWildcard('a/+'), true);
  assert.equal(isWildcard('#'), true);
  assert.equal(isWildcard('a/b'), false);
  assert.equal(isWildcard('$SYS/x'), false);
});

// [filter, topic, matches]
const MATCH: [string, string, boolean][] = [
  // exact
  ['a/b', 'a/b', true],
  ['a/b', 'a/c', false],
  ['a/b', 'a/bc', false],
  ['a/bc', 'a/b', false],
  ['a/b', 'a', false],
  ['a', 'a/b', false],
  ['a/', 'a/', true],
  ['a/', 'a', false],
  ['a', 'a/', false],
  ['/a', '/a', true],
  ['/a', 'a', false],
  // [MQTT-4.7.1-2] multi-level wildcard
  ['#', 'a', true],
  ['#', 'a/b/c', true],
  ['#', '/', true],
  ['a/#', 'a', true],
  ['a/#', 'a/', true],
  ['a/#', 'a/b', true],
  ['a/#', 'a/b/c', true],
  ['a/#', 'ab', false],
  ['a/#', 'b/a', false],
  ['sport/tennis/player1/#', 'sport/tennis/player1', true],
  ['sport/tennis/player1/#', 'sport/tennis/player1/ranking', true],
  ['sport/tennis/player1/#', 'sport/tennis/player1/score/wimbledon', true],
  ['sport/#', 'sport', true],
  // [MQTT-4.7.1-3] single-level wildcard
  ['+', 'a', true],
  ['+', 'a/b', false],
  ['+', '/a', false],
  ['+/+', '/a', true],
  ['/+', '/a', true],
  ['+', '', true],
  ['a/+', 'a/b', true],
  ['a/+', 'a/', true],
  ['a/+', 'a', false],
  ['a/+', 'a/b/c', false],
  ['a/+/c', 'a/b/c', true],
  ['a/+/c', 'a//c', true],
  ['a/+/c', 'a/b/d', false],
  ['sport/tennis/+', 'sport/tennis/player1', true],
  ['sport/tennis/+', 'sport/tennis/player1/ranking', false],
  ['sport/+', 'sport', false],
  ['sport/+', 'sport/', true],
  ['+/tennis/#', 'sport/tennis/player1', true],
  ['+/tennis/#', 'sport/tennis', true],
  ['+/#', 'a', true],
  ['+/+/+', 'a/b', false],
  // [MQTT-4.7.2-1] $-topics are not matched by leading wildcards
  ['#', '$SYS', false],
  ['#', '$SYS/broker/uptime', false],
  ['+/monitor/Clients', '$SYS/monitor/Clients', false],
  ['+', '$x', false],
  ['$SYS/#', '$SYS/monitor/Clients', true],
  ['$SYS/monitor/+', '$SYS/monitor/Clients', true],
  ['$SYS/#', '$SYS', true],
  ['a/#', 'a/$b', true],
  ['a/+', 'a/$b', true],
  // unicode
  ['€/+', '€/😀', true],
  ['€/😀', '€/😀', true],
  ['€/😀', '€/😁', false],
];

for (const [f, t, want] of MATCH) {
  test(`[${f.includes('$') || t.startsWith('$') ? 'MQTT-4.7.2-1' : 'MQTT-4.7.1'}] topicMatches(${JSON.stringify(f)}, ${JSON.stringify(t)}) = ${want}`, () => {
    assert.equal(topicMatches(f, t), want);
  });
}

test('topicMatches agrees with a split-based reference on random inputs', () => {
  const ref = (filter: string, topic: string): boolean => {
    if ((filter.startsWith('+') || filter.startsWith('#')) && topic.startsWith('$')) return false;
    const fl = filter.split('/');
    const tl = topic.split('/');
    for (let i = 0; i < fl.length; i++) {
      const f = fl[i]!;
      if (f === '#') return true;
      if (i >= tl.length) return false;
      if (f !== '+' && f !== tl[i]) return false;
    }
    return fl.length === tl.length;
  };
  let seed = 7;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const words = ['a', 'b', '', '$s', 'ab'];
  let mismatches = 0;
  let matches = 0;
  for (let i = 0; i < 20000; i++) {
    const tn = 1 + rnd(4);
    const topic = Array.from({ length: tn }, () => words[rnd(words.length)]!).join('/');
    const fn = 1 + rnd(4);
    const fparts = Array.from({ length: fn }, () => ['a', 'b', '', '+', '$s'][rnd(5)]!);
    if (rnd(3) === 0) fparts[fn - 1] = '#';
    const filter = fparts.join('/');
    if (validateTopicFilter(filter, 0, 0) !== null) continue;
    const want = ref(filter, topic);
    if (want) matches++;
    if (topicMatches(filter, topic) !== want) mismatches++;
  }
  assert.ok(matches > 500, `enough positive cases (${matches})`);
  assert.equal(mismatches, 0);
});
