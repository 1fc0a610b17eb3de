// The close(hadError) notification of a Transport, shared by the net (TCP / TLS) and
// WebSocket transports.
import type { Logger } from '../log/logger.js';
import type { TransportHandlers, TransportKind } from './types.js';

/**
 * Delivers TransportHandlers.close exactly once. A close that happens before
 * setHandlers() is held and delivered (in a microtask) once the handlers are set; a
 * throwing close handler is logged, never propagated.
 */
export class CloseNotifier {
  private delivered = false;
  private pending: boolean | null = null;

  constructor(
    private readonly kind: TransportKind,
    private readonly log: Logger,
    private readonly handlers: () => TransportHandlers | null,
  ) {}

  /** close(hadError) has been delivered. */
  get done(): boolean {
    return this.delivered;
  }

  notify(hadError: boolean): void {
    if (this.delivered) return;
    const h = this.handlers();
    if (h === null) {
      this.pending = hadError;
      return;
    }
    this.delivered = true;
    try {
      h.close(hadError);
    } catch (err) {
      this.log.error('transport.close_handler_failed', { kind: this.kind, err });
    }
  }

  /** To call when the handlers are first set: delivers a close held until then. */
  handlersSet(): void {
    if (this.pending === null) return;
    const had = this.pending;
    this.pending = null;
    queueMicrotask(() => this.notify(had));
  }
}
