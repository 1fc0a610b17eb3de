// A plain SVG chart of one comparison, generated without dependencies: messages/s bars
// (with the min–max over rounds) and latency percentiles p50 / p99 / p99.9 (log scale)
// per broker. For `conn`, broker peak RSS and RSS per connection instead.
import type { BrokerSummary, CompareResult } from './types.js';

const COLORS: Record<string, string> = { fleetmq: '#2b6cb0', mosquitto: '#c05621', aedes: '#2f855a' };
const W = 960;
const H = 400;

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function niceStep(max: number, ticks = 5): number {
  const raw = max / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const n = raw / mag;
  return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10) * mag;
}

function short(x: number): string {
  if (x >= 1e6) return `${+(x / 1e6).toFixed(x >= 1e7 ? 0 : 1)}M`;
  if (x >= 1e3) return `${+(x / 1e3).toFixed(x >= 1e4 ? 0 : 1)}k`;
  return x >= 10 ? String(Math.round(x)) : String(+x.toFixed(2));
}

interface Group {
  label: string;
  color: string;
  values: Array<number | null>;
  /** Optional [min, max] whisker per value. */
  ranges?: Array<[number | null, number | null]>;
  note: string | null;
}

function panel(x0: number, y0: number, w: number, h: number, title: string, unit: string, series: string[], groups: Group[], log: boolean): string {
  const out: string[] = [];
  const left = 56;
  const bottom = 48;
  const px = x0 + left;
  const pw = w - left - 10;
  const py = y0 + 28;
  const ph = h - 28 - bottom;
  out.push(`<text x="${x0 + w / 2}" y="${y0 + 16}" text-anchor="middle" font-weight="bold">${esc(title)}</text>`);
  const vals = groups.flatMap((g) => [...g.values, ...(g.ranges ?? []).map((r) => r[1])]).filter((v): v is number => v !== null && v > 0);
  let yOf: (v: number) => number;
  const ticks: number[] = [];
  if (log) {
    const lo = vals.length ? 10 ** Math.floor(Math.log10(Math.min(...vals))) : 1;
    const hi = vals.length ? 10 ** Math.ceil(Math.log10(Math.max(...vals) * 1.0001)) : 10;
    const span = Math.log10(hi) - Math.log10(lo) || 1;
    yOf = (v) => py + ph - ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / span) * ph;
    for (let t = lo; t <= hi * 1.0001; t *= 10) ticks.push(t);
  } else {
    const max = vals.length ? Math.max(...vals) : 1;
    const step = niceStep(max);
    const top = Math.ceil((max * 1.05) / step) * step;
    yOf = (v) => py + ph - (v / top) * ph;
    for (let t = 0; t <= top * 1.0001; t += step) ticks.push(t);
  }
  for (const t of ticks) {
    const y = yOf(t).toFixed(1);
    out.push(`<line x1="${px}" y1="${y}" x2="${px + pw}" y2="${y}" stroke="#ddd"/>`);
    out.push(`<text x="${px - 6}" y="${y}" dy="4" text-anchor="end" font-size="11">${esc(short(t))}</text>`);
  }
  out.push(`<text x="${x0 + 12}" y="${py + ph / 2}" transform="rotate(-90 ${x0 + 12} ${py + ph / 2})" text-anchor="middle" font-size="11">${esc(unit)}${log ? ' (log)' : ''}</text>`);
  out.push(`<line x1="${px}" y1="${py + ph}" x2="${px + pw}" y2="${py + ph}" stroke="#333"/>`);
  const gw = pw / Math.max(groups.length, 1);
  const bw = Math.min(48, (gw * 0.7) / Math.max(series.length, 1));
  groups.forEach((g, gi) => {
    const gx = px + gi * gw + (gw - bw * series.length) / 2;
    out.push(`<text x="${px + gi * gw + gw / 2}" y="${py + ph + 16}" text-anchor="middle" font-size="12">${esc(g.label)}</text>`);
    if (g.note) {
      out.push(`<text x="${px + gi * gw + gw / 2}" y="${py + ph - 10}" text-anchor="middle" font-size="11" fill="#888">${esc(g.note)}</text>`);
      return;
    }
    g.values.forEach((v, si) => {
      const bx = gx + si * bw;
      if (v === null || v <= 0) {
        out.push(`<text x="${bx + bw / 2}" y="${py + ph - 4}" text-anchor="middle" font-size="10" fill="#888">n/a</text>`);
        return;
      }
      const y = yOf(v);
      const opacity = series.length > 1 ? [1, 0.7, 0.45][si] ?? 0.3 : 1;
      out.push(`<rect x="${(bx + 1).toFixed(1)}" y="${y.toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${(py + ph - y).toFixed(1)}" fill="${g.color}" fill-opacity="${opacity}"><title>${esc(`${g.label} ${series[si] ?? ''}: ${short(v)} ${unit}`)}</title></rect>`);
      let labelY = y;
      const r = g.ranges?.[si];
      if (r && r[0] !== null && r[1] !== null && r[1] > r[0]) {
        const cx = bx + bw / 2;
        const y1 = yOf(r[0]);
        const y2 = yOf(r[1]);
        out.push(`<line x1="${cx.toFixed(1)}" y1="${y1.toFixed(1)}" x2="${cx.toFixed(1)}" y2="${y2.toFixed(1)}" stroke="#000" stroke-width="1.2"/>`);
        out.push(`<line x1="${(cx - 5).toFixed(1)}" y1="${y2.toFixed(1)}" x2="${(cx + 5).toFixed(1)}" y2="${y2.toFixed(1)}" stroke="#000" stroke-width="1.2"/>`);
        out.push(`<line x1="${(cx - 5).toFixed(1)}" y1="${y1.toFixed(1)}" x2="${(cx + 5).toFixed(1)}" y2="${y1.toFixed(1)}" stroke="#000" stroke-width="1.2"/>`);
        labelY = Math.min(y, y2);
      }
      out.push(`<text x="${bx + bw / 2}" y="${(labelY - 4).toFixed(1)}" text-anchor="middle" font-size="10">${esc(short(v))}</text>`);
    });
  });
  if (series.length > 1) {
    series.forEach((s, si) => {
      const lx = px + pw / 2 + (si - series.length / 2) * 64;
      const ly = py + ph + 26;
      out.push(`<rect x="${lx}" y="${ly}" width="10" height="10" fill="#555" fill-opacity="${[1, 0.7, 0.45][si] ?? 0.3}"/>`);
      out.push(`<text x="${lx + 14}" y="${ly + 9}" font-size="11">${esc(s)}</text>`);
    });
  }
  return out.join('\n');
}

function note(s: BrokerSummary): string | null {
  if (s.runs > 0 && s.unsupported === s.runs) return 'unsupported';
  if (s.ok === 0) return 'no completed run';
  return null;
}

export function renderSvg(res: CompareResult): string {
  const label = (s: BrokerSummary) => `${s.broker} ${s.version}`;
  const color = (s: BrokerSummary) => COLORS[s.broker] ?? '#666';
  const hasThroughput = res.summary.some((s) => (s.median.msgs_per_s ?? 0) > 0);
  let left: string;
  let right: string;
  const pw = W / 2 - 10;
  const top = 40;
  const ph = H - top - 10;
  if (hasThroughput) {
    left = panel(10, top, pw, ph, 'Messages received per second (median, min–max)', 'messages/s', ['msg/s'],
      res.summary.map((s) => ({ label: label(s), color: color(s), values: [s.median.msgs_per_s], ranges: [[s.min.msgs_per_s, s.max.msgs_per_s]], note: note(s) })), false);
    right = panel(W / 2, top, pw, ph, 'End-to-end latency (median of rounds)', 'µs', ['p50', 'p99', 'p99.9'],
      res.summary.map((s) => ({ label: label(s), color: color(s), values: [s.median.p50_us, s.median.p99_us, s.median.p999_us], note: note(s) })), true);
  } else {
    left = panel(10, top, pw, ph, 'Broker peak RSS (median)', 'MiB', ['peak RSS'],
      res.summary.map((s) => ({ label: label(s), color: color(s), values: [s.median.peak_rss_bytes === null ? null : s.median.peak_rss_bytes / 1048576], note: note(s) })), false);
    right = panel(W / 2, top, pw, ph, 'Broker RSS per connection (median)', 'KiB', ['RSS/conn'],
      res.summary.map((s) => ({ label: label(s), color: color(s), values: [s.median.rss_per_conn_bytes === null ? null : s.median.rss_per_conn_bytes / 1024], note: note(s) })), false);
  }
  const title = `${res.scenario} — ${res.generator} generator, MQTT ${res.protocol.name}, ${res.rounds} rounds, ${res.started_at.slice(0, 10)} (${res.machine.cores} cores, Node ${res.machine.node})`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`,
    left,
    right,
    '</svg>',
    '',
  ].join('\n');
}
