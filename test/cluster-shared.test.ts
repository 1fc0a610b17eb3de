// Shared subscriptions across a cluster, for every mqtt.shared_strategy (docs/cluster.md,
// "Shared subscriptions"): two cores on a one-member etcd per strategy, real MQTT clients,
// 3 members of a group on node A and 1 on node B, publishers on both nodes, QoS 1. Every
// message reaches exactly one member cluster-wide; the strategy's property holds across
// the nodes; the node choice is weighted by online members (round robin and random ≈ 75/25);
// a member that leaves (unsubscribes, or goes offline with a persistent session) redirects.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { MqttClient } from 'mqtt';
import type { SharedStrategy } from '../src/config/types.js';
import { useEtcdCluster } from './helpers/etcd.js';
import { eventually, useNodes, type ClusterNode } from './helpers/cluster.js';
import { Clients, inbox, uid, type Received } from './helpers/clients.js';
import { sleep } from './helpers/broker.js';

const T = { timeout: 90_000 };

interface Member {
  c: MqttClient;
  id: string;
  node: ClusterNode;
  box: Received[];
}

interface GroupView {
  group: string;
  workers: number[];
  nodes: string[];
  online: Record<string, number>;
}

describe('cluster shared subscriptions, every strategy, 2 cores', () => {
  const etcd = useEtcdCluster(1);
  const strategies: SharedStrategy[] = ['round_robin', 'random', 'sticky', 'hash_clientid', 'hash_topic', 'local'];

  for (const strategy of strategies) {
    describe(`shared_strategy "${strategy}"`, () => {
      const nodes = useNodes();
      const clients = new Clients();
      after(() => clients.closeAll());
      let A: ClusterNode;
      let B: ClusterNode;
      let n = 0;

      before(async () => {
        const common = {
          role: 'core' as const, etcd: etcd.cluster.endpoints, clusterName: `s${process.pid}${strategy.replace('_', '')}`,
          env: { FLEETMQ_MQTT__SHARED_STRATEGY: strategy },
        };
        [A, B] = await Promise.all([nodes.start({ ...common, name: 'sa' }), nodes.start({ ...common, name: 'sb' })]);
      });

      const client = (on: ClusterNode, opts: Record<string, unknown> = {}): Promise<MqttClient> =>
        clients.mqtt(on.url, { protocolVersion: 5, clientId: uid('sh'), ...opts });

      async function member(on: ClusterNode, share: string, opts: Record<string, unknown> = {}): Promise<Member> {
        const id = uid('m');
        const c = await client(on, { clientId: id, ...opts });
        const box = inbox(c);
        await c.subscribeAsync(share, { qos: 1 });
        return { c, id, node: on, box };
      }

      async function group(on: ClusterNode, topic: string, name: string): Promise<GroupView | undefined> {
        const r = (await on.get(`/api/v1/routes?topic=${encodeURIComponent(topic)}`)).body as { groups: GroupView[] };
        return r.groups.find((g) => g.group === name);
      }

      /** Waits until both nodes see `online` (node → online members) for the group. */
      async function settled(topic: string, name: string, online: Map<ClusterNode, number>): Promise<void> {
        const want = JSON.stringify(Object.fromEntries([...online].map(([k, v]) => [k.name, v] as const).sort()));
        let last = '';
        await eventually(async () => {
          const views = await Promise.all([A, B].map((x) => group(x, topic, name)));
          last = JSON.stringify(views.map((v) => v?.online ?? {}));
          return views.every((v) => JSON.stringify(Object.fromEntries(Object.entries(v?.online ?? {}).sort())) === want);
        }, `both nodes seeing ${want} for ${name} (last ${last})`);
      }

      /** A group of 3 members on A and 1 on B, settled on both nodes. */
      async function setup(): Promise<{ f: string; topic: (i: number) => string; name: string; ms: Member[] }> {
        const name = `g${++n}`;
        const f = `sh/${process.pid}/${strategy}/${n}/+`;
        const ms = await Promise.all([A, A, A, B].map((x) => member(x, `$share/${name}/${f}`)));
        const topic = (i: number): string => `sh/${process.pid}/${strategy}/${n}/${i}`;
        await settled(topic(0), name, new Map([[A, 3], [B, 1]]));
        return { f, topic, name, ms };
      }

      /** Publishes `count` QoS 1 messages, payload `<tag>:<i>`, topic by `topicOf`. */
      async function publish(pub: MqttClient, tag: string, count: number, topicOf: (i: number) => string): Promise<void> {
        for (let i = 0; i < count; i++) await pub.publishAsync(topicOf(i), `${tag}:${i}`, { qos: 1 });
      }

      /** Waits for `count` deliveries of `tag` over `ms`, then checks each arrived once; returns member index per message. */
      async function delivered(ms: Member[], tag: string, count: number): Promise<Map<number, number>> {
        const of = (m: Member): Received[] => m.box.filter((x) => x.payload.startsWith(`${tag}:`));
        await eventually(() => ms.reduce((s, m) => s + of(m).length, 0) >= count, `${count} deliveries of ${tag}`, 20_000);
        await sleep(300); // no duplicate comes later
        const who = new Map<number, number>();
        ms.forEach((m, k) => {
          for (const x of of(m)) {
            const i = Number(x.payload.slice(tag.length + 1));
            assert.ok(!who.has(i), `${tag}:${i} delivered twice (members ${who.get(i)} and ${k})`);
            who.set(i, k);
          }
        });
        assert.equal(who.size, count, `every ${tag} message delivered once`);
        return who;
      }

      const counts = (who: Map<number, number>, members: number): number[] => {
        const c = new Array<number>(members).fill(0);
        for (const k of who.values()) c[k]!++;
        return c;
      };

      test('each message to exactly one member cluster-wide; the strategy holds across nodes', T, async () => {
        const { topic, ms } = await setup();
        const onA = await client(A);
        const onB = await client(B);
        const N = 200;
        if (strategy === 'round_robin' || strategy === 'random') {
          // Weighted by online members: 3 of 4 on A, from either publisher's node.
          for (const [pub, tag] of [[onA, 'fromA'], [onB, 'fromB']] as const) {
            await publish(pub, tag, N, topic);
            const c = counts(await delivered(ms, tag, N), 4);
            const onNodeB = c[3]!;
            const tol = strategy === 'round_robin' ? 0.06 : 0.11; // random: > 3.5 sd
            assert.ok(Math.abs(onNodeB / N - 0.25) <= tol, `${tag}: node B's one member got ${onNodeB} of ${N} (${c.join('/')}), want ~25%`);
            for (const [k, x] of c.entries()) assert.ok(x > 0, `${tag}: member ${k} got some (${c.join('/')})`);
          }
        } else if (strategy === 'sticky') {
          for (const [pub, tag] of [[onA, 'fromA'], [onB, 'fromB']] as const) {
            await publish(pub, tag, 60, topic);
            const c = counts(await delivered(ms, tag, 60), 4);
            assert.equal(c.filter((x) => x > 0).length, 1, `${tag}: one member got all (${c.join('/')})`);
          }
        } else if (strategy === 'hash_clientid') {
          const pubs = await Promise.all([A, A, A, A, B, B, B, B].map((x) => client(x)));
          const used = new Set<number>();
          for (const [p, pub] of pubs.entries()) {
            await publish(pub, `p${p}`, 20, topic);
            const c = counts(await delivered(ms, `p${p}`, 20), 4);
            assert.equal(c.filter((x) => x > 0).length, 1, `publisher ${p}: one member got all (${c.join('/')})`);
            used.add(c.findIndex((x) => x > 0));
          }
          assert.ok(used.size >= 2, `publishers spread over members: ${[...used].join(',')}`);
        } else if (strategy === 'hash_topic') {
          // Each topic from both nodes: the same member, whichever node published it.
          const T8 = 8;
          const each = 10;
          await publish(onA, 'tA', T8 * each, (i) => topic(i % T8));
          await publish(onB, 'tB', T8 * each, (i) => topic(i % T8));
          const a = await delivered(ms, 'tA', T8 * each);
          const b = await delivered(ms, 'tB', T8 * each);
          const used = new Set<number>();
          for (let t = 0; t < T8; t++) {
            const got = new Set<number>();
            for (const [i, k] of a) if (i % T8 === t) got.add(k);
            for (const [i, k] of b) if (i % T8 === t) got.add(k);
            assert.equal(got.size, 1, `topic ${t}: one member from both nodes (${[...got].join(',')})`);
            used.add([...got][0]!);
          }
          assert.ok(used.size >= 2, `topics spread over members: ${[...used].join(',')}`);
        } else {
          // local: a publisher's node keeps its messages, spread over its own members.
          await publish(onA, 'fromA', 60, topic);
          const c = counts(await delivered(ms, 'fromA', 60), 4);
          assert.equal(c[3], 0, `node B got none of A's (${c.join('/')})`);
          for (const k of [0, 1, 2]) assert.ok(c[k]! > 0, `A's member ${k} got some (${c.join('/')})`);
          await publish(onB, 'fromB', 30, topic);
          assert.deepEqual(counts(await delivered(ms, 'fromB', 30), 4), [0, 0, 0, 30]);
        }
      });

      test('a member that leaves (unsubscribes) redirects its share to the others', T, async () => {
        const { f, topic, name, ms } = await setup();
        const onA = await client(A);
        const onB = await client(B);
        // Who leaves: sticky's chosen member (it had everything), else node B's only member.
        let leaving = 3;
        if (strategy === 'sticky') {
          await publish(onB, 'before', 20, topic);
          const c = counts(await delivered(ms, 'before', 20), 4);
          leaving = c.findIndex((x) => x === 20);
          assert.ok(leaving >= 0, `one member had all (${c.join('/')})`);
        }
        const gone = ms[leaving]!;
        await gone.c.unsubscribeAsync(`$share/${name}/${f}`);
        const left = new Map([[A, 3], [B, 1]]);
        left.set(gone.node, left.get(gone.node)! - 1);
        if (left.get(B) === 0) left.delete(B);
        await settled(topic(0), name, left);
        for (const [pub, tag] of [[onA, 'afterA'], [onB, 'afterB']] as const) {
          await publish(pub, tag, 40, topic);
          const c = counts(await delivered(ms, tag, 40), 4);
          assert.equal(c[leaving], 0, `${tag}: the member that left got none (${c.join('/')})`);
          if (strategy === 'sticky') assert.equal(c.filter((x) => x > 0).length, 1, `${tag}: one other member got all (${c.join('/')})`);
        }
      });

      if (strategy === 'round_robin') {
        test('a node whose only member is offline (persistent session) gets nothing while others are online, then its queue', T, async () => {
          const name = `g${++n}`;
          const f = `sh/${process.pid}/off/${n}/+`;
          const share = `$share/${name}/${f}`;
          const topic = (i: number): string => `sh/${process.pid}/off/${n}/${i}`;
          const ms = await Promise.all([A, A].map((x) => member(x, share)));
          const pid = uid('persist');
          const persistent = await member(B, share, { clientId: pid, clean: false, properties: { sessionExpiryInterval: 300 } });
          await settled(topic(0), name, new Map([[A, 2], [B, 1]]));
          await persistent.c.endAsync();
          // B still holds the route (the session is kept), with no member online.
          await settled(topic(0), name, new Map([[A, 2], [B, 0]]));
          const pub = await client(B); // even from B's own node
          await publish(pub, 'online', 60, topic);
          const c = counts(await delivered(ms, 'online', 60), 2);
          assert.equal(c[0]! + c[1]!, 60, 'all to the online members on A');
          // Without online members anywhere, the offline session queues its node's share.
          await Promise.all(ms.map((m) => m.c.unsubscribeAsync(share)));
          await settled(topic(0), name, new Map([[B, 0]]));
          await publish(pub, 'queued', 10, topic);
          // The inbox is attached before CONNECT: queued messages follow the CONNACK at once.
          let box: Received[] = [];
          const { client: back, connack } = await clients.connack(B.url, {
            protocolVersion: 5, clientId: pid, clean: false, properties: { sessionExpiryInterval: 300 },
          }, (c) => (box = inbox(c)));
          assert.equal(connack.sessionPresent, true);
          await eventually(() => box.filter((x) => x.payload.startsWith('queued:')).length >= 10, 'the queued messages on reconnect');
          await sleep(200);
          assert.deepEqual(box.filter((x) => x.payload.startsWith('queued:')).map((x) => x.payload).sort(),
            Array.from({ length: 10 }, (_, i) => `queued:${i}`).sort());
          await back.unsubscribeAsync(share);
        });
      }
    });
  }
});
