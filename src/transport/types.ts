// One client byte stream, whatever carries it (TCP, TLS, WebSocket). The broker never
// sees sockets, only this.

export type TransportKind = 'tcp' | 'tls' | 'ws' | 'wss';

export interface TransportHandlers {
  /** Bytes from the client; for WebSocket the frames' payloads in order [MQTT-6.0.0-2]. */
  data(chunk: Buffer): void;
  /** The write buffer fell below its low-water mark after write() returned false. */
  drain(): void;
  /** The stream is gone (either side). Called exactly once. */
  close(hadError: boolean): void;
}

export interface Transport {
  readonly kind: TransportKind;
  readonly remoteAddress: string;
  /** CN of a verified client certificate (TLS / WSS), else null. */
  readonly certCommonName: string | null;
  setHandlers(h: TransportHandlers): void;
  /** Queue bytes; false when the buffer is over its high-water mark (caller should wait for drain). */
  write(buf: Uint8Array): boolean;
  /** Bytes queued but not yet handed to the kernel. */
  bufferedBytes(): number;
  pauseReading(): void;
  resumeReading(): void;
  /** Flush what is queued, then close. */
  end(): void;
  /** Close now, dropping anything queued. */
  destroy(): void;
}

export interface Listener {
  readonly name: string;
  readonly port: number;
  close(): Promise<void>;
}
