#!/usr/bin/env node
// npm run bench:trie [-- --filters 1000000 --mixed 1000000 --duration 2 --json FILE]
//
// The shared-memory route trie (src/trie, loaded from the broker's build in dist/) against a
// plain JS object-per-level trie, in the same run:
//   set "bench": N unique `bench/%i/#` filters; set "mixed": N filters with `+` at levels
//   1 to 4 and some without wildcards.
// Per set and implementation: bytes per filter, inserts/s, matches/s per thread with 1 and
// with 2 reader threads (the SAB trie; the JS trie cannot be shared, so it is measured in
// one thread), cached matches/s (hot topics), removes/s. Prints a Markdown table, then JSON.
// Build first: npm run build.
import { performance } from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';
import { writeFileSync } from 'node:fs';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

// ---- The trie module's surface (bench/ compiles on its own; dist/src/trie is loaded at run time).
interface WriterStats {
  filters: number;
  heapBytes: number;
  usedBytes: number;
  freeBytes: number;
  privateBytes: number;
  nodes: number;
  strings: number;
  grows: number;
  rebuilds: number;
  defrags: number;
}
interface Writer {
  insert(filter: string, worker: number): boolean;
  remove(filter: string, worker: number): boolean;
  buffers(): unknown;
  stats(): WriterStats;
}
interface Reader {
  match(topic: string): { mask: number; routes: readonly number[] };
  stats(): { matches: number; cacheHits: number };
  close(): void;
}
interface TrieModule {
  TrieWriter: new (opts?: { initialBytes?: number; maxBytes?: number }) => Writer;
  TrieReader: new (buffers: unknown, opts?: { cacheSize?: number }) => Reader;
}

async function loadTrie(): Promise<TrieModule> {
  const url = new URL('../../dist/src/trie/index.js', import.meta.url);
  try {
    return (await import(url.href)) as TrieModule;
  } catch (e) {
    throw new Error(`cannot load ${url.pathname} (run npm run build first): ${e instanceof Error ? e.message : String(e)}`);
  }
}

// ---- Plain JS object-per-level trie (the baseline) --------------------------------------------

class JNode {
  lit: Map<string, JNode> | null = null;
  plus: JNode | null = null;
  mask = 0;
  hmask = 0;
}

class JsTrie {
  readonly root = new JNode();

  insert(filter: string, worker: number): boolean {
    let node = this.root;
    const levels = filter.split('/');
    const bit = 1 << worker;
    for (let i = 0; i < levels.length; i++) {
      const l = levels[i]!;
      if (l === '#') {
        const had = (node.hmask & bit) !== 0;
        node.hmask |= bit;
        return !had;
      }
      if (l === '+') {
        node = node.plus ??= new JNode();
      } else {
        node.lit ??= new Map();
        let next = node.lit.get(l);
        if (next === undefined) node.lit.set(l, (next = new JNode()));
        node = next;
      }
    }
    const had = (node.mask & bit) !== 0;
    node.mask |= bit;
    return !had;
  }

  match(topic: string): number {
    const levels = topic.split('/');
    return this.walk(this.root, levels, 0, topic.charCodeAt(0) === 36) >>> 0;
  }

  private walk(node: JNode, levels: string[], i: number, dollar: boolean): number {
    const wild = i !== 0 || !dollar;
    let m = wild ? node.hmask : 0;
    if (i === levels.length) return m | node.mask;
    const next = node.lit?.get(levels[i]!);
    if (next !== undefined) m |= this.walk(next, levels, i + 1, dollar);
    if (wild && node.plus !== null) m |= this.walk(node.plus, levels, i + 1, dollar);
    return m;
  }
}

// ---- Workloads -------------------------------------------------------------------------------

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Workload {
  name: string;
  describe: string;
  filter(i: number): string;
  /** A topic that matches filter i. */
  topic(i: number): string;
}

const BENCH: Workload = {
  name: 'bench',
  describe: '`bench/%i/#`',
  filter: (i) => `bench/${i}/#`,
  topic: (i) => `bench/${i}/x`,
};

const MIXED: Workload = {
  name: 'mixed',
  describe: '`m/%i/+/t`, `m/+/%i/#`, `+/d%i/s`, `m/g%k/%r/+`, `m/g%k/+/%r/#`, `sensor/%i/temp` (k = i mod 1000, r = i / 1000)',
  filter(i) {
    const k = i % 1000;
    const r = Math.floor(i / 1000);
    switch (i % 6) {
      case 0: return `m/${i}/+/t`;
      case 1: return `m/+/${i}/#`;
      case 2: return `+/d${i}/s`;
      case 3: return `m/g${k}/${r}/+`;
      case 4: return `m/g${k}/+/${r}/#`;
      default: return `sensor/${i}/temp`;
    }
  },
  topic(i) {
    const k = i % 1000;
    const r = Math.floor(i / 1000);
    switch (i % 6) {
      case 0: return `m/${i}/x/t`;
      case 1: return `m/y/${i}/z`;
      case 2: return `q/d${i}/s`;
      case 3: return `m/g${k}/${r}/v`;
      case 4: return `m/g${k}/w/${r}/e`;
      default: return `sensor/${i}/temp`;
    }
  },
};

// ---- Reader threads --------------------------------------------------------------------------

interface ReaderJob {
  role: 'reader';
  buffers: unknown;
  topics: string[];
  durationMs: number;
  cacheSize: number;
  /** [ready count, go flag] */
  sync: SharedArrayBuffer;
}

interface ReaderOut {
  matches: number;
  ms: number;
  misses: number;
  cacheHits: number;
}

async function readerMain(job: ReaderJob): Promise<void> {
  const mod = await loadTrie();
  const reader = new mod.TrieReader(job.buffers, { cacheSize: job.cacheSize });
  const topics = job.topics;
  const sync = new Int32Array(job.sync);
  // Warm up (JIT) on the topics, then wait for the start signal so the threads run together.
  for (let i = 0; i < Math.min(topics.length, 20_000); i++) reader.match(topics[i]!);
  Atomics.add(sync, 0, 1);
  Atomics.notify(sync, 0);
  Atomics.wait(sync, 1, 0);
  const out = runMatches((t) => reader.match(t).mask, topics, job.durationMs);
  out.cacheHits = reader.stats().cacheHits;
  reader.close();
  parentPort!.postMessage(out);
}

/** Matches topics round-robin for durationMs; every topic must match (mask != 0). */
function runMatches(match: (t: string) => number, topics: string[], durationMs: number): ReaderOut {
  const n = topics.length;
  let i = 0;
  let matches = 0;
  let misses = 0;
  const t0 = performance.now();
  let now = t0;
  const end = t0 + durationMs;
  while (now < end) {
    for (let k = 0; k < 1024; k++) {
      if (match(topics[i]!) === 0) misses++;
      i = i + 1 === n ? 0 : i + 1;
    }
    matches += 1024;
    now = performance.now();
  }
  return { matches, ms: now - t0, misses, cacheHits: 0 };
}

async function runReaders(buffers: unknown, topicSets: string[][], durationMs: number, cacheSize: number): Promise<ReaderOut[]> {
  const sync = new SharedArrayBuffer(8);
  const s = new Int32Array(sync);
  const workers = topicSets.map((topics) => new Worker(new URL(import.meta.url), {
    workerData: { role: 'reader', buffers, topics, durationMs, cacheSize, sync } satisfies ReaderJob,
  }));
  const outs = workers.map((w) => new Promise<ReaderOut>((resolve, reject) => {
    w.once('message', (m: ReaderOut) => resolve(m));
    w.once('error', reject);
  }));
  while (Atomics.load(s, 0) < workers.length) await new Promise((r) => setTimeout(r, 5));
  Atomics.store(s, 1, 1);
  Atomics.notify(s, 1);
  const res = await Promise.all(outs);
  await Promise.all(workers.map((w) => w.terminate()));
  return res;
}

// ---- Main ------------------------------------------------------------------------------------

interface Options {
  filters: number;
  mixed: number;
  durationMs: number;
  json: string | null;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { filters: 1_000_000, mixed: -1, durationMs: 2000, json: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = argv[i + 1];
    const num = (): number => {
      const n = Number(v);
      if (v === undefined || !Number.isFinite(n) || n < 0) throw new Error(`${a} needs a number`);
      i++;
      return n;
    };
    if (a === '--filters') o.filters = Math.floor(num());
    else if (a === '--mixed') o.mixed = Math.floor(num());
    else if (a === '--duration') o.durationMs = num() * 1000;
    else if (a === '--json') {
      if (v === undefined) throw new Error('--json needs a file');
      o.json = v;
      i++;
    } else if (a === '--help' || a === '-h') {
      process.stdout.write('usage: node bench/dist/trie.js [--filters N] [--mixed N] [--duration S] [--json FILE]\n');
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  if (o.mixed < 0) o.mixed = o.filters;
  if (o.filters < 1) throw new Error('--filters must be >= 1');
  return o;
}

interface Row {
  set: string;
  impl: 'sab' | 'js';
  filters: number;
  bytesPerFilter: number;
  /** SAB: bytes in live blocks (without the committed-but-unused tail and free lists). */
  usedBytesPerFilter?: number;
  insertsPerSec: number;
  matchesPerSec1: number;
  matchesPerSec2?: [number, number];
  cachedMatchesPerSec?: number;
  removesPerSec?: number;
  extra?: Record<string, number>;
}

function gcFn(): () => void {
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

function topicsFor(w: Workload, n: number, count: number, seed: number): string[] {
  const rnd = prng(seed);
  return Array.from({ length: count }, () => w.topic(Math.floor(rnd() * n)));
}

async function benchSet(mod: TrieModule, w: Workload, n: number, o: Options, gc: () => void): Promise<Row[]> {
  const filters = Array.from({ length: n }, (_, i) => w.filter(i));
  const topics = [0, 1].map((k) => topicsFor(w, n, 1 << 16, 1234 + k));
  const hot = topicsFor(w, n, 1000, 99);
  const rows: Row[] = [];

  // SAB trie.
  gc();
  const writer = new mod.TrieWriter({ initialBytes: 1 << 20, maxBytes: 2 ** 31 - 4096 });
  let t0 = performance.now();
  for (let i = 0; i < n; i++) writer.insert(filters[i]!, i & 31);
  const insMs = performance.now() - t0;
  const st = writer.stats();
  const buffers = writer.buffers();
  const one = await runReaders(buffers, [topics[0]!], o.durationMs, 0);
  const two = await runReaders(buffers, [topics[0]!, topics[1]!], o.durationMs, 0);
  const cached = await runReaders(buffers, [hot], o.durationMs, 4096);
  for (const r of [...one, ...two]) if (r.misses !== 0) throw new Error(`${w.name}: ${r.misses} topics did not match`);
  t0 = performance.now();
  for (let i = 0; i < n; i++) writer.remove(filters[i]!, i & 31);
  const remMs = performance.now() - t0;
  const after = writer.stats();
  rows.push({
    set: w.name, impl: 'sab', filters: st.filters,
    bytesPerFilter: (st.heapBytes + st.privateBytes) / st.filters,
    usedBytesPerFilter: st.usedBytes / st.filters,
    insertsPerSec: n / (insMs / 1000),
    matchesPerSec1: one[0]!.matches / (one[0]!.ms / 1000),
    matchesPerSec2: [two[0]!.matches / (two[0]!.ms / 1000), two[1]!.matches / (two[1]!.ms / 1000)],
    cachedMatchesPerSec: cached[0]!.matches / (cached[0]!.ms / 1000),
    removesPerSec: n / (remMs / 1000),
    extra: {
      heapBytes: st.heapBytes, usedBytes: st.usedBytes, nodes: st.nodes, strings: st.strings,
      grows: st.grows, rebuilds: st.rebuilds, defrags: st.defrags, afterRemoveUsedBytes: after.usedBytes, afterRemoveFreeBytes: after.freeBytes,
    },
  });

  // JS object trie, same filters and topics, in this thread.
  gc();
  const h0 = process.memoryUsage().heapUsed;
  const js = new JsTrie();
  t0 = performance.now();
  for (let i = 0; i < n; i++) js.insert(filters[i]!, i & 31);
  const jsInsMs = performance.now() - t0;
  gc();
  const jsBytes = process.memoryUsage().heapUsed - h0;
  for (let i = 0; i < 20_000; i++) js.match(topics[0]![i % topics[0]!.length]!);
  const jsOne = runMatches((t) => js.match(t), topics[0]!, o.durationMs);
  if (jsOne.misses !== 0) throw new Error(`${w.name}: JS trie missed ${jsOne.misses}`);
  rows.push({
    set: w.name, impl: 'js', filters: n,
    bytesPerFilter: jsBytes / n,
    insertsPerSec: n / (jsInsMs / 1000),
    matchesPerSec1: jsOne.matches / (jsOne.ms / 1000),
  });
  return rows;
}

function fmt(n: number | undefined, digits = 0): string {
  if (n === undefined) return '—';
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(digits > 0 ? digits : 0)} k`;
  return n.toFixed(digits);
}

/**
 * What a reader pays per match for the grace-period protocol: two Atomics.add on its own
 * counter (entry, exit), uncontended. Also one Atomics.load (the generation check).
 */
function rcuCostNs(): { enterExitNs: number; loadNs: number } {
  const a = new Int32Array(new SharedArrayBuffer(64));
  const n = 10_000_000;
  let t0 = performance.now();
  for (let i = 0; i < n; i++) {
    Atomics.add(a, 1, 1);
    Atomics.add(a, 1, 1);
  }
  const enterExitNs = ((performance.now() - t0) * 1e6) / n;
  let x = 0;
  t0 = performance.now();
  for (let i = 0; i < n; i++) x += Atomics.load(a, 4 + (i & 3));
  const loadNs = ((performance.now() - t0) * 1e6) / n + (x === -1 ? 1 : 0);
  return { enterExitNs, loadNs };
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const mod = await loadTrie();
  const gc = gcFn();
  const rcu = rcuCostNs();
  const rows: Row[] = [];
  rows.push(...(await benchSet(mod, BENCH, o.filters, o, gc)));
  if (o.mixed > 0) rows.push(...(await benchSet(mod, MIXED, o.mixed, o, gc)));

  const lines = [
    `node ${process.version}, ${(await import('node:os')).cpus().length} CPUs, --filters ${o.filters} --mixed ${o.mixed} --duration ${o.durationMs / 1000}`,
    '',
    '| set | trie | filters | bytes/filter | inserts/s | matches/s, 1 thread | matches/s per thread, 2 threads | cached matches/s | removes/s |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map((r) => `| ${r.set} | ${r.impl === 'sab' ? 'SharedArrayBuffer' : 'JS objects'} | ${r.filters} | ${r.bytesPerFilter.toFixed(1)}${r.usedBytesPerFilter !== undefined ? ` (used ${r.usedBytesPerFilter.toFixed(1)})` : ''} | ${fmt(r.insertsPerSec)} | ${fmt(r.matchesPerSec1)} | ${r.matchesPerSec2 ? r.matchesPerSec2.map((x) => fmt(x)).join(' / ') : '—'} | ${fmt(r.cachedMatchesPerSec)} | ${fmt(r.removesPerSec)} |`),
    '',
    `Reader protocol cost per match: enter + exit (2 × Atomics.add) ${rcu.enterExitNs.toFixed(1)} ns; one Atomics.load ${rcu.loadNs.toFixed(1)} ns.`,
    '',
    `Sets: bench = ${BENCH.describe}; mixed = ${MIXED.describe}. Topics: 65,536 per thread, each matching one filter of the set, uncached (cache off); cached = 1,000 hot topics with the per-reader cache on. JS objects: one thread (its trie cannot be shared); bytes from heapUsed after gc().`,
  ];
  process.stdout.write(`${lines.join('\n')}\n\n`);
  const json = { node: process.version, options: o, rcu, rows };
  process.stdout.write(`${JSON.stringify(json)}\n`);
  if (o.json !== null) writeFileSync(o.json, `${JSON.stringify(json, null, 2)}\n`);
}

if (!isMainThread && (workerData as { role?: string } | null)?.role === 'reader') {
  readerMain(workerData as ReaderJob).catch((e: unknown) => {
    process.stderr.write(`trie bench reader: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  });
} else if (isMainThread) {
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`bench:trie: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(1);
    },
  );
}
