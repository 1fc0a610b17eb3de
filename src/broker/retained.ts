// Retained messages, one per topic. An exact filter is a map lookup; a wildcard filter
// scans (bulk scans move off the hot threads later, see ARCHITECTURE.md).
import { topicMatches } from '../protocol/topic.js';
import { isExpired, type Message } from './message.js';

export class RetainedStore {
  private readonly byTopic = new Map<string, Message>();

  get size(): number {
    return this.byTopic.size;
  }

  /** An empty payload clears the topic [MQTT-3.3.1-10/11]. */
  set(m: Message): void {
    if (m.payload.length === 0) this.byTopic.delete(m.topic);
    else this.byTopic.set(m.topic, m);
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
