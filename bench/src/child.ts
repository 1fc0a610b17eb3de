// Child process of a multi-process run (`--child JSON`): runs its range of clients on its
// own worker threads, relays the parent's commands to them and their reports to the
// parent (IPC), and prints its partial result as one JSON line on stdout.
import { addEncoded, encode, newHist } from './hist.js';
import type { Options } from './options.js';
import { rootSlice } from './plan.js';
import { sumLatest, type Counters, type Down, type Up } from './proto.js';
import { Barrier, LocalGroup, mergeResults, type Unit } from './units.js';

export async function runChild(o: Options): Promise<number> {
  const spec = o.child!;
  const base = BigInt(spec.base);
  const relNow = (): number => Number(process.hrtime.bigint() - base);
  const slice = rootSlice(o);
  const group = new LocalGroup(o, slice, base, spec.wBase, spec.wTotal, spec.limit, true);
  const units = group.units;
  const up = (m: Up): void => {
    if (process.connected) process.send!(m);
  };

  const latest = new Map<Unit, Counters>();
  const ihist = newHist();
  const errDelta = new Map<string, number>();
  const hello = new Barrier(units);
  const connected = new Barrier(units);
  const subscribed = new Barrier(units);
  let limitSent = false;

  const sendStats = (): void => {
    const c = sumLatest(units, latest);
    up({ t: 'stats', c, ih: encode(ihist), err: [...errDelta] });
    ihist.reset();
    errDelta.clear();
  };

  for (const u of units) {
    u.onMessage = (m: Up): void => {
      switch (m.t) {
        case 'hello':
          hello.arrive(u);
          break;
        case 'ready':
          (m.stage === 'connect' ? connected : subscribed).arrive(u);
          break;
        case 'stats':
          latest.set(u, m.c);
          addEncoded(ihist, m.ih);
          for (const [msg, n] of m.err) errDelta.set(msg, (errDelta.get(msg) ?? 0) + n);
          break;
        case 'limit':
          if (!limitSent) {
            limitSent = true;
            up({ t: 'limit' });
          }
          break;
        case 'rcpt':
          up(m);
          break;
        default:
          break;
      }
    };
    void u.done.then((r) => {
      if (!r) {
        hello.arrive(u);
        connected.arrive(u);
        subscribed.arrive(u);
      }
    });
  }
  void hello.promise.then(() => up({ t: 'hello' }));
  void connected.promise.then(() => {
    sendStats();
    up({ t: 'ready', stage: 'connect' });
  });
  void subscribed.promise.then(() => {
    sendStats();
    up({ t: 'ready', stage: 'subscribe' });
  });
  const statsTimer = setInterval(sendStats, 200);

  // Generator CPU over the measured window.
  let cpu0: NodeJS.CpuUsage | null = null;
  let cpu1: NodeJS.CpuUsage | null = null;
  const timers: NodeJS.Timeout[] = [];
  const sampleEnd = (): void => {
    if (cpu1) return;
    cpu0 ??= process.cpuUsage();
    cpu1 = process.cpuUsage(cpu0);
  };

  let stopped = false;
  const stopAll = (): void => {
    if (stopped) return;
    stopped = true;
    for (const u of units) u.send({ t: 'stop' });
  };
  process.on('message', (m: Down) => {
    switch (m.t) {
      case 'rcpt':
        group.addReceipts(m.d);
        return;
      case 'publish':
        timers.push(setTimeout(() => (cpu0 = process.cpuUsage()), Math.max(0, (m.ms - relNow()) / 1e6)));
        timers.push(setTimeout(sampleEnd, Math.max(0, (m.me - relNow()) / 1e6)));
        break;
      case 'end':
        sampleEnd();
        break;
      case 'stop':
        sampleEnd();
        stopAll();
        return;
      default:
        break;
    }
    for (const u of units) u.send(m);
  });
  // The parent is gone: stop, and do not linger.
  process.on('disconnect', () => {
    stopAll();
    setTimeout(() => process.exit(1), 5000).unref();
  });
  process.on('SIGINT', () => {}); // the parent decides when to stop

  const results = await Promise.all(units.map((u) => u.done));
  clearInterval(statsTimer);
  for (const t of timers) clearTimeout(t);
  const m = mergeResults(results, units.map((u) => latest.get(u)));
  for (const u of units) if (u.failure) m.errors.set(u.failure, (m.errors.get(u.failure) ?? 0) + 1);
  const cpu = cpu1 as NodeJS.CpuUsage | null;
  const line = JSON.stringify({
    c: m.c,
    hist: encode(m.hist),
    chist: encode(m.chist),
    errors: [...m.errors],
    cpu: cpu ? { user: cpu.user, system: cpu.system } : { user: 0, system: 0 },
  });
  await new Promise<void>((r) => process.stdout.write(line + '\n', () => r()));
  await group.destroy();
  return 0;
}
