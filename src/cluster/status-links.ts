// Links kept open to other nodes' cluster ports for status requests (GET /api/v1/cluster,
// ctl cluster status): a dashboard or a monitor polling every second reuses one link per
// node instead of a TCP connect and a cookie handshake per node per call. A link idle for
// `idleMs` is closed; one that fails (connect error, request timeout, close) is dropped and
// the next request connects again.
import type { Link } from './wire/link.js';

interface Entry {
  link: Promise<Link>;
  lastUsed: number;
}

export class StatusLinks {
  private readonly links = new Map<string, Entry>();
  private readonly timer: NodeJS.Timeout;
  private stopped = false;

  constructor(
    private readonly connect: (address: string) => Promise<Link>,
    private readonly idleMs = 60_000,
  ) {
    this.timer = setInterval(() => this.sweep(Date.now()), Math.max(1000, idleMs / 2));
    this.timer.unref();
  }

  /** Links open (or connecting) now. */
  get size(): number {
    return this.links.size;
  }

  async request(address: string, kind: number, body: Buffer, timeoutMs: number): Promise<Buffer> {
    if (this.stopped) throw new Error('status links stopped');
    let e = this.links.get(address);
    if (e === undefined) {
      const link = this.connect(address);
      const entry: Entry = { link, lastUsed: Date.now() };
      this.links.set(address, entry);
      link.then(
        (l) => {
          const prev = l.onClose;
          l.onClose = (reason) => {
            this.drop(address, entry);
            prev(reason);
          };
        },
        () => this.drop(address, entry),
      );
      e = entry;
    }
    e.lastUsed = Date.now();
    const link = await e.link;
    try {
      return await link.request(kind, body, timeoutMs);
    } catch (err) {
      // A link that timed out may be half dead: the next request starts afresh.
      this.drop(address, e);
      link.close('status request failed');
      throw err;
    }
  }

  /** Closes links unused since `now - idleMs`. */
  sweep(now: number): void {
    for (const [address, e] of this.links) {
      if (now - e.lastUsed < this.idleMs) continue;
      this.links.delete(address);
      void e.link.then((l) => l.close('idle'), () => undefined);
    }
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
    for (const e of this.links.values()) void e.link.then((l) => l.close('node stopping'), () => undefined);
    this.links.clear();
  }

  private drop(address: string, e: Entry): void {
    if (this.links.get(address) === e) this.links.delete(address);
  }
}
