// Splits an MQTT byte stream into whole control packets (fixed header + remaining
// length + body). TCP delivers arbitrary slices of the stream and a WebSocket message
// may hold part of a packet or several packets [MQTT-6.0.0-2], so a packet can span
// chunks and a chunk can hold many packets.
//
// Zero-copy: a packet that lies wholly inside one chunk is delivered as a subarray of
// that chunk, so chunks handed to push() must not be reused by the caller afterwards
// (fresh Buffers from net.Socket are fine; a transport that recycles its memory must
// copy first). Only packets that span chunks are copied, once, into a buffer of
// exactly their size.
//
// Backpressure: if onFrame returns false, delivery stops and the unread rest stays
// buffered (by reference); push(Buffer.alloc(0), onFrame) resumes.

export interface FrameError {
  reasonCode: number;
  message: string;
}

/** Largest packet the encoding allows: 1 type byte + 4 length bytes + 268,435,455. */
export const MAX_PACKET_SIZE_LIMIT = 1 + 4 + 268_435_455;

const MALFORMED = 0x81;
const PACKET_TOO_LARGE = 0x95;

const HDR_NEED_MORE = -1;
const HDR_ERROR = -2;

export type FrameHandler = (frame: Buffer, type: number) => boolean | void;

export class Framer {
  private maxSize: number;
  /** Unread input kept while delivery is paused (or after pause, later chunks). */
  private pending: Buffer[] = [];
  /** A packet whose header is known but whose bytes span chunks. */
  private partial: Buffer | null = null;
  private partialFilled = 0;
  /** An incomplete fixed header (type byte + < 4 length bytes). */
  private readonly hdr: Buffer = Buffer.allocUnsafe(5);
  private hdrLen = 0;
  /** Remaining length from the last parseHeader() call. */
  private rl = 0;
  private paused = false;
  private error: FrameError | null = null;

  /** maxPacketSize: whole-packet limit in bytes (<= 0 means the protocol maximum). */
  constructor(maxPacketSize: number) {
    this.maxSize = normalizeMax(maxPacketSize);
  }

  /** Applies to packets whose header has not been read yet. */
  setMaxPacketSize(n: number): void {
    this.maxSize = normalizeMax(n);
  }

  /** Bytes held: incomplete packet plus unread input kept during a pause. */
  get buffered(): number {
    let n = this.hdrLen + this.partialFilled;
    for (let i = 0; i < this.pending.length; i++) n += this.pending[i]!.length;
    return n;
  }

  /**
   * Feed bytes; onFrame is called synchronously for each complete packet with the
   * packet type (first byte >> 4). Returns an error (and stays in that error state)
   * for a malformed remaining length (0x81) or a packet over the size limit (0x95).
   */
  push(chunk: Buffer, onFrame: FrameHandler): FrameError | null {
    if (this.error !== null) return this.error;
    this.paused = false;
    const pending = this.pending;
    if (pending.length === 0) {
      // Hot path: nothing queued.
      const off = this.consume(chunk, 0, onFrame);
      if (off < 0) return this.error;
      if (off < chunk.length) pending.push(off === 0 ? chunk : chunk.subarray(off));
      return null;
    }
    if (chunk.length > 0) pending.push(chunk);
    while (pending.length > 0) {
      const buf = pending[0]!;
      const off = this.consume(buf, 0, onFrame);
      if (off < 0) return this.error;
      if (off < buf.length) {
        pending[0] = buf.subarray(off);
        return null;
      }
      pending.shift();
      if (this.paused) return null;
    }
    return null;
  }

  /** Returns the offset reached in buf (< buf.length only when paused), or -1 on error. */
  private consume(buf: Buffer, off: number, onFrame: FrameHandler): number {
    const len = buf.length;
    for (;;) {
      const p = this.partial;
      if (p !== null) {
        const need = p.length - this.partialFilled;
        const avail = len - off;
        if (avail < need) {
          if (avail > 0) buf.copy(p, this.partialFilled, off, len);
          this.partialFilled += avail;
          return len;
        }
        if (need > 0) buf.copy(p, this.partialFilled, off, off + need);
        off += need;
        this.partial = null;
        this.partialFilled = 0;
        if (onFrame(p, p[0]! >> 4) === false) {
          this.paused = true;
          return off;
        }
        continue;
      }
      if (off >= len) return off;

      if (this.hdrLen > 0) {
        // Finish a fixed header that started in an earlier chunk.
        const hdr = this.hdr;
        let h = HDR_NEED_MORE;
        while (off < len) {
          hdr[this.hdrLen++] = buf[off++]!;
          h = this.parseHeader(hdr, 0, this.hdrLen);
          if (h !== HDR_NEED_MORE) break;
        }
        if (h === HDR_ERROR) return -1;
        if (h === HDR_NEED_MORE) return len;
        const total = h + this.rl;
        if (total > this.maxSize) return this.tooLarge(total);
        const np = Buffer.allocUnsafe(total);
        hdr.copy(np, 0, 0, h);
        this.partial = np;
        this.partialFilled = h;
        this.hdrLen = 0;
        continue;
      }

      // Header starts at buf[off].
      const h = this.parseHeader(buf, off, len);
      if (h === HDR_ERROR) return -1;
      if (h === HDR_NEED_MORE) {
        buf.copy(this.hdr, 0, off, len);
        this.hdrLen = len - off;
        return len;
      }
      const total = h + this.rl;
      if (total > this.maxSize) return this.tooLarge(total);
      const end = off + total;
      if (end <= len) {
        const frame = buf.subarray(off, end);
        off = end;
        if (onFrame(frame, frame[0]! >> 4) === false) {
          this.paused = true;
          return off;
        }
        continue;
      }
      const np = Buffer.allocUnsafe(total);
      buf.copy(np, 0, off, len);
      this.partial = np;
      this.partialFilled = len - off;
      return len;
    }
  }

  /**
   * Parses the fixed header at src[start..end). Returns the header length (type byte +
   * length bytes) and sets this.rl, or HDR_NEED_MORE, or HDR_ERROR (sets this.error).
   */
  private parseHeader(src: Buffer, start: number, end: number): number {
    let i = start + 1;
    let rl = 0;
    let mul = 1;
    for (;;) {
      if (i >= end) return HDR_NEED_MORE;
      const b = src[i++]!;
      rl += (b & 0x7f) * mul;
      if (b < 0x80) {
        // [MQTT-1.5.5-1] the encoded value MUST use the minimum number of bytes.
        if (b === 0 && i - start > 2) {
          return this.fail(MALFORMED, 'remaining length is not minimally encoded');
        }
        this.rl = rl;
        return i - start;
      }
      if (i - start > 4) {
        return this.fail(MALFORMED, 'remaining length longer than 4 bytes');
      }
      mul *= 128;
    }
  }

  private tooLarge(total: number): number {
    this.fail(PACKET_TOO_LARGE, `packet of ${total} bytes exceeds maximum packet size ${this.maxSize}`);
    return -1;
  }

  private fail(reasonCode: number, message: string): number {
    this.error = { reasonCode, message };
    this.pending = [];
    this.partial = null;
    this.partialFilled = 0;
    this.hdrLen = 0;
    return HDR_ERROR;
  }
}

function normalizeMax(n: number): number {
  if (!(n > 0) || n > MAX_PACKET_SIZE_LIMIT) return MAX_PACKET_SIZE_LIMIT;
  return Math.floor(n);
}
