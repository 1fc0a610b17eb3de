// Read-only views of a node's state for the management API and the tests: sessions,
// connections, retained messages, shared groups. Each engine (one per worker thread, or
// the inline engine) answers from its own Broker; the node merges the answers.
import type { Broker } from '../broker/broker.js';
import type { ClientConnection } from '../broker/connection.js';
import type { Session } from '../broker/session.js';
import type { CountersReader } from '../metrics/counters.js';

export interface ConnInfo {
  clientId: string;
  username: string | undefined;
  /** 3, 4 or 5; 0 before CONNECT. */
  protocol: number;
  transport: string;
  remote: string;
  keepalive: number;
  connectedAt: number;
  state: string;
  hasWill: boolean;
  /** Topic of the will held for this connection, or null. */
  willTopic: string | null;
  /** Bytes written to the transport and not yet sent. */
  bufferedBytes: number;
  inflight: number;
  queued: number;
  /** Worker thread index; -1 when the node runs inline (no worker threads). */
  worker: number;
}

export interface SubscriptionInfo {
  key: string;
  filter: string;
  group: string | null;
  qos: number;
  noLocal: boolean;
  retainAsPublished: boolean;
  retainHandling: number;
  subscriptionId: number | undefined;
}

export interface MessageInfo {
  topic: string;
  payload: string; // UTF-8 (lossy for binary payloads)
  payloadLength: number;
  qos: number;
  retain: boolean;
}

export interface SessionInfo {
  clientId: string;
  worker: number;
  connected: boolean;
  conn: ConnInfo | null;
  expiryInterval: number;
  subscriptions: SubscriptionInfo[];
  queue: MessageInfo[];
  queueBytes: number;
  inflight: { id: number; state: string; topic: string; qos: number }[];
  inboundQos2: number[];
  /** A delayed will is waiting. */
  pendingWill: boolean;
}

export interface RetainedInfo {
  topic: string;
  payload: string;
  qos: number;
  expiresAt: number;
}

/** What tests and the API may ask a node; answers are snapshots. */
export interface NodeProbe {
  /** Live sums of every engine's counters (synchronous). */
  readonly counters: CountersReader;
  /** Accepted sockets not yet closed (synchronous). */
  connectionCount(): number;
  session(clientId: string): Promise<SessionInfo | null>;
  sessionIds(): Promise<string[]>;
  clients(): Promise<ConnInfo[]>;
  retained(filter: string): Promise<RetainedInfo[]>;
  /** Client ids of a shared group's members on `filter`, over all workers. */
  groupMembers(filter: string, group: string): Promise<string[]>;
  /** GET /api/v1/clients rows, one promise per engine. */
  clientRows(): Promise<unknown[]>[];
}

/** One probe question, as sent to a worker. */
export type ProbeQuery =
  | { q: 'session'; clientId: string }
  | { q: 'sessionIds' }
  | { q: 'clients' }
  | { q: 'retained'; filter: string }
  | { q: 'groupMembers'; filter: string; group: string }
  /** GET /api/v1/clients rows: connected clients and offline sessions. */
  | { q: 'apiClients' }
  /** Cluster: the worker's forward senders, one per peer (answered by the worker, not the engine). */
  | { q: 'forwardStats' };

export function connInfo(c: ClientConnection, worker: number): ConnInfo {
  return {
    clientId: c.clientId, username: c.username, protocol: c.version,
    transport: c.transport.kind, remote: c.transport.remoteAddress,
    keepalive: c.keepalive, connectedAt: c.connectedAt, state: c.state, hasWill: c.will !== null,
    willTopic: c.will?.topic ?? null, bufferedBytes: c.transport.bufferedBytes(),
    inflight: c.session?.inflight.size ?? 0, queued: c.session?.queue.length ?? 0, worker,
  };
}

export function sessionInfo(s: Session, worker: number): SessionInfo {
  return {
    clientId: s.clientId, worker, connected: s.conn !== null,
    conn: s.conn ? connInfo(s.conn, worker) : null,
    expiryInterval: s.expiryInterval,
    subscriptions: [...s.subscriptions.values()].map((x) => ({
      key: x.key, filter: x.filter, group: x.group, qos: x.qos, noLocal: x.noLocal,
      retainAsPublished: x.retainAsPublished, retainHandling: x.retainHandling, subscriptionId: x.subscriptionId,
    })),
    queue: s.queue.map((d) => ({
      topic: d.msg.topic, payload: d.msg.payload.toString(), payloadLength: d.msg.payload.length, qos: d.qos, retain: d.retain,
    })),
    queueBytes: s.queueBytes,
    inflight: [...s.inflight].map(([id, e]) => ({ id, state: e.state, topic: e.d.msg.topic, qos: e.d.qos })),
    inboundQos2: [...s.inboundQos2],
    pendingWill: s.pendingWill !== null,
  };
}

/** Answers one probe question from one engine. */
export function answerProbe(b: Broker, worker: number, query: ProbeQuery): unknown {
  switch (query.q) {
    case 'session': {
      const s = b.sessions.get(query.clientId);
      return s ? sessionInfo(s, worker) : null;
    }
    case 'sessionIds':
      return [...b.sessions.keys()];
    case 'clients':
      return [...b.connections].map((c) => connInfo(c, worker));
    case 'retained':
      return b.retainedFor(query.filter).map((m) => ({
        topic: m.topic, payload: m.payload.toString(), qos: m.qos, expiresAt: m.expiresAt,
      }));
    case 'groupMembers':
      return [...(b.index.groupMembers(query.filter, query.group)?.keys() ?? [])];
    case 'apiClients':
      return [...b.sessions.values()].map((s) => s.conn
        ? { ...s.conn.describe(), connected: true, worker }
        : { clientId: s.clientId, connected: false, queued: s.queue.length, inflight: s.inflight.size, worker });
  }
}

/** The probe of an inline node: one engine on the calling thread. */
export function inlineProbe(b: Broker): NodeProbe {
  const ask = <T>(query: ProbeQuery) => Promise.resolve(answerProbe(b, -1, query) as T);
  return {
    counters: b.counters,
    connectionCount: () => b.connections.size,
    session: (clientId) => ask({ q: 'session', clientId }),
    sessionIds: () => ask({ q: 'sessionIds' }),
    clients: () => ask({ q: 'clients' }),
    retained: (filter) => ask({ q: 'retained', filter }),
    groupMembers: (filter, group) => ask({ q: 'groupMembers', filter, group }),
    clientRows: () => [ask({ q: 'apiClients' })],
  };
}
