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

type Status = 'starting' | 'running' | 'stopping';

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
  // HTTP first, so that a load balancer sees 503 while the workers come up.
  const http = await startNodeHttp(cfg, log, uws, startedAt, () => status, () => pool && { probe: pool.probe, stats: () => pool!.stats() },
    () => pool?.accept ?? null);
  try {
    pool = await startWorkerPool(cfg, log, {
      onFatal(reason) {
        if (fatal !== null) return;
        fatal = reason;
        log.error('node.fatal', { reason });
        onFatal?.(reason);
      },
    });
  } catch (e) {
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
  const p = pool;
  let stopped: Promise<void> | null = null;
  return {
    probe: p.probe,
    pool: p,
    listeners,
    accept: p.accept,
    onFatal(fn) {
      onFatal = fn;
      if (fatal !== null) fn(fatal);
    },
    abort: () => p.abort(),
    stop(reason: string): Promise<void> {
      stopped ??= (async () => {
        status = 'stopping';
        log.info('node.stopping', { reason, connections: p.probe.connectionCount() });
        await p.stop(cfg.node.shutdown_timeout_ms);
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
): Promise<Listener> {
  const l = cfg.listeners;
  const notYet = () => ({ status: 503, body: { status: status() } });
  return startHttp({
    uws, bind: l.bind, port: l.http_port, log,
    routes: [
      {
        method: 'get', path: '/status',
        handler: () => ({
          status: status() === 'running' ? 200 : 503,
          body: {
            node: cfg.node.name, status: status(), version: VERSION,
            uptime_s: Math.floor((Date.now() - startedAt) / 1000),
            connections: engines()?.probe.counters.connected ?? 0,
            workers: cfg.node.workers,
            accept: accept(),
          },
        }),
      },
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
        await auth.close();
        log.info('node.stopped', { reason });
      })();
      return stopped;
    },
  };
}
