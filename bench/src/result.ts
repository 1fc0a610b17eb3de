// The result object of docs/bench-format.md, and its Markdown table.
import type { LatencySummary } from './hist.js';

export interface BenchResult {
  tool: 'fleetmq-bench';
  version: 1;
  scenario: string;
  params: Record<string, unknown>;
  started_at: string;
  measure_s: number;
  connections: { attempted: number; connected: number; refused: number; failed: number; dropped: number };
  messages: { sent: number; received: number; expected: number; lost: number; skipped: number };
  rates: { sent_per_s: number; received_per_s: number };
  latency_us: LatencySummary;
  connect_us: LatencySummary;
  generator_cpu: { user_s: number; system_s: number; us_per_msg: number };
  broker_rss?: { before_bytes: number; after_bytes: number };
  broker_rss_per_conn_bytes?: number;
  errors: string[];
}

const fmt = (n: number): string => n.toLocaleString('en-US', { maximumFractionDigits: 1 });

export function markdown(r: BenchResult): string {
  const p = r.params;
  const l = r.latency_us;
  const cu = r.connect_us;
  const rows: Array<[string, string]> = [
    ['scenario', `${r.scenario} — V${String(p['V'])}, QoS ${String(p['q'])}, ${String(p['s'])} B, -I ${String(p['I'])} ms, window ${String(p['window'])}`],
    ['started', r.started_at],
    ['measured', `${r.measure_s} s`],
    [
      'connections',
      `${fmt(r.connections.connected)} of ${fmt(r.connections.attempted)} (refused ${r.connections.refused}, failed ${r.connections.failed}, dropped ${r.connections.dropped})`,
    ],
    ['connect (µs)', cu.count ? `p50 ${fmt(cu.p50)}, p99 ${fmt(cu.p99)}, max ${fmt(cu.max)}` : '—'],
    [
      'messages',
      `sent ${fmt(r.messages.sent)}, received ${fmt(r.messages.received)}, expected ${fmt(r.messages.expected)}, lost ${fmt(r.messages.lost)}, skipped slots ${fmt(r.messages.skipped)}`,
    ],
    ['rates (msg/s)', `sent ${fmt(r.rates.sent_per_s)}, received ${fmt(r.rates.received_per_s)}`],
    [
      'latency (µs)',
      l.count
        ? `p50 ${fmt(l.p50)}, p90 ${fmt(l.p90)}, p99 ${fmt(l.p99)}, p99.9 ${fmt(l.p999)}, max ${fmt(l.max)} (min ${fmt(l.min)}, mean ${fmt(l.mean)}, n ${fmt(l.count)})`
        : '—',
    ],
    [
      'generator CPU',
      `user ${r.generator_cpu.user_s} s, system ${r.generator_cpu.system_s} s, ${r.generator_cpu.us_per_msg} µs/msg`,
    ],
  ];
  if (r.broker_rss) {
    rows.push([
      'broker RSS',
      `${fmt(r.broker_rss.before_bytes / 1048576)} MiB → ${fmt(r.broker_rss.after_bytes / 1048576)} MiB` +
        (r.broker_rss_per_conn_bytes !== undefined ? ` (${fmt(r.broker_rss_per_conn_bytes)} B per connection)` : ''),
    ]);
  }
  if (r.errors.length) rows.push(['errors', r.errors.map((e) => e.replace(/\|/g, '\\|')).join('; ')]);
  return ['| fleetmq-bench | |', '| --- | --- |', ...rows.map(([k, v]) => `| ${k} | ${v} |`)].join('\n') + '\n';
}
