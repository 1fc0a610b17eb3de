// `fleetmq passwd [-D] [-b <password>] <file> <user>` — manage the password file.
//   (no flag)       set/add <user>; the password is prompted twice (hidden) when stdin
//                   is a TTY, otherwise one line is read from stdin (for pipes/scripts)
//   -b <password>   batch mode: take the password from the command line
//   -D              delete <user>
// The file is created with mode 0600 if missing. `args` are the words after `passwd`.
// Exit codes: 0 ok, 1 failure, 2 usage error.
import { StringDecoder } from 'node:string_decoder';
import { removeUser, upsertUser, usernameProblem } from './password-file.js';

export interface PasswdIo {
  stdin: NodeJS.ReadableStream;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

const USAGE =
  'usage: fleetmq passwd [-b <password>] <file> <user>\n' +
  '       fleetmq passwd -D <file> <user>\n' +
  '  -b <password>  set the password from the command line (batch mode)\n' +
  '  -D             delete <user> from <file>\n' +
  'Without -b the password is prompted for (TTY) or read as one line from stdin.\n';

const MAX_PASSWORD_BYTES = 65535;

interface Parsed {
  del: boolean;
  batch: string | undefined;
  file: string;
  user: string;
}

function parseArgs(args: string[]): Parsed | string | 'help' {
  let del = false;
  let batch: string | undefined;
  const pos: string[] = [];
  let opts = true;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] as string;
    if (opts && a === '--') { opts = false; continue; }
    if (opts && (a === '-h' || a === '--help')) return 'help';
    if (opts && a === '-D') { del = true; continue; }
    if (opts && a === '-b') {
      if (batch !== undefined) return '-b given twice';
      const v = args[++i];
      if (v === undefined) return '-b needs a password argument';
      batch = v;
      continue;
    }
    if (opts && a.startsWith('-') && a !== '-') return `unknown option ${a}`;
    pos.push(a);
  }
  if (del && batch !== undefined) return '-D and -b cannot be combined';
  if (pos.length !== 2) return 'expected <file> <user>';
  return { del, batch, file: pos[0] as string, user: pos[1] as string };
}

export async function runPasswd(args: string[], io: PasswdIo): Promise<number> {
  const err = (msg: string): void => { io.stderr.write(`fleetmq passwd: ${msg}\n`); };
  const parsed = parseArgs(args);
  if (parsed === 'help') { io.stdout.write(USAGE); return 0; }
  if (typeof parsed === 'string') { err(parsed); io.stderr.write(USAGE); return 2; }
  const { file, user } = parsed;

  if (parsed.del) {
    try {
      if (await removeUser(file, user)) return 0;
      err(`user "${user}" not found in ${file}`);
      return 1;
    } catch (e) {
      err((e as Error).message);
      return 1;
    }
  }

  const problem = usernameProblem(user);
  if (problem) { err(`invalid user "${user}" for ${file}: ${problem}`); return 1; }

  let password: string | null;
  try {
    if (parsed.batch !== undefined) {
      password = parsed.batch;
    } else if (isTty(io.stdin)) {
      password = await readHidden(io.stdin, io.stderr, 'Password: ');
      if (password !== null) {
        const again = await readHidden(io.stdin, io.stderr, 'Reenter password: ');
        if (again === null) password = null;
        else if (again !== password) { err(`passwords do not match; ${file} not changed`); return 1; }
      }
    } else {
      password = await readLine(io.stdin);
    }
  } catch (e) {
    err(`cannot read password for user "${user}": ${(e as Error).message}`);
    return 1;
  }
  if (password === null) { err(`no password given for user "${user}"; ${file} not changed`); return 1; }
  if (password === '') { err(`empty password for user "${user}" refused; ${file} not changed`); return 1; }
  if (Buffer.byteLength(password, 'utf8') > MAX_PASSWORD_BYTES) {
    err(`password for user "${user}" is longer than ${MAX_PASSWORD_BYTES} bytes`);
    return 1;
  }

  try {
    await upsertUser(file, user, password);
    return 0;
  } catch (e) {
    err((e as Error).message);
    return 1;
  }
}

type TtyIn = NodeJS.ReadableStream & { isTTY: true; isRaw?: boolean; setRawMode(mode: boolean): unknown };

function isTty(s: NodeJS.ReadableStream): s is TtyIn {
  const t = s as Partial<TtyIn>;
  return t.isTTY === true && typeof t.setRawMode === 'function';
}

/** Reads one line (without its line ending) from a non-TTY stream; null on EOF without data. */
function readLine(input: NodeJS.ReadableStream): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let got = false;
    const finish = (fn: () => void): void => {
      input.removeListener('data', onData);
      input.removeListener('end', onEnd);
      input.removeListener('error', onError);
      input.pause();
      fn();
    };
    const text = (): string => {
      const s = Buffer.concat(chunks).toString('utf8');
      return s.endsWith('\r') ? s.slice(0, -1) : s;
    };
    const onData = (d: Buffer | string): void => {
      got = true;
      const b = typeof d === 'string' ? Buffer.from(d, 'utf8') : d;
      const nl = b.indexOf(0x0a);
      chunks.push(nl >= 0 ? b.subarray(0, nl) : b);
      size += nl >= 0 ? nl : b.length;
      if (size > MAX_PASSWORD_BYTES + 1) finish(() => reject(new Error('input line too long')));
      else if (nl >= 0) finish(() => resolve(text()));
    };
    const onEnd = (): void => finish(() => resolve(got ? text() : null));
    const onError = (e: Error): void => finish(() => reject(e));
    input.on('data', onData);
    input.on('end', onEnd);
    input.on('error', onError);
    input.resume();
  });
}

/** Prompts on `out` and reads a line from a TTY with echo off; null on Ctrl-C / Ctrl-D. */
function readHidden(input: TtyIn, out: NodeJS.WritableStream, prompt: string): Promise<string | null> {
  out.write(prompt);
  return new Promise((resolve, reject) => {
    const wasRaw = input.isRaw === true;
    const dec = new StringDecoder('utf8');
    let buf: string[] = [];
    const finish = (fn: () => void, rest = ''): void => {
      input.removeListener('data', onData);
      input.removeListener('end', onEnd);
      input.removeListener('error', onError);
      input.setRawMode(wasRaw);
      input.pause();
      // Keep input typed/pasted after the line ending for the next prompt.
      if (rest !== '') input.unshift(Buffer.from(rest, 'utf8'));
      out.write('\n');
      fn();
    };
    const onData = (d: Buffer | string): void => {
      const chars = Array.from(typeof d === 'string' ? d : dec.write(d)); // code points
      for (let i = 0; i < chars.length; i++) {
        const ch = chars[i] as string;
        if (ch === '\r' || ch === '\n') {
          const skip = ch === '\r' && chars[i + 1] === '\n' ? 2 : 1;
          return finish(() => resolve(buf.join('')), chars.slice(i + skip).join(''));
        }
        if (ch === '\u0003') return finish(() => resolve(null)); // Ctrl-C
        if (ch === '\u0004') {
          if (buf.length === 0) return finish(() => resolve(null)); // Ctrl-D
          continue;
        }
        if (ch === '\u007f' || ch === '\b') { buf = buf.slice(0, -1); continue; }
        if (ch < ' ') continue;
        buf.push(ch);
      }
    };
    const onEnd = (): void => finish(() => resolve(null));
    const onError = (e: Error): void => finish(() => reject(e));
    input.setRawMode(true);
    input.on('data', onData);
    input.on('end', onEnd);
    input.on('error', onError);
    input.resume();
  });
}
