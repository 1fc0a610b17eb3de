// A worker picked for a shared group on member counts that had not yet caught up with
// the group's last local member leaving: the message goes on to another worker that holds
// members (each worker at most once), instead of being dropped. Engine-level, with a
// router that records what the engine hands to other workers.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createAuthorizer } from '../src/auth/authorizer.js';
import { Broker } from '../src/broker/broker.js';
import type { Message } from '../src/broker/message.js';
import { routeId, type GroupRef, type RouteMatch, type Router } from '../src/broker/router.js';
import { Session } from '../src/broker/session.js';
import { DEFAULTS } from '../src/config/defaults.js';
import type { Config } from '../src/config/types.js';
import { Logger } from '../src/log/logger.js';
import { decodeRecord, RecordEncoder } from '../src/workers/message-record.js';

const GROUP = 'g';
const FILTER = 'pass/on';
const ROUTE = routeId(GROUP, FILTER);

interface Sent { w: number; groups: readonly GroupRef[] | null; tried: number }

/** Worker `id` of a node whose trie says workers in `mask` hold members of $share/g/pass/on. */
function fakeRouter(id: number, mask: number, sent: Sent[]): Router {
  const match: RouteMatch = { mask: 0, routes: [], groups: [{ group: GROUP, route: ROUTE, mask }] };
  const r: Partial<Router> = {
    workerId: id, allMask: 0b111, clustered: false, blocked: false,
    match: () => match,
    onlineMembers: () => 0,
    routeAdded: () => {}, routeRemoved: () => {}, memberOnline: () => {},
    forward: (w, _m, _n, groups, _seq, tried = 0) => {
      sent.push({ w, groups, tried });
      return true;
    },
  };
  return r as Router;
}

async function engine(id: number, mask: number, sent: Sent[]): Promise<Broker> {
  const cfg = structuredClone(DEFAULTS) as Config;
  const log = new Logger('error', {}, () => {});
  const b = new Broker(cfg, log, await createAuthorizer({ ...cfg.auth, cn_as_username: false }, log));
  b.router = fakeRouter(id, mask, sent);
  return b;
}

const msg = (): Message => ({ topic: FILTER, payload: Buffer.from('x'), qos: 1, retain: false, from: 'pub', expiresAt: 0, props: undefined });

describe('shared groups: a worker with no member left passes the message on', () => {
  test('worker 1 has no member of the group it was picked for: the message goes to worker 0 (or 2), marked as tried by 1', async () => {
    const sent: Sent[] = [];
    const b = await engine(1, 0b111, sent);
    b.receiveForwarded(msg(), false, [{ route: ROUTE, group: GROUP }], 0);
    assert.equal(sent.length, 1);
    assert.notEqual(sent[0]!.w, 1, 'not back to itself');
    assert.deepEqual(sent[0]!.groups, [{ route: ROUTE, group: GROUP }]);
    assert.equal(sent[0]!.tried, 0b010);
    assert.equal(b.counters.sharedPassedOn, 1);
    assert.equal(b.counters.droppedNoSubscribers, 0);
  });

  test('already tried by every other holder: dropped and counted, not sent round again', async () => {
    const sent: Sent[] = [];
    const b = await engine(1, 0b011, sent);
    b.receiveForwarded(msg(), false, [{ route: ROUTE, group: GROUP }], 0, 0b001);
    assert.deepEqual(sent, []);
    assert.equal(b.counters.droppedNoSubscribers, 1);
    assert.equal(b.counters.sharedPassedOn, 0);
  });

  test('a worker that holds a member delivers (here: to an offline persistent session\'s queue) and passes nothing on', async () => {
    const sent: Sent[] = [];
    const b = await engine(0, 0b011, sent);
    const s = new Session('member');
    s.expiryInterval = 60;
    b.sessions.set(s.clientId, s);
    b.subscribe(s, {
      clientId: s.clientId, key: `$share/${GROUP}/${FILTER}`, filter: FILTER, group: GROUP,
      qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0, subscriptionId: undefined,
    });
    b.receiveForwarded(msg(), false, [{ route: ROUTE, group: GROUP }], 0, 0b010);
    assert.deepEqual(sent, []);
    assert.equal(s.queue.length, 1);
    assert.equal(b.counters.sharedPassedOn, 0);
  });

  test('the ring record carries the tried workers (and a record without them decodes as 0)', () => {
    const enc = new RecordEncoder();
    const groups = [{ route: ROUTE, group: GROUP }];
    for (const tried of [0, 0b1010, 0x4000_0001]) {
      const [head, payload] = enc.encode(msg(), false, groups, 0, tried);
      const rec = Buffer.concat([head, payload]);
      const f = decodeRecord(rec, 0, rec.length);
      assert.equal(f.tried, tried >>> 0);
      assert.deepEqual(f.groups, groups);
      assert.equal(f.msg.payload.toString(), 'x');
    }
  });
});
