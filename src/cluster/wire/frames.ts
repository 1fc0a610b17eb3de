// Frames of the inter-node links (cluster port and forward port, docs/cluster.md "Wire
// formats"):
//
//   u32 BE length   bytes after this field (1 + body)
//   u8  type        1..31 the link's own (handshake, ping, requests), 32..255 the channel's
//   body
//
// FrameReader takes the socket's chunks and calls back once per whole frame; the body it
// hands out is a view into its buffer, valid only during the callback (copy what you keep).

export const T_HELLO = 1;
export const T_CHALLENGE = 2;
export const T_AUTH = 3;
export const T_WELCOME = 4;
export const T_REFUSE = 5;
export const T_PING = 6;
export const T_PONG = 7;
export const T_REQUEST = 8;
export const T_RESPONSE = 9;
export const FIRST_APP_TYPE = 32;

export const DEFAULT_MAX_FRAME = 64 * 1024 * 1024;

export class FrameError extends Error {
  readonly code = 'CLUSTER_BAD_FRAME';
}

export class FrameReader {
  private buf: Buffer = Buffer.alloc(0);
  private start = 0;
  private end = 0;

  constructor(private readonly maxFrame = DEFAULT_MAX_FRAME) {}

  /** Feeds a chunk; calls `onFrame` for every complete frame. Throws FrameError on a bad length. */
  push(chunk: Buffer, onFrame: (type: number, body: Buffer) => void): void {
    let data: Buffer;
    let at: number;
    let end: number;
    if (this.end === this.start) {
      // Nothing buffered: parse the chunk in place.
      data = chunk;
      at = 0;
      end = chunk.length;
    } else {
      this.append(chunk);
      data = this.buf;
      at = this.start;
      end = this.end;
    }
    while (end - at >= 4) {
      const len = data.readUInt32BE(at);
      if (len === 0 || len > this.maxFrame) throw new FrameError(`frame length ${len} outside 1..${this.maxFrame}`);
      if (end - at - 4 < len) break;
      const type = data[at + 4]!;
      const body = data.subarray(at + 5, at + 4 + len);
      at += 4 + len;
      if (data === this.buf) this.start = at;
      onFrame(type, body);
    }
    if (data === chunk) {
      // Keep the partial frame.
      if (at < end) {
        this.start = 0;
        this.end = 0;
        this.append(chunk.subarray(at));
      }
    } else {
      this.start = at;
      if (this.start === this.end) this.start = this.end = 0;
    }
  }

  private append(chunk: Buffer): void {
    const have = this.end - this.start;
    if (this.buf.length - this.end < chunk.length) {
      const need = have + chunk.length;
      if (this.start > 0 && this.buf.length >= need && this.buf.length - have >= chunk.length) {
        this.buf.copy(this.buf, 0, this.start, this.end);
      } else {
        const next = Buffer.allocUnsafe(Math.max(need, this.buf.length * 2, 64 * 1024));
        this.buf.copy(next, 0, this.start, this.end);
        this.buf = next;
      }
      this.start = 0;
      this.end = have;
    }
    chunk.copy(this.buf, this.end);
    this.end += chunk.length;
  }

  get buffered(): number {
    return this.end - this.start;
  }
}

/** The 5-byte head of a frame whose body is `bodyLen` bytes. */
export function frameHead(type: number, bodyLen: number): Buffer {
  const h = Buffer.allocUnsafe(5);
  h.writeUInt32BE(bodyLen + 1, 0);
  h[4] = type;
  return h;
}
