// etcd's request limits as the writers and the publish path see them (no etcd client here,
// so that the broker engine can check a retained message without loading one).

/** etcd's request limit (--max-request-bytes, 1.5 MiB by default). */
export const ETCD_REQUEST_BYTES = 1.5 * 1024 * 1024;
/** The largest put a KvWriter sends (alone): etcd's limit less room for the request's framing. */
export const MAX_PUT_BYTES = ETCD_REQUEST_BYTES - 16 * 1024;
/** Bytes an operation adds to a transaction besides its key and value (protobuf framing, lease). */
export const OP_OVERHEAD = 32;
/** Room kept in a retained put for the shard's key prefix (cluster name) and the origin in its header. */
export const RETAINED_KEY_SLACK = 4 * 1024;
