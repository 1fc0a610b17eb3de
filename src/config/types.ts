// The whole runtime configuration. The file format is JSON with the same nesting
// (see deploy/fleetmq.example.json and docs/config.md); every key is optional in the
// file and filled from DEFAULTS. Environment overrides: FLEETMQ_<SECTION>__<KEY>,
// e.g. FLEETMQ_MQTT__MAX_PACKET_SIZE=65536 (double underscore separates levels).

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type QueueOverflow = 'drop_new' | 'drop_oldest';
/** `local`: in a cluster, members on the publisher's node first (round robin among them). */
export type SharedStrategy = 'round_robin' | 'random' | 'sticky' | 'hash_clientid' | 'hash_topic' | 'local';

export interface TlsConfig {
  /** PEM paths; MQTTS and WSS listen only when cert and key are set. */
  cert: string | null;
  key: string | null;
  ca: string | null;
  /** Ask clients for a certificate (verified against `ca`). */
  request_cert: boolean;
  /** Use the client certificate's CN as the username (needs request_cert). */
  cn_as_username: boolean;
}

export interface ListenersConfig {
  bind: string;
  /** 0 disables a listener. */
  mqtt_port: number;
  mqtts_port: number;
  ws_port: number;
  wss_port: number;
  ws_path: string;
  http_port: number;
  tls: TlsConfig;
}

export interface MqttConfig {
  /** Largest packet accepted from or sent to a client, in bytes (whole packet). */
  max_packet_size: number;
  /** Topic Alias Maximum advertised to 5.0 clients (0 = no aliases from clients). */
  max_topic_alias: number;
  /** Receive Maximum advertised to 5.0 clients: inbound QoS 1/2 in flight. */
  receive_maximum: number;
  /** Outbound QoS 1/2 in flight per client when the client sets no Receive Maximum. */
  max_inflight: number;
  max_qos: 0 | 1 | 2;
  retain_available: boolean;
  wildcard_subscription_available: boolean;
  shared_subscription_available: boolean;
  max_topic_levels: number;
  max_topic_length: number;
  /** Subscriptions per client (0 = unlimited). */
  max_subscriptions: number;
  /** Offline / over-window queue length per session. */
  max_queued_messages: number;
  queue_qos0: boolean;
  queue_overflow: QueueOverflow;
  /** Server Keep Alive: 0 = accept any client keep alive; else the maximum (5.0 told via CONNACK). */
  max_keepalive: number;
  connect_timeout_ms: number;
  /** Upper bound on Session Expiry Interval (seconds). */
  max_session_expiry: number;
  shared_strategy: SharedStrategy;
  /** Topic filters refused at SUBSCRIBE with 0x80 (exact filter strings). */
  deny_subscribe: string[];
  /** $SYS publish period, ms (0 = off). */
  sys_interval_ms: number;
  /** Bytes buffered for one client's socket before the drop policy applies. */
  max_write_buffer: number;
}

export interface AuthConfig {
  allow_anonymous: boolean;
  password_file: string | null;
  acl_file: string | null;
  /** Applies when no ACL rule matches. */
  acl_default: 'allow' | 'deny';
  hash_threads: number;
}

export type ClusterRole = 'none' | 'core' | 'replicant';

export interface ClusterConfig {
  /** 'none': a single node, no etcd, no peers (the default). */
  role: ClusterRole;
  /** Every node of one cluster has the same name; a peer with another is refused. */
  name: string;
  /** The shared secret of the cluster's inter-node links (HMAC challenge; never sent). */
  cookie: string | null;
  /** A file holding the cookie (first line), instead of `cookie`. */
  cookie_file: string | null;
  /** RLOG and metadata requests. */
  port: number;
  /** Forwarded messages. */
  forward_port: number;
  /** Host or IP that peers use to reach this node; null = the host part of node.name. */
  advertise: string | null;
  /** host:port of cores' cluster ports (replicants; a managed core joining a cluster). */
  seeds: string[];
  discovery: 'static' | 'dns' | 'etcd';
  /** DNS name whose A or SRV records list the cores (discovery "dns"). */
  dns_name: string | null;
  dns_refresh_ms: number;
  /** DNS server for dns_name (IP[:port]); null = the system's resolver. */
  dns_server: string | null;
  /** Port of the cores' cluster ports for A/AAAA answers (0 = cluster.port). */
  dns_port: number;
  etcd: {
    /** Client URLs of an etcd that the user runs. */
    endpoints: string[];
    /** Start, supervise and stop a local etcd member. */
    managed: boolean;
    client_port: number;
    peer_port: number;
    binary: string;
  };
  /** TTL of the node's etcd lease: a node silent this long is stopped, its entries gone. */
  lease_ttl_s: number;
  /** Inter-node links over TLS with listeners.tls (cert, key, ca). */
  tls: boolean;
  /** Bytes waiting for one peer (per worker) before publishers pause. */
  forward_max_bytes: number;
  /** Forwarded messages are gathered this long (ms) into one write per peer connection; 0: per loop turn. */
  forward_flush_ms: number;
  /** Route and retained writes are batched this long (ms) before going to etcd. */
  write_batch_ms: number;
  /** A shard lagging more than this (ms) behind its source is logged. */
  lag_warn_ms: number;
  /** A SUBACK waits at most this long for its routes to be committed; then new subscriptions are refused (0x80). */
  route_commit_timeout_ms: number;
  /** A CONNECT waits at most this long for its session claim (etcd) before it goes on. */
  claim_timeout_ms: number;
}

export interface Config {
  node: {
    name: string;
    data_dir: string;
    /** Start even when the uWebSockets.js native binary does not load (slow JS fallback). */
    allow_uws_fallback: boolean;
    max_connections: number;
    /** Connection worker threads; 0 = everything on the main thread. */
    workers: number;
    shutdown_timeout_ms: number;
  };
  log: { level: LogLevel };
  listeners: ListenersConfig;
  mqtt: MqttConfig;
  auth: AuthConfig;
  cluster: ClusterConfig;
  durability: DurabilityConfig;
}

export interface DurabilityConfig {
  /** "batch": group commit every batch_ms; "always": a commit per event-loop turn; "none": memory only. */
  sync: 'batch' | 'always' | 'none';
  batch_ms: number;
}
