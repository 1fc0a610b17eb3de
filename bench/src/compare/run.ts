// One run of a comparison: a fresh broker process, one generator run against it, the
// broker's CPU sampled at the generator's `measure` and `drain` events and its peak RSS
// at the end. A broker that exits early is `crashed`, one that stops delivering is
// `stalled`; both are recorded with what was seen and the broker is stopped.
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import type { BrokerName, BrokerSpec, Prepared } from './brokers.js';
import { startChild, stopChild, type Child } from './children.js';
import { peakRss, sampleCpu, statusBytes, type CpuSample } from './procfs.js';
import type { CpuWindow, Figures, GeneratorResult, ProgressEvent, RunRecord } from './types.js';

export interface RunOptions {
  seq: number;
  round: number;
  spec: BrokerSpec;
  dir: string;
  scenario: string;
  /** The generator's command without the broker address and driver flags. */
  generator: { cmd: string; args: string[] };
  /** Scenario where messages flow from publishers to subscribers (received must move). */
  flows: boolean;
  stallS: number;
  /** Seconds `received` may stand still while messages are being sent (≥ stallS; longer for slow -I). */
  recvStallS: number;
  /** The measured window asked for (--duration), or null when the run may end early (-L). */
  expectMeasureS: number | null;
  crashGraceS: number;
  runTimeoutS: number;
  clkTck: number;
  workers: number | null;
  persistence: string | null;
  /** Test hook: SIGKILL the broker this many ms after `measure` (null = never). */
  killBrokerAfterMs: number | null;
  onConfig(c: { path: string; text: string }): void;
  /** Called once the broker listens, before the generator starts. */
  onBrokerReady?(pid: number, port: number): void;
}

const TAIL = 30;

function pushTail(arr: string[], line: string): void {
  arr.push(line.length > 500 ? line.slice(0, 500) + '…' : line);
  if (arr.length > TAIL) arr.shift();
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function tcpReady(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      s.removeAllListeners();
      s.on('error', () => undefined);
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(500, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

interface StartedBroker {
  child: Child;
  prepared: Prepared;
  tail: string[];
}

/** Starts the broker and waits until it listens; up to two attempts (a port can be taken meanwhile). */
async function startBroker(o: RunOptions, label: string): Promise<{ ok: StartedBroker } | { error: string; tail: string[]; prepared: Prepared | null }> {
  let lastError = 'not started';
  let lastTail: string[] = [];
  let lastPrepared: Prepared | null = null;
  for (let attempt = 1; attempt <= 2; attempt++) {
    const prepared = await o.spec.prepare(o.dir, attempt === 1 ? label : `${label}-retry`, { workers: o.workers, persistence: o.persistence });
    lastPrepared = prepared;
    o.onConfig({ path: prepared.config_path, text: prepared.config_text });
    const child = startChild(o.spec.name, prepared.cmd, prepared.args, { env: prepared.env, cwd: o.dir });
    const tail: string[] = [];
    let lineSeen = false;
    for (const stream of [child.proc.stdout, child.proc.stderr]) {
      if (!stream) continue;
      createInterface({ input: stream }).on('line', (line) => {
        if (prepared.ready.kind === 'line' && line.includes(prepared.ready.match)) lineSeen = true;
        pushTail(tail, line);
      });
    }
    const deadline = Date.now() + 15_000;
    let ready = false;
    while (Date.now() < deadline && !child.exit) {
      if (prepared.ready.kind === 'line' ? lineSeen : await tcpReady(prepared.mqtt_port)) {
        ready = true;
        break;
      }
      await sleep(50);
    }
    if (ready && !child.exit) return { ok: { child, prepared, tail } };
    await stopChild(child, 2000);
    lastTail = tail;
    lastError = child.exit
      ? `broker exited while starting (code ${String(child.exit.code)}, signal ${String(child.exit.signal)})`
      : 'broker not listening after 15 s';
  }
  return { error: lastError, tail: lastTail, prepared: lastPrepared };
}

function num(x: unknown): number | null {
  return typeof x === 'number' && Number.isFinite(x) ? x : null;
}

function emptyFigures(): Figures {
  return {
    msgs_per_s: null, p50_us: null, p99_us: null, p999_us: null, cpu_us_per_msg: null, peak_rss_bytes: null,
    rss_per_conn_bytes: null, gen_cpu_us_per_msg: null, sent: null, received: null, lost: null, connected: null,
  };
}

export function baseRecord(o: { seq: number; round: number; broker: BrokerName }): RunRecord {
  return {
    seq: o.seq, round: o.round, broker: o.broker, status: 'ok', reason: null,
    started_at: new Date().toISOString(), wall_s: 0,
    broker_pid: null, broker_ports: null, broker_command: null, config_path: null, broker_exit: null, broker_output_tail: [],
    generator_pid: null, generator_command: null, generator_exit: null, generator_output_tail: [],
    phases: {}, last_progress: null, error_events: 0, error_messages: [],
    cpu: null, rss_before_bytes: null, figures: emptyFigures(), result: null, test_hook: null,
  };
}

export async function runOne(o: RunOptions): Promise<RunRecord> {
  const t0 = performance.now();
  const rec = baseRecord({ seq: o.seq, round: o.round, broker: o.spec.name });
  const label = `run${o.seq}`;
  const started = await startBroker(o, label);
  if ('error' in started) {
    rec.status = 'failed';
    rec.reason = started.error;
    rec.broker_output_tail = started.tail;
    if (started.prepared) {
      rec.broker_command = [started.prepared.cmd, ...started.prepared.args];
      rec.config_path = started.prepared.config_path;
      rec.broker_ports = started.prepared.ports;
    }
    rec.wall_s = (performance.now() - t0) / 1000;
    return rec;
  }
  const { child: broker, prepared, tail: brokerTail } = started.ok;
  rec.broker_output_tail = brokerTail;
  rec.broker_pid = broker.pid;
  rec.broker_ports = prepared.ports;
  rec.broker_command = [prepared.cmd, ...prepared.args];
  rec.config_path = prepared.config_path;
  o.onBrokerReady?.(broker.pid, prepared.mqtt_port);
  rec.rss_before_bytes = statusBytes(broker.pid, 'VmRSS');

  const resultFile = join(o.dir, `result-${label}.json`);
  rmSync(resultFile, { force: true });
  const genArgs = [...o.generator.args, '-h', '127.0.0.1', '-p', String(prepared.mqtt_port), '--progress', 'json', '--json', resultFile];
  if (o.scenario === 'conn') genArgs.push('--broker-pid', String(broker.pid));
  rec.generator_command = [o.generator.cmd, ...genArgs];

  const cpu: CpuWindow = {
    clk_tck: o.clkTck, at_measure: null, at_end: null, end_event: null,
    ticks: null, cpu_s: null, window_s: null, cores_busy: null, resolution_us_per_msg: null,
  };
  rec.cpu = cpu;
  let lastPeak: number | null = peakRss(broker.pid);
  let rssAtEnd: number | null = null;
  const gen = startChild('generator', o.generator.cmd, genArgs, { cwd: o.dir });
  rec.generator_pid = gen.pid > 0 ? gen.pid : null;

  let lastEventAt = performance.now();
  let phase = 'start';
  let lastReceived = -1;
  let lastSent = 0;
  let receivedMovedAt = performance.now();
  let stalled: string | null = null;
  let stopGenAt: number | null = null;
  let killTimer: NodeJS.Timeout | undefined;
  const stdoutChunks: string[] = [];
  let stdoutLen = 0;

  const sampleEnd = (ev: 'drain' | 'done' | 'exit'): void => {
    if (cpu.at_end || !cpu.at_measure) return;
    const s = sampleCpu(broker.pid);
    if (s) {
      cpu.at_end = s;
      cpu.end_event = ev;
      rssAtEnd = statusBytes(broker.pid, 'VmRSS');
    }
  };

  gen.proc.stdout?.on('data', (b: Buffer) => {
    stdoutChunks.push(b.toString('utf8'));
    stdoutLen += b.length;
    while (stdoutLen > 1 << 20 && stdoutChunks.length > 1) stdoutLen -= (stdoutChunks.shift() as string).length;
  });
  if (gen.proc.stderr) {
    createInterface({ input: gen.proc.stderr }).on('line', (line) => {
      lastEventAt = performance.now();
      let ev: Record<string, unknown> | null = null;
      if (line.startsWith('{')) {
        try {
          ev = JSON.parse(line) as Record<string, unknown>;
        } catch {
          ev = null;
        }
      }
      if (!ev || typeof ev['event'] !== 'string') {
        if (line.trim() !== '') pushTail(rec.generator_output_tail, line);
        return;
      }
      if (ev['event'] === 'phase' && typeof ev['phase'] === 'string') {
        phase = ev['phase'];
        rec.phases[phase] = num(ev['t']) ?? Math.round(performance.now() - t0);
        if (phase === 'measure' && !cpu.at_measure) {
          cpu.at_measure = sampleCpu(broker.pid);
          if (o.killBrokerAfterMs !== null) {
            rec.test_hook = `broker killed with SIGKILL ${o.killBrokerAfterMs} ms after measure (--test-kill-broker)`;
            killTimer = setTimeout(() => {
              try {
                process.kill(broker.pid, 'SIGKILL');
              } catch {
                // already gone
              }
            }, o.killBrokerAfterMs);
          }
        } else if (phase === 'drain' || phase === 'done') {
          sampleEnd(phase);
        }
        if (phase === 'warmup' || phase === 'measure') receivedMovedAt = performance.now();
      } else if (ev['event'] === 'progress') {
        rec.last_progress = ev as unknown as ProgressEvent;
        const received = num(ev['received']) ?? 0;
        const sent = num(ev['sent']) ?? 0;
        if (received !== lastReceived) {
          lastReceived = received;
          receivedMovedAt = performance.now();
        }
        lastSent = sent;
        const p = peakRss(broker.pid);
        if (p !== null) lastPeak = p;
      } else if (ev['event'] === 'error') {
        rec.error_events++;
        if (rec.error_messages.length < 20) rec.error_messages.push(String(ev['message']));
      }
    });
  }

  // Watchdog: broker crash, stalls, run deadline.
  const deadline = performance.now() + o.runTimeoutS * 1000;
  const watchdog = setInterval(() => {
    const now = performance.now();
    if (gen.exit) return;
    if (broker.exit && rec.broker_exit === null) {
      rec.broker_exit = { code: broker.exit.code, signal: broker.exit.signal, at_s: (now - t0) / 1000 };
      stopGenAt ??= now + o.crashGraceS * 1000;
    }
    if (!stalled && !broker.exit) {
      if (now - lastEventAt > o.stallS * 1000) {
        stalled = `no event from the generator for ${o.stallS} s (phase ${phase})`;
      } else if (o.flows && (phase === 'warmup' || phase === 'measure') && lastSent > 0 && now - receivedMovedAt > o.recvStallS * 1000) {
        stalled = `received stuck at ${lastReceived} for ${o.recvStallS} s while sent = ${lastSent} (phase ${phase})`;
      } else if (now > deadline) {
        stalled = `run still going after --run-timeout ${o.runTimeoutS} s (phase ${phase})`;
      }
      if (stalled) stopGenAt = now;
    }
    if (stopGenAt !== null && now >= stopGenAt) {
      stopGenAt = Number.POSITIVE_INFINITY;
      void stopChild(gen, 3000, 'SIGINT');
    }
  }, 200);

  await gen.exited;
  clearInterval(watchdog);
  clearTimeout(killTimer);
  sampleEnd('exit');
  rec.generator_exit = gen.exit ? { code: gen.exit.code, signal: gen.exit.signal } : null;
  if (broker.exit && rec.broker_exit === null) {
    rec.broker_exit = { code: broker.exit.code, signal: broker.exit.signal, at_s: (performance.now() - t0) / 1000 };
  }
  const endPeak = broker.exit ? null : peakRss(broker.pid);
  if (endPeak !== null) lastPeak = endPeak;
  await stopChild(broker, 5000);

  // The generator's result: the --json file, else the last JSON line on stdout.
  let result: GeneratorResult | null = null;
  try {
    if (existsSync(resultFile)) result = JSON.parse(readFileSync(resultFile, 'utf8')) as GeneratorResult;
  } catch {
    result = null;
  }
  if (!result) {
    const lines = stdoutChunks.join('').trim().split('\n').reverse();
    for (const l of lines) {
      if (!l.startsWith('{')) continue;
      try {
        result = JSON.parse(l) as GeneratorResult;
        break;
      } catch {
        // keep looking
      }
    }
  }
  rec.result = result;

  // Figures.
  const f = rec.figures;
  f.peak_rss_bytes = lastPeak;
  if (result) {
    f.msgs_per_s = num(result.rates?.received_per_s);
    f.p50_us = num(result.latency_us?.p50);
    f.p99_us = num(result.latency_us?.p99);
    f.p999_us = num(result.latency_us?.p999);
    f.sent = num(result.messages?.sent);
    f.received = num(result.messages?.received);
    f.lost = num(result.messages?.lost);
    f.connected = num(result.connections?.connected);
    f.gen_cpu_us_per_msg = num(result.generator_cpu?.us_per_msg);
    if ((result.latency_us?.count ?? 0) === 0) f.p50_us = f.p99_us = f.p999_us = null;
    if (!f.sent && !f.received) f.msgs_per_s = null; // conn, sub without traffic: no rate to compare
    if (!f.received) f.gen_cpu_us_per_msg = null;
  }
  if (cpu.at_measure && cpu.at_end) {
    const a: CpuSample = cpu.at_measure;
    const b: CpuSample = cpu.at_end;
    cpu.ticks = b.ticks - a.ticks;
    cpu.cpu_s = cpu.ticks / o.clkTck;
    cpu.window_s = (b.at_ms - a.at_ms) / 1000;
    cpu.cores_busy = cpu.window_s > 0 ? cpu.cpu_s / cpu.window_s : null;
    if (f.received && f.received > 0) {
      f.cpu_us_per_msg = (cpu.cpu_s * 1e6) / f.received;
      cpu.resolution_us_per_msg = ((2 / o.clkTck) * 1e6) / f.received;
    }
  }
  const rssEnd: number | null = rssAtEnd;
  const perConn = num(result?.broker_rss_per_conn_bytes);
  if (perConn !== null) f.rss_per_conn_bytes = perConn;
  else if (o.scenario === 'conn' && rssEnd !== null && rec.rss_before_bytes !== null && f.connected) {
    f.rss_per_conn_bytes = (rssEnd - rec.rss_before_bytes) / f.connected;
  }

  // Status.
  if (rec.broker_exit) {
    rec.status = 'crashed';
    rec.reason = `broker exited during the run (code ${String(rec.broker_exit.code)}, signal ${String(rec.broker_exit.signal)}) at ${rec.broker_exit.at_s.toFixed(1)} s`;
  } else if (stalled) {
    rec.status = 'stalled';
    rec.reason = stalled;
  } else if (gen.pid < 0) {
    rec.status = 'failed';
    rec.reason = `generator could not be started: ${o.generator.cmd}`;
  } else if (!result) {
    rec.status = 'failed';
    rec.reason = `generator wrote no result (exit code ${String(gen.exit?.code)}, signal ${String(gen.exit?.signal)})`;
  } else if (gen.exit?.code !== 0) {
    rec.status = 'failed';
    rec.reason = `generator exited with code ${String(gen.exit?.code)}, signal ${String(gen.exit?.signal)}`;
  } else if (o.expectMeasureS !== null && typeof result.measure_s === 'number' && result.measure_s < 0.5 * o.expectMeasureS) {
    rec.status = 'failed';
    rec.reason = `the generator measured ${result.measure_s} s of the ${o.expectMeasureS} s asked (--duration)`;
  } else if (!cpu.at_measure) {
    rec.status = 'failed';
    rec.reason = 'no `measure` phase event from the generator: broker CPU not sampled';
  }
  rec.wall_s = (performance.now() - t0) / 1000;
  return rec;
}
