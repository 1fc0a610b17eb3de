// `fleetmq ctl`: operates a running node through its HTTP API (docs/cluster.md, "ctl").
//
//   fleetmq ctl [--url http://HOST:PORT] cluster status [--json]
//   fleetmq ctl [--url …] cluster join NODE | leave | force-leave NODE
//
// The node is the local one unless --url (or FLEETMQ_URL) says otherwise. Exit codes: 0 ok,
// 1 the node refused or could not be reached, 2 a bad command line.
import type { MainIo } from './main.js';

const DEFAULT_URL = 'http://127.0.0.1:18083';

export function ctlUsage(): string {
  return `Usage: fleetmq ctl [--url http://HOST:PORT] COMMAND

Commands:
  cluster status [--json]       every member: name, role, status, uptime, core, shards
  cluster join NODE             join the cluster of NODE (NAME@HOST[:PORT] or HOST:PORT of its cluster port)
  cluster leave                 this node leaves its cluster
  cluster force-leave NODE      remove a stopped member NODE (its routes, sessions, etcd member)

--url (default $FLEETMQ_URL, else ${DEFAULT_URL}) is the node's HTTP port.
Exit codes: 0 ok, 1 refused or unreachable, 2 bad command line.
`;
}

interface ShardRow { name: string; revision: number; lag: number; lag_ms?: number }
interface NodeRow { name: string; role: string; status: string; uptime_s: number; core: string | null; shards: ShardRow[] }

function table(rows: string[][]): string {
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}

function uptime(s: number): string {
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
}

export async function runCtl(argv: string[], io: MainIo, env: NodeJS.ProcessEnv): Promise<number> {
  const args = [...argv];
  let url = env['FLEETMQ_URL'] || DEFAULT_URL;
  let json = false;
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--help' || a === '-h') {
      io.stdout.write(ctlUsage());
      return 0;
    }
    if (a === '--url') {
      const v = args[++i];
      if (v === undefined) return usage(io, 'option --url: missing value');
      url = v;
    } else if (a.startsWith('--url=')) url = a.slice(6);
    else if (a === '--json') json = true;
    else if (a.startsWith('-')) return usage(io, `unknown option ${a}`);
    else rest.push(a);
  }
  if (!/^https?:\/\/[^/\s]+\/?$/.test(url)) return usage(io, `option --url: expected http://HOST:PORT, got ${JSON.stringify(url)}`);
  const base = url.replace(/\/$/, '');
  const [group, cmd, arg, extra] = rest;
  if (group !== 'cluster') return usage(io, group === undefined ? 'no command given' : `unknown command ${JSON.stringify(group)}`);
  const want = (n: number): boolean => rest.length === n;
  switch (cmd) {
    case 'status': {
      if (!want(2)) return usage(io, `cluster status: unexpected argument ${JSON.stringify(arg)}`);
      const r = await call(io, 'GET', `${base}/api/v1/cluster`);
      if (r === null) return 1;
      if (json) {
        io.stdout.write(JSON.stringify(r, null, 2) + '\n');
        return 0;
      }
      const nodes = (r as { nodes: NodeRow[] }).nodes;
      const rows = [['NODE', 'ROLE', 'STATUS', 'UPTIME', 'CORE', 'SHARDS (revision/lag)']];
      for (const n of nodes) {
        rows.push([n.name, n.role, n.status, n.status === 'stopped' ? '-' : uptime(n.uptime_s), n.core ?? '-',
          n.shards.map((s) => `${s.name} ${s.revision}/${s.lag}`).join(', ') || '-']);
      }
      io.stdout.write(table(rows));
      return 0;
    }
    case 'join':
    case 'force-leave': {
      if (arg === undefined) return usage(io, `cluster ${cmd}: NODE missing`);
      if (extra !== undefined) return usage(io, `cluster ${cmd}: unexpected argument ${JSON.stringify(extra)}`);
      const r = await call(io, 'POST', `${base}/api/v1/cluster/${cmd}`, { node: arg });
      if (r === null) return 1;
      io.stdout.write(json ? JSON.stringify(r) + '\n' : `${(r as { message?: string }).message ?? 'ok'}\n`);
      return 0;
    }
    case 'leave': {
      if (!want(2)) return usage(io, `cluster leave: unexpected argument ${JSON.stringify(arg)}`);
      const r = await call(io, 'POST', `${base}/api/v1/cluster/leave`, {});
      if (r === null) return 1;
      io.stdout.write(json ? JSON.stringify(r) + '\n' : `${(r as { message?: string }).message ?? 'ok'}\n`);
      return 0;
    }
    default:
      return usage(io, cmd === undefined ? 'cluster: subcommand missing (status, join, leave, force-leave)' : `cluster: unknown subcommand ${JSON.stringify(cmd)}`);
  }
}

function usage(io: MainIo, msg: string): number {
  io.stderr.write(`fleetmq ctl: ${msg}\nRun 'fleetmq ctl --help' for usage.\n`);
  return 2;
}

/** The JSON answer of a 2xx, else null after printing why. */
async function call(io: MainIo, method: 'GET' | 'POST', url: string, body?: unknown): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(url, {
      method, signal: AbortSignal.timeout(35_000),
      ...(body !== undefined ? { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } } : {}),
    });
  } catch (e) {
    const cause = (e as { cause?: { code?: string } }).cause?.code;
    io.stderr.write(`fleetmq ctl: cannot reach ${url}: ${cause ?? (e as Error).message}\n`);
    return null;
  }
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  if (!res.ok) {
    const err = (parsed as { error?: string; message?: string } | null);
    io.stderr.write(`fleetmq ctl: ${method} ${url}: HTTP ${res.status}: ${err?.message ?? err?.error ?? text}\n`);
    return null;
  }
  return parsed;
}
