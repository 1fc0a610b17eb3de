// Markdown for comparison results: one section per scenario with every broker (and both
// generators when both were run), the exact commands, the machine and the date, the
// fleetmq ÷ peer ratios and, stated plainly, where fleetmq loses and where it wins.
import { RATIO_FIGURES } from './summary.js';
import type { BrokerSummary, CompareResult, Figures, RunRecord } from './types.js';

const SCENARIO_ORDER = ['p2p', 'fanout', 'fanin-shared', 'wildcard-scale', 'conn', 'pub', 'sub'];

export function fmtInt(x: number | null): string {
  return x === null ? '—' : Math.round(x).toLocaleString('en-US');
}
function fmtDec(x: number | null): string {
  if (x === null) return '—';
  if (Math.abs(x) >= 100) return fmtInt(x);
  if (Math.abs(x) >= 10) return x.toFixed(1);
  return x.toFixed(2);
}
function fmtMiB(x: number | null): string {
  return x === null ? '—' : (x / 1048576).toFixed(1);
}
function fmtKiB(x: number | null): string {
  return x === null ? '—' : (x / 1024).toFixed(1);
}
function pct(x: number): string {
  return `${Math.round(x * 100)} %`;
}
export function fmtRatio(x: number | null): string {
  if (x === null) return '—';
  return `${x >= 10 ? x.toFixed(1) : x.toFixed(2)}×`;
}

/** One-line figures of a run, for live progress. */
export function runLine(r: RunRecord): string {
  const f = r.figures;
  const parts = [
    `${fmtInt(f.msgs_per_s)} msg/s`,
    `p50 ${fmtInt(f.p50_us)} µs`,
    `p99 ${fmtInt(f.p99_us)} µs`,
    `p99.9 ${fmtInt(f.p999_us)} µs`,
    `broker CPU ${fmtDec(f.cpu_us_per_msg)} µs/msg`,
    `peak RSS ${fmtMiB(f.peak_rss_bytes)} MiB`,
    `lost ${f.lost === null ? '—' : fmtInt(f.lost)}`,
  ];
  if (f.connected !== null) parts.push(`connected ${fmtInt(f.connected)}`);
  if (r.cpu?.cpu_s != null && r.cpu.window_s != null) parts.push(`(${r.cpu.cpu_s.toFixed(2)} s CPU in ${r.cpu.window_s.toFixed(1)} s)`);
  return parts.join(', ');
}

interface Column {
  head: string;
  cell(s: BrokerSummary, res: CompareResult): string;
  /** Whether this column has any value (else it is left out). */
  has(s: BrokerSummary, res: CompareResult): boolean;
}

function lostOf(res: CompareResult, broker: string): number | null {
  const xs = res.runs.filter((r) => r.broker === broker && r.status === 'ok').map((r) => r.figures.lost);
  if (xs.length === 0 || xs.some((x) => x === null)) return null;
  return (xs as number[]).reduce((a, b) => a + b, 0);
}

function figCol(head: string, key: keyof Figures, fmt: (x: number | null) => string): Column {
  return { head, cell: (s) => fmt(s.median[key]), has: (s) => s.median[key] !== null };
}

const COLUMNS: Column[] = [
  figCol('Messages/s', 'msgs_per_s', fmtInt),
  figCol('p50 µs', 'p50_us', fmtInt),
  figCol('p99 µs', 'p99_us', fmtInt),
  figCol('p99.9 µs', 'p999_us', fmtInt),
  figCol('Broker CPU µs/msg', 'cpu_us_per_msg', fmtDec),
  figCol('Broker peak RSS MiB', 'peak_rss_bytes', fmtMiB),
  {
    head: 'RSS/conn KiB',
    cell: (s) => fmtKiB(s.median.rss_per_conn_bytes),
    has: (s, res) => res.scenario === 'conn' && s.median.rss_per_conn_bytes !== null,
  },
  { head: 'Connected', cell: (s) => fmtInt(s.median.connected), has: (s, res) => res.scenario === 'conn' && s.median.connected !== null },
  { head: 'Lost (all runs)', cell: (s, res) => fmtInt(lostOf(res, s.broker)), has: (s, res) => res.scenario !== 'conn' && lostOf(res, s.broker) !== null },
  figCol('Generator CPU µs/msg', 'gen_cpu_us_per_msg', fmtDec),
];

function runsCell(s: BrokerSummary): string {
  if (s.unsupported === s.runs && s.runs > 0) return 'unsupported';
  const parts = [`${s.ok}/${s.runs} ok`];
  if (s.crashed) parts.push(`${s.crashed} crashed`);
  if (s.stalled) parts.push(`${s.stalled} stalled`);
  if (s.failed) parts.push(`${s.failed} failed`);
  return parts.join(', ');
}

function gib(b: number): string {
  return (b / 1024 ** 3).toFixed(1);
}

export function machineLine(res: CompareResult): string {
  const m = res.machine;
  const v = m.versions;
  return `${m.cores} cores (${m.cpu_model}), ${gib(m.memory_bytes)} GiB RAM, ${m.kernel}, ${m.os}, Node ${m.node}; ` +
    `fleetmq ${v['fleetmq'] ?? '?'}, Mosquitto ${v['mosquitto'] ?? '?'}, Aedes ${v['aedes'] ?? '?'}`;
}

function generatorCommand(res: CompareResult): string {
  const r = res.runs.find((x) => x.generator_command);
  if (!r?.generator_command) return '(no generator started)';
  const cmd = [...r.generator_command];
  for (let i = 0; i < cmd.length - 1; i++) {
    if (cmd[i] === '-p') cmd[i + 1] = '<port>';
    if (cmd[i] === '--json') cmd[i + 1] = '<file>';
    if (cmd[i] === '--broker-pid') cmd[i + 1] = '<pid>';
  }
  // Show paths relative to the repository root.
  return cmd.map((a, i) => (i === 0 && a === process.execPath ? 'node' : a.replace(/^.*\/(bench\/dist\/|native-bench\/)/, '$1'))).map(shellQuote).join(' ');
}

export function shellQuote(a: string): string {
  return /^[\w@%+=:,./<>-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`;
}

function verdictWord(v: string): string {
  return v === 'fleetmq better' ? 'better' : v === 'fleetmq worse' ? 'worse' : v;
}

function statement(res: CompareResult, peer: string): string | null {
  const r = res.ratios[peer];
  if (!r) return null;
  const wins: string[] = [];
  const losses: string[] = [];
  const equal: string[] = [];
  for (const { key, better, label } of RATIO_FIGURES) {
    const x = r[key];
    if (!x || x.value === null) continue;
    const v = x.value;
    let text = `${label} ${fmtRatio(v)}`;
    if (v > 0.5 && v < 2 && x.verdict !== 'equal') {
      if (better === 'higher') text += ` (${v >= 1 ? pct(v - 1) + ' more' : pct(1 - v) + ' less'})`;
      else text += ` (${v >= 1 ? pct(v - 1) + ' higher' : pct(1 - v) + ' lower'})`;
    }
    if (x.verdict === 'fleetmq better') wins.push(text);
    else if (x.verdict === 'fleetmq worse') losses.push(text);
    else equal.push(text);
  }
  if (wins.length + losses.length + equal.length === 0) return null;
  const parts: string[] = [];
  parts.push(`fleetmq loses on ${losses.length ? losses.join(', ') : 'nothing measured'}`);
  parts.push(`wins on ${wins.length ? wins.join(', ') : 'nothing measured'}`);
  if (equal.length) parts.push(`is even (±2 %) on ${equal.join(', ')}`);
  return `- **fleetmq vs ${peer}** (${res.generator} generator): ${parts.join('; ')}.`;
}

/** Markdown for one scenario: results of that scenario (one per generator). */
export function renderScenario(results: CompareResult[], opts: { charts?: Map<CompareResult, string>; heading?: string } = {}): string {
  const first = results[0];
  if (!first) return '';
  const out: string[] = [];
  out.push(`${opts.heading ?? '###'} ${first.scenario}`, '');
  // Main table: every broker (and generator).
  const rows: Array<{ s: BrokerSummary; res: CompareResult }> = [];
  for (const res of results) for (const s of res.summary) rows.push({ s, res });
  const multi = results.length > 1;
  const cols = COLUMNS.filter((c) => rows.some(({ s, res }) => c.has(s, res)));
  const head = ['Broker', ...(multi ? ['Generator'] : []), 'Runs', ...cols.map((c) => c.head)];
  out.push(`| ${head.join(' | ')} |`, `| ${head.map((h, i) => (i === 0 || h === 'Generator' || h === 'Runs' ? '---' : '---:')).join(' | ')} |`);
  for (const { s, res } of rows) {
    const unsupported = s.unsupported === s.runs && s.runs > 0;
    const cells = [`${s.broker} ${s.version}`, ...(multi ? [res.generator] : []), runsCell(s),
      ...cols.map((c) => (unsupported ? '—' : c.cell(s, res)))];
    out.push(`| ${cells.join(' | ')} |`);
  }
  out.push('');
  out.push('Medians over the rounds (only runs that completed); latency is end to end, generator to generator. ' +
    'Broker CPU = utime + stime of the broker process from /proc between the generator\'s `measure` and `drain` events, ÷ messages received.');
  out.push('');
  // Ratios.
  const ratioRows: string[] = [];
  const ratioCols = RATIO_FIGURES.filter(({ key }) => results.some((res) => Object.values(res.ratios).some((r) => r[key]?.value != null)));
  for (const res of results) {
    for (const [peer, r] of Object.entries(res.ratios)) {
      if (!ratioCols.some(({ key }) => r[key]?.value != null)) continue;
      const cells = [`fleetmq ÷ ${peer}`, ...(multi ? [res.generator] : []),
        ...ratioCols.map(({ key }) => {
          const x = r[key];
          return x && x.value !== null ? `${fmtRatio(x.value)} ${verdictWord(x.verdict)}` : '—';
        })];
      ratioRows.push(`| ${cells.join(' | ')} |`);
    }
  }
  if (ratioRows.length > 0) {
    const h = ['Ratio', ...(multi ? ['Generator'] : []), ...ratioCols.map(({ label, better }) => `${label} (${better} is better)`)];
    out.push(`| ${h.join(' | ')} |`, `| ${h.map((_, i) => (i === 0 || (multi && i === 1) ? '---' : '---:')).join(' | ')} |`, ...ratioRows, '');
    for (const res of results) for (const peer of Object.keys(res.ratios)) {
      const st = statement(res, peer);
      if (st) out.push(st);
    }
    out.push('');
  }
  // Unsupported / failed runs, never left out.
  const notes: string[] = [];
  for (const res of results) {
    for (const s of res.summary) {
      if (s.unsupported) notes.push(`- ${s.broker} (${res.generator}): unsupported — ${s.unsupported_reason ?? ''}`);
    }
    for (const r of res.runs) {
      if (r.status === 'ok' || r.status === 'unsupported') continue;
      notes.push(`- ${r.broker} (${res.generator}) round ${r.round}: **${r.status}** — ${r.reason ?? ''}${r.test_hook ? ` [${r.test_hook}]` : ''}`);
    }
  }
  if (notes.length) out.push(...notes, '');
  // Provenance.
  for (const res of results) {
    out.push(`- ${multi ? `**${res.generator} generator**: ` : ''}\`${res.command}\` — ${res.started_at.slice(0, 16).replace('T', ' ')} UTC, ` +
      `${res.rounds} rounds (${res.order.length} runs, brokers alternating), protocol ${res.protocol.name}`);
    out.push(`  - generator: \`${generatorCommand(res)}\``);
    out.push(`  - machine: ${machineLine(res)}`);
    const chart = opts.charts?.get(res);
    if (chart) out.push(`  - chart: ![${res.scenario} ${res.generator}](${chart})`);
    for (const w of res.warnings) out.push(`  - note: ${w}`);
  }
  out.push('');
  return out.join('\n');
}

/** Markdown for several results: one section per scenario, in the issue's order. */
export function renderReport(results: CompareResult[], opts: { charts?: Map<CompareResult, string>; heading?: string } = {}): string {
  const by = new Map<string, CompareResult[]>();
  for (const r of results) {
    const list = by.get(r.scenario) ?? [];
    list.push(r);
    by.set(r.scenario, list);
  }
  const names = [...by.keys()].sort((a, b) => {
    const ia = SCENARIO_ORDER.indexOf(a);
    const ib = SCENARIO_ORDER.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
  return names.map((n) => renderScenario((by.get(n) ?? []).sort((a, b) => a.generator.localeCompare(b.generator)).reverse(), opts)).join('\n');
}
