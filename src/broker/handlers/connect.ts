// CONNECT → CONNACK [MQTT-3.1 / 3.2].
import { randomBytes } from 'node:crypto';
import type { IConnectPacket, Packet } from '../../protocol/codec.js';
import { userPropertiesToPairs, type UserPropertyPairs } from '../../protocol/publish.js';
import { NEVER_EXPIRES } from '../broker.js';
import type { ClientConnection, ProtocolVersion } from '../connection.js';

export async function handleConnect(c: ClientConnection, p: IConnectPacket): Promise<void> {
  const b = c.broker;
  const cfg = b.cfg.mqtt;
  const v = (p.protocolVersion ?? 4) as ProtocolVersion;
  c.version = v;
  const v5 = v === 5;
  const props = p.properties ?? {};

  if (c.overLimit) {
    b.counters.connectionsRefusedMax++;
    b.log.warn('conn.refused_max_connections', { remote: c.transport.remoteAddress, max: b.cfg.node.max_connections });
    return c.refuseConnect(0x97, 'max_connections reached'); // 3.1.1: return code 3
  }
  if (v5 && props.authenticationMethod !== undefined) {
    // Enhanced authentication is not offered: refuse the method [MQTT-4.12.0-1 v5].
    return c.refuseConnect(0x8c, `authentication method "${props.authenticationMethod}" not supported`);
  }
  if (v5 && (props.receiveMaximum === 0 || props.maximumPacketSize === 0)) {
    // Both are protocol errors when 0 [MQTT-3.1.2-? v5 3.1.2.11.3/3.1.2.11.4].
    return c.refuseConnect(0x82, 'Receive Maximum and Maximum Packet Size must not be 0');
  }

  // Client identifier rules [MQTT-3.1.3-6..9 v3.1.1; v5 3.1.3-6/7].
  let clientId = p.clientId ?? '';
  let assigned: string | undefined;
  if (clientId === '') {
    if (v === 3) return c.refuseConnect(0x85, 'empty client identifier (MQTT 3.1)');
    if (v === 4 && p.clean === false) return c.refuseConnect(0x85, 'empty client identifier needs clean session');
    clientId = 'fleetmq-' + randomBytes(9).toString('base64url');
    if (v5) assigned = clientId;
  }
  c.clientId = clientId;

  const r = await b.auth.authenticate({
    clientId, username: p.username, password: p.password, certCommonName: c.transport.certCommonName,
  });
  if (c.state === 'closed') return;
  if (!r.ok) {
    b.counters.authFailures++;
    b.log.info('conn.auth_refused', { client: clientId, username: p.username, reason: r.reason });
    return c.refuseConnect(r.reason === 'bad_credentials' ? 0x86 : 0x87);
  }
  c.username = r.username;

  if (p.will) {
    const w = p.will;
    const wq = w.qos ?? 0;
    if (wq > cfg.max_qos) return c.refuseConnect(0x9b, `will QoS ${wq} above maximum ${cfg.max_qos}`);
    if (w.retain && !cfg.retain_available) return c.refuseConnect(0x9a, 'retain not available');
    const wp = w.properties ?? {};
    c.will = {
      topic: w.topic, payload: Buffer.isBuffer(w.payload) ? w.payload : Buffer.from(w.payload), qos: wq,
      retain: !!w.retain, from: clientId,
      props: v5 ? pickMessageProps(wp, wp.userProperties && userPropertiesToPairs(wp.userProperties)) : undefined,
      // Relative while the will waits; made absolute when it is published.
      expiresAt: v5 && wp.messageExpiryInterval ? wp.messageExpiryInterval * 1000 : 0,
    };
    c.willDelay = v5 ? wp.willDelayInterval ?? 0 : 0;
    if (!b.auth.canPublish({ clientId, username: c.username }, w.topic)) {
      // The will may never be published to a topic this client may not publish to.
      b.counters.aclDeniedPublish++;
      b.log.info('conn.will_denied', { client: clientId, topic: w.topic });
      c.will = null;
    }
  }

  const connack: Record<string, unknown> = {};
  let ka = p.keepalive ?? 0;
  if (cfg.max_keepalive > 0 && (ka === 0 || ka > cfg.max_keepalive) && v5) {
    // Server Keep Alive overrides the client's value [MQTT-3.2.2-21 v5].
    ka = cfg.max_keepalive;
    connack['serverKeepAlive'] = ka;
  }
  c.keepalive = ka;

  let expiry: number;
  if (v5) {
    expiry = props.sessionExpiryInterval ?? 0;
    if (expiry > cfg.max_session_expiry) {
      expiry = cfg.max_session_expiry;
      connack['sessionExpiryInterval'] = expiry;
    }
    c.clientReceiveMax = props.receiveMaximum ?? 65535;
    c.clientMaxPacket = props.maximumPacketSize ?? 268435455;
    c.clientTopicAliasMax = props.topicAliasMaximum ?? 0;
    c.problemInfo = props.requestProblemInformation !== false;
  } else {
    expiry = p.clean === false ? Math.min(NEVER_EXPIRES, cfg.max_session_expiry) : 0;
    c.clientReceiveMax = cfg.max_inflight;
  }
  c.connectExpiry = expiry;

  // Worker-threaded node: the session may live on another worker (takeover moves it here),
  // and its subscriptions must be routed to this worker before the client is told it is back.
  const claim = b.router?.claim(clientId, p.clean !== false, expiry > 0) ?? null;
  if (claim !== null) {
    b.claiming.set(clientId, c);
    const moved = await claim;
    if (moved !== null) b.adoptSession(clientId, moved);
    const routed = b.router?.sync() ?? null;
    if (routed !== null) await routed;
    if (b.claiming.get(clientId) === c) b.claiming.delete(clientId);
    if (c.superseded) {
      // A newer connection with this client id claimed the session while we waited.
      b.counters.takeovers++;
      return c.close();
    }
    if ((c.state as string) === 'closed') {
      // Gone while we waited: the session stays here, offline, by the usual rules.
      if (moved !== null) b.parkSession(clientId);
      return;
    }
  }
  const present = b.openSession(c, p.clean !== false, expiry);
  c.state = 'connected';
  if (v5) {
    if (cfg.receive_maximum < 65535) connack['receiveMaximum'] = cfg.receive_maximum;
    if (cfg.max_qos < 2) connack['maximumQoS'] = cfg.max_qos;
    if (!cfg.retain_available) connack['retainAvailable'] = false;
    connack['maximumPacketSize'] = cfg.max_packet_size;
    if (cfg.max_topic_alias > 0) connack['topicAliasMaximum'] = cfg.max_topic_alias;
    if (!cfg.wildcard_subscription_available) connack['wildcardSubscriptionAvailable'] = false;
    if (!cfg.shared_subscription_available) connack['sharedSubscriptionAvailable'] = false;
    if (assigned) connack['assignedClientIdentifier'] = assigned;
    if (props.requestResponseInformation) connack['responseInformation'] = `fleetmq/response/${clientId}`;
    c.send({ cmd: 'connack', sessionPresent: present, reasonCode: 0, properties: connack } as Packet);
  } else {
    // MQTT 3.1 has no Session Present flag.
    c.send({ cmd: 'connack', sessionPresent: v === 4 && present, returnCode: 0 } as Packet);
  }
  c.started();
  b.log.debug('client.connected', {
    client: clientId, username: c.username, protocol: v, transport: c.transport.kind, present,
  });
  c.resendInflight();
  c.pump();
  c.resumeFrames();
}

export function pickMessageProps(
  p: { payloadFormatIndicator?: boolean; contentType?: string; responseTopic?: string; correlationData?: Buffer },
  userProperties: UserPropertyPairs | undefined,
): import('../message.js').MessageProps | undefined {
  const out: import('../message.js').MessageProps = {};
  let any = false;
  if (p.payloadFormatIndicator !== undefined) { out.payloadFormatIndicator = p.payloadFormatIndicator; any = true; }
  if (p.contentType !== undefined) { out.contentType = p.contentType; any = true; }
  if (p.responseTopic !== undefined) { out.responseTopic = p.responseTopic; any = true; }
  if (p.correlationData !== undefined) { out.correlationData = p.correlationData; any = true; }
  if (userProperties !== undefined) { out.userProperties = userProperties; any = true; }
  return any ? out : undefined;
}
