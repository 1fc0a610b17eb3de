// Retained messages, one per topic. An exact filter is a map lookup; a wildcard filter
// scans (bulk scans move off the hot threads later, see ARCHITECTURE.md).
import { topicMatches } from '../protocol/topic.js';
import { isExpired, type Message } from './message.js';

export class RetainedStore {
  private readonly byTopic = new Map<string, Message>();
  /**
   * Worker-threaded node: every worker keeps a replica, fed through the rings, and each
   * update carries a node-wide sequence number (one Atomics.add). A replica applies an
   * update only when it is newer than what it holds for the topic (a clear leaves its
   * number behind), so replicas that see two workers' updates in different orders still
   * agree (last writer wins). Unused (empty) when seq is always 0 (inline node).
   */
  private readonly seqs = new Map<string, number>();

  get size(): number {
    return this.byTopic.size;
  }

  /** An empty payload clears the topic [MQTT-3.3.1-10/11]. Returns false for a stale update. */
  set(m: Message, seq = 0): boolean {
    if (seq > 0) {
      if ((this.seqs.get(m.topic) ?? 0) > seq) return false;
      this.seqs.set(m.topic, seq);
    }
    if (m.payload.length === 0) this.byTopic.delete(m.topic);
    else this.byTopic.set(m.topic, m);
    return true;
  }

  /** Every stored message with its sequence number (a snapshot for a restarted worker). */
  entries(): [Message, number][] {
    return [...this.byTopic.values()].map((m) => [m, this.seqs.get(m.topic) ?? 0]);
  }

  /** Live retained messages matching `filter`; expired ones are removed on the way. */
  match(filter: string, now: number): Message[] {
    const out: Message[] = [];
    if (!filter.includes('+') && !filter.includes('#')) {
      const m = this.byTopic.get(filter);
      if (m) {
        if (isExpired(m, now)) this.byTopic.delete(filter);
        else out.push(m);
      }
      return out;
    }
    for (const [topic, m] of this.byTopic) {
      if (!topicMatches(filter, topic)) continue;
      if (isExpired(m, now)) this.byTopic.delete(topic);
      else out.push(m);
    }
    return out;
  }
}
