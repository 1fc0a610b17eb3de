// Periodic $SYS/brokers/<node>/… topics (retained, so a new subscriber sees the latest).
import type { Broker } from './broker.js';
import type { CounterName } from '../metrics/counters.js';

export const VERSION = '0.1.0';

export class SysPublisher {
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly broker: Broker) {}

  start(): void {
    const ms = this.broker.cfg.mqtt.sys_interval_ms;
    if (ms <= 0) return;
    this.publishAll();
    this.timer = setInterval(() => this.publishAll(), ms);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  publishAll(): void {
    const b = this.broker;
    // Worker-threaded: node-wide sums of every worker's counters; inline: this engine's.
    const all = b.nodeCounters ?? [b.counters];
    const sum = (k: CounterName | 'dropped'): number => all.reduce((n, x) => n + x[k], 0);
    const c = {
      messagesReceived: sum('messagesReceived'), messagesSent: sum('messagesSent'), dropped: sum('dropped'),
      bytesReceived: sum('bytesReceived'), bytesSent: sum('bytesSent'),
    };
    const base = `$SYS/brokers/${b.cfg.node.name}/`;
    const values: [string, string | number][] = [
      ['version', VERSION],
      ['uptime', Math.floor((Date.now() - b.startedAt) / 1000)],
      ['clients/connected', sum('connected')],
      ['sessions/count', sum('sessions')],
      ['subscriptions/count', sum('subscriptions')],
      ['retained/count', b.retained.size],
      ['messages/received', c.messagesReceived],
      ['messages/sent', c.messagesSent],
      ['messages/dropped', c.dropped],
      ['bytes/received', c.bytesReceived],
      ['bytes/sent', c.bytesSent],
    ];
    for (const [k, v] of values) {
      b.publish({
        topic: base + k, payload: Buffer.from(String(v)), qos: 0, retain: true,
        props: undefined, expiresAt: 0, from: '',
      });
    }
  }
}
