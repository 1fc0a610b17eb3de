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
export async function startMqttListeners(
  cfg: Config, log: Logger, uws: Uws, broker: Broker, shared: boolean,
): Promise<Listener[]> {
  const listeners: Listener[] = [];
  const l = cfg.listeners;
  const onConnection = broker.accept.bind(broker);
  const tls = l.tls.cert && l.tls.key ? { cert: l.tls.cert, key: l.tls.key, ca: l.tls.ca } : null;
  try {
    if (l.mqtt_port) listeners.push(await startTcpListener({ name: 'mqtt', bind: l.bind, port: l.mqtt_port, onConnection, log, reusePort: shared }));
    if (l.mqtts_port && tls) {
      listeners.push(await startTlsListener({
        name: 'mqtts', bind: l.bind, port: l.mqtts_port, onConnection, log, reusePort: shared,
        cert: tls.cert, key: tls.key, ca: tls.ca, requestCert: l.tls.request_cert,
      }));
    }
    const maxPayloadLength = Math.max(cfg.mqtt.max_packet_size, 16 * 1024);
    if (l.ws_port) {
      listeners.push(await startWsListener({
        name: 'ws', uws, bind: l.bind, port: l.ws_port, path: l.ws_path, maxPayloadLength, onConnection, log, shared,
      }));
    }
    if (l.wss_port && tls) {
      listeners.push(await startWsListener({
        name: 'wss', uws, bind: l.bind, port: l.wss_port, path: l.ws_path, maxPayloadLength, onConnection, log, shared,
        // uWS checks a client certificate against `ca` when one is sent; it cannot read the
        // peer certificate, so cn_as_username works on MQTTS only (docs/auth.md).
        tls: { cert: tls.cert, key: tls.key, ca: l.tls.request_cert ? tls.ca ?? undefined : undefined },
      }));
    }
  } catch (e) {
    for (const x of listeners.reverse()) await x.close().catch(() => undefined);
    throw e;
  }
  return listeners;
}

/** The (name, port) pairs of the MQTT listeners a config enables. */
export function mqttPorts(cfg: Config): { name: string; port: number }[] {
  const l = cfg.listeners;
  const tls = Boolean(l.tls.cert && l.tls.key);
  const out: { name: string; port: number }[] = [];
  if (l.mqtt_port) out.push({ name: 'mqtt', port: l.mqtt_port });
  if (l.mqtts_port && tls) out.push({ name: 'mqtts', port: l.mqtts_port });
  if (l.ws_port) out.push({ name: 'ws', port: l.ws_port });
  if (l.wss_port && tls) out.push({ name: 'wss', port: l.wss_port });
  return out;
}
