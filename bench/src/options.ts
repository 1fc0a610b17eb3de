// Command line of fleetmq-bench: emqtt-bench's flags with emqtt-bench's meanings, plus
// ours (docs/bench-format.md). A bad flag or value throws UsageError (exit 2).
import { existsSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';

export const COMMANDS = ['conn', 'sub', 'pub', 'p2p', 'fanout', 'fanin-shared', 'wildcard-scale'] as const;
export type Command = (typeof COMMANDS)[number];

/** Scenarios whose publishers and subscribers both run here (timestamps always on, expected known). */
export const E2E: ReadonlySet<Command> = new Set<Command>(['p2p', 'fanout', 'fanin-shared', 'wildcard-scale']);
/** Scenarios made of pairs (publisher i → subscriber i), kept in the same worker. */
export const PAIRED: ReadonlySet<Command> = new Set<Command>(['p2p', 'wildcard-scale']);

export class UsageError extends Error {}

/** Internal settings of a child process (multi-process mode), passed as `--child JSON`. */
export interface ChildSpec {
  /** hrtime base (ns, decimal string) shared by the whole run. */
  base: string;
  /** Global index of this child's first worker, and the number of workers in all processes. */
  wBase: number;
  wTotal: number;
  /** First subscriber sequence number minus one (fanout, fanin-shared). */
  subN: number;
  /** This child's share of -L, or -1 when unlimited. */
  limit: number;
}

export interface Options {
  cmd: Command;
  hosts: string[];
  port: number;
  V: 3 | 4 | 5;
  c: number;
  n: number;
  i: number;
  R: number;
  t: string | null;
  q: 0 | 1 | 2;
  s: number;
  I: number;
  L: number;
  F: number;
  ts: boolean;
  prefix: string | null;
  shortids: boolean;
  ifaddr: string[];
  k: number;
  C: boolean;
  x: number;
  ws: boolean;
  wsPath: string;
  tls: boolean;
  username: string | null;
  password: string | null;
  duration: number;
  warmup: number;
  window: number;
  json: string | null;
  md: string | null;
  progress: 'json' | 'text';
  pubs: number;
  subs: number;
  workers: number;
  brokerPid: number | null;
  drain: number;
  connectTimeout: number;
  maxPerProc: number;
  child: ChildSpec | null;
  /** Flags given explicitly (by canonical name), for validation. */
  given: Set<string>;
}

type Kind = 'int' | 'num' | 'str' | 'bool';
interface FlagDef {
  name: string; // canonical name, as written in the help
  aliases: string[];
  kind: Kind;
  help: string;
  hidden?: boolean;
}

const FLAGS: FlagDef[] = [
  { name: '-h', aliases: ['--host'], kind: 'str', help: 'broker host(s), comma-separated, used round-robin (127.0.0.1)' },
  { name: '-p', aliases: ['--port'], kind: 'int', help: 'broker port (1883; 8883 with -S, 8083 with --ws, 8084 with both)' },
  { name: '-V', aliases: ['--version'], kind: 'int', help: 'MQTT protocol version 3 | 4 | 5 (5)' },
  { name: '-c', aliases: ['--count'], kind: 'int', help: 'clients (conn/pub/sub), pairs (p2p), publishers+subscribers each (wildcard-scale) (200)' },
  { name: '-n', aliases: ['--startnumber'], kind: 'int', help: 'start number: client sequence numbers are n+1 .. n+c (0)' },
  { name: '-i', aliases: ['--interval'], kind: 'int', help: 'ms between connects, all workers together (10)' },
  { name: '-R', aliases: ['--connrate'], kind: 'int', help: 'connects per second; overrides -i when > 0 (0)' },
  { name: '-t', aliases: ['--topic'], kind: 'str', help: 'topic template for pub/sub: %i = sequence number, %c = client id' },
  { name: '-q', aliases: ['--qos'], kind: 'int', help: 'QoS of publishes and subscriptions 0 | 1 | 2 (0)' },
  { name: '-s', aliases: ['--size'], kind: 'int', help: 'payload bytes (256; at least 12 with timestamps)' },
  { name: '-I', aliases: ['--interval_of_msg'], kind: 'int', help: 'ms between messages per publisher; 0 = as fast as the window allows (1000)' },
  { name: '-L', aliases: ['--limit'], kind: 'int', help: 'total messages for all publishers, warm-up included; 0 = no limit (0)' },
  { name: '-F', aliases: ['--inflight'], kind: 'int', help: 'QoS 1/2 messages in flight per publisher; 0 = no limit (1)' },
  { name: '--payload-hdrs', aliases: [], kind: 'str', help: '"ts": 8-byte send time + 4-byte publisher index at the payload start (always on in scenarios)' },
  { name: '--prefix', aliases: [], kind: 'str', help: 'client id prefix' },
  { name: '--shortids', aliases: [], kind: 'bool', help: 'short client ids: <prefix><n> (scenarios: <prefix>p<n> / <prefix>s<n>)' },
  { name: '--ifaddr', aliases: [], kind: 'str', help: 'source address(es), comma-separated, used round-robin' },
  { name: '-k', aliases: ['--keepalive'], kind: 'int', help: 'keep alive seconds (300)' },
  { name: '-C', aliases: ['--clean'], kind: 'bool', help: 'clean start true | false (true)' },
  { name: '-x', aliases: ['--session-expiry'], kind: 'int', help: 'session expiry interval seconds, MQTT 5 only (0)' },
  { name: '--ws', aliases: [], kind: 'bool', help: 'MQTT over WebSocket' },
  { name: '--ws-path', aliases: [], kind: 'str', help: 'WebSocket path (/mqtt)' },
  { name: '-S', aliases: ['--ssl'], kind: 'bool', help: 'TLS (server certificate not verified)' },
  { name: '-u', aliases: ['--username'], kind: 'str', help: 'username' },
  { name: '-P', aliases: ['--password'], kind: 'str', help: 'password' },
  { name: '--duration', aliases: [], kind: 'num', help: 'measured window, seconds (10)' },
  { name: '--warmup', aliases: [], kind: 'num', help: 'warm-up before the measured window, seconds (1)' },
  { name: '--window', aliases: [], kind: 'int', help: 'end-to-end window per publisher: messages sent but not yet received; 0 = off (100 in scenarios, 0 otherwise)' },
  { name: '--drain', aliases: [], kind: 'num', help: 'longest wait for in-flight messages after the window, seconds (2)' },
  { name: '--pubs', aliases: [], kind: 'int', help: 'publishers of fanout (1) / fanin-shared (100)' },
  { name: '--subs', aliases: [], kind: 'int', help: 'subscribers of fanout (100) / fanin-shared (10)' },
  { name: '--workers', aliases: [], kind: 'int', help: 'worker threads (number of cores)' },
  { name: '--broker-pid', aliases: [], kind: 'int', help: 'broker process on this machine: report its RSS (conn: bytes per connection)' },
  { name: '--connect-timeout', aliases: [], kind: 'num', help: 'seconds for TCP/TLS/WS + CONNACK before a connection counts as failed (10)' },
  { name: '--max-per-proc', aliases: [], kind: 'int', help: 'connections per process before splitting over processes (19000)' },
  { name: '--json', aliases: [], kind: 'str', help: 'write the result object to FILE' },
  { name: '--md', aliases: [], kind: 'str', help: 'write the Markdown table to FILE' },
  { name: '--progress', aliases: [], kind: 'str', help: 'progress on stderr: text | json (text)' },
  { name: '--child', aliases: [], kind: 'str', help: 'internal: run as a child process of a multi-process run', hidden: true },
];

const BY_NAME = new Map<string, FlagDef>();
for (const f of FLAGS) {
  BY_NAME.set(f.name, f);
  for (const a of f.aliases) BY_NAME.set(a, f);
}

export function helpText(): string {
  const lines = [
    'fleetmq-bench — MQTT load generator (emqtt-bench flags; see docs/bench.md and docs/bench-format.md)',
    '',
    'Usage: fleetmq-bench <command> [flags]',
    '',
    'Commands (emqtt-bench):',
    '  conn            open -c connections and hold them for --duration (RSS per connection with --broker-pid)',
    '  sub             -c subscribers on -t',
    '  pub             -c publishers on -t',
    'Scenarios:',
    '  p2p             -c pairs: publisher i -> bench/i -> subscriber i',
    '  fanout          --pubs P publishers on bench/i -> --subs S subscribers on bench/#',
    '  fanin-shared    --pubs P publishers on bench/i -> --subs S subscribers on $share/g/bench/#',
    '  wildcard-scale  -c subscribers on bench/i/# + -c publishers on bench/i/test',
    '',
    'Flags:',
  ];
  for (const f of FLAGS) {
    if (f.hidden) continue;
    const names = [f.name, ...f.aliases].join(', ');
    const arg = f.kind === 'bool' ? '' : f.kind === 'str' ? ' STR' : ' N';
    lines.push(`  ${(names + arg).padEnd(34)} ${f.help}`);
  }
  lines.push('  --help                             this text');
  lines.push('');
  lines.push('Result: one JSON object (last line of stdout, and --json FILE); progress on stderr.');
  lines.push('Exit: 0 run completed, 1 no connection / aborted / deadline, 2 bad command line.');
  return lines.join('\n') + '\n';
}

function parseInt_(flag: string, v: string, min: number, max: number): number {
  if (!/^-?\d+$/.test(v)) throw new UsageError(`${flag}: expected an integer ${min}..${max}, got ${JSON.stringify(v)}`);
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new UsageError(`${flag}: expected an integer ${min}..${max}, got ${v}`);
  return n;
}

function parseNum(flag: string, v: string, min: number, max: number, minExclusive = false): number {
  const n = /^\d+(\.\d+)?$/.test(v) ? Number(v) : NaN;
  if (!Number.isFinite(n) || n < min || n > max || (minExclusive && n === min)) {
    throw new UsageError(`${flag}: expected a number ${minExclusive ? '>' : '>='} ${min} and <= ${max}, got ${JSON.stringify(v)}`);
  }
  return n;
}

function parseBool(flag: string, v: string): boolean {
  if (v === 'true') return true;
  if (v === 'false') return false;
  throw new UsageError(`${flag}: expected true or false, got ${JSON.stringify(v)}`);
}

const I32 = 2_147_483_647;

/** Parses argv (without node and script). Returns 'help' for --help. */
export function parseArgs(argv: string[]): Options | 'help' {
  if (argv.includes('--help') || argv[0] === 'help') return 'help';
  const cmdArg = argv[0];
  if (cmdArg === undefined) throw new UsageError('no command given (conn, sub, pub, p2p, fanout, fanin-shared, wildcard-scale)');
  if (cmdArg.startsWith('-')) throw new UsageError(`expected a command before ${cmdArg} (conn, sub, pub, p2p, fanout, fanin-shared, wildcard-scale)`);
  if (!(COMMANDS as readonly string[]).includes(cmdArg)) throw new UsageError(`unknown command ${JSON.stringify(cmdArg)} (conn, sub, pub, p2p, fanout, fanin-shared, wildcard-scale)`);
  const cmd = cmdArg as Command;

  const raw = new Map<string, string>(); // canonical name -> value ("true"/"false" for booleans)
  for (let k = 1; k < argv.length; k++) {
    const a = argv[k]!;
    if (!a.startsWith('-') || a === '-') throw new UsageError(`unexpected argument ${JSON.stringify(a)}`);
    let name = a;
    let value: string | undefined;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) {
      name = a.slice(0, eq);
      value = a.slice(eq + 1);
    }
    const def = BY_NAME.get(name);
    if (!def) throw new UsageError(`unknown flag ${name}`);
    if (def.kind === 'bool') {
      if (value === undefined) {
        const next = argv[k + 1];
        if (next === 'true' || next === 'false') {
          value = next;
          k++;
        } else value = 'true';
      }
      parseBool(def.name, value);
    } else if (value === undefined) {
      const next = argv[k + 1];
      if (next === undefined) throw new UsageError(`${def.name}: missing value`);
      value = next;
      k++;
    }
    raw.set(def.name, value);
  }

  const given = new Set(raw.keys());
  const get = (n: string): string | undefined => raw.get(n);
  const int = (n: string, dflt: number, min: number, max: number): number => {
    const v = get(n);
    return v === undefined ? dflt : parseInt_(n, v, min, max);
  };
  const num = (n: string, dflt: number, min: number, max: number, minExclusive = false): number => {
    const v = get(n);
    return v === undefined ? dflt : parseNum(n, v, min, max, minExclusive);
  };
  const bool = (n: string, dflt: boolean): boolean => {
    const v = get(n);
    return v === undefined ? dflt : parseBool(n, v);
  };
  const str = (n: string): string | null => get(n) ?? null;

  const e2e = E2E.has(cmd);
  const hostsRaw = get('-h') ?? '127.0.0.1';
  const hosts = hostsRaw.split(',').map((h) => h.trim());
  if (hosts.some((h) => h === '' || /[\s/]/.test(h))) throw new UsageError(`-h: expected host[,host...], got ${JSON.stringify(hostsRaw)}`);
  const ifaddrRaw = get('--ifaddr');
  const ifaddr = ifaddrRaw === undefined ? [] : ifaddrRaw.split(',').map((h) => h.trim());
  for (const a of ifaddr) if (isIP(a) === 0) throw new UsageError(`--ifaddr: expected IP address[,address...], got ${JSON.stringify(ifaddrRaw)}`);

  const ws = bool('--ws', false);
  const tls = bool('-S', false);
  const defaultPort = ws ? (tls ? 8084 : 8083) : tls ? 8883 : 1883;

  const V = int('-V', 5, 3, 5);
  const q = int('-q', 0, 0, 2);

  const hdrs = get('--payload-hdrs');
  if (hdrs !== undefined && hdrs !== 'ts' && hdrs !== '') throw new UsageError(`--payload-hdrs: only "ts" is supported, got ${JSON.stringify(hdrs)}`);
  const ts = e2e || hdrs === 'ts';

  const progress = get('--progress') ?? 'text';
  if (progress !== 'json' && progress !== 'text') throw new UsageError(`--progress: expected json or text, got ${JSON.stringify(progress)}`);

  const o: Options = {
    cmd,
    hosts,
    port: int('-p', defaultPort, 1, 65535),
    V: V as 3 | 4 | 5,
    c: int('-c', 200, 1, 10_000_000),
    n: int('-n', 0, 0, 4_000_000_000),
    i: int('-i', 10, 0, 3_600_000),
    R: int('-R', 0, 0, 10_000_000),
    t: str('-t'),
    q: q as 0 | 1 | 2,
    s: int('-s', 256, 0, 256 * 1024 * 1024),
    I: int('-I', 1000, 0, 3_600_000),
    L: int('-L', 0, 0, I32),
    F: int('-F', 1, 0, 65535),
    ts,
    prefix: str('--prefix'),
    shortids: bool('--shortids', false),
    ifaddr,
    k: int('-k', 300, 0, 65535),
    C: bool('-C', true),
    x: int('-x', 0, 0, 4_294_967_295),
    ws,
    wsPath: get('--ws-path') ?? '/mqtt',
    tls,
    username: str('-u'),
    password: str('-P'),
    duration: num('--duration', 10, 0, 86_400, true),
    warmup: num('--warmup', 1, 0, 3600),
    window: int('--window', e2e ? 100 : 0, 0, 1_000_000),
    json: str('--json'),
    md: str('--md'),
    progress,
    // 0 only in child processes (a share of a multi-process run); checked below.
    pubs: int('--pubs', cmd === 'fanout' ? 1 : 100, 0, 10_000_000),
    subs: int('--subs', cmd === 'fanout' ? 100 : 10, 0, 10_000_000),
    workers: int('--workers', Math.max(1, availableParallelism()), 1, 256),
    brokerPid: given.has('--broker-pid') ? int('--broker-pid', 0, 1, I32) : null,
    drain: num('--drain', 2, 0, 600),
    connectTimeout: num('--connect-timeout', 10, 0, 3600, true),
    maxPerProc: int('--max-per-proc', 19_000, 2, 1_000_000),
    child: null,
    given,
  };

  if (!o.wsPath.startsWith('/')) throw new UsageError(`--ws-path: expected a path starting with "/", got ${JSON.stringify(o.wsPath)}`);
  if (o.ts && o.s < 12) throw new UsageError(`-s: must be at least 12 with timestamps (8-byte time + 4-byte publisher index), got ${o.s}`);
  const last = o.n + Math.max(o.c, o.pubs, o.subs);
  if (last > 4_294_967_295) throw new UsageError(`-n: sequence numbers must stay below 2^32 (the payload carries them as u32), got -n ${o.n}`);
  for (const [flag, file] of [['--json', o.json], ['--md', o.md]] as const) {
    if (file === null) continue;
    if (file === '') throw new UsageError(`${flag}: missing file name`);
    const dir = dirname(resolve(file));
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UsageError(`${flag}: no directory ${dir} for ${JSON.stringify(file)}`);
  }

  // Which flags make sense for which command.
  if (cmd === 'pub' || cmd === 'sub') {
    if (o.t === null) throw new UsageError(`-t: required for ${cmd} (topic template, e.g. bench/%i)`);
    if (o.t === '') throw new UsageError('-t: empty topic');
    if (cmd === 'pub' && /[+#]/.test(o.t)) throw new UsageError(`-t: a publish topic may not contain + or #, got ${JSON.stringify(o.t)}`);
  } else if (o.t !== null) {
    throw new UsageError(`-t: not used by ${cmd} (its topics are fixed, see --help)`);
  }
  if (cmd === 'fanout' || cmd === 'fanin-shared') {
    if (given.has('-c')) throw new UsageError(`-c: not used by ${cmd}; give --pubs P --subs S`);
  } else {
    if (given.has('--pubs')) throw new UsageError(`--pubs: only for fanout and fanin-shared (${cmd} uses -c)`);
    if (given.has('--subs')) throw new UsageError(`--subs: only for fanout and fanin-shared (${cmd} uses -c)`);
  }
  if (given.has('--window') && o.window > 0 && (cmd === 'pub' || cmd === 'sub' || cmd === 'conn')) {
    throw new UsageError(`--window: needs a scenario where this tool both publishes and receives (p2p, fanout, fanin-shared, wildcard-scale), not ${cmd}`);
  }
  if (o.brokerPid !== null && !existsSync(`/proc/${o.brokerPid}/status`)) {
    throw new UsageError(`--broker-pid: no process ${o.brokerPid} on this machine (/proc/${o.brokerPid}/status)`);
  }

  const child = get('--child');
  if (child !== undefined) {
    let spec: ChildSpec;
    try {
      spec = JSON.parse(child) as ChildSpec;
    } catch {
      throw new UsageError('--child: expected JSON');
    }
    if (typeof spec.base !== 'string' || typeof spec.wBase !== 'number' || typeof spec.wTotal !== 'number' || typeof spec.subN !== 'number' || typeof spec.limit !== 'number') {
      throw new UsageError('--child: bad child spec');
    }
    o.child = spec;
  } else {
    if (o.pubs < 1) throw new UsageError(`--pubs: expected an integer 1..10000000, got ${o.pubs}`);
    if (o.subs < 1) throw new UsageError(`--subs: expected an integer 1..10000000, got ${o.subs}`);
  }
  return o;
}

/** The flags that reproduce `o` (for child processes); ranges are set by the caller. */
export function toArgs(o: Options): string[] {
  const a: string[] = [o.cmd, '-h', o.hosts.join(','), '-p', String(o.port), '-V', String(o.V), '-n', String(o.n)];
  if (o.cmd === 'fanout' || o.cmd === 'fanin-shared') a.push('--pubs', String(o.pubs), '--subs', String(o.subs));
  else a.push('-c', String(o.c));
  a.push('-i', String(o.i), '-R', String(o.R), '-q', String(o.q), '-s', String(o.s), '-I', String(o.I), '-L', String(o.L), '-F', String(o.F));
  if (o.t !== null) a.push('-t', o.t);
  if (o.ts && !E2E.has(o.cmd)) a.push('--payload-hdrs', 'ts');
  if (o.prefix !== null) a.push('--prefix', o.prefix);
  if (o.shortids) a.push('--shortids');
  if (o.ifaddr.length) a.push('--ifaddr', o.ifaddr.join(','));
  a.push('-k', String(o.k), '-C', String(o.C), '-x', String(o.x));
  if (o.ws) a.push('--ws', '--ws-path', o.wsPath);
  if (o.tls) a.push('-S');
  if (o.username !== null) a.push('-u', o.username);
  if (o.password !== null) a.push('-P', o.password);
  a.push('--duration', String(o.duration), '--warmup', String(o.warmup), '--drain', String(o.drain));
  if (E2E.has(o.cmd)) a.push('--window', String(o.window));
  a.push('--workers', String(o.workers), '--connect-timeout', String(o.connectTimeout), '--max-per-proc', String(o.maxPerProc));
  return a;
}
