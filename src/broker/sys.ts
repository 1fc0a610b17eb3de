// Periodic $SYS/brokers/<node>/… topics (retained, so a new subscriber sees the latest).
import type { Broker } from './broker.js';

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
    const c = b.counters;
    const base = `$SYS/brokers/${b.cfg.node.name}/`;
    const values: [string, string | number][] = [
      ['version', VERSION],
      ['uptime', Math.floor((Date.now() - b.startedAt) / 1000)],
      ['clients/connected', b.connectedCount],
      ['sessions/count', b.sessions.size],
      ['subscriptions/count', b.index.size],
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
