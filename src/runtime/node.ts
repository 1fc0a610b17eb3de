// One fleetmq node in one process: broker engine, listeners, HTTP status.
import type { Config } from '../config/types.js';
import type { Logger } from '../log/logger.js';
import { createAuthorizer } from '../auth/authorizer.js';
import { Broker } from '../broker/broker.js';
import { startHttp } from '../mgmt/http.js';
import { startTcpListener } from '../transport/tcp.js';
import { startTlsListener } from '../transport/tls.js';
import { loadUws } from '../transport/uws.js';
import { startWsListener } from '../transport/ws.js';
import type { Listener } from '../transport/types.js';
import { VERSION } from '../broker/sys.js';

export interface RunningNode {
  readonly broker: Broker;
  readonly listeners: readonly Listener[];
  stop(reason: string): Promise<void>;
}

type Status = 'starting' | 'running' | 'stopping';

export async function startNode(cfg: Config, log: Logger): Promise<RunningNode> {
  let status: Status = 'starting';
  const { uws, native } = loadUws({ allowFallback: cfg.node.allow_uws_fallback, log });
  const auth = await createAuthorizer({ ...cfg.auth, cn_as_username: cfg.listeners.tls.cn_as_username }, log);
  const broker = new Broker(cfg, log, auth);
  const listeners: Listener[] = [];
  const l = cfg.listeners;
  const onConnection = broker.accept.bind(broker);
  const tls = l.tls.cert && l.tls.key ? { cert: l.tls.cert, key: l.tls.key, ca: l.tls.ca } : null;

  const closeAll = async () => {
    for (const x of listeners.splice(0).reverse()) await x.close().catch(() => undefined);
  };
  try {
    // HTTP first, so that a load balancer sees 503 while the MQTT listeners come up.
    listeners.push(await startHttp({
      uws, bind: l.bind, port: l.http_port, log,
      routes: [
        {
          method: 'get', path: '/status',
          handler: () => ({
            status: status === 'running' ? 200 : 503,
            body: {
              node: cfg.node.name, status, version: VERSION,
              uptime_s: Math.floor((Date.now() - broker.startedAt) / 1000),
              connections: broker.connectedCount,
            },
          }),
        },
        { method: 'get', path: '/api/v1/stats', handler: () => ({ status: 200, body: broker.stats() }) },
        {
          method: 'get', path: '/api/v1/clients',
          handler: () => ({
            status: 200,
            body: [...broker.sessions.values()].map((s) => s.conn
              ? { ...s.conn.describe(), connected: true }
              : { clientId: s.clientId, connected: false, queued: s.queue.length, inflight: s.inflight.size }),
          }),
        },
      ],
    }));
    if (l.mqtt_port) listeners.push(await startTcpListener({ name: 'mqtt', bind: l.bind, port: l.mqtt_port, onConnection, log }));
    if (l.mqtts_port && tls) {
      listeners.push(await startTlsListener({
        name: 'mqtts', bind: l.bind, port: l.mqtts_port, onConnection, log,
        cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: l.tls.request_cert,
      }));
    }
    const maxPayloadLength = Math.max(cfg.mqtt.max_packet_size, 16 * 1024);
    if (l.ws_port) {
      listeners.push(await startWsListener({
        name: 'ws', uws, bind: l.bind, port: l.ws_port, path: l.ws_path, maxPayloadLength, onConnection, log,
      }));
    }
    if (l.wss_port && tls) {
      listeners.push(await startWsListener({
        name: 'wss', uws, bind: l.bind, port: l.wss_port, path: l.ws_path, maxPayloadLength, onConnection, log,
        // uWS checks a client certificate against `ca` when one is sent; it cannot read the
        // peer certificate, so cn_as_username works on MQTTS only (docs/auth.md).
        tls: { cert: tls.cert, key: tls.key, ca: l.tls.request_cert ? tls.ca ?? undefined : undefined },
      }));
    }
  } catch (e) {
    await closeAll();
    await auth.close();
    throw e;
  }
  broker.start();
  status = 'running';
  log.info('node.running', {
    version: VERSION, uws_native: native,
    listeners: listeners.map((x) => ({ name: x.name, port: x.port })),
    max_connections: cfg.node.max_connections,
  });

  let stopped: Promise<void> | null = null;
  return {
    broker,
    listeners,
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
