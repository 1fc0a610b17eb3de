// The MQTT listeners of one broker engine: TCP, TLS, WebSocket, WSS. Inline, the node has
// one engine on the main thread; worker-threaded, every worker runs one and the listeners
// share their ports (SO_REUSEPORT for node:net, a shared uWS port for WebSocket).
import type { Broker } from '../broker/broker.js';
import type { Config } from '../config/types.js';
import type { Logger } from '../log/logger.js';
import { startTcpListener } from '../transport/tcp.js';
import { startTlsListener } from '../transport/tls.js';
import type { Uws } from '../transport/uws.js';
import { startWsListener } from '../transport/ws.js';
import type { Listener } from '../transport/types.js';

/** Starts the configured MQTT listeners for `broker`; on failure closes what it opened and throws. */
/**
 * How the node's engines share the TCP / TLS ports: 'single' (one engine, workers = 0),
 * 'reuseport' (a socket per worker in an SO_REUSEPORT group, the addon) or 'shared-fd'
 * (one socket bound by the main thread that every worker adopts; without the addon).
 */
export type AcceptPath = 'single' | 'reuseport' | 'shared-fd';

/** A worker's share of the node's listeners: the accept path, and the fds of 'shared-fd'. */
export interface SharedAccept {
  path: 'reuseport' | 'shared-fd';
  fds: Partial<Record<'mqtt' | 'mqtts' | 'forward', number>>;
}

export async function startMqttListeners(
  cfg: Config, log: Logger, uws: Uws, broker: Broker, shared: SharedAccept | null,
): Promise<Listener[]> {
  const listeners: Listener[] = [];
  const l = cfg.listeners;
  const onConnection = broker.accept.bind(broker);
  const maxPayloadLength = Math.max(cfg.mqtt.max_packet_size, 16 * 1024);
  const { cert, key, ca } = l.tls;
  const start = (name: MqttListenerName, port: number): Promise<Listener> => {
    const base = { name, bind: l.bind, port, onConnection, log };
    switch (name) {
      case 'mqtt':
        return startTcpListener({ ...base, ...netAccept(shared, 'mqtt') });
      case 'mqtts':
        return startTlsListener({ ...base, ...netAccept(shared, 'mqtts'), cert: cert!, key: key!, ca, requestCert: l.tls.request_cert });
      case 'ws':
        return startWsListener({ ...base, uws, path: l.ws_path, maxPayloadLength, shared: shared !== null });
      case 'wss':
        return startWsListener({
          ...base, uws, path: l.ws_path, maxPayloadLength, shared: shared !== null,
          // uWS checks a client certificate against `ca` when one is sent; it cannot read the
          // peer certificate, so cn_as_username works on MQTTS only (docs/auth.md).
          tls: { cert: cert!, key: key!, ca: l.tls.request_cert ? ca ?? undefined : undefined },
        });
    }
  };
  try {
    for (const { name, port } of mqttPorts(cfg)) listeners.push(await start(name, port));
  } catch (e) {
    for (const x of listeners.reverse()) await x.close().catch(() => undefined);
    throw e;
  }
  return listeners;
}

type MqttListenerName = 'mqtt' | 'mqtts' | 'ws' | 'wss';

function netAccept(shared: SharedAccept | null, name: 'mqtt' | 'mqtts'): { reusePort?: boolean; fd?: number } {
  if (shared === null) return {};
  if (shared.path === 'reuseport') return { reusePort: true };
  const fd = shared.fds[name];
  if (fd === undefined) throw new Error(`listener ${name}: no shared socket from the supervisor`);
  return { fd };
}

/** The (name, port) pairs of the MQTT listeners a config enables (TLS ones need cert and key). */
export function mqttPorts(cfg: Config): { name: MqttListenerName; port: number }[] {
  const l = cfg.listeners;
  const tls = Boolean(l.tls.cert && l.tls.key);
  const out: { name: MqttListenerName; port: number }[] = [];
  if (l.mqtt_port) out.push({ name: 'mqtt', port: l.mqtt_port });
  if (l.mqtts_port && tls) out.push({ name: 'mqtts', port: l.mqtts_port });
  if (l.ws_port) out.push({ name: 'ws', port: l.ws_port });
  if (l.wss_port && tls) out.push({ name: 'wss', port: l.wss_port });
  return out;
}
