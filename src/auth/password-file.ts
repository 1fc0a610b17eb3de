// Password file: one `username:encoded-hash` per line (see password-hash.ts for the
// hash format). Blank lines and lines whose first non-blank character is `#` are
// ignored. The username is everything before the first `:`, so it cannot contain one.
import { randomBytes } from 'node:crypto';
import { open, readFile, realpath, rename, stat, unlink } from 'node:fs/promises';
import { hashPassword, isValidEncodedHash } from './password-hash.js';

export class PasswordFileError extends Error {
  constructor(
    readonly file: string,
    readonly line: number,
    detail: string,
  ) {
    super(`${file}:${line}: ${detail}`);
    this.name = 'PasswordFileError';
  }
}

interface Entry {
  user: string;
  hash: string;
  /** 0-based index into the file's raw lines. */
  index: number;
}

/** Why a username cannot be stored, or null when it can. */
export function usernameProblem(user: string): string | null {
  if (user.length === 0) return 'username is empty';
  if (user.includes(':')) return 'username must not contain ":"';
  if (/[\u0000-\u001f\u007f]/.test(user)) return 'username must not contain control characters';
  if (user.trimStart().startsWith('#')) return 'username must not start with "#"';
  if (user.trim() !== user) return 'username must not start or end with whitespace';
  if (Buffer.byteLength(user, 'utf8') > 65535) return 'username is longer than 65535 bytes';
  return null;
}

function parseEntries(text: string, file: string): { lines: string[]; entries: Entry[] } {
  const lines = text.split('\n');
  const entries: Entry[] = [];
  const seen = new Map<string, number>();
  lines.forEach((raw, index) => {
    const lineNo = index + 1;
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) return;
    const colon = line.indexOf(':');
    if (colon < 0) throw new PasswordFileError(file, lineNo, 'expected "username:hash"');
    const user = line.slice(0, colon);
    const hash = line.slice(colon + 1).trim();
    const problem = usernameProblem(user);
    if (problem) throw new PasswordFileError(file, lineNo, problem);
    if (!isValidEncodedHash(hash)) {
      throw new PasswordFileError(file, lineNo, `malformed password hash for user "${user}"`);
    }
    const prev = seen.get(user);
    if (prev !== undefined) {
      throw new PasswordFileError(file, lineNo, `duplicate user "${user}" (first on line ${prev})`);
    }
    seen.set(user, lineNo);
    entries.push({ user, hash, index });
  });
  return { lines, entries };
}

/** Parses password file text; throws PasswordFileError naming `file` and the line. */
export function parsePasswordFile(text: string, file: string): Map<string, string> {
  return new Map(parseEntries(text, file).entries.map((e) => [e.user, e.hash]));
}

async function readText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read password file ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/** Reads and parses a password file: username → encoded hash. */
export async function loadPasswordFile(file: string): Promise<Map<string, string>> {
  return parsePasswordFile(await readText(file), file);
}

function isEnoent(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === 'ENOENT';
}

/** Writes `text` to `file` atomically (temp file + fsync + rename) with the given mode. */
async function writeAtomic(file: string, text: string, mode: number): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fh = await open(tmp, 'wx', mode);
  try {
    try {
      await fh.chmod(mode); // exact mode regardless of umask
      await fh.writeFile(text, 'utf8');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

async function readForUpdate(file: string): Promise<{ path: string; text: string | null; mode: number }> {
  let path = file;
  try {
    path = await realpath(file); // keep a symlinked file a symlink
  } catch (err) {
    if (!isEnoent(err)) throw new Error(`cannot access password file ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const [text, st] = await Promise.all([readFile(path, 'utf8'), stat(path)]);
    return { path, text, mode: st.mode & 0o777 };
  } catch (err) {
    if (isEnoent(err)) return { path, text: null, mode: 0o600 };
    throw new Error(`cannot read password file ${file}: ${(err as Error).message}`, { cause: err });
  }
}

function render(lines: string[]): string {
  const out = lines.join('\n');
  return out === '' || out.endsWith('\n') ? out : out + '\n';
}

/**
 * Sets `user`'s password, creating the file (mode 0600) if needed. Other lines,
 * comments included, are kept; an existing file keeps its mode.
 */
export async function upsertUser(file: string, user: string, password: string | Buffer): Promise<'added' | 'updated'> {
  const problem = usernameProblem(user);
  if (problem) throw new Error(`cannot store user "${user}" in ${file}: ${problem}`);
  const { path, text, mode } = await readForUpdate(file);
  const { lines, entries } = text === null ? { lines: [], entries: [] } : parseEntries(text, file);
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  const line = `${user}:${await hashPassword(password)}`;
  const existing = entries.find((e) => e.user === user);
  if (existing) {
    const crlf = (lines[existing.index] ?? '').endsWith('\r');
    lines[existing.index] = crlf ? line + '\r' : line;
  } else {
    lines.push(line);
  }
  try {
    await writeAtomic(path, render(lines), mode);
  } catch (err) {
    throw new Error(`cannot write password file ${file}: ${(err as Error).message}`, { cause: err });
  }
  return existing ? 'updated' : 'added';
}

/** Removes `user`; false when the user is not in the file. Throws when the file is missing. */
export async function removeUser(file: string, user: string): Promise<boolean> {
  const { path, text, mode } = await readForUpdate(file);
  if (text === null) throw new Error(`cannot read password file ${file}: no such file`);
  const { lines, entries } = parseEntries(text, file);
  const existing = entries.find((e) => e.user === user);
  if (!existing) return false;
  lines.splice(existing.index, 1);
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  try {
    await writeAtomic(path, render(lines), mode);
  } catch (err) {
    throw new Error(`cannot write password file ${file}: ${(err as Error).message}`, { cause: err });
  }
  return true;
}
