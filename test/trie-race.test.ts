// src/trie across threads: the writer (this thread) applies a seeded sequence of inserts,
// removals and route changes while two reader threads match continuously; every reader
// result is checked exactly against a reference matcher (src/protocol/topic.ts).
//
// Why the check is exact despite the concurrency: the writer publishes how many operations
// it has finished (opsDone) after each one. A reader loads opsDone = a before a match and
// b after it; the trie it walked was then somewhere between state a (a operations applied)
// and state b + 1 (operation b may have been half done). Filters are of two kinds:
//  - stable ones (workers 0..7, route ids 1..) are inserted before the readers start and
//    never touched: a result must hold exactly the stable bits, routes and groups the
//    reference expects;
//  - churned ones (workers 8..15, route ids 10000+) come and go: a churned bit, route or
//    group member in a result must be present in at least one state of [a, b + 1]
//    (each reader regenerates the same operation list from the seed and keeps, per filter
//    and worker, the operation indices where presence flips).
// Ballast filters (workers 16..23) are bulk-inserted and removed to force heap growth and
// table rebuilds during the run; no corpus topic matches them, so their bits must never show.
//
// This file is also the script of its reader threads (workerData.trieRole).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { parseShare, topicMatches } from '../src/protocol/topic.js';
import { TrieReader, TrieWriter, type TrieBuffers, type TrieMatch, type TrieReaderStats } from '../src/trie/index.js';
import { mulberry32 as prng } from './helpers/prng.js';

const SEED = Number(process.env.TRIE_RACE_SEED ?? 0x5eed);
const OPS = 1_200_000;
const TIME_LIMIT_MS = 8_000;
const STABLE_ROUTE = 1;
const CHURN_ROUTE = 10_000;

const NUMS = Array.from({ length: 120 }, (_, i) => `n${i}`);
const LEVELS = ['a', 'b', 'c', '', '$s', 'é', '日', ...NUMS.slice(0, 8)];

function level(rnd: () => number): string {
  return rnd() < 0.3 ? NUMS[Math.floor(rnd() * NUMS.length)]! : LEVELS[Math.floor(rnd() * LEVELS.length)]!;
}

function randFilter(rnd: () => number): string {
  const depth = 1 + Math.floor(rnd() * 4);
  const parts: string[] = [];
  for (let i = 0; i < depth; i++) {
    const r = rnd();
    if (i === depth - 1 && r < 0.2) parts.push('#');
    else if (r < 0.3) parts.push('+');
    else parts.push(level(rnd));
  }
  return parts.join('/');
}

// Operation kinds.
const INS = 0;
const REM = 1;
const ROUTE_ON = 2;
const ROUTE_OFF = 3;
const BALLAST_INS = 4;
const BALLAST_REM = 5;

interface Stable {
  filter: string;
  /** Plain filter, or the inner filter of a shared one. */
  inner: string;
  group: string | null;
  mask: number;
  route: number;
}

interface Churn {
  filter: string;
  inner: string;
  group: string | null;
}

interface Plan {
  stable: Stable[];
  churn: Churn[];
  /** (kind, index, worker) triples. */
  ops: Int32Array;
  ballast: string[];
  topics: string[];
}

function split(filter: string): { inner: string; group: string | null } {
  const p = parseShare(filter);
  if ('error' in p) throw new Error(p.error);
  return { inner: p.filter, group: p.group };
}

/** The whole run, from the seed alone (built identically in every thread). */
function makePlan(seed: number): Plan {
  const rnd = prng(seed);
  const seen = new Set<string>();
  const stable: Stable[] = [];
  while (stable.length < 180) {
    let f = randFilter(rnd);
    if (f === '') continue;
    if (stable.length % 6 === 5) f = `$share/sg${stable.length % 4}/${f}`;
    if (f === '' || seen.has(f)) continue;
    seen.add(f);
    let mask = 1 << Math.floor(rnd() * 8);
    if (rnd() < 0.3) mask |= 1 << Math.floor(rnd() * 8);
    stable.push({ filter: f, ...split(f), mask, route: STABLE_ROUTE + stable.length });
  }
  const churn: Churn[] = [];
  while (churn.length < 300) {
    let f = randFilter(rnd);
    if (f === '') continue;
    if (churn.length % 5 === 4) f = `$share/cg${churn.length % 3}/${f}`;
    if (f === '' || seen.has(f)) continue;
    seen.add(f);
    churn.push({ filter: f, ...split(f) });
  }
  const ballast = Array.from({ length: 20_000 }, (_, i) => (i % 2 === 0 ? `ballast/${i}/x/#` : `ballast/+/q${i}`));
  const ops = new Int32Array(OPS * 3);
  const counts = new Map<number, number>();
  const route = new Uint8Array(churn.length);
  let k = 0;
  let ballastIn = 0;
  let ballastPhase = 0; // 0: filling, 1: draining
  while (k < OPS) {
    const r = rnd();
    if (r < 0.15) {
      // Ballast: fill up in bursts, then drain, again and again.
      const burst = Math.min(200 + Math.floor(rnd() * 800), OPS - k);
      for (let i = 0; i < burst; i++) {
        if (ballastPhase === 0 && ballastIn === ballast.length) ballastPhase = 1;
        else if (ballastPhase === 1 && ballastIn === 0) ballastPhase = 0;
        if (ballastPhase === 0) ops.set([BALLAST_INS, ballastIn++, 16 + (ballastIn % 8)], 3 * k++);
        else ops.set([BALLAST_REM, --ballastIn, 16 + ((ballastIn + 1) % 8)], 3 * k++);
      }
      continue;
    }
    const j = Math.floor(rnd() * churn.length);
    if (r < 0.22) {
      ops.set([route[j] ? ROUTE_OFF : ROUTE_ON, j, 0], 3 * k++);
      route[j] = route[j]! ^ 1;
      continue;
    }
    const w = 8 + Math.floor(rnd() * 8);
    const key = j * 32 + w;
    const c = counts.get(key) ?? 0;
    if (c > 0 && (c >= 3 || rnd() < 0.5)) {
      ops.set([REM, j, w], 3 * k++);
      counts.set(key, c - 1);
    } else {
      ops.set([INS, j, w], 3 * k++);
      counts.set(key, c + 1);
    }
  }
  // Topics: random ones, plus every filter with its wildcards filled in.
  const fill = (f: string): string => f.replace(/#/g, () => (rnd() < 0.5 ? 'a' : 'b/c')).replace(/\+/g, () => level(rnd));
  const topics: string[] = [];
  for (let i = 0; i < 1500; i++) {
    const depth = 1 + Math.floor(rnd() * 5);
    topics.push(Array.from({ length: depth }, () => level(rnd)).join('/'));
  }
  for (const s of stable) topics.push(fill(s.inner));
  for (const c of churn) topics.push(fill(c.inner));
  return { stable, churn, ops, ballast, topics };
}

// ---------------------------------------------------------------------------------------
// Reader side: expectations per topic, presence timelines, the check.

interface Expect {
  stableMask: number;
  stableRoutes: Set<number>;
  /** route → "group|mask" */
  stableGroups: Map<number, string>;
  churnPlain: number[];
  churnShared: number[];
}

/** Sorted state indices (after op k: k + 1) where a presence flips; absent at state 0. */
class Timeline {
  readonly flips = new Map<number, number[]>();
  add(key: number, state: number): void {
    let l = this.flips.get(key);
    if (l === undefined) this.flips.set(key, (l = []));
    l.push(state);
  }
  /** Present in some state of [a, b]? */
  possible(key: number, a: number, b: number): boolean {
    const l = this.flips.get(key);
    if (l === undefined) return false;
    let lo = 0;
    let hi = l.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (l[mid]! <= a) lo = mid + 1;
      else hi = mid;
    }
    // lo = flips at or before state a; odd = present at a. Else a flip inside (a, b].
    return (lo & 1) === 1 || (lo < l.length && l[lo]! <= b);
  }
}

function timelines(plan: Plan): { subs: Timeline; routes: Timeline } {
  const subs = new Timeline();
  const routes = new Timeline();
  const counts = new Map<number, number>();
  const ops = plan.ops;
  for (let k = 0; k < OPS; k++) {
    const kind = ops[3 * k]!;
    const j = ops[3 * k + 1]!;
    const w = ops[3 * k + 2]!;
    if (kind === INS || kind === REM) {
      const key = j * 32 + w;
      const c = counts.get(key) ?? 0;
      const n = kind === INS ? c + 1 : c - 1;
      counts.set(key, n);
      if ((c === 0) !== (n === 0)) subs.add(key, k + 1);
    } else if (kind === ROUTE_ON || kind === ROUTE_OFF) {
      routes.add(j, k + 1);
    }
  }
  return { subs, routes };
}

function expectations(plan: Plan, topic: string): Expect {
  const e: Expect = { stableMask: 0, stableRoutes: new Set(), stableGroups: new Map(), churnPlain: [], churnShared: [] };
  for (const s of plan.stable) {
    if (!topicMatches(s.inner, topic)) continue;
    if (s.group === null) {
      e.stableMask |= s.mask;
      e.stableRoutes.add(s.route);
    } else {
      e.stableGroups.set(s.route, `${s.group}|${s.mask >>> 0}`);
    }
  }
  plan.churn.forEach((c, j) => {
    if (topicMatches(c.inner, topic)) (c.group === null ? e.churnPlain : e.churnShared).push(j);
  });
  return e;
}

/** Returns null when the result is possible in some state of [a, b], else why not. */
function check(plan: Plan, tl: { subs: Timeline; routes: Timeline }, e: Expect, m: TrieMatch, a: number, b: number): string | null {
  if ((m.mask & 0xff) !== e.stableMask) return `stable mask ${m.mask & 0xff} != ${e.stableMask}`;
  if ((m.mask & ~0xffff) !== 0) return `foreign bits ${(m.mask >>> 0).toString(16)}`;
  for (let w = 8; w < 16; w++) {
    if ((m.mask & (1 << w)) === 0) continue;
    if (!e.churnPlain.some((j) => tl.subs.possible(j * 32 + w, a, b))) return `worker ${w} bit without a present churned filter`;
  }
  const seen = new Set<number>();
  for (const r of m.routes) {
    if (seen.has(r)) return `route ${r} twice`;
    seen.add(r);
    if (r < CHURN_ROUTE) {
      if (!e.stableRoutes.has(r)) return `stable route ${r} not expected`;
    } else {
      const j = r - CHURN_ROUTE;
      if (!e.churnPlain.includes(j)) return `churn route ${r} of a non-matching filter`;
      if (!tl.routes.possible(j, a, b)) return `churn route ${r} never on in the window`;
    }
  }
  for (const r of e.stableRoutes) if (!seen.has(r)) return `stable route ${r} missing`;
  const groupsSeen = new Set<number>();
  for (const g of m.groups) {
    if (g.route !== 0 && g.route < CHURN_ROUTE) {
      const want = e.stableGroups.get(g.route);
      if (want !== `${g.group}|${g.mask}`) return `stable group ${g.group}|${g.route}|${g.mask} != ${want}`;
      if (groupsSeen.has(g.route)) return `stable group ${g.route} twice`;
      groupsSeen.add(g.route);
      continue;
    }
    // Churned: candidates are matching shared churn filters of that group.
    let cands = e.churnShared.filter((j) => plan.churn[j]!.group === g.group);
    if (g.route !== 0) {
      const j = g.route - CHURN_ROUTE;
      if (!cands.includes(j)) return `churn group route ${g.route} not a matching filter of ${g.group}`;
      if (!tl.routes.possible(j, a, b)) return `churn group route ${g.route} never on in the window`;
      cands = [j];
    }
    for (let w = 0; w < 32; w++) {
      if ((g.mask & (1 << w)) === 0) continue;
      if (!cands.some((j) => tl.subs.possible(j * 32 + w, a, b))) return `group ${g.group} worker ${w} without a present member`;
    }
    if (g.mask === 0 && g.route === 0) return `empty group entry ${g.group}`;
  }
  for (const r of e.stableGroups.keys()) if (!groupsSeen.has(r)) return `stable group route ${r} missing`;
  return null;
}

interface ReaderResult {
  checks: number;
  failures: string[];
  stats: TrieReaderStats;
}

function runReader(): void {
  const { buffers, ctl, seed, cacheSize } = workerData as { buffers: TrieBuffers; ctl: SharedArrayBuffer; seed: number; cacheSize: number };
  const c = new Int32Array(ctl);
  const plan = makePlan(seed);
  const tl = timelines(plan);
  const exp = plan.topics.map((t) => expectations(plan, t));
  const reader = new TrieReader(buffers, { cacheSize });
  const rnd = prng(seed ^ (cacheSize + 1));
  parentPort!.postMessage({ ready: true });
  let checks = 0;
  const failures: string[] = [];
  while (Atomics.load(c, 1) === 0) {
    for (let i = 0; i < 64; i++) {
      const x = Math.floor(rnd() * plan.topics.length);
      const t = plan.topics[x]!;
      const a = Atomics.load(c, 0);
      const m = reader.match(t);
      const b = Atomics.load(c, 0);
      const why = check(plan, tl, exp[x]!, m, a, b + 1);
      checks++;
      if (why !== null && failures.length < 10) failures.push(`${JSON.stringify(t)} in [${a}, ${b + 1}]: ${why} (${JSON.stringify(m)})`);
    }
  }
  const result: ReaderResult = { checks, failures, stats: reader.stats() };
  reader.close();
  parentPort!.postMessage(result);
}

if (!isMainThread && (workerData as { trieRole?: string } | null)?.trieRole === 'reader') {
  runReader();
} else if (isMainThread) {
  test('race: seeded writer churn against two reader threads, every result checked', { timeout: 20_000 }, async () => {
    const started = Date.now();
    const plan = makePlan(SEED);
    const w = new TrieWriter({ initialBytes: 64 * 1024, maxBytes: 256 << 20, growBytes: 16 * 1024 });
    for (const s of plan.stable) {
      for (let bit = 0; bit < 8; bit++) if ((s.mask & (1 << bit)) !== 0) assert.equal(w.insert(s.filter, bit), true);
      w.setRoute(s.filter, s.route);
    }
    const ctl = new Int32Array(new SharedArrayBuffer(8));
    const readers = [256, 0].map((cacheSize) => new Worker(new URL(import.meta.url), {
      workerData: { trieRole: 'reader', buffers: w.buffers(), ctl: ctl.buffer, seed: SEED, cacheSize },
    }));
    const results = readers.map((r) => new Promise<ReaderResult>((resolve, reject) => {
      r.on('message', (m: ReaderResult | { ready: true }) => {
        if (!('ready' in m)) resolve(m);
      });
      r.once('error', reject);
      r.once('exit', (code) => reject(new Error(`reader exited with ${code}`)));
    }));
    const ready = readers.map((r) => new Promise<void>((resolve) => r.once('message', () => resolve())));
    await Promise.all(ready);

    // The writer: apply the operations in order, publishing opsDone after each.
    const counts = new Map<number, number>();
    const ops = plan.ops;
    const deadline = Date.now() + TIME_LIMIT_MS;
    let done = 0;
    let mismatches = 0;
    while (done < OPS && Date.now() < deadline) {
      const end = Math.min(OPS, done + 2000);
      for (let k = done; k < end; k++) {
        const kind = ops[3 * k]!;
        const j = ops[3 * k + 1]!;
        const wk = ops[3 * k + 2]!;
        const f = kind >= BALLAST_INS ? plan.ballast[j]! : plan.churn[j]!.filter;
        if (kind === INS || kind === REM) {
          const key = j * 32 + wk;
          const c = counts.get(key) ?? 0;
          if (kind === INS) {
            if (w.insert(f, wk) !== (c === 0)) mismatches++;
            counts.set(key, c + 1);
          } else {
            if (w.remove(f, wk) !== (c === 1)) mismatches++;
            counts.set(key, c - 1);
          }
        } else if (kind === ROUTE_ON) {
          w.setRoute(f, CHURN_ROUTE + j);
        } else if (kind === ROUTE_OFF) {
          w.setRoute(f, 0);
        } else if (kind === BALLAST_INS) {
          if (!w.insert(f, wk)) mismatches++;
        } else if (!w.remove(f, wk)) {
          mismatches++;
        }
        Atomics.store(ctl, 0, k + 1);
      }
      done = end;
      await new Promise((r) => setImmediate(r));
    }
    Atomics.store(ctl, 1, 1);
    const res = await Promise.all(results);
    const wst = w.stats();

    // Quiescent: the final state must match exactly.
    const final = new TrieReader(w.buffers(), { cacheSize: 0 });
    const tl = timelines(plan);
    let finalChecks = 0;
    for (const t of plan.topics) {
      const e = expectations(plan, t);
      const m = final.match(t);
      const why = check(plan, tl, e, m, done, done);
      assert.equal(why, null, `final state, ${JSON.stringify(t)}: ${why}`);
      // check() lets a churned filter be missing; at rest nothing may be missing.
      let bits = 0;
      const routes: number[] = [];
      let groups = e.stableGroups.size;
      for (const j of e.churnPlain) {
        for (let wk = 8; wk < 16; wk++) if (tl.subs.possible(j * 32 + wk, done, done)) bits |= 1 << wk;
        if (tl.routes.possible(j, done, done)) routes.push(CHURN_ROUTE + j);
      }
      for (const j of e.churnShared) {
        let on = tl.routes.possible(j, done, done);
        for (let wk = 8; wk < 16; wk++) if (tl.subs.possible(j * 32 + wk, done, done)) on = true;
        if (on) groups++;
      }
      assert.equal(m.mask & 0xff00, bits, `final churned bits for ${JSON.stringify(t)}`);
      assert.deepEqual(m.routes.filter((r) => r >= CHURN_ROUTE).sort((x, y) => x - y), routes.sort((x, y) => x - y));
      assert.equal(m.groups.length, groups, `final group entries for ${JSON.stringify(t)}`);
      finalChecks++;
    }
    final.close();
    await Promise.all(readers.map((r) => r.terminate()));

    const summary = {
      seed: SEED, opsApplied: done, ms: Date.now() - started, readers: res.map((r) => ({ checks: r.checks, ...r.stats })),
      heapBytes: wst.heapBytes, grows: wst.grows, rebuilds: wst.rebuilds, defrags: wst.defrags, limboBytes: wst.limboBytes,
    };
    process.stdout.write(`# trie race: ${JSON.stringify(summary)}\n`);
    assert.equal(mismatches, 0, 'insert/remove return values follow the reference counts');
    for (const r of res) {
      assert.deepEqual(r.failures, [], `reader (cache ${r.stats.slot}) saw impossible results`);
      assert.ok(r.checks > 2_000, `only ${r.checks} checks`);
    }
    assert.ok(done >= 50_000, `only ${done} operations in ${TIME_LIMIT_MS} ms`);
    assert.ok(wst.grows >= 5 && wst.rebuilds > 10, 'growth and rebuilds happened during the run');
    assert.ok(finalChecks > 0);
  });
}
