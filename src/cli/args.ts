// Command-line parsing for the `fleetmq` binary. The `start` flags come from the option
// table in ../config/load.ts (OptionSpec.cli), so their checks match the config file's.
import { checkValue, fromString, OPTIONS, type OptionSpec } from '../config/load.js';
import type { LogLevel } from '../config/types.js';

/** Flags of `fleetmq start`; each (but `config`) overrides one config option. */
export interface CliStartOptions {
  /** --config FILE: JSON config file. */
  config?: string;
  nodeName?: string;
  bind?: string;
  mqttPort?: number;
  mqttsPort?: number;
  wsPort?: number;
  wssPort?: number;
  httpPort?: number;
  dataDir?: string;
  logLevel?: LogLevel;
  workers?: number;
  role?: 'none' | 'core' | 'replicant';
  clusterName?: string;
  clusterCookie?: string | null;
  clusterPort?: number;
  forwardPort?: number;
  advertise?: string | null;
  seeds?: string[];
  discovery?: 'static' | 'dns' | 'etcd';
  dnsName?: string | null;
  etcd?: string[];
  etcdManaged?: boolean;
  etcdClientPort?: number;
  etcdPeerPort?: number;
  leaseTtl?: number;
  durability?: 'batch' | 'always' | 'none';
}

export type Command =
  | { kind: 'start'; options: CliStartOptions }
  /** Arguments after `passwd`, handed to runPasswd unchanged. */
  | { kind: 'passwd'; args: string[] }
  /** Arguments after `ctl`, handed to runCtl unchanged. */
  | { kind: 'ctl'; args: string[] }
  | { kind: 'help'; text: string }
  | { kind: 'version' };

/** Bad command line: the caller prints the message and exits with code 2. */
export class UsageError extends Error {
  readonly exitCode = 2;
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

const START_FLAGS: ReadonlyArray<OptionSpec & { cli: NonNullable<OptionSpec['cli']> }> = OPTIONS.filter(
  (o): o is OptionSpec & { cli: NonNullable<OptionSpec['cli']> } => o.cli !== undefined,
);

const FLAG_ARG: Record<string, string> = {
  '--node-name': 'NAME',
  '--bind': 'ADDR',
  '--data-dir': 'DIR',
  '--log-level': 'LEVEL',
  '--workers': 'N',
  '--role': 'ROLE',
  '--cluster-name': 'NAME',
  '--cluster-cookie': 'SECRET',
  '--advertise': 'HOST',
  '--seeds': 'HOST:PORT[,...]',
  '--discovery': 'MODE',
  '--dns-name': 'NAME',
  '--etcd': 'URL[,URL...]',
  '--lease-ttl': 'SECONDS',
  '--durability': 'MODE',
};

export function mainUsage(): string {
  return `Usage:
  fleetmq start [--config FILE] [flags]    run the broker (see 'fleetmq start --help')
  fleetmq passwd [-b <password>] <file> <user>
                                           add or update a user in a password file (without -b
                                           the password is prompted for, or read from stdin)
  fleetmq passwd -D <file> <user>          delete a user from a password file
  fleetmq ctl [--url URL] cluster status|join|leave|force-leave
                                           operate a running node (see 'fleetmq ctl --help')
  fleetmq --help                           show this help
  fleetmq --version                        print the version

Configuration: embedded defaults <- JSON file (--config or FLEETMQ_CONFIG)
  <- FLEETMQ_<SECTION>__<KEY> environment variables <- flags. See docs/config.md.
`;
}

export function startUsage(): string {
  const lines = [['--config FILE', 'JSON config file (default: $FLEETMQ_CONFIG, else none)']];
  for (const o of START_FLAGS) {
    const arg = o.type.kind === 'bool' ? '' : FLAG_ARG[o.cli.flag] ?? 'N';
    const zero = o.path === 'node.workers' ? ', 0 = no worker threads' : ', 0 = off';
    const range = o.type.kind === 'int' ? ` (${o.type.min}..${o.type.max}${o.type.min === 0 ? zero : ''})` : o.type.kind === 'enum' ? ` (${o.type.values.join('|')})` : '';
    lines.push([`${o.cli.flag}${arg === '' ? '' : ' ' + arg}`, `${o.path}${range}`]);
  }
  const w = Math.max(...lines.map((l) => (l[0] ?? '').length)) + 2;
  return `Usage: fleetmq start [flags]

Runs a broker node until SIGTERM / SIGINT. Flags override the config file and the
environment; each sets the config option named.

${lines.map(([a, b]) => '  ' + (a ?? '').padEnd(w) + (b ?? '')).join('\n')}
  ${'--help'.padEnd(w)}show this help
`;
}

/** Parses process.argv.slice(2). Throws UsageError for anything it does not understand. */
export function parseCommandLine(argv: readonly string[]): Command {
  const [first, ...rest] = argv;
  switch (first) {
    case undefined:
      throw new UsageError('no command given');
    case '--help':
    case '-h':
    case 'help':
      if (rest.length > 0 && first !== 'help') throw new UsageError(`unexpected argument ${JSON.stringify(rest[0])} after ${first}`);
      if (first === 'help' && rest[0] === 'start') return { kind: 'help', text: startUsage() };
      if (first === 'help' && rest[0] === 'passwd') return { kind: 'passwd', args: ['--help'] };
      if (rest.length > 0) throw new UsageError(`unknown help topic ${JSON.stringify(rest[0])}`);
      return { kind: 'help', text: mainUsage() };
    case '--version':
    case '-V':
    case '-v':
      if (rest.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(rest[0])} after ${first}`);
      return { kind: 'version' };
    case 'start':
      return parseStart(rest);
    case 'passwd':
      return { kind: 'passwd', args: rest };
    case 'ctl':
      return { kind: 'ctl', args: rest };
    default:
      if (first.startsWith('-')) throw new UsageError(`unknown option ${first}`);
      throw new UsageError(`unknown command ${JSON.stringify(first)}`);
  }
}

function parseStart(args: string[]): Command {
  const out: CliStartOptions = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === '--help' || arg === '-h') return { kind: 'help', text: startUsage() };
    if (!arg.startsWith('-')) throw new UsageError(`start: unexpected argument ${JSON.stringify(arg)}`);
    const eq = arg.indexOf('=');
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const spec = START_FLAGS.find((o) => o.cli.flag === flag);
    if (flag !== '--config' && !spec) throw new UsageError(`start: unknown option ${flag}`);
    let raw: string | undefined;
    if (eq > 0) raw = arg.slice(eq + 1);
    else if (spec?.type.kind === 'bool' && (args[i + 1] === undefined || args[i + 1]!.startsWith('--') || !/^(true|false)$/.test(args[i + 1]!))) {
      raw = 'true'; // a boolean flag alone means true (--etcd-managed)
    } else {
      raw = args[i + 1];
      if (raw === undefined || raw.startsWith('--')) throw new UsageError(`option ${flag}: missing value`);
      i++;
    }
    if (!spec) {
      if (raw === '') throw new UsageError(`option ${flag}: expected a file path, got ""`);
      out.config = raw;
      continue;
    }
    const value = fromString(spec, raw);
    const problem = checkValue(spec, value);
    if (problem !== null) throw new UsageError(`option ${flag}: ${problem}`);
    (out as Record<string, unknown>)[spec.cli.key] = value;
  }
  return { kind: 'start', options: out };
}
