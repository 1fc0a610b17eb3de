// MQTT reason codes.
//  - RC: MQTT 5.0 reason codes (spec section 2.4, table 2-6). Codes below 0x80 mean
//    success; 0x80 and above are failures.
//  - RC_V3: MQTT 3.1 / 3.1.1 CONNACK return codes (3.1.1 section 3.2.2.3).

export const RC = {
  SUCCESS: 0x00,
  NORMAL_DISCONNECTION: 0x00,
  GRANTED_QOS_0: 0x00,
  GRANTED_QOS_1: 0x01,
  GRANTED_QOS_2: 0x02,
  DISCONNECT_WITH_WILL: 0x04,
  NO_MATCHING_SUBSCRIBERS: 0x10,
  NO_SUBSCRIPTION_EXISTED: 0x11,
  CONTINUE_AUTHENTICATION: 0x18,
  REAUTHENTICATE: 0x19,
  UNSPECIFIED: 0x80,
  MALFORMED: 0x81,
  PROTOCOL_ERROR: 0x82,
  IMPL_SPECIFIC: 0x83,
  UNSUPPORTED_PROTOCOL_VERSION: 0x84,
  CLIENT_ID_NOT_VALID: 0x85,
  BAD_USER_OR_PASSWORD: 0x86,
  NOT_AUTHORIZED: 0x87,
  SERVER_UNAVAILABLE: 0x88,
  SERVER_BUSY: 0x89,
  BANNED: 0x8a,
  SERVER_SHUTTING_DOWN: 0x8b,
  BAD_AUTH_METHOD: 0x8c,
  KEEP_ALIVE_TIMEOUT: 0x8d,
  SESSION_TAKEN_OVER: 0x8e,
  TOPIC_FILTER_INVALID: 0x8f,
  TOPIC_NAME_INVALID: 0x90,
  PACKET_ID_IN_USE: 0x91,
  PACKET_ID_NOT_FOUND: 0x92,
  RECEIVE_MAX_EXCEEDED: 0x93,
  TOPIC_ALIAS_INVALID: 0x94,
  PACKET_TOO_LARGE: 0x95,
  MESSAGE_RATE_TOO_HIGH: 0x96,
  QUOTA_EXCEEDED: 0x97,
  ADMINISTRATIVE_ACTION: 0x98,
  PAYLOAD_FORMAT_INVALID: 0x99,
  RETAIN_NOT_SUPPORTED: 0x9a,
  QOS_NOT_SUPPORTED: 0x9b,
  USE_ANOTHER_SERVER: 0x9c,
  SERVER_MOVED: 0x9d,
  SHARED_SUB_NOT_SUPPORTED: 0x9e,
  CONNECTION_RATE_EXCEEDED: 0x9f,
  MAX_CONNECT_TIME: 0xa0,
  SUB_IDS_NOT_SUPPORTED: 0xa1,
  WILDCARD_SUB_NOT_SUPPORTED: 0xa2,
} as const;

export type ReasonCodeName = keyof typeof RC;

/** MQTT 3.1 / 3.1.1 CONNACK return codes. */
export const RC_V3 = {
  ACCEPTED: 0,
  UNACCEPTABLE_PROTOCOL: 1,
  IDENTIFIER_REJECTED: 2,
  SERVER_UNAVAILABLE: 3,
  BAD_USERNAME_PASSWORD: 4,
  NOT_AUTHORIZED: 5,
} as const;

/**
 * Map a 5.0 CONNACK reason code to the 3.1.1 return code sent to a 3.x client.
 * 0 → 0 (accepted); 0x84 → 1; 0x85 → 2; 0x86 → 4; 0x87 → 5; anything else
 * (0x88 server unavailable, 0x89 busy, 0x97 quota, …) → 3 (server unavailable).
 */
export function connackCodeV3(v5code: number): number {
  switch (v5code) {
    case RC.SUCCESS: return RC_V3.ACCEPTED;
    case RC.UNSUPPORTED_PROTOCOL_VERSION: return RC_V3.UNACCEPTABLE_PROTOCOL;
    case RC.CLIENT_ID_NOT_VALID: return RC_V3.IDENTIFIER_REJECTED;
    case RC.BAD_USER_OR_PASSWORD: return RC_V3.BAD_USERNAME_PASSWORD;
    case RC.NOT_AUTHORIZED: return RC_V3.NOT_AUTHORIZED;
    default: return RC_V3.SERVER_UNAVAILABLE;
  }
}

const NAMES: Record<number, string> = {
  0x00: 'success',
  0x01: 'granted qos 1',
  0x02: 'granted qos 2',
  0x04: 'disconnect with will',
  0x10: 'no matching subscribers',
  0x11: 'no subscription existed',
  0x18: 'continue authentication',
  0x19: 're-authenticate',
  0x80: 'unspecified error',
  0x81: 'malformed packet',
  0x82: 'protocol error',
  0x83: 'implementation specific error',
  0x84: 'unsupported protocol version',
  0x85: 'client identifier not valid',
  0x86: 'bad user name or password',
  0x87: 'not authorized',
  0x88: 'server unavailable',
  0x89: 'server busy',
  0x8a: 'banned',
  0x8b: 'server shutting down',
  0x8c: 'bad authentication method',
  0x8d: 'keep alive timeout',
  0x8e: 'session taken over',
  0x8f: 'topic filter invalid',
  0x90: 'topic name invalid',
  0x91: 'packet identifier in use',
  0x92: 'packet identifier not found',
  0x93: 'receive maximum exceeded',
  0x94: 'topic alias invalid',
  0x95: 'packet too large',
  0x96: 'message rate too high',
  0x97: 'quota exceeded',
  0x98: 'administrative action',
  0x99: 'payload format invalid',
  0x9a: 'retain not supported',
  0x9b: 'qos not supported',
  0x9c: 'use another server',
  0x9d: 'server moved',
  0x9e: 'shared subscriptions not supported',
  0x9f: 'connection rate exceeded',
  0xa0: 'maximum connect time',
  0xa1: 'subscription identifiers not supported',
  0xa2: 'wildcard subscriptions not supported',
};

/** Human-readable name of a 5.0 reason code, for logs ("0x8f" style fallback). */
export function reasonCodeName(code: number): string {
  return NAMES[code] ?? `reason 0x${code.toString(16).padStart(2, '0')}`;
}
