#!/usr/bin/env node
// npm run bench:compare -- <scenario> [generator flags…] [--brokers fleetmq,mosquitto,aedes]
//   [--rounds 3] [--generator ts|native] [--out DIR] [--workers N] ...
//
// Runs one scenario with one generator against fleetmq, Mosquitto and Aedes, alternating
// brokers run by run (A B C A B C …), a fresh broker process per run, and writes
// <out>/<date>-<scenario>-<generator>.json (+ .md, .svg). See docs/bench.md.
import { accessSync, constants, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';

import { aedesPackageJson, BROKERS, MOSQUITTO, ROOT, SPECS, type BrokerName, type ScenarioInfo } from './brokers.js';
import { installSignalHandlers, isStopping, stopAll } from './children.js';
import { clockTicks, machineInfo, sh } from './procfs.js';
import { renderScenario, runLine, shellQuote } from './render.js';
import { baseRecord, runOne } from './run.js';
import { ratios, summarize } from './summary.js';
import { renderSvg } from './svg.js';
import type { CompareResult, RunRecord } from './types.js';

const SCENARIOS = ['conn', 'sub', 'pub', 'p2p', 'fanout', 'fanin-shared', 'wildcard-scale'];
const FLOWS = new Set(['p2p', 'fanout', 'fanin-shared', 'wildcard-scale']);
const OWN_FLAGS = ['-h', '-p', '--progress', '--json', '--broker-pid'];

const USAGE = `Usage: npm run bench:compare -- <scenario> [generator flags…] [options]

Runs <scenario> (${SCENARIOS.join(', ')}) with one generator against each broker,
alternating brokers run by run, a fresh broker process per run, and writes
<out>/<date>-<scenario>-<generator>.json, .md and .svg.

Generator flags (docs/bench-format.md) are passed through, e.g. -c 10 -q 1 -s 64
--duration 10 --warmup 2 --window 32. Defaults added when missing: -V 4 (MQTT 3.1.1),
--duration 10, --warmup 2 (not for conn). The driver sets -h, -p, --progress json and --json itself.

Options:
  --brokers LIST       fleetmq,mosquitto,aedes (default: all three, in that order)
  --rounds N           rounds, each runs every broker once (default 3)
  --generator ts|native  bench/dist/cli.js or native-bench/fleetmq-nbench (default ts)
  --out DIR            results directory (default bench/results)
  --workers N          passed to fleetmq start as --workers N (when fleetmq supports it)
  --persistence MODE   batch | always: fleetmq with durability.sync MODE, Mosquitto with
                       persistence true (Aedes stays in memory)
  --gen-workers N      the generator's own --workers N (worker threads)
  --stall-s S          a run is stalled when nothing moves for S seconds (default 10)
  --crash-grace-s S    after a broker crash, time the generator gets to finish (default 5)
  --run-timeout-s S    hard bound of one run (default: warmup + duration + the time
                       -R / -i need to open the connections + 120)
  --pause-s S          pause between runs (default 1)
  --generator-path FILE  another generator following docs/bench-format.md (a .js file
                       runs with node), e.g. an older build; recorded in the result
  --test-kill-broker NAME[:ROUND]   test hook: SIGKILL that broker 300 ms into the
                       measured window of that round (default round 1)
  --help
`;

class UsageError extends Error {}

interface Options {
  scenario: string;
  genFlags: string[];
  brokers: BrokerName[];
  rounds: number;
  generator: 'ts' | 'native';
  out: string;
  workers: number | null;
  persistence: string | null;
  stallS: number;
  crashGraceS: number;
  runTimeoutS: number | null;
  pauseS: number;
  killBroker: { broker: BrokerName; round: number } | null;
  generatorPath: string | null;
}

function positive(flag: string, v: string | undefined, allowZero = false): number {
  const n = Number(v);
  if (v === undefined || v === '' || !Number.isFinite(n) || n < 0 || (!allowZero && n === 0)) {
    throw new UsageError(`${flag}: expected a ${allowZero ? 'non-negative' : 'positive'} number, got ${JSON.stringify(v ?? '')}`);
  }
  return n;
}

function parseArgs(argv: string[]): Options {
  const o: Options = {
    scenario: '', genFlags: [], brokers: [...BROKERS], rounds: 3, generator: 'ts',
    out: join(ROOT, 'bench/results'), workers: null, persistence: null, stallS: 10, crashGraceS: 5, runTimeoutS: null, pauseS: 1, killBroker: null, generatorPath: null,
  };
  const own = new Set(['--brokers', '--rounds', '--generator', '--out', '--workers', '--stall-s', '--crash-grace-s', '--run-timeout-s', '--pause-s', '--test-kill-broker', '--generator-path', '--gen-workers', '--persistence']);
  for (let i = 0; i < argv.length; i++) {
    const tok = argv[i] as string;
    if (tok === '--help') throw new UsageError('');
    const eq = tok.startsWith('--') ? tok.indexOf('=') : -1;
    const name = eq > 0 ? tok.slice(0, eq) : tok;
    if (own.has(name)) {
      const v = eq > 0 ? tok.slice(eq + 1) : argv[++i];
      if (v === undefined) throw new UsageError(`${name}: missing value`);
      switch (name) {
        case '--brokers': {
          const list = v.split(',').map((s) => s.trim()).filter(Boolean);
          for (const b of list) if (!(BROKERS as readonly string[]).includes(b)) throw new UsageError(`--brokers: unknown broker "${b}" (known: ${BROKERS.join(', ')})`);
          if (list.length === 0 || new Set(list).size !== list.length) throw new UsageError('--brokers: give each broker once');
          o.brokers = list as BrokerName[];
          break;
        }
        case '--rounds':
          o.rounds = positive(name, v);
          if (!Number.isInteger(o.rounds) || o.rounds > 100) throw new UsageError('--rounds: expected an integer 1..100');
          break;
        case '--generator':
          if (v !== 'ts' && v !== 'native') throw new UsageError(`--generator: expected ts or native, got "${v}"`);
          o.generator = v;
          break;
        case '--out': o.out = resolve(v); break;
        case '--generator-path': o.generatorPath = resolve(v); break;
        case '--gen-workers':
          if (!Number.isInteger(positive(name, v))) throw new UsageError('--gen-workers: expected an integer');
          o.genFlags.push('--workers', v);
          break;
        case '--persistence':
          if (v !== 'batch' && v !== 'always') throw new UsageError('--persistence: batch or always');
          o.persistence = v;
          break;
        case '--workers':
          o.workers = positive(name, v);
          if (!Number.isInteger(o.workers)) throw new UsageError('--workers: expected an integer');
          break;
        case '--stall-s': o.stallS = positive(name, v); break;
        case '--crash-grace-s': o.crashGraceS = positive(name, v, true); break;
        case '--run-timeout-s': o.runTimeoutS = positive(name, v); break;
        case '--pause-s': o.pauseS = positive(name, v, true); break;
        case '--test-kill-broker': {
          const [b, r] = v.split(':');
          if (!(BROKERS as readonly string[]).includes(b ?? '')) throw new UsageError(`--test-kill-broker: unknown broker "${String(b)}"`);
          o.killBroker = { broker: b as BrokerName, round: r === undefined ? 1 : positive(name, r) };
          break;
        }
      }
      continue;
    }
    if (OWN_FLAGS.includes(name)) throw new UsageError(`${name}: set by the driver (each broker gets its own port); leave it out`);
    if (!o.scenario && !tok.startsWith('-')) {
      o.scenario = tok;
      continue;
    }
    o.genFlags.push(tok);
  }
  if (!o.scenario) throw new UsageError('no scenario given');
  if (!SCENARIOS.includes(o.scenario)) throw new UsageError(`unknown scenario "${o.scenario}" (known: ${SCENARIOS.join(', ')})`);
  return o;
}

/** The value of generator flag `name` (`-V 5`, `-V=5`, `-V5` for one-letter flags), or null. */
function flagValue(flags: string[], name: string): string | null {
  for (let i = 0; i < flags.length; i++) {
    const f = flags[i] as string;
    if (f === name) return flags[i + 1] ?? null;
    if (f.startsWith(name + '=')) return f.slice(name.length + 1);
    if (name.length === 2 && f.startsWith(name) && f.length > 2 && !f.startsWith('--')) return f.slice(2);
  }
  return null;
}

/** Rough time the generator needs to open its connections (-R per second, else -i ms apart). */
function connectEstimateS(scenario: string, flags: string[]): number {
  const n = (name: string, dflt: number): number => {
    const v = Number(flagValue(flags, name));
    return Number.isFinite(v) && flagValue(flags, name) !== null ? v : dflt;
  };
  const c = n('-c', 200);
  const conns = scenario === 'p2p' || scenario === 'wildcard-scale' ? 2 * c
    : scenario === 'fanout' ? n('--pubs', 1) + n('--subs', 100)
    : scenario === 'fanin-shared' ? n('--pubs', 100) + n('--subs', 10)
    : c;
  const R = n('-R', 0);
  return R > 0 ? conns / R : (conns * n('-i', 10)) / 1000;
}

const PROTOCOL: Record<number, string> = { 3: '3.1', 4: '3.1.1', 5: '5.0' };

function datePart(d: Date): string {
  return d.toISOString().slice(0, 10);
}

function uniqueStem(dir: string, stem: string): string {
  if (!existsSync(join(dir, `${stem}.json`))) return stem;
  for (let i = 2; ; i++) if (!existsSync(join(dir, `${stem}-${i}.json`))) return `${stem}-${i}`;
}

function say(line: string): void {
  process.stderr.write(line + '\n');
}

async function main(argv: string[]): Promise<number> {
  let o: Options;
  try {
    o = parseArgs(argv);
  } catch (e) {
    if (e instanceof UsageError) {
      if (e.message === '') {
        process.stdout.write(USAGE);
        return 0;
      }
      process.stderr.write(`bench:compare: ${e.message}\n\n${USAGE}`);
      return 2;
    }
    throw e;
  }
  const warnings: string[] = [];
  const genFlags = [...o.genFlags];
  if (flagValue(genFlags, '-V') === null) genFlags.push('-V', '4');
  if (flagValue(genFlags, '--duration') === null) genFlags.push('--duration', '10');
  if (flagValue(genFlags, '--warmup') === null && o.scenario !== 'conn') genFlags.push('--warmup', '2');
  const V = Number(flagValue(genFlags, '-V'));
  const duration = Number(flagValue(genFlags, '--duration'));
  const warmup = Number(flagValue(genFlags, '--warmup') ?? 0);
  if (![3, 4, 5].includes(V)) {
    process.stderr.write(`bench:compare: -V: expected 3, 4 or 5, got ${String(flagValue(genFlags, '-V'))}\n`);
    return 2;
  }
  if (!(duration > 0)) {
    process.stderr.write('bench:compare: --duration: expected a positive number of seconds\n');
    return 2;
  }
  const clk = clockTicks();
  if (duration < 5) {
    warnings.push(`--duration ${duration} s is below 5 s: broker CPU is read in ${1000 / clk} ms clock ticks, so CPU per message is coarse (±${(2000 / clk).toFixed(0)} ms of CPU per run).`);
  }
  if (o.rounds < 3) warnings.push(`${o.rounds} round(s): fewer than 3, so the medians rest on fewer runs than the comparison asks for.`);

  // Prerequisites, checked before anything starts.
  const generator = o.generator === 'ts'
    ? { cmd: process.execPath, args: [join(ROOT, 'bench/dist/cli.js'), o.scenario, ...genFlags], path: join(ROOT, 'bench/dist/cli.js'), tool: 'fleetmq-bench', hint: 'npm run build' }
    : { cmd: join(ROOT, 'native-bench/fleetmq-nbench'), args: [o.scenario, ...genFlags], path: join(ROOT, 'native-bench/fleetmq-nbench'), tool: 'fleetmq-nbench', hint: 'npm run build:native' };
  if (o.generatorPath) {
    const p = o.generatorPath;
    generator.path = p;
    generator.hint = 'given with --generator-path';
    generator.tool = p;
    if (p.endsWith('.js') || p.endsWith('.mjs')) {
      generator.cmd = process.execPath;
      generator.args = [p, o.scenario, ...genFlags];
    } else {
      generator.cmd = p;
      generator.args = [o.scenario, ...genFlags];
    }
  }
  const missing: string[] = [];
  if (!existsSync(generator.path)) missing.push(`${relative(ROOT, generator.path)} (${generator.hint})`);
  if (o.brokers.includes('fleetmq') && !existsSync(join(ROOT, 'dist/src/cli/main.js'))) missing.push('dist/src/cli/main.js (npm run build)');
  if (o.brokers.includes('aedes')) {
    if (!existsSync(join(ROOT, 'bench/dist/peers/aedes-server.js'))) missing.push('bench/dist/peers/aedes-server.js (npm run build:bench)');
    if (aedesPackageJson() === null) missing.push('the aedes package (npm ci)');
  }
  if (o.brokers.includes('mosquitto')) {
    try {
      accessSync(MOSQUITTO, constants.X_OK);
    } catch {
      missing.push(`${MOSQUITTO} (apt-get install mosquitto, or set MOSQUITTO_BIN)`);
    }
  }
  if (o.workers !== null && o.brokers.includes('fleetmq') && !missing.length) {
    const help = sh(process.execPath, [join(ROOT, 'dist/src/cli/main.js'), 'start', '--help']);
    if (!help.includes('--workers')) {
      process.stderr.write('bench:compare: --workers: this fleetmq build has no `start --workers` option yet\n');
      return 2;
    }
  }
  if (missing.length) {
    process.stderr.write(`bench:compare: missing: ${missing.join('; ')}\n`);
    return 2;
  }

  const scn: ScenarioInfo = { scenario: o.scenario, V, topic: flagValue(genFlags, '-t') };
  const intervalS = Number(flagValue(genFlags, '-I') ?? 1000) / 1000;
  const recvStallS = Math.max(o.stallS, Number.isFinite(intervalS) ? 3 * intervalS : 0);
  const runTimeoutS = o.runTimeoutS ?? Math.ceil(warmup + duration + connectEstimateS(o.scenario, genFlags) + 120);
  const started = new Date();
  const versions: Record<string, string> = {};
  for (const b of BROKERS) versions[b] = SPECS[b].version();
  const machine = { ...machineInfo(), versions };
  mkdirSync(o.out, { recursive: true });
  const stem = uniqueStem(o.out, `${datePart(started)}-${o.scenario}-${o.generator}`);
  const jsonPath = join(o.out, `${stem}.json`);
  const order: string[] = [];
  for (let r = 1; r <= o.rounds; r++) for (const b of o.brokers) order.push(`${r}:${b}`);

  const result: CompareResult = {
    kind: 'fleetmq-bench-compare',
    format: 1,
    scenario: o.scenario,
    generator: o.generator,
    generator_tool: generator.tool,
    started_at: started.toISOString(),
    finished_at: '',
    interrupted: false,
    command: `npm run bench:compare -- ${argv.map(shellQuote).join(' ')}`,
    argv,
    generator_flags: genFlags,
    protocol: { V, name: PROTOCOL[V] ?? String(V) },
    rounds: o.rounds,
    brokers: o.brokers,
    order,
    settings: {
      alike: {
        inflight: 'QoS 1/2 in flight per client: 32',
        queue: 'queued messages per client: 1000',
        nagle: 'TCP_NODELAY on',
        persistence: o.persistence === null ? 'none (in memory only)' : `fleetmq durability.sync ${o.persistence}; Mosquitto persistence true (its own periodic save); Aedes in memory`,
        anonymous: 'anonymous clients allowed',
        logs: 'errors / warnings only',
        sys: '$SYS publishing off',
        process: 'a fresh broker process for every run, on its own free 127.0.0.1 port',
      },
      per_broker: Object.fromEntries(o.brokers.map((b) => [b, SPECS[b].settings])),
      stall_s: o.stallS,
      received_stall_s: recvStallS,
      crash_grace_s: o.crashGraceS,
      pause_s: o.pauseS,
      run_timeout_s: runTimeoutS,
      workers: o.workers,
      cpu_note: `Broker CPU = utime + stime of the broker's process tree from /proc/<pid>/stat, sampled when the generator reports ` +
        `the \`measure\` phase and again at \`drain\`; CLK_TCK = ${clk}, so each sample is exact to ${1000 / clk} ms of CPU. ` +
        `Measured windows of 5 s or more keep that under ~1 % for a busy broker.`,
    },
    machine,
    configs_written: [],
    runs: [],
    summary: [],
    ratios: {},
    warnings,
  };

  const finish = (): void => {
    result.finished_at = new Date().toISOString();
    result.summary = o.brokers.map((b) => summarize(b, versions[b] ?? '?', result.runs));
    result.ratios = ratios(result.summary);
    writeFileSync(jsonPath, JSON.stringify(result, null, 2) + '\n');
    const svgPath = join(o.out, `${stem}.svg`);
    writeFileSync(svgPath, renderSvg(result));
    const md = renderScenario([result], { charts: new Map([[result, `${stem}.svg`]]), heading: '##' });
    writeFileSync(join(o.out, `${stem}.md`), md);
    process.stdout.write(md);
    say(`compare: wrote ${relative(process.cwd(), jsonPath) || jsonPath}, ${stem}.md and ${stem}.svg`);
  };

  const dir = mkdtempSync(join(tmpdir(), 'fleetmq-compare-'));
  installSignalHandlers(() => {
    result.interrupted = true;
    result.warnings.push('interrupted by a signal: the runs below are the ones completed');
    try {
      finish();
    } catch {
      // best effort
    }
    rmSync(dir, { recursive: true, force: true });
  });

  say(`compare: ${o.scenario} with the ${o.generator} generator, MQTT ${result.protocol.name}, brokers ${o.brokers.join(', ')}, ${o.rounds} rounds (${order.length} runs); results → ${relative(process.cwd(), jsonPath) || jsonPath}`);
  for (const w of warnings) say(`compare: note: ${w}`);
  try {
    let seq = 0;
    for (let round = 1; round <= o.rounds; round++) {
      for (const b of o.brokers) {
        seq++;
        const tag = `[${seq}/${order.length}] round ${round} ${b}`;
        const spec = SPECS[b];
        const why = spec.unsupported(scn);
        if (why) {
          const rec: RunRecord = baseRecord({ seq, round, broker: b });
          rec.status = 'unsupported';
          rec.reason = why;
          result.runs.push(rec);
          say(`${tag}: unsupported — ${why}`);
          continue;
        }
        if (isStopping()) return 130;
        const rec = await runOne({
          seq, round, spec, dir, scenario: o.scenario,
          generator: { cmd: generator.cmd, args: generator.args },
          flows: FLOWS.has(o.scenario),
          expectMeasureS: flagValue(genFlags, '-L') === null || flagValue(genFlags, '-L') === '0' ? duration : null,
          stallS: o.stallS, recvStallS, crashGraceS: o.crashGraceS, runTimeoutS, clkTck: clk, workers: o.workers, persistence: o.persistence,
          killBrokerAfterMs: o.killBroker && o.killBroker.broker === b && o.killBroker.round === round ? 300 : null,
          onConfig: (c) => result.configs_written.push({ broker: b, seq, path: c.path, text: c.text }),
          onBrokerReady: (pid, port) => say(`${tag}: starting — broker pid ${pid} on 127.0.0.1:${port}`),
        });
        if (isStopping()) return 130;
        result.runs.push(rec);
        const head = `${tag}: ${rec.status} in ${rec.wall_s.toFixed(1)} s${rec.generator_pid ? ` (generator pid ${rec.generator_pid})` : ''}`;
        say(rec.status === 'ok' ? `${head} — ${runLine(rec)}` : `${head} — ${rec.reason ?? ''}${rec.result ? ` (seen: ${runLine(rec)})` : ''}`);
        if (o.pauseS > 0 && seq < order.length) await new Promise((r) => setTimeout(r, o.pauseS * 1000));
      }
    }
  } finally {
    await stopAll(3000);
    rmSync(dir, { recursive: true, force: true });
  }
  finish();
  const failed = result.runs.filter((r) => r.status === 'failed').length;
  if (failed) say(`compare: ${failed} run(s) failed (the generator or a broker could not run): see "reason" in the result`);
  return failed ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  async (e: unknown) => {
    await stopAll(2000);
    if (isStopping()) return; // the signal handler writes what was done and exits
    process.stderr.write(`bench:compare: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
    process.exitCode = 1;
  },
);
