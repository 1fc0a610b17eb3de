// One fleetmq node in one process: broker engine, listeners, HTTP status.
import type { Config } from '../config/types.js';
import type { Logger } from '../log/logger.js';
import { createAuthorizer } from '../auth/authorizer.js';
import { Broker } from '../broker/broker.js';
import { startHttp } from '../mgmt/http.js';
import { loadUws, type Uws } from '../transport/uws.js';
import { mqttPorts, startMqttListeners, type AcceptPath } from './engine.js';
import { startWorkerPool, type WorkerPool } from '../workers/supervisor.js';
import type { Listener } from '../transport/types.js';
import { VERSION } from '../broker/sys.js';
import { inlineProbe, type NodeProbe } from './probe.js';
import { moveManagedMember, seedEtcd, startClusterEtcd, withSeeds, type ClusterEtcd } from './cluster-etcd.js';
import { listMembers } from '../cluster/etcd/members.js';
import type { HttpRoute } from '../mgmt/http.js';
import type { RootDatabase } from 'lmdb';
import { attachJournal, openEngineStore, restoreSessions, scheduleWills, storeDir } from '../store/engine-store.js';
import { recoverStore, type Recovered } from '../store/recovery.js';
import { reviveMessage } from '../broker/transfer.js';

export interface RunningNode {
  /** State for the API and tests (the engines may run on other threads). */
  readonly probe: NodeProbe;
  /** Worker-threaded node only: its supervisor (null inline). */
  readonly pool: WorkerPool | null;
  readonly listeners: readonly Listener[];
  /** How the TCP / TLS ports are shared by the engines (/status says it too). */
  readonly accept: AcceptPath;
  /** `fn` runs once if the node cannot go on (the caller then stops it and exits 1). */
  onFatal(fn: (reason: string) => void): void;
  stop(reason: string): Promise<void>;
  /** Before a forced process exit: end worker threads at once (see StartedNode.abort in cli/main.ts). */
  abort(): Promise<void>;
}

type Status = 'starting' | 'running' | 'joining' | 'stopping';
type Answer = { status: number; body: unknown };

export async function startNode(cfg: Config, log: Logger): Promise<RunningNode> {
  return cfg.node.workers === 0 ? startInlineNode(cfg, log) : startThreadedNode(cfg, log);
}

/** Worker-threaded: the main thread supervises the workers and serves HTTP. */
async function startThreadedNode(cfg: Config, log: Logger): Promise<RunningNode> {
  let status: Status = 'starting';
  const startedAt = Date.now();
  const { uws, native } = loadUws({ allowFallback: cfg.node.allow_uws_fallback, log });
  let pool: WorkerPool | null = null;
  let fatal: string | null = null;
  let onFatal: ((reason: string) => void) | null = null;
  const fail = (reason: string): void => {
    if (fatal !== null) return;
    fatal = reason;
    log.error('node.fatal', { reason });
    onFatal?.(reason);
  };
  const startPool = (c: Config, e: ClusterEtcd) => startWorkerPool(c, log, { etcdEndpoints: e.endpoints, onFatal: fail });
  let rejoining: Promise<Answer> | null = null;
  // HTTP first, so that a load balancer sees 503 while the workers come up.
  const http = await startNodeHttp(cfg, log, uws, startedAt, () => status, () => pool && { probe: pool.probe, stats: () => pool!.stats() },
    () => pool?.accept ?? null, () => pool, (address) => (rejoining ??= rejoin(address).finally(() => (rejoining = null))));
  let etcd: ClusterEtcd = { endpoints: [], member: null };
  try {
    // A core's etcd first (its own managed member, or the endpoints given).
    etcd = await startClusterEtcd(cfg, log);
    pool = await startPool(cfg, etcd);
  } catch (e) {
    await etcd.member?.stop().catch(() => undefined);
    await http.close().catch(() => undefined);
    throw e;
  }
  status = 'running';
  const listeners: Listener[] = [http, ...mqttPorts(cfg).map((x) => ({ ...x, close: () => Promise.resolve() }))];
  log.info('node.running', {
    version: VERSION, uws_native: native, workers: cfg.node.workers, accept: pool.accept,
    listeners: listeners.map((x) => ({ name: x.name, port: x.port })),
    max_connections: cfg.node.max_connections,
  });

  /**
   * ctl cluster join on a running managed core (EMQX's `cluster join`): the target is asked
   * for its etcd first (nothing changes when it cannot be reached or refuses); then this
   * core leaves its cluster (when that has other members), its threads stop (clients are
   * disconnected and reconnect), its member's data goes, a new member joins the target's
   * etcd, and the threads start again on it. /status answers 503 "joining" meanwhile.
   */
  async function rejoin(address: string): Promise<Answer> {
    const p = pool;
    if (status !== 'running' || !p) return { status: 409, body: { ok: false, message: `the node is ${status}` } };
    let urls: string[];
    try {
      urls = await seedEtcd(withSeeds(cfg, [address]), log);
    } catch (e) {
      log.warn('cluster.join_failed', { target: address, error: (e as Error).message });
      return { status: 502, body: { ok: false, status: 502, message: `cannot join ${address}: ${(e as Error).message} (still in this core's cluster)` } };
    }
    if (urls.some((u) => etcd.endpoints.includes(u))) return { status: 200, body: { ok: true, status: 200, message: `${address} is already in this cluster` } };
    status = 'joining';
    const t0 = Date.now();
    const others = (await listMembers(etcd.endpoints).catch(() => [])).filter((m) => m.name !== cfg.node.name);
    log.warn('cluster.rejoining', {
      target: address, cluster_etcd: urls, etcd_members_left: others.length, connections: p.probe.connectionCount(),
      detail: 'this core leaves its cluster and joins the target\'s: its clients are disconnected and reconnect',
    });
    let moved: Awaited<ReturnType<typeof moveManagedMember>>;
    try {
      // Its entries (and, with other members, its etcd member) go from the old cluster first.
      if (others.length > 0) await p.cluster({ type: 'leave' }, 30_000);
      await p.stop(cfg.node.shutdown_timeout_ms);
      pool = null;
      moved = await moveManagedMember(cfg, log, etcd, address);
      etcd = moved.etcd;
      pool = await startPool(moved.error ? withSeeds(cfg, []) : withSeeds(cfg, [address]), etcd);
    } catch (e) {
      // Neither the target's etcd nor a new one of its own: the node cannot serve.
      fail(`cluster join ${address}: ${(e as Error).message}`);
      throw e;
    }
    status = 'running';
    if (moved.error) return { status: 502, body: { ok: false, status: 502, message: `cannot join ${address}: ${moved.error.message} (this core left its cluster and now runs alone)` } };
    log.warn('cluster.rejoined', { target: address, elapsed_ms: Date.now() - t0, etcd: etcd.endpoints });
    return { status: 200, body: { ok: true, status: 200, message: `joined the cluster of ${address}` } };
  }

  let stopped: Promise<void> | null = null;
  const current = (): WorkerPool => {
    if (!pool) throw new Error(`the node is ${status}: its threads are not running`);
    return pool;
  };
  return {
    get probe() {
      return current().probe;
    },
    get pool() {
      return pool;
    },
    listeners,
    get accept() {
      return current().accept;
    },
    onFatal(fn) {
      onFatal = fn;
      if (fatal !== null) fn(fatal);
    },
    abort: async () => {
      await pool?.abort();
      etcd.member?.killNow();
    },
    stop(reason: string): Promise<void> {
      stopped ??= (async () => {
        // A join under way finishes first (it restarts the threads).
        await rejoining?.catch(() => undefined);
        status = 'stopping';
        log.info('node.stopping', { reason, connections: pool?.probe.connectionCount() ?? 0 });
        await pool?.stop(cfg.node.shutdown_timeout_ms);
        // The managed etcd member last: the node's lease was revoked through it.
        // etcd is crash-safe; a last member whose peers are gone takes ~5 s to give up leadership.
        await etcd.member?.stop(2000).catch((e: unknown) => log.error('cluster.etcd_stop_failed', { error: e }));
        await http.close().catch(() => undefined);
        log.info('node.stopped', { reason });
      })();
      return stopped;
    },
  };
}

/**
 * The node's HTTP API (uWebSockets.js, main thread): /status (200 once running, else 503,
 * for load balancers), /api/v1/stats, /api/v1/clients. `engines` is null until the broker
 * engines are up.
 */
function startNodeHttp(
  cfg: Config, log: Logger, uws: Uws, startedAt: number, status: () => Status,
  engines: () => { probe: NodeProbe; stats(): unknown } | null,
  accept: () => AcceptPath | null,
  pool: () => WorkerPool | null = () => null,
  rejoin?: (address: string) => Promise<Answer>,
): Promise<Listener> {
  const l = cfg.listeners;
  const notYet = () => ({ status: 503, body: { status: status() } });
  const clustered = cfg.cluster.role !== 'none';
  return startHttp({
    uws, bind: l.bind, port: l.http_port, log,
    routes: [
      {
        method: 'get', path: '/status',
        handler: async () => {
          const body: Record<string, unknown> = {
            node: cfg.node.name, status: status(), version: VERSION,
            uptime_s: Math.floor((Date.now() - startedAt) / 1000),
            connections: engines()?.probe.counters.connected ?? 0,
            workers: cfg.node.workers,
            accept: accept(),
          };
          if (clustered) body['cluster'] = await clusterSummary(pool());
          return { status: status() === 'running' ? 200 : 503, body };
        },
      },
      ...clusterRoutes(cfg, pool, startedAt, rejoin),
      {
        method: 'get', path: '/api/v1/stats',
        handler: async () => {
          const e = engines();
          return e ? { status: 200, body: await e.stats() } : notYet();
        },
      },
      {
        method: 'get', path: '/api/v1/clients',
        handler: async () => {
          const e = engines();
          return e ? { status: 200, body: (await Promise.all(e.probe.clientRows())).flat() } : notYet();
        },
      },
    ],
  });
}

/** Everything on the calling thread (node.workers = 0). */
async function startInlineNode(cfg: Config, log: Logger): Promise<RunningNode> {
  let status: Status = 'starting';
  const { uws, native } = loadUws({ allowFallback: cfg.node.allow_uws_fallback, log });
  const auth = await createAuthorizer({ ...cfg.auth, cn_as_username: cfg.listeners.tls.cn_as_username }, log);
  const broker = new Broker(cfg, log, auth);
  const probe = inlineProbe(broker);
  const listeners: Listener[] = [];
  // Durable node: the store is read back before any client can connect.
  let store: RootDatabase | null = null;
  let recovered: Recovered | null = null;
  try {
    store = openEngineStore(cfg);
    if (store) {
      attachJournal(broker, store);
      recovered = await recoverStore(store);
      restoreSessions(broker, recovered.sessions);
      for (const m of recovered.retained) broker.retained.set(reviveMessage(m));
      broker.counters.retainedStored = broker.retained.size;
      log.info('store.recovered', { dir: storeDir(cfg), ...recovered.counts, retained: recovered.retained.length });
    }
  } catch (e) {
    await store?.close();
    await auth.close();
    throw e;
  }

  const closeAll = async () => {
    for (const x of listeners.splice(0).reverse()) await x.close().catch(() => undefined);
  };
  try {
    // HTTP first, so that a load balancer sees 503 while the MQTT listeners come up.
    listeners.push(await startNodeHttp(cfg, log, uws, broker.startedAt, () => status, () => ({ probe, stats: () => broker.stats() }), () => 'single'));
    listeners.push(...await startMqttListeners(cfg, log, uws, broker, null));
  } catch (e) {
    await closeAll();
    await auth.close();
    throw e;
  }
  broker.start();
  if (recovered) scheduleWills(broker, recovered.wills);
  status = 'running';
  log.info('node.running', {
    version: VERSION, uws_native: native, accept: 'single',
    listeners: listeners.map((x) => ({ name: x.name, port: x.port })),
    max_connections: cfg.node.max_connections,
  });

  let stopped: Promise<void> | null = null;
  return {
    probe,
    pool: null,
    listeners,
    accept: 'single',
    onFatal: () => undefined,
    abort: () => Promise.resolve(),
    stop(reason: string): Promise<void> {
      stopped ??= (async () => {
        status = 'stopping';
        log.info('node.stopping', { reason, connections: broker.connections.size });
        // broker.stop() refuses new connections at once, tells every client (5.0:
        // DISCONNECT 0x8B) and waits for the streams to flush; then the listeners close
        // (closing a uWS listener also closes its remaining sockets).
        await broker.stop(cfg.node.shutdown_timeout_ms);
        await closeAll();
        // What the sessions wrote as their connections closed is on disk before the store closes.
        broker.journal?.flushNow();
        await broker.journal?.barrier();
        await store?.close();
        await auth.close();
        log.info('node.stopped', { reason });
      })();
      return stopped;
    },
  };
}

/** /status's cluster part: role, etcd (cores) or core (replicants), route counts (this node's and other nodes'), shard lag; never waits long. */
async function clusterSummary(pool: WorkerPool | null): Promise<unknown> {
  if (!pool) return { state: 'starting' };
  const st = (await pool.cluster({ type: 'clusterStats' }, 500)) as Record<string, unknown> | null;
  if (!st) return { state: 'unknown', detail: 'the replication thread did not answer' };
  const { role, status, etcd, core, replicants, pending_writes, shards, routes } = st;
  return { role, state: status, etcd, core, replicants, pending_writes, routes, shards };
}

/** The cluster's API: GET /api/v1/cluster; POST /api/v1/cluster/join|leave|force-leave. */
function clusterRoutes(cfg: Config, pool: () => WorkerPool | null, startedAt: number, rejoin?: (address: string) => Promise<Answer>): HttpRoute[] {
  const single = () => ({
    status: 200,
    body: { nodes: [{ name: cfg.node.name, role: 'single', status: 'running', uptime_s: Math.floor((Date.now() - startedAt) / 1000), core: null, shards: [] }] },
  });
  const notClustered = { status: 409, body: { error: 'this node is not in a cluster (started without --role)' } };
  const ask = async (q: Parameters<WorkerPool['cluster']>[0], timeoutMs = 30_000) => {
    const p = pool();
    if (!p) return { status: 503, body: { error: 'starting' } };
    const r = (await p.cluster(q, timeoutMs)) as { ok?: boolean; status?: number; message?: string; error?: string } | null;
    if (r === null) return { status: 504, body: { error: 'the replication thread did not answer in time' } };
    if (r.error !== undefined) return { status: 500, body: { error: r.error } };
    return { status: r.status ?? 200, body: r };
  };
  /** The JSON body's string field `name`, or a 400 naming it. */
  const field = (body: Buffer | null, name: string): string | { status: number; body: unknown } => {
    let v: unknown;
    try {
      v = body ? (JSON.parse(body.toString('utf8')) as Record<string, unknown>)[name] : undefined;
    } catch {
      return { status: 400, body: { error: 'the body is not valid JSON', field: name } };
    }
    if (typeof v !== 'string' || v.length === 0) return { status: 400, body: { error: `field "${name}": expected a non-empty string`, field: name } };
    return v;
  };
  const clustered = cfg.cluster.role !== 'none';
  return [
    {
      method: 'get', path: '/api/v1/routes',
      handler: async (req) => {
        const topic = req.query.get('topic');
        if (topic === null || topic === '') return { status: 400, body: { error: 'query parameter "topic": a topic name is required', field: 'topic' } };
        const p = pool();
        if (!p) return cfg.node.workers === 0 ? { status: 409, body: { error: 'a node without worker threads (--workers 0) keeps no route trie' } } : { status: 503, body: { error: 'starting' } };
        const r = await p.cluster({ type: 'routesOf', topic }, 5000);
        return r === null ? { status: 504, body: { error: 'the replication thread did not answer in time' } } : { status: 200, body: r };
      },
    },
    {
      method: 'get', path: '/api/v1/cluster',
      handler: async () => {
        if (!clustered) return single();
        const p = pool();
        if (!p) return { status: 503, body: { error: 'starting' } };
        const [v, forwarding] = await Promise.all([p.cluster({ type: 'clusterView' }, 5000), p.forwarding()]);
        if (v === null) return { status: 504, body: { error: 'the replication thread did not answer in time' } };
        // This node's forwarding channel to each peer, summed over its workers.
        return { status: 200, body: { ...(v as Record<string, unknown>), forwarding } };
      },
    },
    {
      method: 'post', path: '/api/v1/cluster/join',
      handler: async (req) => {
        if (!clustered) return notClustered;
        const target = field(req.body, 'node');
        if (typeof target !== 'string') return target;
        const r = await ask({ type: 'join', target });
        // A managed core: the replication thread leaves the move of its etcd member to this thread.
        const to = (r.body as { rejoin?: string }).rejoin;
        return to !== undefined && rejoin ? rejoin(to) : r;
      },
    },
    {
      method: 'post', path: '/api/v1/cluster/leave',
      handler: async () => (clustered ? ask({ type: 'leave' }) : notClustered),
    },
    {
      method: 'post', path: '/api/v1/cluster/force-leave',
      handler: async (req) => {
        if (!clustered) return notClustered;
        const node = field(req.body, 'node');
        return typeof node === 'string' ? ask({ type: 'forceLeave', node }) : node;
      },
    },
  ];
}
