// Broker-wide counters. Plain numeric fields (stable shape, cheap increments);
// served by the API and the $SYS publisher.
export class Counters {
  connectionsAccepted = 0;
  connectionsRefused = 0; // max_connections, auth, bad CONNECT
  connectionsRefusedMax = 0;
  authFailures = 0;
  aclDeniedPublish = 0;
  aclDeniedSubscribe = 0;
  malformedPackets = 0;
  protocolErrors = 0;
  keepaliveTimeouts = 0;
  takeovers = 0;
  messagesReceived = 0;
  messagesSent = 0;
  bytesReceived = 0;
  bytesSent = 0;
  packetsReceived = 0;
  packetsSent = 0;
  retainedStored = 0;
  willsPublished = 0;
  /** Messages dropped, by cause. */
  droppedQueueFull = 0;
  droppedExpired = 0;
  droppedTooLarge = 0;
  droppedWriteBuffer = 0;
  droppedNoSubscribers = 0;
  droppedQos0Offline = 0;
  sharedRedispatched = 0;
  /** Messages and payload bytes currently held in session queues (offline / over window). */
  queuedMessages = 0;
  queuedBytes = 0;
  /** Peak of queuedBytes since start. */
  queuedBytesPeak = 0;

  get dropped(): number {
    return this.droppedQueueFull + this.droppedExpired + this.droppedTooLarge +
      this.droppedWriteBuffer + this.droppedQos0Offline;
  }

  addQueued(n: number, bytes: number): void {
    this.queuedMessages += n;
    this.queuedBytes += bytes;
    if (this.queuedBytes > this.queuedBytesPeak) this.queuedBytesPeak = this.queuedBytes;
  }

  snapshot(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(this)) if (typeof v === 'number') out[k] = v;
    out['dropped'] = this.dropped;
    return out;
  }
}
