// Messages between the supervisor (main thread) and a connection worker (postMessage; not
// on the publish path: start-up, shutdown, session registry, probes, logs).
import type { MessagePort } from 'node:worker_threads';
import type { SessionTransfer } from '../broker/transfer.js';
import type { Message } from '../broker/message.js';
import type { Config } from '../config/types.js';
import type { SharedAccept } from '../runtime/engine.js';
import type { ProbeQuery } from '../runtime/probe.js';
import type { SharedPlan } from './plan.js';

export interface WorkerData {
  id: number;
  plan: SharedPlan;
  trie: { heap: SharedArrayBuffer };
  cfg: Config;
  /** Retained messages (with their sequence numbers) from a live sibling, for a restarted worker. */
  retained: [Message, number][];
  /** How this worker listens on the node's TCP / TLS ports. */
  accept: SharedAccept;
  /** Cluster: the port to the replication thread (src/cluster/agent.ts AgentToWorker). */
  agentPort: MessagePort | null;
  /**
   * Durable node: read sessions back from the store (src/store/recovery.ts): this worker's
   * share by client id (`ids` null, the node's start), or the ones named (a restart).
   */
  recover: { ids: string[] | null } | null;
  /** Accept {type:'fault'} (tests of the supervisor). */
  faultInjection: boolean;
}

export type ToWorker =
  | { type: 'stop'; timeoutMs: number }
  /** Durable node: every worker restored its recovered sessions; publish the recovered wills. */
  | { type: 'recovered' }
  | { type: 'probe'; reqId: number; query: ProbeQuery }
  | { type: 'release'; reqId: number; clientId: string; cleanStart: boolean }
  | { type: 'retainedSnapshot'; reqId: number }
  | { type: 'reply'; reqId: number; value: unknown }
  /** Tests of the supervisor and of full rings: throw, exit, or block the thread for `ms`. */
  | { type: 'fault'; how: 'throw' | 'exit' | 'stall'; ms?: number }
  /** Cluster: `node` also held `clientId` (a claim that finished late): it must end its copy. */
  | { type: 'dropRemote'; clientId: string; node: string }
  /** Forced exit of the process: close uWS sockets and end now. */
  | { type: 'abort' };

/** Worker → supervisor requests (answered by a reply with the same reqId). */
export type FromWorkerRequest =
  | { type: 'claim'; clientId: string; cleanStart: boolean; persistent: boolean }
  | { type: 'remoteRelease'; clientId: string; cleanStart: boolean };

export type FromWorker =
  /** `recovered`: the client ids of the sessions read back from the store, and what was found. */
  | { type: 'ready'; slot: number; recovered?: { ids: string[]; counts: Record<string, number> } }
  | { type: 'failed'; message: string; code: string | undefined }
  | { type: 'log'; line: string }
  | { type: 'reply'; reqId: number; value: unknown }
  | { type: 'claim'; reqId: number; clientId: string; cleanStart: boolean; persistent: boolean }
  /** Cluster: another node takes this client id over (its request came over the forward channel). */
  | { type: 'remoteRelease'; reqId: number; clientId: string; cleanStart: boolean }
  | { type: 'unclaim'; clientId: string }
  | { type: 'stopped' };
