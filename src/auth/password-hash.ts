// Salted scrypt password hashes in a self-describing string:
//   $scrypt$N=16384,r=8,p=1$<salt base64>$<hash base64>
// (standard base64 with padding). New hashes always use the defaults below;
// verification honours the parameters stored in the string (within sane bounds),
// so stronger parameters can be introduced later without breaking old entries.
//
// Nothing here throws on bad input: malformed encodings simply never verify.
import { randomBytes, scrypt, scryptSync, timingSafeEqual, type ScryptOptions } from 'node:crypto';

export const SCRYPT_N = 16384;
export const SCRYPT_R = 8;
export const SCRYPT_P = 1;
export const SALT_BYTES = 16;
export const KEY_BYTES = 32;

// Bounds for parameters read back from an encoded hash (garbage protection, not policy).
const MAX_N = 1 << 20;
const MAX_R = 32;
const MAX_P = 16;
const MAX_MEM = 256 * 1024 * 1024;
const MIN_SALT = 8;
const MAX_SALT = 64;
const MIN_KEY = 16;
const MAX_KEY = 64;

export interface ParsedHash {
  N: number;
  r: number;
  p: number;
  salt: Buffer;
  hash: Buffer;
}

const PARAMS_RE = /^N=([1-9][0-9]{0,7}),r=([1-9][0-9]{0,2}),p=([1-9][0-9]{0,2})$/;
const B64_RE = /^[A-Za-z0-9+/]+={0,2}$/;

function decodeB64(s: string): Buffer | null {
  if (s.length % 4 !== 0 || !B64_RE.test(s)) return null;
  const b = Buffer.from(s, 'base64');
  // Only the canonical encoding is accepted (rejects stray bits in the padding).
  return b.toString('base64') === s ? b : null;
}

/** Parses an encoded hash; null when it is malformed or its parameters are out of bounds. */
export function parseEncodedHash(encoded: unknown): ParsedHash | null {
  if (typeof encoded !== 'string' || encoded.length > 512) return null;
  const parts = encoded.split('$');
  if (parts.length !== 5 || parts[0] !== '' || parts[1] !== 'scrypt') return null;
  const m = PARAMS_RE.exec(parts[2] ?? '');
  if (!m) return null;
  const N = Number(m[1]);
  const r = Number(m[2]);
  const p = Number(m[3]);
  if (N < 2 || N > MAX_N || (N & (N - 1)) !== 0) return null;
  if (r > MAX_R || p > MAX_P || maxmemFor(N, r, p) > MAX_MEM) return null;
  const salt = decodeB64(parts[3] ?? '');
  const hash = decodeB64(parts[4] ?? '');
  if (!salt || salt.length < MIN_SALT || salt.length > MAX_SALT) return null;
  if (!hash || hash.length < MIN_KEY || hash.length > MAX_KEY) return null;
  return { N, r, p, salt, hash };
}

export function isValidEncodedHash(encoded: unknown): boolean {
  return parseEncodedHash(encoded) !== null;
}

function maxmemFor(N: number, r: number, p: number): number {
  // OpenSSL needs 128*r*(N+2) for V plus 128*r*p for B; leave headroom.
  return 128 * r * (N + 2 + p) + 1024 * 1024;
}

function optionsFor(h: { N: number; r: number; p: number }): ScryptOptions {
  return { N: h.N, r: h.r, p: h.p, maxmem: maxmemFor(h.N, h.r, h.p) };
}

function toBytes(pw: unknown): Uint8Array | null {
  if (typeof pw === 'string') return Buffer.from(pw, 'utf8');
  if (pw instanceof Uint8Array) return pw;
  return null;
}

function scryptAsync(pw: Uint8Array, salt: Uint8Array, len: number, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(pw, salt, len, opts, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

function encode(salt: Buffer, key: Buffer): string {
  return `$scrypt$N=${SCRYPT_N},r=${SCRYPT_R},p=${SCRYPT_P}$${salt.toString('base64')}$${key.toString('base64')}`;
}

/** Hashes a password (strings are UTF-8 encoded) with a fresh random salt. */
export async function hashPassword(pw: Buffer | Uint8Array | string): Promise<string> {
  const bytes = toBytes(pw);
  if (!bytes) throw new TypeError('password must be a string or bytes');
  const salt = randomBytes(SALT_BYTES);
  const key = await scryptAsync(bytes, salt, KEY_BYTES, optionsFor({ N: SCRYPT_N, r: SCRYPT_R, p: SCRYPT_P }));
  return encode(salt, key);
}

/**
 * Checks a password against an encoded hash in constant time. Uses the libuv
 * thread pool (crypto.scrypt); false for a wrong password or any malformed input.
 */
export async function verifyPassword(pw: Buffer | Uint8Array | string, encoded: string): Promise<boolean> {
  try {
    const parsed = parseEncodedHash(encoded);
    const bytes = toBytes(pw);
    if (!parsed || !bytes) return false;
    const key = await scryptAsync(bytes, parsed.salt, parsed.hash.length, optionsFor(parsed));
    return timingSafeEqual(key, parsed.hash);
  } catch {
    return false;
  }
}

/**
 * Synchronous variant for worker threads (hash-worker.ts): running scrypt on the
 * calling thread keeps it off the process-wide libuv pool.
 */
export function verifyPasswordSync(pw: Buffer | Uint8Array | string, encoded: string): boolean {
  try {
    const parsed = parseEncodedHash(encoded);
    const bytes = toBytes(pw);
    if (!parsed || !bytes) return false;
    const key = scryptSync(bytes, parsed.salt, parsed.hash.length, optionsFor(parsed));
    return timingSafeEqual(key, parsed.hash);
  } catch {
    return false;
  }
}

/**
 * A well-formed hash that no password is known to match (derived from a zero
 * salt/key). Verifying against it costs the same as a real entry, so unknown
 * usernames take as long to reject as wrong passwords.
 */
export const DUMMY_HASH = encode(Buffer.alloc(SALT_BYTES, 0x5a), Buffer.alloc(KEY_BYTES, 0));
