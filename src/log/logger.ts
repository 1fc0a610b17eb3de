// Structured logs: one JSON line per event on stderr, e.g.
// {"t":"2026-11-29T03:40:00.000Z","level":"info","node":"fleetmq@host","msg":"listener.up","port":1883}
import type { LogLevel } from '../config/types.js';

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type LogFields = Record<string, unknown>;

export class Logger {
  private min: number;
  constructor(
    level: LogLevel = 'info',
    private readonly base: LogFields = {},
    private readonly sink: (line: string) => void = (l) => process.stderr.write(l + '\n'),
  ) {
    this.min = RANK[level];
  }

  /** Passes a line another thread already formatted to this logger's sink. */
  raw(line: string): void {
    this.sink(line);
  }

  setLevel(level: LogLevel): void {
    this.min = RANK[level];
  }

  enabled(level: LogLevel): boolean {
    return RANK[level] >= this.min;
  }

  child(fields: LogFields): Logger {
    const c = new Logger('info', { ...this.base, ...fields }, this.sink);
    c.min = this.min;
    return c;
  }

  debug(msg: string, fields?: LogFields): void { this.emit('debug', msg, fields); }
  info(msg: string, fields?: LogFields): void { this.emit('info', msg, fields); }
  warn(msg: string, fields?: LogFields): void { this.emit('warn', msg, fields); }
  error(msg: string, fields?: LogFields): void { this.emit('error', msg, fields); }

  private emit(level: LogLevel, msg: string, fields?: LogFields): void {
    if (RANK[level] < this.min) return;
    const rec: LogFields = { t: new Date().toISOString(), level, ...this.base, msg, ...fields };
    this.sink(JSON.stringify(rec, replacer));
  }
}

function replacer(_k: string, v: unknown): unknown {
  if (v instanceof Error) return { name: v.name, message: v.message, code: (v as { code?: unknown }).code };
  if (typeof v === 'bigint') return v.toString();
  return v;
}
