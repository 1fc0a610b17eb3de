// Client DISCONNECT [MQTT-3.14] and AUTH [MQTT-3.15 v5].
import type { IAuthPacket, IDisconnectPacket } from '../../protocol/codec.js';
import type { ClientConnection } from '../connection.js';

export function handleDisconnect(c: ClientConnection, p: IDisconnectPacket): void {
  const s = c.session!;
  if (c.isV5) {
    const exp = p.properties?.sessionExpiryInterval;
    if (exp !== undefined) {
      // A session that was going to end at disconnect may not be revived here [MQTT-3.14.2-2 v5].
      if (c.connectExpiry === 0 && exp !== 0) return c.protocolClose(0x82, 'Session Expiry Interval changed from 0');
      s.expiryInterval = Math.min(exp, c.broker.cfg.mqtt.max_session_expiry);
    }
    // 0x04 Disconnect with Will Message keeps the will; anything else discards it [MQTT-3.14.4-3 v5].
    c.discardWill = (p.reasonCode ?? 0) !== 0x04;
  } else {
    c.discardWill = true; // [MQTT-3.14.4-3 v3]
  }
  c.close();
}

export function handleAuth(c: ClientConnection, _p: IAuthPacket): void {
  // No enhanced authentication method was agreed at CONNECT, so AUTH is a protocol error [MQTT-4.12.0-1 v5].
  c.protocolClose(0x82, 'AUTH without an authentication method');
}
