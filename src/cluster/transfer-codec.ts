// A session crossing nodes on takeover (forward channel request TAKEOVER): the same
// SessionTransfer that moves a session between workers, as JSON with Buffers in base64.
import type { SessionTransfer } from '../broker/transfer.js';

interface B64 {
  $b64: string;
}

export function encodeTransfer(t: SessionTransfer | null): Buffer {
  return Buffer.from(JSON.stringify(t, (_k, v: unknown) => {
    if (v && typeof v === 'object' && (v as { type?: unknown }).type === 'Buffer' && Array.isArray((v as { data?: unknown }).data)) {
      return { $b64: Buffer.from((v as { data: number[] }).data).toString('base64') } satisfies B64;
    }
    if (v instanceof Uint8Array) return { $b64: Buffer.from(v).toString('base64') } satisfies B64;
    return v;
  }));
}

export function decodeTransfer(b: Buffer): SessionTransfer | null {
  return JSON.parse(b.toString('utf8'), (_k, v: unknown) => {
    if (v && typeof v === 'object' && typeof (v as B64).$b64 === 'string' && Object.keys(v).length === 1) return Buffer.from((v as B64).$b64, 'base64');
    return v;
  }) as SessionTransfer | null;
}
