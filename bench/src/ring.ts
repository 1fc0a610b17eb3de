#!/usr/bin/env node
// Throughput of the SharedArrayBuffer SPSC ring (src/shm, docs/shm.md) between two worker
// threads, next to postMessage between the same two threads, in one run. Prints a Markdown
// table. Needs the broker built (dist/src/shm: `npx tsc -p tsconfig.json`).
//
//   node bench/dist/ring.js [--duration-ms 1000] [--rounds 3] [--sizes 64,1024]
//                           [--capacity 262144] [--paced-rate 200000] [--modes LIST]
//
// Modes (every producer writes as fast as it can):
//   ring-spin       no doorbell: the consumer drains in a busy loop and the producer spins on
//                   a full ring. The upper bound while each thread has a core to itself.
//   ring-doorbell   the broker's way: the consumer runs RingConsumer.start (batches, yields to
//                   its event loop, sleeps on Atomics.waitAsync when empty, woken by the
//                   producer's bell); on a full ring the producer awaits waitForSpace() (sleeps
//                   until a quarter of the ring is free, woken by the consumer's space bell)
//   postMessage     one record per MessagePort message (structured clone of a Uint8Array)
//   postMessage-batch  256 records per message (an array of Uint8Arrays)
// postMessage producers block (Atomics.wait) while 16384 records are unacknowledged.
// Paced rows: the producer writes `--paced-rate` 64-byte records/s in 1 ms bursts and sleeps
// between them; there the figure that matters is CPU per record (an idle spin burns a core).
// CPU is the whole process's user+system time (all threads) during the measured window.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { MessageChannel, Worker, isMainThread, parentPort, workerData, type MessagePort } from 'node:worker_threads';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const SHM = join(ROOT, 'dist/src/shm/index.js');

// The part of src/shm this benchmark uses. bench/ compiles on its own (rootDir bench/src), so
// it loads the built module at run time instead of importing the source.
type OnRecord = (data: Buffer, start: number, length: number) => void;
interface ShmModule {
  createRing(capacity: number): SharedArrayBuffer;
  ringStats(sab: SharedArrayBuffer): { bells: number; sleeps: number; fullEvents: number; spaceBells: number };
  RingProducer: new (sab: SharedArrayBuffer) => {
    tryWrite(rec: Uint8Array | readonly Uint8Array[]): boolean;
    waitForSpace(bytes?: number): Promise<void>;
  };
  RingConsumer: new (sab: SharedArrayBuffer) => {
    drain(onRecord: OnRecord, max?: number): number;
    start(onRecord: OnRecord, opts?: { batch?: number; ref?: boolean }): { stop(): Promise<void>; done: Promise<void> };
  };
}

const MODES = ['ring-spin', 'ring-doorbell', 'postMessage', 'postMessage-batch'] as const;
type Mode = (typeof MODES)[number];
const PM_BATCH = 256;
/** postMessage flow control: records sent but not yet counted by the consumer. */
const PM_WINDOW = 16_384;
const PM_ACK_EVERY = 256;

interface Job {
  role: 'producer' | 'consumer';
  mode: Mode;
  size: number;
  durationMs: number;
  /** Records/s for a paced run, 0 = as fast as possible. */
  rate: number;
  ring: SharedArrayBuffer | null;
  /** Int32: [0] go, [1] postMessage records counted by the consumer. */
  ctl: SharedArrayBuffer;
  port: MessagePort | null;
}

interface ProducerReport { t0: number; sent: number; spins: number }
interface ConsumerReport { t1: number; got: number; bytes: number }

const now = (): number => Number(process.hrtime.bigint()); // ns, one clock for every thread

// ---------------------------------------------------------------------------------------
// Worker side.

async function runJob(j: Job): Promise<void> {
  const shm = (await import(pathToFileURL(SHM).href)) as ShmModule;
  const ctl = new Int32Array(j.ctl);
  if (j.role === 'producer') {
    parentPort?.postMessage('ready');
    Atomics.wait(ctl, 0, 0); // go
    parentPort?.postMessage(await produce(shm, j, ctl));
  } else {
    await consume(shm, j, ctl, (r) => parentPort?.postMessage(r));
  }
}

async function produce(shm: ShmModule, j: Job, ctl: Int32Array): Promise<ProducerReport> {
  const rec = new Uint8Array(j.size).fill(0x5a);
  const t0 = now();
  const end = t0 + j.durationMs * 1e6;
  let sent = 0;
  let spins = 0;
  if (j.mode === 'ring-spin' || j.mode === 'ring-doorbell') {
    const p = new shm.RingProducer(j.ring!);
    const wait = j.mode === 'ring-doorbell';
    const write = async (r: Uint8Array): Promise<void> => {
      while (!p.tryWrite(r)) {
        spins++;
        if (wait) await p.waitForSpace(); // a quarter of the ring
      }
    };
    if (j.rate > 0) {
      const perMs = Math.max(1, Math.round(j.rate / 1000));
      const nap = new Int32Array(new SharedArrayBuffer(4));
      for (let ms = 1; now() < end; ms++) {
        for (let k = 0; k < perMs; k++) {
          if (!p.tryWrite(rec)) await write(rec);
          sent++;
        }
        const left = (t0 + ms * 1e6 - now()) / 1e6;
        if (left > 0) Atomics.wait(nap, 0, 0, left);
      }
    } else {
      for (;;) {
        for (let k = 0; k < 1024; k++) {
          if (!p.tryWrite(rec)) await write(rec); // the fast path stays synchronous
        }
        sent += 1024;
        if (now() >= end) break;
      }
    }
    await write(new Uint8Array(0)); // end marker
    return { t0, sent, spins };
  }
  const port = j.port!;
  const batch = j.mode === 'postMessage-batch' ? PM_BATCH : 1;
  const recs = Array.from({ length: batch }, () => new Uint8Array(rec));
  const waitWindow = (): void => {
    for (;;) {
      const acked = Atomics.load(ctl, 1);
      if (sent - acked <= PM_WINDOW) return;
      spins++;
      Atomics.wait(ctl, 1, acked, 5);
    }
  };
  const nap = new Int32Array(new SharedArrayBuffer(4));
  const perMs = j.rate > 0 ? Math.max(1, Math.round(j.rate / 1000)) : 0;
  for (let ms = 1; ; ms++) {
    const burst = perMs > 0 ? perMs : 1024;
    for (let k = 0; k < burst; k += batch) {
      waitWindow();
      // Structured clone copies the bytes, as the ring does. A batch holds distinct arrays:
      // the same one 256 times would be cloned once (the serializer keeps object identity).
      port.postMessage(batch === 1 ? rec : recs);
      sent += batch;
    }
    if (now() >= end) break;
    if (perMs > 0) {
      const wait = (t0 + ms * 1e6 - now()) / 1e6;
      if (wait > 0) Atomics.wait(nap, 0, 0, wait);
    }
  }
  port.postMessage(null); // end marker
  return { t0, sent, spins };
}

async function consume(shm: ShmModule, j: Job, ctl: Int32Array, report: (r: ConsumerReport) => void): Promise<void> {
  let got = 0;
  let bytes = 0;
  let touch = 0;
  if (j.mode === 'ring-spin' || j.mode === 'ring-doorbell') {
    const c = new shm.RingConsumer(j.ring!);
    let t1 = 0;
    const onRecord: OnRecord = (data, start, length) => {
      if (length === 0) {
        t1 = now();
        return;
      }
      touch += data[start] ?? 0; // read the record, as a real consumer would
      got++;
      bytes += length;
    };
    if (j.mode === 'ring-spin') {
      parentPort?.postMessage('ready');
      Atomics.wait(ctl, 0, 0);
      while (t1 === 0) c.drain(onRecord, 1024);
    } else {
      let finish!: () => void;
      const finished = new Promise<void>((r) => (finish = r));
      const loop = c.start((d, s, l) => {
        onRecord(d, s, l);
        if (t1 !== 0) finish();
      }, { batch: 256 });
      parentPort?.postMessage('ready'); // sleeping on the doorbell until the first record
      await Promise.race([finished, loop.done]);
      await loop.stop();
    }
    if (touch < 0) console.log(touch);
    report({ t1, got, bytes });
    return;
  }
  const port = j.port!;
  await new Promise<void>((resolveDone) => {
    const count = (n: number, len: number): void => {
      got += n;
      bytes += n * len;
      if (got % PM_ACK_EVERY < n || n >= PM_ACK_EVERY) {
        Atomics.store(ctl, 1, got);
        Atomics.notify(ctl, 1);
      }
    };
    port.on('message', (m: Uint8Array | Uint8Array[] | null) => {
      if (m === null) {
        report({ t1: now(), got, bytes });
        port.close();
        resolveDone();
      } else if (Array.isArray(m)) {
        for (const r of m) touch += r[0] ?? 0;
        count(m.length, m[0]?.length ?? 0);
      } else {
        touch += m[0] ?? 0;
        count(1, m.length);
      }
    });
    parentPort?.postMessage('ready');
  });
}

// ---------------------------------------------------------------------------------------
// Main thread.

interface Row {
  label: string;
  size: number;
  mode: Mode;
  recPerS: number;
  bytesPerS: number;
  cpuUsPerRec: number;
  bells: number;
  sleeps: number;
  spaceBells: number;
  full: number;
}

interface Args {
  durationMs: number;
  rounds: number;
  sizes: number[];
  capacity: number;
  pacedRate: number;
  modes: Mode[];
}

function parse(argv: string[]): Args {
  const a: Args = { durationMs: 1000, rounds: 3, sizes: [64, 1024], capacity: 256 * 1024, pacedRate: 200_000, modes: [...MODES] };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[i + 1];
    const num = (): number => {
      const n = Number(v);
      if (v === undefined || !Number.isFinite(n) || n < 0) throw new Error(`${k} needs a number`);
      i++;
      return n;
    };
    if (k === '--duration-ms') a.durationMs = num();
    else if (k === '--rounds') a.rounds = Math.max(1, num());
    else if (k === '--capacity') a.capacity = num();
    else if (k === '--paced-rate') a.pacedRate = num();
    else if (k === '--sizes') {
      a.sizes = (v ?? '').split(',').map(Number);
      i++;
      if (a.sizes.some((n) => !Number.isInteger(n) || n < 1)) throw new Error('--sizes needs positive integers, e.g. 64,1024');
    } else if (k === '--modes') {
      a.modes = (v ?? '').split(',') as Mode[];
      i++;
      for (const m of a.modes) if (!MODES.includes(m)) throw new Error(`unknown mode ${m} (${MODES.join(', ')})`);
    } else if (k === '--help' || k === '-h') {
      process.stdout.write('node bench/dist/ring.js [--duration-ms 1000] [--rounds 3] [--sizes 64,1024] [--capacity 262144] [--paced-rate 200000 (0 = off)] [--modes ' + MODES.join(',') + ']\n');
      process.exit(0);
    } else throw new Error(`unknown option ${String(k)}`);
  }
  return a;
}

function once<T>(w: Worker): Promise<T> {
  return new Promise((resolveMsg, reject) => {
    const onErr = (e: unknown): void => reject(e instanceof Error ? e : new Error(String(e)));
    w.once('error', onErr);
    w.once('message', (m: T) => {
      w.off('error', onErr);
      resolveMsg(m);
    });
  });
}

async function runOnce(shm: ShmModule, mode: Mode, size: number, durationMs: number, rate: number, capacity: number): Promise<Omit<Row, 'label'>> {
  const ring = mode.startsWith('ring') ? shm.createRing(capacity) : null;
  const ctlSab = new SharedArrayBuffer(8);
  const ctl = new Int32Array(ctlSab);
  const ch = mode.startsWith('postMessage') ? new MessageChannel() : null;
  const base = { mode, size, durationMs, rate, ring, ctl: ctlSab };
  const self = new URL(import.meta.url);
  const prod = new Worker(self, {
    workerData: { ...base, role: 'producer', port: ch?.port1 ?? null } satisfies Job,
    transferList: ch ? [ch.port1] : [],
  });
  const cons = new Worker(self, {
    workerData: { ...base, role: 'consumer', port: ch?.port2 ?? null } satisfies Job,
    transferList: ch ? [ch.port2] : [],
  });
  await Promise.all([once(prod), once(cons)]);
  const pr = once<ProducerReport>(prod);
  const cr = once<ConsumerReport>(cons);
  const cpu0 = process.cpuUsage();
  Atomics.store(ctl, 0, 1);
  Atomics.notify(ctl, 0);
  const [p, c] = await Promise.all([pr, cr]);
  const cpu = process.cpuUsage(cpu0);
  await Promise.all([prod.terminate(), cons.terminate()]);
  if (c.got !== p.sent) throw new Error(`${mode}: sent ${p.sent}, received ${c.got}`);
  const s = ring ? shm.ringStats(ring) : null;
  const secs = (c.t1 - p.t0) / 1e9;
  return {
    size,
    mode,
    recPerS: c.got / secs,
    bytesPerS: c.bytes / secs,
    cpuUsPerRec: (cpu.user + cpu.system) / c.got,
    bells: s?.bells ?? 0,
    sleeps: s?.sleeps ?? 0,
    spaceBells: s?.spaceBells ?? 0,
    full: s?.fullEvents ?? p.spins,
  };
}

function fmt(n: number, digits = 0): string {
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} k`;
  return n.toFixed(digits);
}

async function main(): Promise<void> {
  const a = parse(process.argv.slice(2));
  if (!existsSync(SHM)) {
    process.stderr.write(`ring bench: ${SHM} is missing; build the broker first (npx tsc -p tsconfig.json)\n`);
    process.exit(2);
  }
  const shm = (await import(pathToFileURL(SHM).href)) as ShmModule;
  const plan: Array<{ label: string; size: number; mode: Mode; rate: number }> = [];
  for (const size of a.sizes) for (const mode of a.modes) plan.push({ label: `${size} B`, size, mode, rate: 0 });
  if (a.pacedRate > 0) {
    for (const mode of a.modes) {
      if (mode === 'postMessage-batch') continue; // batching waits for 256 records: not a paced path
      plan.push({ label: `64 B paced ${fmt(a.pacedRate)}/s`, size: 64, mode, rate: a.pacedRate });
    }
  }
  // Rounds run every case once, A B C … A B C …, so slow drift of the machine (other load on
  // these 2 cores) spreads over all cases instead of favouring one.
  const runs: Array<Array<Omit<Row, 'label'>>> = plan.map(() => []);
  for (let r = 0; r < a.rounds; r++) {
    for (const [k, item] of plan.entries()) {
      runs[k]!.push(await runOnce(shm, item.mode, item.size, a.durationMs, item.rate, a.capacity));
    }
    process.stderr.write(`round ${r + 1}/${a.rounds} done\n`);
  }
  const rows: Row[] = plan.map((item, k) => {
    const all = runs[k]!.sort((x, y) => x.recPerS - y.recPerS);
    process.stderr.write(`${item.label} ${item.mode}: ${all.map((x) => fmt(x.recPerS)).join(' / ')} rec/s\n`);
    return { label: item.label, ...all[Math.floor(all.length / 2)]! };
  });
  const lines = [
    `Ring vs postMessage between two worker threads: node ${process.version}, ${a.rounds} rounds of ${a.durationMs} ms (median by records/s), ring capacity ${a.capacity} B.`,
    '',
    '| records | mode | records/s | MB/s | CPU µs/record (process) | bells | consumer sleeps | space bells | full ring / window waits |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map((r) =>
      `| ${r.label} | ${r.mode} | ${fmt(r.recPerS)} | ${(r.bytesPerS / 1e6).toFixed(1)} | ${r.cpuUsPerRec.toFixed(3)} | ${r.bells} | ${r.sleeps} | ${r.spaceBells} | ${r.full} |`),
  ];
  process.stdout.write(lines.join('\n') + '\n');
}

if (isMainThread) {
  main().catch((e: unknown) => {
    process.stderr.write(`ring bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  });
} else {
  await runJob(workerData as Job);
}
