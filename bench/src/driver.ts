// The run: phases (connect, subscribe, warmup, measure, drain, done), progress once a
// second, the hard deadline, and the result. Drives worker threads of this process, or
// child processes when the run needs more connections than one process may hold.
import { readFileSync, writeFileSync } from 'node:fs';
import { addEncoded, newHist, summary } from './hist.js';
import { E2E, toArgs, type Options } from './options.js';
import { connections, rootSlice, splitProcesses, splitWorkers, type Slice } from './plan.js';
import { sumLatest, type Counters, type Down, type UnitResult, type Up } from './proto.js';
import { markdown, type BenchResult } from './result.js';
import { Barrier, ChildUnit, LocalGroup, mergeResults, type Unit } from './units.js';

const HELLO_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;

function readRss(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

const r1 = (x: number): number => Math.round(x * 10) / 10;
const r3 = (x: number): number => Math.round(x * 1000) / 1000;

class Reporter {
  constructor(
    private readonly json: boolean,
    private readonly relMs: () => number,
  ) {}

  private line(s: string): void {
    process.stderr.write(s + '\n');
  }

  phase(phase: string): void {
    const t = Math.round(this.relMs());
    if (this.json) this.line(JSON.stringify({ event: 'phase', phase, t }));
    else this.line(`[${(t / 1000).toFixed(1).padStart(6)}s] phase ${phase}`);
  }

  progress(p: { connected: number; sent: number; received: number; sent_rate: number; recv_rate: number; p50_us: number; p99_us: number }): void {
    const t = Math.round(this.relMs());
    if (this.json) {
      this.line(JSON.stringify({ event: 'progress', t, ...p }));
      return;
    }
    const n = (x: number): string => Math.round(x).toLocaleString('en-US');
    const lat = (us: number): string => (us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us} µs`);
    this.line(
      `[${(t / 1000).toFixed(1).padStart(6)}s] connected ${n(p.connected)}  sent ${n(p.sent)} (${n(p.sent_rate)}/s)  ` +
        `recv ${n(p.received)} (${n(p.recv_rate)}/s)  p50 ${lat(p.p50_us)}  p99 ${lat(p.p99_us)}`,
    );
  }

  error(message: string, count: number): void {
    if (this.json) this.line(JSON.stringify({ event: 'error', message, count }));
    else this.line(`[${(this.relMs() / 1000).toFixed(1).padStart(6)}s] error: ${message}${count > 1 ? ` (x${count})` : ''}`);
  }
}

/** Per-child flags for its range of clients. */
function childRangeArgs(o: Options, s: Slice): { args: string[]; subN: number } {
  switch (o.cmd) {
    case 'conn':
      return { args: ['-n', String(s.idle.first - 1), '-c', String(s.idle.count)], subN: 0 };
    case 'sub':
      return { args: ['-n', String(s.subs.first - 1), '-c', String(s.subs.count)], subN: 0 };
    case 'pub':
    case 'p2p':
    case 'wildcard-scale':
      return { args: ['-n', String(s.pubs.first - 1), '-c', String(s.pubs.count)], subN: 0 };
    case 'fanout':
    case 'fanin-shared':
      return {
        args: ['-n', String(s.pubs.count ? s.pubs.first - 1 : 0), '--pubs', String(s.pubs.count), '--subs', String(s.subs.count)],
        subN: s.subs.count ? s.subs.first - 1 : 0,
      };
  }
}

export async function runDriver(o: Options): Promise<number> {
  const base = process.hrtime.bigint();
  const relNow = (): number => Number(process.hrtime.bigint() - base);
  const relMs = (): number => relNow() / 1e6;
  const rep = new Reporter(o.progress === 'json', relMs);
  const startedAt = new Date().toISOString();
  const root = rootSlice(o);
  const procs = splitProcesses(o, root);
  const multi = procs.length > 1;
  const errors: string[] = [];

  // ---- units ----
  let group: LocalGroup | null = null;
  let units: Unit[];
  let workersTotal: number;
  const owners: Array<{ unit: Unit; first: number; count: number }> = [];
  if (!multi) {
    group = new LocalGroup(o, root, base, 0, null, o.L > 0 ? o.L : -1, false);
    units = group.units;
    workersTotal = units.length;
  } else {
    const wpc = Math.max(1, Math.round(o.workers / procs.length));
    const co: Options = { ...o, workers: wpc };
    const counts = procs.map((s) => splitWorkers(co, s).length);
    workersTotal = counts.reduce((a, b) => a + b, 0);
    const totalPubs = root.pubs.count;
    let given = 0;
    let wBase = 0;
    units = procs.map((s, k) => {
      let limit = -1;
      if (o.L > 0) {
        limit = k === procs.length - 1 ? o.L - given : Math.floor((o.L * s.pubs.count) / Math.max(1, totalPubs));
        given += limit;
      }
      const { args, subN } = childRangeArgs(o, s);
      const spec = { base: String(base), wBase, wTotal: workersTotal, subN, limit };
      wBase += counts[k]!;
      const u = new ChildUnit(`process ${k}`, s.pubs.count > 0, [...toArgs(co), ...args, '--child', JSON.stringify(spec)]);
      u.onStderr = (line) => rep.error(line, 1);
      owners.push({ unit: u, first: s.pubs.first, count: s.pubs.count });
      return u;
    });
  }
  const limitUnits = units.filter((u) => u.hasPubs).length;

  // ---- state fed by the units ----
  const latest = new Map<Unit, Counters>();
  const progressHist = newHist();
  const errTotals = new Map<string, number>();
  const errChanged = new Set<string>();
  const results = new Map<Unit, UnitResult | null>();
  const hello = new Barrier(units);
  const connectB = new Barrier(units);
  const subscribeB = new Barrier(units);
  let limitReports = 0;
  let limitHit = false;
  let limitResolve: () => void = () => {};
  const limitReached = new Promise<void>((r) => (limitResolve = r));

  const total = (): Counters => sumLatest(units, latest);

  for (const u of units) {
    u.onMessage = (m: Up): void => {
      switch (m.t) {
        case 'hello':
          hello.arrive(u);
          break;
        case 'ready':
          (m.stage === 'connect' ? connectB : subscribeB).arrive(u);
          break;
        case 'stats':
          latest.set(u, m.c);
          addEncoded(progressHist, m.ih);
          for (const [msg, n] of m.err) {
            errTotals.set(msg, (errTotals.get(msg) ?? 0) + n);
            errChanged.add(msg);
          }
          break;
        case 'limit':
          limitReports++;
          // One process shares one budget; each child process has its own share.
          if (!multi || limitReports >= limitUnits) {
            limitHit = true;
            limitResolve();
          }
          break;
        case 'rcpt':
          routeReceipts(m.d);
          break;
        default:
          break;
      }
    };
    void u.done.then((r) => {
      results.set(u, r);
      if (!r) {
        hello.arrive(u);
        connectB.arrive(u);
        subscribeB.arrive(u);
        if (u.failure) {
          errTotals.set(u.failure, (errTotals.get(u.failure) ?? 0) + 1);
          errChanged.add(u.failure);
        }
      }
    });
  }

  function routeReceipts(d: number[]): void {
    const per = new Map<Unit, number[]>();
    for (let j = 0; j + 1 < d.length; j += 2) {
      const seq = d[j]!;
      const ow = owners.find((x) => seq >= x.first && seq < x.first + x.count);
      if (!ow) continue;
      let arr = per.get(ow.unit);
      if (!arr) per.set(ow.unit, (arr = []));
      arr.push(seq, d[j + 1]!);
    }
    for (const [u, arr] of per) u.send({ t: 'rcpt', d: arr });
  }

  const broadcast = (m: Down): void => {
    for (const u of units) u.send(m);
  };

  // ---- abort: hard deadline, signals ----
  let aborted: string | null = null;
  let abortResolve: () => void = () => {};
  const abortP = new Promise<void>((r) => (abortResolve = r));
  const abort = (why: string): void => {
    if (aborted) return;
    aborted = why;
    errors.push(why);
    rep.error(why, 1);
    hello.release();
    connectB.release();
    subscribeB.release();
    abortResolve();
  };
  const conns = connections(root);
  const connectBoundS = (o.R > 0 ? conns / o.R : (conns * o.i) / 1000) + o.connectTimeout + 5;
  const deadlineS = HELLO_TIMEOUT_MS / 1000 + connectBoundS + o.connectTimeout + 5 + o.warmup + o.duration + o.drain + 10;
  const deadline = setTimeout(() => abort(`hard deadline reached after ${Math.round(deadlineS)} s`), deadlineS * 1000);
  const onSignal = (sig: string) => (): void => abort(`interrupted by ${sig}`);
  const sigint = onSignal('SIGINT');
  const sigterm = onSignal('SIGTERM');
  process.on('SIGINT', sigint);
  process.on('SIGTERM', sigterm);

  /** Sleeps until relNow() >= ns (timers may fire a little early), or abort, or `also`. */
  const sleepUntil = async (ns: number, also?: Promise<void>): Promise<void> => {
    let stop = false;
    const stopper = Promise.race([abortP, ...(also ? [also] : [])]).then(() => {
      stop = true;
    });
    while (!stop && relNow() < ns) {
      let t: NodeJS.Timeout | undefined;
      const p = new Promise<void>((r) => (t = setTimeout(r, Math.max(1, (ns - relNow()) / 1e6))));
      await Promise.race([p, stopper]);
      clearTimeout(t);
    }
  };

  // ---- progress ----
  let lastT = relNow();
  let lastSent = 0;
  let lastRecv = 0;
  let progressOn = false;
  const flushErrors = (): void => {
    for (const msg of errChanged) rep.error(msg, errTotals.get(msg) ?? 0);
    errChanged.clear();
  };
  const progressTimer = setInterval(() => {
    flushErrors();
    if (!progressOn) return;
    const c = total();
    const now = relNow();
    const dt = Math.max(1e-9, (now - lastT) / 1e9);
    rep.progress({
      connected: c.open,
      sent: c.sentAll,
      received: c.recvAll,
      sent_rate: r1((c.sentAll - lastSent) / dt),
      recv_rate: r1((c.recvAll - lastRecv) / dt),
      p50_us: progressHist.totalCount ? progressHist.getValueAtPercentile(50) : 0,
      p99_us: progressHist.totalCount ? progressHist.getValueAtPercentile(99) : 0,
    });
    progressHist.reset();
    lastT = now;
    lastSent = c.sentAll;
    lastRecv = c.recvAll;
  }, 1000);

  // ---- phases ----
  const rssBefore = o.brokerPid !== null ? readRss(o.brokerPid) : null;
  let rssAfter: number | null = null;
  const rssSamples: number[] = [];
  let rssTimer: NodeJS.Timeout | null = null;
  let cpu0: NodeJS.CpuUsage | null = null;
  let cpuWin: NodeJS.CpuUsage | null = null;
  let msAt = 0;
  let meAt = 0;
  let measured = false;
  let noConnection = false;

  const helloTimer = setTimeout(() => abort(`worker threads / processes did not start within ${HELLO_TIMEOUT_MS / 1000} s`), HELLO_TIMEOUT_MS);
  await Promise.race([hello.promise, abortP]);
  clearTimeout(helloTimer);

  if (!aborted) {
    rep.phase('connect');
    progressOn = true;
    broadcast({ t: 'connect', t0: relNow() });
    await Promise.race([connectB.promise, abortP]);
  }
  if (!aborted && total().connected === 0) {
    noConnection = true;
    errors.push('no connection succeeded');
  }
  if (!aborted && !noConnection) {
    rep.phase('subscribe');
    broadcast({ t: 'subscribe' });
    await Promise.race([subscribeB.promise, abortP]);
  }
  if (!aborted && !noConnection) {
    const subscribed = total().subscribed;
    const match = o.cmd === 'fanout' ? subscribed : 1;
    rep.phase('warmup');
    const start = relNow();
    msAt = start + o.warmup * 1e9;
    meAt = msAt + o.duration * 1e9;
    broadcast({ t: 'publish', start, ms: msAt, me: meAt, match });
    await sleepUntil(msAt, limitReached);
    if (!aborted) {
      const early = limitHit; // -L reached during the warm-up
      if (early) msAt = relNow();
      rep.phase('measure');
      cpu0 = process.cpuUsage();
      measured = true;
      if (o.brokerPid !== null) {
        const pid = o.brokerPid;
        rssTimer = setInterval(() => {
          const v = readRss(pid);
          if (v !== null) rssSamples.push(v);
        }, 250);
      }
      if (!early) await sleepUntil(meAt, limitReached);
      if (limitHit || aborted) {
        meAt = Math.min(meAt, relNow());
        broadcast({ t: 'end', me: meAt });
      }
      cpuWin = process.cpuUsage(cpu0);
      if (rssTimer) clearInterval(rssTimer);
      if (o.brokerPid !== null) {
        const v = readRss(o.brokerPid);
        if (v !== null) rssSamples.push(v);
        rssAfter = median(rssSamples);
      }
      rep.phase('drain');
    }
    // Drain: until everything expected has arrived, or --drain seconds.
    if (!aborted) {
      const drainEnd = relNow() + o.drain * 1e9;
      const known = E2E.has(o.cmd);
      for (;;) {
        const c = total();
        if (c.pubDone) {
          if (!known && o.cmd !== 'sub') break;
          if (known && c.recvM >= expectedOf(o, c, subscribed)) break;
        }
        if (relNow() >= drainEnd) break;
        await sleepUntil(Math.min(drainEnd, relNow() + 50e6));
        if (aborted) break;
      }
    }
  }
  if (aborted && measured && !cpuWin && cpu0) {
    cpuWin = process.cpuUsage(cpu0);
    meAt = relNow();
  }

  // ---- stop ----
  broadcast({ t: 'stop' });
  let stopTimer: NodeJS.Timeout | undefined;
  const allDone = Promise.all(units.map((u) => u.done));
  const finished = await Promise.race([allDone.then(() => true), new Promise<boolean>((r) => (stopTimer = setTimeout(() => r(false), STOP_TIMEOUT_MS)))]);
  clearTimeout(stopTimer);
  if (!finished) {
    errors.push(`units did not finish within ${STOP_TIMEOUT_MS / 1000} s of the stop; their last counters are used`);
    for (const u of units) if (!results.has(u)) u.kill();
  }
  rep.phase('done');
  clearInterval(progressTimer);
  if (rssTimer) clearInterval(rssTimer);
  clearTimeout(deadline);
  process.off('SIGINT', sigint);
  process.off('SIGTERM', sigterm);
  flushErrors();

  // ---- result ----
  const merged = mergeResults(
    units.map((u) => results.get(u) ?? null),
    units.map((u) => latest.get(u)),
  );
  for (const u of units) if (u.failure && !merged.errors.has(u.failure)) merged.errors.set(u.failure, 1);
  const c = merged.c;
  const measureS = measured ? Math.max(0, (meAt - msAt) / 1e9) : 0;
  const subscribedTotal = c.subscribed;
  const expected = E2E.has(o.cmd) ? expectedOf(o, c, subscribedTotal) : 0;
  const lost = E2E.has(o.cmd) ? Math.max(0, expected - c.recvM) : 0;
  let userUs = cpuWin ? cpuWin.user : 0;
  let sysUs = cpuWin ? cpuWin.system : 0;
  if (multi) {
    userUs += merged.cpu.user;
    sysUs += merged.cpu.system;
  }
  const perMsgBase = c.recvM > 0 ? c.recvM : c.sentM;
  const lat = summary(merged.hist);
  if (E2E.has(o.cmd) && lat.count !== c.recvM) errors.push(`internal: latency count ${lat.count} != received ${c.recvM}`);

  const params: Record<string, unknown> = {
    host: o.hosts.join(','), port: o.port, V: o.V, q: o.q, s: o.s, I: o.I, L: o.L, F: o.F, i: o.i, R: o.R, n: o.n, k: o.k, C: o.C, x: o.x,
    ...(o.cmd === 'fanout' || o.cmd === 'fanin-shared' ? { pubs: o.pubs, subs: o.subs } : { c: o.c }),
    ...(o.t !== null ? { t: o.t } : {}),
    payload_hdrs: o.ts ? 'ts' : '',
    ws: o.ws, tls: o.tls,
    duration: o.duration, warmup: o.warmup, drain: o.drain, window: o.window,
    workers: workersTotal, processes: procs.length,
    ...(o.ifaddr.length ? { ifaddr: o.ifaddr.join(',') } : {}),
    ...(o.prefix !== null ? { prefix: o.prefix } : {}),
    ...(o.shortids ? { shortids: true } : {}),
    ...(o.brokerPid !== null ? { broker_pid: o.brokerPid } : {}),
  };
  const allErrors = [...errors, ...[...merged.errors].map(([m, n]) => (n > 1 ? `${m} (x${n})` : m))];
  const result: BenchResult = {
    tool: 'fleetmq-bench',
    version: 1,
    scenario: o.cmd,
    params,
    started_at: startedAt,
    measure_s: r3(measureS),
    connections: { attempted: c.attempted, connected: c.connected, refused: c.refused, failed: c.failed, dropped: c.dropped },
    messages: { sent: c.sentM, received: c.recvM, expected, lost, skipped: c.skippedM },
    rates: {
      sent_per_s: measureS > 0 ? r1(c.sentM / measureS) : 0,
      received_per_s: measureS > 0 ? r1(c.recvM / measureS) : 0,
    },
    latency_us: lat,
    connect_us: summary(merged.chist),
    generator_cpu: {
      user_s: r3(userUs / 1e6),
      system_s: r3(sysUs / 1e6),
      us_per_msg: perMsgBase > 0 ? r3((userUs + sysUs) / perMsgBase) : 0,
    },
    errors: allErrors.slice(0, 100),
  };
  if (o.brokerPid !== null) {
    result.broker_rss = { before_bytes: rssBefore ?? 0, after_bytes: rssAfter ?? readRss(o.brokerPid) ?? 0 };
    const open = c.connected - c.dropped;
    if (o.cmd === 'conn' && rssBefore !== null && rssAfter !== null && open > 0) {
      result.broker_rss_per_conn_bytes = Math.round((rssAfter - rssBefore) / open);
    }
  }

  const md = markdown(result);
  const json = JSON.stringify(result);
  if (o.json) writeFileSync(o.json, JSON.stringify(result, null, 2) + '\n');
  if (o.md) writeFileSync(o.md, md);
  if (o.progress === 'text') process.stdout.write('\n' + md + '\n');
  await new Promise<void>((r) => process.stdout.write(json + '\n', () => r()));
  if (group) await group.destroy();
  return aborted || noConnection || units.some((u) => u.failure) ? 1 : 0;
}

function median(xs: number[]): number | null {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Deliveries expected for the measured messages: sent × matching subscribers. */
function expectedOf(o: Options, c: Counters, subscribed: number): number {
  switch (o.cmd) {
    case 'fanout':
      return c.sentM * subscribed;
    case 'fanin-shared':
      return subscribed > 0 ? c.sentM : 0;
    default:
      return c.sentM; // p2p, wildcard-scale: a publisher sends only if its subscriber is subscribed
  }
}
