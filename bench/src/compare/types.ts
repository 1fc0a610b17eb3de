// The comparison's result object (written to bench/results/<date>-<scenario>-<generator>.json).
// See docs/bench.md, "Comparing brokers".
import type { BrokerName } from './brokers.js';
import type { CpuSample, MachineInfo } from './procfs.js';

/** The generators' result object (docs/bench-format.md); read defensively. */
export interface GeneratorResult {
  tool?: string;
  version?: number;
  scenario?: string;
  params?: Record<string, unknown>;
  started_at?: string;
  measure_s?: number;
  connections?: { attempted?: number; connected?: number; refused?: number; failed?: number };
  messages?: { sent?: number; received?: number; expected?: number; lost?: number };
  rates?: { sent_per_s?: number; received_per_s?: number };
  latency_us?: { count?: number; min?: number; mean?: number; p50?: number; p90?: number; p99?: number; p999?: number; max?: number };
  generator_cpu?: { user_s?: number; system_s?: number; us_per_msg?: number };
  broker_rss_per_conn_bytes?: number;
  errors?: string[];
  [k: string]: unknown;
}

export interface ProgressEvent {
  event: 'progress';
  t: number;
  connected?: number;
  sent?: number;
  received?: number;
  sent_rate?: number;
  recv_rate?: number;
  p50_us?: number;
  p99_us?: number;
}

export type RunStatus = 'ok' | 'crashed' | 'stalled' | 'unsupported' | 'failed';

/** The per-run figures compared between brokers (null when not measured). */
export interface Figures {
  /** Messages received per second over the measured window (generator's rates.received_per_s). */
  msgs_per_s: number | null;
  p50_us: number | null;
  p99_us: number | null;
  p999_us: number | null;
  /** Broker utime+stime between the `measure` and `drain` events ÷ messages received, µs. */
  cpu_us_per_msg: number | null;
  /** Broker peak RSS (VmHWM) at the end of the run, bytes. */
  peak_rss_bytes: number | null;
  /** (broker VmRSS at `drain` − VmRSS before the generator started) ÷ connections, bytes. */
  rss_per_conn_bytes: number | null;
  /** Generator CPU µs per message (its own generator_cpu.us_per_msg). */
  gen_cpu_us_per_msg: number | null;
  sent: number | null;
  received: number | null;
  lost: number | null;
  connected: number | null;
}

export const FIGURE_KEYS = [
  'msgs_per_s', 'p50_us', 'p99_us', 'p999_us', 'cpu_us_per_msg', 'peak_rss_bytes',
  'rss_per_conn_bytes', 'gen_cpu_us_per_msg', 'sent', 'received', 'lost', 'connected',
] as const satisfies ReadonlyArray<keyof Figures>;

export interface CpuWindow {
  clk_tck: number;
  at_measure: CpuSample | null;
  /** Sample at `drain` (or at `done` / generator exit when no `drain` event came: see `end_event`). */
  at_end: CpuSample | null;
  end_event: 'drain' | 'done' | 'exit' | null;
  ticks: number | null;
  cpu_s: number | null;
  window_s: number | null;
  /** Broker CPU ÷ wall time of the window (1.0 = one core busy). */
  cores_busy: number | null;
  /** ± resolution of cpu_us_per_msg from tick granularity (2 ticks ÷ received), µs. */
  resolution_us_per_msg: number | null;
}

export interface RunRecord {
  seq: number;
  round: number;
  broker: BrokerName;
  status: RunStatus;
  reason: string | null;
  started_at: string;
  wall_s: number;
  broker_pid: number | null;
  broker_ports: Record<string, number> | null;
  broker_command: string[] | null;
  config_path: string | null;
  /** Set when the broker exited before the driver stopped it. */
  broker_exit: { code: number | null; signal: string | null; at_s: number } | null;
  broker_output_tail: string[];
  generator_pid: number | null;
  generator_command: string[] | null;
  generator_exit: { code: number | null; signal: string | null } | null;
  generator_output_tail: string[];
  phases: Record<string, number>;
  last_progress: ProgressEvent | null;
  error_events: number;
  error_messages: string[];
  cpu: CpuWindow | null;
  rss_before_bytes: number | null;
  figures: Figures;
  result: GeneratorResult | null;
  test_hook: string | null;
}

export type Direction = 'higher' | 'lower';

export interface Ratio {
  /** fleetmq's median ÷ the peer's median. */
  value: number | null;
  better: Direction;
  verdict: 'fleetmq better' | 'fleetmq worse' | 'equal' | 'n/a';
}

export interface BrokerSummary {
  broker: BrokerName;
  version: string;
  runs: number;
  ok: number;
  crashed: number;
  stalled: number;
  failed: number;
  unsupported: number;
  unsupported_reason: string | null;
  /** Medians over the `ok` runs. */
  median: Figures;
  min: Figures;
  max: Figures;
}

export interface CompareResult {
  kind: 'fleetmq-bench-compare';
  format: 1;
  scenario: string;
  generator: 'ts' | 'native';
  generator_tool: string;
  started_at: string;
  finished_at: string;
  interrupted: boolean;
  command: string;
  argv: string[];
  generator_flags: string[];
  protocol: { V: number; name: string };
  rounds: number;
  brokers: BrokerName[];
  order: string[];
  settings: {
    alike: Record<string, string>;
    per_broker: Record<string, Record<string, string>>;
    stall_s: number;
    received_stall_s: number;
    crash_grace_s: number;
    pause_s: number;
    run_timeout_s: number;
    workers: number | null;
    cpu_note: string;
  };
  machine: MachineInfo & { versions: Record<string, string> };
  configs_written: Array<{ broker: BrokerName; seq: number; path: string; text: string }>;
  runs: RunRecord[];
  summary: BrokerSummary[];
  /** fleetmq ÷ peer for each figure, keyed by peer. */
  ratios: Record<string, Record<string, Ratio>>;
  warnings: string[];
}
