// Who connects where: the clients of a run (publishers, subscribers, idle connections)
// by sequence number, their client ids and topics, and the split over processes and
// worker threads.
import { hostname } from 'node:os';
import { E2E, PAIRED, type Options } from './options.js';

/** Sequence numbers first .. first + count - 1. */
export interface Range {
  first: number;
  count: number;
}

/** The clients one process or one worker runs. */
export interface Slice {
  pubs: Range;
  subs: Range;
  idle: Range;
}

const EMPTY: Range = { first: 0, count: 0 };

export function connections(s: Slice): number {
  return s.pubs.count + s.subs.count + s.idle.count;
}

/** The clients of the whole run (or of this child process: its -n / -c / --pubs / --subs). */
export function rootSlice(o: Options): Slice {
  const first = o.n + 1;
  switch (o.cmd) {
    case 'conn':
      return { pubs: EMPTY, subs: EMPTY, idle: { first, count: o.c } };
    case 'pub':
      return { pubs: { first, count: o.c }, subs: EMPTY, idle: EMPTY };
    case 'sub':
      return { pubs: EMPTY, subs: { first, count: o.c }, idle: EMPTY };
    case 'p2p':
    case 'wildcard-scale':
      return { pubs: { first, count: o.c }, subs: { first, count: o.c }, idle: EMPTY };
    case 'fanout':
    case 'fanin-shared':
      return { pubs: { first, count: o.pubs }, subs: { first: (o.child ? o.child.subN : o.n) + 1, count: o.subs }, idle: EMPTY };
  }
}

function splitRange(r: Range, parts: number): Range[] {
  const out: Range[] = [];
  let first = r.first;
  for (let k = 0; k < parts; k++) {
    const count = Math.floor((r.count * (k + 1)) / parts) - Math.floor((r.count * k) / parts);
    out.push(count > 0 ? { first, count } : EMPTY);
    first += count;
  }
  return out;
}

/** Splits a slice in `parts` contiguous parts; pairs (publisher i, subscriber i) stay together. */
export function splitSlice(s: Slice, parts: number): Slice[] {
  const p = splitRange(s.pubs, parts);
  const q = splitRange(s.subs, parts);
  const r = splitRange(s.idle, parts);
  return p.map((pubs, k) => ({ pubs, subs: q[k]!, idle: r[k]! }));
}

/** Splits the run over processes so that none holds more than o.maxPerProc connections. */
export function splitProcesses(o: Options, s: Slice): Slice[] {
  const total = connections(s);
  if (total <= o.maxPerProc) return [s];
  let k = PAIRED.has(o.cmd) ? Math.ceil(s.pubs.count / Math.floor(o.maxPerProc / 2)) : Math.ceil(total / o.maxPerProc);
  for (;;) {
    const parts = splitSlice(s, k);
    if (parts.every((x) => connections(x) <= o.maxPerProc)) return parts.filter((x) => connections(x) > 0);
    k++;
  }
}

/** Splits a process's slice over at most o.workers worker threads (never an empty worker). */
export function splitWorkers(o: Options, s: Slice): Slice[] {
  const n = Math.max(1, Math.min(o.workers, PAIRED.has(o.cmd) ? s.pubs.count : connections(s)));
  return splitSlice(s, n).filter((x) => connections(x) > 0);
}

export type Role = 'pub' | 'sub' | 'conn';

const HOST = hostname();

/** emqtt-bench's client ids: $HOST_bench_$ROLE_$RANDOM_$N, or $PREFIX_bench_$ROLE_$N, or with --shortids $PREFIX$N. */
export function clientId(o: Options, role: Role, seq: number): string {
  if (!o.shortids) {
    if (o.prefix === null || o.prefix === '') {
      const host = o.ifaddr.length ? o.ifaddr[seq % o.ifaddr.length]! : HOST;
      return `${host}_bench_${role}_${1 + Math.floor(Math.random() * 0xffffffff)}_${seq}`;
    }
    return `${o.prefix}_bench_${role}_${seq}`;
  }
  const pre = o.prefix ?? '';
  // Scenarios have a publisher and a subscriber with the same number: keep their ids apart.
  if (E2E.has(o.cmd)) return `${pre}${role === 'pub' ? 'p' : 's'}${seq}`;
  return `${pre}${seq}`;
}

/** emqtt-bench's topic variables: a level that is exactly %i or %c is replaced. */
export function renderTopic(template: string, seq: number, cid: string): string {
  return template
    .split('/')
    .map((w) => (w === '%i' ? String(seq) : w === '%c' ? cid : w))
    .join('/');
}

export function pubTopic(o: Options, seq: number, cid: string): string {
  switch (o.cmd) {
    case 'wildcard-scale':
      return `bench/${seq}/test`;
    case 'pub':
      return renderTopic(o.t ?? 'bench/%i', seq, cid);
    default:
      return `bench/${seq}`;
  }
}

export function subFilter(o: Options, seq: number, cid: string): string {
  switch (o.cmd) {
    case 'p2p':
      return `bench/${seq}`;
    case 'wildcard-scale':
      return `bench/${seq}/#`;
    case 'fanout':
      return 'bench/#';
    case 'fanin-shared':
      return '$share/g/bench/#';
    default:
      return renderTopic(o.t ?? 'bench/%i', seq, cid);
  }
}
