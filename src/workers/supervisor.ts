// The main thread of a worker-threaded node: starts the trie writer and the connection
// workers, restarts a worker that dies, keeps the session registry (client id → worker),
// answers probes by asking the workers, serves HTTP (docs/workers.md).
import { MessageChannel, type MessagePort, Worker } from 'node:worker_threads';
import { durableNode, openEngineStore, storeDir } from '../store/engine-store.js';
import type { Message } from '../broker/message.js';
import type { SessionTransfer } from '../broker/transfer.js';
import type { Config } from '../config/types.js';
import { summarizeForwarding, type PeerForwardStats, type PeerForwardSummary } from '../cluster/forward-stats.js';
import type { Logger } from '../log/logger.js';
import { Counters, CountersSum, FIRST_GAUGE, COUNTER_SLOTS, readerOf } from '../metrics/counters.js';
import { mqttPorts, type AcceptPath, type SharedAccept } from '../runtime/engine.js';
import type { ConnInfo, NodeProbe, ProbeQuery, RetainedInfo, SessionInfo } from '../runtime/probe.js';
import { probeExclusive, reusePortAvailability } from '../transport/reuseport.js';
import { bindSharedSocket, type SharedSocket } from '../transport/shared-socket.js';
import { C_OPEN_CONNECTIONS, CONTROL_WORDS, createPlan, type SharedPlan } from './plan.js';
import type { FromWorker, ToWorker, WorkerData } from './protocol.js';
import type { FromReplicator, ReplicatorData, ToReplicator } from './replicator.js';

type SlotState = 'starting' | 'running' | 'restarting' | 'stopping' | 'stopped';

interface Slot {
  readonly id: number;
  worker: Worker | null;
  state: SlotState;
  restarts: number;
  readerSlot: number;
  /** Requests to this worker waiting for a reply. */
  readonly pending: Map<number, (v: unknown) => void>;
}

export interface WorkerStats {
  id: number;
  state: SlotState;
  restarts: number;
  threadId: number | null;
  connections: number;
  connectionsOpen: number;
  sessions: number;
  subscriptions: number;
  messagesReceived: number;
  messagesSent: number;
  forwardedOut: number;
  forwardedIn: number;
  droppedRingFull: number;
  forwardPaused: number;
}

export interface WorkerPool {
  readonly plan: SharedPlan;
  /** How the workers share the TCP / TLS ports. */
  readonly accept: AcceptPath;
  readonly probe: NodeProbe;
  readonly counters: Counters[];
  stats(): Promise<Record<string, unknown>>;
  /** Tests: make worker `id` throw, exit, or block for `ms` (needs FLEETMQ_FAULT_INJECTION=1). */
  injectFault(id: number, how: 'throw' | 'exit' | 'stall', ms?: number): void;
  /** Tests: make the replication thread exit (needs FLEETMQ_FAULT_INJECTION=1). */
  injectReplicatorFault(): void;
  /** Resolves when worker `id` has been restarted `n` times in all and runs again. */
  whenRunning(id: number, restarts: number): Promise<void>;
  stop(timeoutMs: number): Promise<void>;
  /** Ends every worker at once (each closes its uWS sockets first); bounded by 1 s. */
  abort(): Promise<void>;
  /** Cluster: asks the replication thread (null when it does not answer within `timeoutMs`). */
  cluster(q: ClusterQuery, timeoutMs?: number): Promise<unknown>;
  /** Cluster: every running worker's forward senders, summed per peer. */
  forwarding(): Promise<PeerForwardSummary[]>;
}

export type ClusterQuery =
  | { type: 'clusterStatus' }
  | { type: 'clusterView' }
  | { type: 'clusterStats' }
  | { type: 'join'; target: string }
  | { type: 'leave' }
  | { type: 'forceLeave'; node: string }
  | { type: 'routesOf'; topic: string };

const WORKER_URL = new URL('./worker-main.js', import.meta.url);
const REPLICATOR_URL = new URL('./replicator.js', import.meta.url);

export interface WorkerPoolOptions {
  /**
   * The node cannot go on (a worker died while the workers share one listening socket);
   * the caller stops the node and exits 1.
   */
  onFatal(reason: string): void;
  /** A clustered node: the etcd client URLs of a core (empty for a replicant). */
  etcdEndpoints?: string[];
}

/** A claim's answer to the worker: a session moved from another worker, or the node that owned it. */
export interface ClaimReply {
  transfer: SessionTransfer | null;
  /** Another node owned the session: the worker takes it over from there (forward channel). */
  remote: string | null;
}

export async function startWorkerPool(cfg: Config, log: Logger, opts: WorkerPoolOptions): Promise<WorkerPool> {
  const n = cfg.node.workers;
  // Every worker listens with SO_REUSEPORT / a shared uWS port; first make sure nobody else
  // holds a port, so a second node on the same port fails instead of sharing it.
  for (const { name, port } of mqttPorts(cfg)) await probeExclusive(name, cfg.listeners.bind, port);
  if (cfg.cluster.role !== 'none') await probeExclusive('forward', cfg.listeners.bind, cfg.cluster.forward_port);
  const accept = await chooseAccept(cfg, log);
  const clustered = cfg.cluster.role !== 'none';
  const plan = createPlan(n, cfg.mqtt.max_packet_size, clustered);
  const counters = plan.counters.map((sab) => new Counters(sab));
  const ctl = new Int32Array(plan.control, 0, CONTROL_WORDS);
  const faultInjection = process.env['FLEETMQ_FAULT_INJECTION'] === '1';
  let stopping = false;
  let sessionsLost = 0;
  let nextReq = 1;

  // ---- the trie writer ------------------------------------------------------------
  const repData: ReplicatorData = { plan, cluster: clustered ? { cfg, etcdEndpoints: opts.etcdEndpoints ?? [] } : null };
  /** Set below: claims this node's sessions again once its lease was replaced. */
  let reclaimAll = (): void => undefined;
  const rep = new Worker(REPLICATOR_URL, { workerData: repData, name: 'fleetmq-replicator' });
  const repPending = new Map<number, (v: unknown) => void>();
  let repReady = false;
  const trie = await new Promise<{ heap: SharedArrayBuffer }>((resolve, reject) => {
    rep.once('error', reject);
    rep.once('exit', (code) => reject(new Error(`the replication thread exited (code ${code}) while starting`)));
    rep.on('message', (m: FromReplicator) => {
      if (m.type === 'ready') {
        repReady = true;
        resolve(m.trie);
      } else if (m.type === 'reply') {
        repPending.get(m.reqId)?.(m.value);
        repPending.delete(m.reqId);
      } else if (m.type === 'log') log.raw(m.line);
      // Done stopping: an etcd client's sockets and timers may keep the thread alive.
      else if (m.type === 'stopped') void rep.terminate();
      else if (m.type === 'leaseRenewed') reclaimAll();
      else if (!repReady) reject(Object.assign(new Error(m.error), { code: m.code }));
      else log.error('replicator.error', { error: m.error });
    });
  }).catch(async (e: unknown) => {
    await rep.terminate();
    throw e;
  });
  rep.on('error', (e) => log.error('replicator.crashed', { error: e }));
  // Not restarted in place (its trie would have to be rebuilt from every worker's routes,
  // and in a cluster its lease, log position and etcd watches with it): without it no
  // route change is applied and, in a cluster, the node's lease lapses while it still
  // serves its clients. So the node stops (exit 1) for its supervisor to start it again,
  // and its clients reconnect (elsewhere, in a cluster).
  let repExited = false;
  rep.on('exit', (code) => {
    repExited = true;
    if (stopping) return;
    log.error('replicator.exited', { code, detail: 'route changes can no longer be applied: the node stops' });
    opts.onFatal(`the replication thread exited (code ${code})`);
  });
  const askRep = (m: ToReplicator & { reqId: number }): Promise<unknown> => new Promise((resolve) => {
    repPending.set(m.reqId, resolve);
    rep.postMessage(m);
  });

  // ---- connection workers -----------------------------------------------------------
  const slots: Slot[] = Array.from({ length: n }, (_, id) => ({
    id, worker: null, state: 'starting', restarts: 0, readerSlot: -1, pending: new Map(),
  }));
  /** Session registry: which worker holds each client id's session. */
  const registry = new Map<string, number>();
  /** Claims of one client id run one after the other. */
  const claimChain = new Map<string, Promise<void>>();

  // ---- durable state ----------------------------------------------------------------
  // A node outside a cluster (in a cluster, etcd holds session ownership and retained
  // messages, issue 12): the store is opened here first (a foreign or corrupt one stops the
  // start with its reason), then each worker reads its own share of the sessions back, in
  // parallel, before it reports ready (src/store/recovery.ts); the registry learns them then.
  const durable = durableNode(cfg);
  if (durable) await openEngineStore(cfg)?.close();
  const recoveredCounts: Record<string, number>[] = [];
  // Recovered retained messages carry sequence number 1 on every worker: later updates count from 2.
  if (durable) Atomics.add(new BigInt64Array(plan.control, CONTROL_WORDS * 4, 1), 0, 1n);
  const firstSpawn = new Set(slots.map((x) => x.id));
  /** Client ids of a dead worker's sessions, until its successor has read them back. */
  const recovering = new Map<string, Promise<void>>();
  const runningWaiters: (() => void)[] = [];

  const post = (s: Slot, m: ToWorker): void => s.worker?.postMessage(m);
  const ask = (s: Slot, m: ToWorker & { reqId: number }): Promise<unknown> => {
    if (s.state !== 'running' || !s.worker) return Promise.resolve(null);
    return new Promise((resolve) => {
      s.pending.set(m.reqId, resolve);
      s.worker!.postMessage(m);
    });
  };

  /**
   * Cluster: each client id this node owns, with its epoch (etcd revision) and whether the
   * session is persistent (then its ownership is not on the node's lease).
   */
  const owned = new Map<string, { epoch: number; persistent: boolean }>();
  /** The replication thread's answer to a claim. */
  type Claimed = { epoch: number; prev: { node: string } | null; error?: string } | null;
  /** Runs `f` after every earlier claim or release of `clientId`. */
  const chained = (clientId: string, f: () => Promise<void>): void => {
    const prev = claimChain.get(clientId) ?? Promise.resolve();
    const done = prev.then(f).catch((e: unknown) => log.error('registry.claim_failed', { client: clientId, error: e }));
    claimChain.set(clientId, done);
    void done.then(() => {
      if (claimChain.get(clientId) === done) claimChain.delete(clientId);
    });
  };

  const claim = (s: Slot, reqId: number, clientId: string, cleanStart: boolean, persistent: boolean): void => {
    chained(clientId, async () => {
      let remote: string | null = null;
      if (clustered) {
        // Ownership of the client id is decided in etcd first: two nodes never both own it.
        // While etcd does not answer, the client is not held for ever: after
        // cluster.claim_timeout_ms it connects on what this node knows, and the claim goes
        // on; if it then finds another node owned the id, that node drops its copy.
        const asked = askRep({ type: 'claim', reqId: nextReq++, clientId, persistent }) as Promise<Claimed>;
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), cfg.cluster.claim_timeout_ms)));
        const r = await Promise.race([asked, late]);
        clearTimeout(timer);
        const settle = (x: Claimed): string | null => {
          if (!x || x.error !== undefined) {
            log.error('cluster.claim_failed', { client: clientId, error: x?.error ?? 'no answer' });
            return null;
          }
          owned.set(clientId, { epoch: x.epoch, persistent });
          log.debug('cluster.claimed', { client: clientId, epoch: x.epoch, previous: x.prev?.node ?? null });
          return x.prev && x.prev.node !== cfg.node.name ? x.prev.node : null;
        };
        if (r === 'late') {
          log.warn('cluster.claim_pending', { client: clientId, timeout_ms: cfg.cluster.claim_timeout_ms, detail: 'connecting on local knowledge; the claim goes on' });
          void asked.then((x) => {
            const other = settle(x);
            const w = registry.get(clientId);
            const ws = w === undefined ? undefined : slots[w];
            if (other !== null && ws) {
              log.warn('cluster.claim_conflict', { client: clientId, other, detail: 'the other node ends its copy of the session' });
              post(ws, { type: 'dropRemote', clientId, node: other });
            }
          });
        } else remote = settle(r);
      }
      // Durable node: a session of a worker being restarted is claimed once the new thread
      // has read it back (so the client gets it, not an empty one beside it).
      const back = recovering.get(clientId);
      if (back) await Promise.race([back, new Promise((r) => setTimeout(r, 15_000).unref())]);
      const owner = registry.get(clientId);
      registry.set(clientId, s.id);
      let transfer: SessionTransfer | null = null;
      const o = owner === undefined ? undefined : slots[owner];
      if (o && o !== s && o.state === 'running') {
        transfer = (await ask(o, { type: 'release', reqId: nextReq++, clientId, cleanStart })) as SessionTransfer | null;
      }
      post(s, { type: 'reply', reqId, value: { transfer, remote } satisfies ClaimReply });
    });
  };

  /**
   * Another node owns `clientId` now (ownership moved in etcd already: nothing to release
   * there): the worker holding it hands it over, or ends it (Clean Start), and it is no
   * longer this node's. Runs inside chained().
   */
  const releaseToPeer = async (clientId: string, cleanStart: boolean): Promise<SessionTransfer | null> => {
    const owner = registry.get(clientId);
    const o = owner === undefined ? undefined : slots[owner];
    let transfer: SessionTransfer | null = null;
    if (o && o.state === 'running') transfer = (await ask(o, { type: 'release', reqId: nextReq++, clientId, cleanStart })) as SessionTransfer | null;
    log.debug('cluster.released_to_peer', { client: clientId, worker: owner ?? null, session: transfer !== null });
    registry.delete(clientId);
    owned.delete(clientId);
    return transfer;
  };

  /** Another node took `clientId` over: the worker holding it hands it over (or ends it). */
  const remoteRelease = (s: Slot, reqId: number, clientId: string, cleanStart: boolean): void => {
    chained(clientId, async () => {
      const transfer = await releaseToPeer(clientId, cleanStart);
      post(s, { type: 'reply', reqId, value: transfer });
    });
  };

  const unclaim = (s: Slot, clientId: string): void => {
    chained(clientId, async () => {
      if (registry.get(clientId) !== s.id) return;
      registry.delete(clientId);
      const epoch = owned.get(clientId)?.epoch;
      owned.delete(clientId);
      // Only if nobody claimed it since (the release compares the epoch).
      if (clustered && epoch !== undefined) rep.postMessage({ type: 'release', clientId, epoch } satisfies ToReplicator);
    });
  };

  // The node's lease expired and was replaced (a replicant cut off from its cores, a core
  // from etcd): the ownership keys of its non-persistent sessions went with the old lease.
  // Each is claimed again, unless another node took the client id meanwhile; then the copy
  // here ends (its connection closed with 0x8E), as when a node takes a session over.
  reclaimAll = () => {
    const ids = [...owned].filter(([, o]) => !o.persistent).map(([id]) => id);
    log.info('cluster.sessions_reclaiming', { sessions: ids.length });
    for (const clientId of ids) {
      chained(clientId, async () => {
        if (!owned.has(clientId)) return;
        const x = (await askRep({ type: 'claim', reqId: nextReq++, clientId, persistent: false, keep: true })) as Claimed;
        if (!x || x.error !== undefined) {
          log.error('cluster.reclaim_failed', { client: clientId, error: x?.error ?? 'no answer' });
          return;
        }
        if (x.epoch > 0) {
          owned.set(clientId, { epoch: x.epoch, persistent: false });
          return;
        }
        log.warn('cluster.session_lost_with_lease', { client: clientId, owner: x.prev?.node ?? null, detail: 'another node owns the client id now: the copy here ends' });
        await releaseToPeer(clientId, true);
      });
    }
  };

  const onMessage = (s: Slot, m: FromWorker): void => {
    switch (m.type) {
      case 'log': return log.raw(m.line);
      case 'reply': {
        const f = s.pending.get(m.reqId);
        s.pending.delete(m.reqId);
        f?.(m.value);
        return;
      }
      case 'claim': return claim(s, m.reqId, m.clientId, m.cleanStart, m.persistent);
      case 'remoteRelease': return remoteRelease(s, m.reqId, m.clientId, m.cleanStart);
      case 'unclaim': return unclaim(s, m.clientId);
      default:
        return; // ready / failed / stopped: handled by spawn() and stop()
    }
  };

  /** `held`: a restarted worker's client ids, read back from the store (durable node). */
  const spawn = (s: Slot, retained: [Message, number][], held: string[] | null = null): Promise<void> => {
    // Cluster: a port to the replication thread (peers, retained messages from the cluster).
    let agentPort: MessagePort | null = null;
    if (clustered) {
      const ch = new MessageChannel();
      rep.postMessage({ type: 'workerPort', worker: s.id, port: ch.port1 } satisfies ToReplicator, [ch.port1]);
      agentPort = ch.port2;
    }
    // A worker's first start reads its share of the store (by client id hash); one restarted
    // after a crash reads the sessions its predecessor held.
    const recover = !durable ? null : firstSpawn.delete(s.id) ? { ids: null } : { ids: held ?? [] };
    const data: WorkerData = { id: s.id, plan, trie, cfg, retained, accept, faultInjection, agentPort, recover };
    const w = new Worker(WORKER_URL, { workerData: data, name: `fleetmq-worker-${s.id}`, transferList: agentPort ? [agentPort] : [] });
    s.worker = w;
    w.on('error', (e) => log.error('worker.error', { worker: s.id, error: e }));
    w.on('exit', (code) => void onExit(s, w, code));
    return new Promise<void>((resolve, reject) => {
      const first = (m: FromWorker): void => {
        if (m.type === 'ready') {
          w.off('message', first);
          s.readerSlot = m.slot;
          if (m.recovered) {
            for (const id of m.recovered.ids) registry.set(id, s.id);
            recoveredCounts.push(m.recovered.counts);
          }
          s.state = 'running';
          for (const f of runningWaiters.splice(0)) f();
          resolve();
        } else if (m.type === 'failed') {
          w.off('message', first);
          reject(Object.assign(new Error(m.message), { code: m.code }));
        }
      };
      w.on('message', first);
      w.on('message', (m: FromWorker) => onMessage(s, m));
      w.once('exit', (code) => reject(new Error(`worker ${s.id} exited with code ${code} while starting`)));
    });
  };

  const onExit = async (s: Slot, w: Worker, code: number): Promise<void> => {
    if (s.worker !== w) return;
    s.worker = null;
    for (const f of s.pending.values()) f(null);
    s.pending.clear();
    if (stopping || s.state === 'stopping' || s.state === 'stopped') {
      s.state = 'stopped';
      return;
    }
    const wasStarting = s.state === 'starting';
    s.state = 'restarting';
    if (wasStarting) return; // start-up failure: startWorkerPool reports it
    if (accept.path === 'shared-fd') {
      // Its thread closed the one listening socket that every worker shares (shared-socket.ts):
      // a restarted worker could not listen again, and the others accept nothing more.
      s.state = 'stopped';
      log.error('worker.exited', { worker: s.id, code, sessions_lost: counters[s.id]!.sessions, restart: false });
      opts.onFatal(`worker ${s.id} exited (code ${code}) and the workers share one listening socket ` +
        '(no SO_REUSEPORT addon), which closed with it; stopping the node so that its service manager restarts it');
      return;
    }
    // Its clients are gone with it. Durable node: its sessions are read back from the store
    // by the new thread (those the registry gave it; what it wrote in its last commit window
    // was not acknowledged). Otherwise they were in its memory only: counted as lost.
    const c = counters[s.id]!;
    const lost = durable ? 0 : c.sessions;
    sessionsLost += lost;
    c.sessionsLostOnRestart += lost;
    Atomics.sub(ctl, C_OPEN_CONNECTIONS, c.connectionsOpen);
    for (let i = FIRST_GAUGE; i < COUNTER_SLOTS; i++) c.slots[i] = 0;
    const held: string[] = [];
    for (const [id, owner] of registry) {
      if (owner === s.id) {
        registry.delete(id);
        held.push(id);
      }
    }
    log.error('worker.exited', { worker: s.id, code, sessions_lost: lost, registry_dropped: held.length, ...(durable ? { sessions_to_recover: held.length } : {}) });
    let restarted = (): void => undefined;
    if (durable) {
      const back = new Promise<void>((r) => (restarted = r));
      for (const id of held) recovering.set(id, back);
    }
    const routes = await askRep({ type: 'purge', worker: s.id, slot: s.readerSlot, reqId: nextReq++ });
    s.restarts++;
    const sibling = slots.find((x) => x !== s && x.state === 'running');
    const retained = sibling
      ? ((await ask(sibling, { type: 'retainedSnapshot', reqId: nextReq++ })) as [Message, number][] | null) ?? []
      : [];
    if (stopping) return restarted();
    try {
      await spawn(s, retained, held);
      // Its recovered sessions are routed: their wills (connections the crash cut) may go.
      if (durable) post(s, { type: 'recovered' });
      log.warn('worker.restarted', { worker: s.id, restarts: s.restarts, routes_purged: routes, retained: retained.length, ...(durable ? { sessions_recovered: recoveredCounts.at(-1)?.['sessions'] ?? 0 } : {}) });
    } catch (e) {
      log.error('worker.restart_failed', { worker: s.id, error: e });
    } finally {
      for (const id of held) if (recovering.get(id) !== undefined) recovering.delete(id);
      restarted();
    }
  };

  const stopAll = async (timeoutMs: number): Promise<void> => {
    stopping = true;
    // First, so that the replication thread does not write the routes the workers are about to drop.
    rep.postMessage({ type: 'stopping' } satisfies ToReplicator);
    await Promise.all(slots.map(async (s) => {
      const w = s.worker;
      if (!w) return;
      s.state = 'stopping';
      const exited = new Promise<void>((r) => w.once('exit', () => r()));
      post(s, { type: 'stop', timeoutMs });
      // A worker that does not finish in time is terminated (its uWS sockets may then
      // abort the process; stop() asked first, so this is the last resort).
      const t = setTimeout(() => void w.terminate(), timeoutMs + 3000);
      await exited;
      clearTimeout(t);
    }));
    if (repExited) return;
    const repExit = new Promise<void>((r) => rep.once('exit', () => r()));
    rep.postMessage({ type: 'stop' } satisfies ToReplicator);
    const t = setTimeout(() => void rep.terminate(), 2000);
    await repExit;
    clearTimeout(t);
  };

  try {
    await Promise.all(slots.map((s) => spawn(s, [])));
    if (durable) {
      const sum: Record<string, number> = {};
      for (const c of recoveredCounts) for (const [k, v] of Object.entries(c)) sum[k] = k === 'ms' || k === 'retained' ? Math.max(sum[k] ?? 0, v) : (sum[k] ?? 0) + v;
      log.info('store.recovered', { dir: storeDir(cfg), ...sum, workers: recoveredCounts.length });
      // Every recovered session is routed now: the recovered wills may go.
      for (const s of slots) post(s, { type: 'recovered' });
    }
  } catch (e) {
    await stopAll(1000);
    // The shared sockets (if any) stay as they are: a worker that adopted one closed its fd
    // when it ended, and closing the number again could close an unrelated file.
    throw e;
  }

  // ---- probes -------------------------------------------------------------------------
  const askAll = async <T>(query: ProbeQuery): Promise<T[]> => {
    const live = slots.filter((s) => s.state === 'running');
    const answers = await Promise.all(live.map((s) => ask(s, { type: 'probe', reqId: nextReq++, query })));
    return answers.filter((x) => x !== null) as T[];
  };
  const sum = new CountersSum(() => counters);
  const probe: NodeProbe = {
    counters: readerOf(sum),
    connectionCount: () => sum.get('connectionsOpen'),
    session: async (clientId) => {
      const all = await askAll<SessionInfo>({ q: 'session', clientId });
      return all.find((x) => x.connected) ?? all[0] ?? null;
    },
    sessionIds: async () => (await askAll<string[]>({ q: 'sessionIds' })).flat(),
    clients: async () => (await askAll<ConnInfo[]>({ q: 'clients' })).flat(),
    // Every worker holds a replica; one answer is the node's.
    retained: async (filter) => (await askAll<RetainedInfo[]>({ q: 'retained', filter }))[0] ?? [],
    groupMembers: async (filter, group) => (await askAll<string[]>({ q: 'groupMembers', filter, group })).flat(),
    clientRows: () => [askAll<unknown[]>({ q: 'apiClients' }).then((x) => x.flat())],
  };

  return {
    plan, probe, counters,
    accept: accept.path,
    forwarding: async () => summarizeForwarding(await askAll<PeerForwardStats[]>({ q: 'forwardStats' })),
    async stats() {
      const snap = sum.snapshot();
      const workers: WorkerStats[] = slots.map((s) => {
        const c = counters[s.id]!;
        return {
          id: s.id, state: s.state, restarts: s.restarts, threadId: s.worker?.threadId ?? null,
          connections: c.connected, connectionsOpen: c.connectionsOpen, sessions: c.sessions,
          subscriptions: c.subscriptions, messagesReceived: c.messagesReceived, messagesSent: c.messagesSent,
          forwardedOut: c.forwardedOut, forwardedIn: c.forwardedIn, droppedRingFull: c.droppedRingFull,
          forwardPaused: c.forwardPaused,
        };
      });
      const trieStats = await Promise.race([
        askRep({ type: 'stats', reqId: nextReq++ }),
        new Promise((r) => setTimeout(() => r(null), 1000).unref()),
      ]);
      return {
        connections: snap['connected'], sessions: snap['sessions'], subscriptions: snap['subscriptions'],
        retained: Math.max(0, ...counters.map((c) => c.retainedStored)),
        ...snap,
        sessionsLostOnRestart: sessionsLost,
        workerRestarts: slots.reduce((a, s) => a + s.restarts, 0),
        registry: registry.size,
        workers,
        trie: trieStats,
      };
    },
    injectReplicatorFault() {
      if (faultInjection) rep.postMessage({ type: 'fault' } satisfies ToReplicator);
    },
    injectFault(id, how, ms) {
      const s = slots[id];
      if (s) post(s, ms === undefined ? { type: 'fault', how } : { type: 'fault', how, ms });
    },
    whenRunning(id, restarts) {
      return new Promise<void>((resolve) => {
        const check = (): void => {
          const s = slots[id];
          if (s && s.state === 'running' && s.restarts >= restarts) resolve();
          else runningWaiters.push(check);
        };
        check();
      });
    },
    stop: stopAll,
    cluster(q, timeoutMs = 5000) {
      return Promise.race([
        askRep({ ...q, reqId: nextReq++ } as ToReplicator & { reqId: number }),
        new Promise((r) => setTimeout(() => r(null), timeoutMs).unref()),
      ]);
    },
    async abort() {
      stopping = true;
      const exits = slots.map((s) => {
        const w = s.worker;
        if (!w) return Promise.resolve();
        const p = new Promise<void>((r) => w.once('exit', () => r()));
        post(s, { type: 'abort' });
        return p;
      });
      await Promise.race([Promise.all(exits), new Promise((r) => setTimeout(r, 1000))]);
    },
  };
}

/**
 * Picks the accept path of the TCP / TLS listeners: a socket per worker in an SO_REUSEPORT
 * group when the addon loads (even spread), else one socket bound here that every worker
 * adopts (shared-socket.ts; uneven spread, measured in docs/workers.md), with one warning
 * that names the cause and the fix. WebSocket listeners do not need the addon (uWS sets
 * SO_REUSEPORT itself).
 */
async function chooseAccept(cfg: Config, log: Logger): Promise<SharedAccept> {
  const net: { name: 'mqtt' | 'mqtts' | 'forward'; port: number }[] = mqttPorts(cfg).filter((x): x is { name: 'mqtt' | 'mqtts'; port: number } => x.name === 'mqtt' || x.name === 'mqtts');
  // The forward port of a clustered node is shared by the workers the same way.
  if (cfg.cluster.role !== 'none') net.push({ name: 'forward', port: cfg.cluster.forward_port });
  if (net.length === 0) return { path: 'reuseport', fds: {} };
  const avail = reusePortAvailability();
  if (avail.ok) return { path: 'reuseport', fds: {} };
  log.warn('accept.reuseport_unavailable', {
    cause: avail.cause, fix: avail.fix, accept: 'shared-fd',
    detail: 'the worker threads share one listening socket: connections spread unevenly over them, and a worker that dies stops the node',
  });
  const sockets: SharedSocket[] = [];
  const fds: SharedAccept['fds'] = {};
  try {
    for (const { name, port } of net) {
      const s = await bindSharedSocket(name, cfg.listeners.bind, port);
      sockets.push(s);
      fds[name] = s.fd;
    }
  } catch (e) {
    for (const s of sockets) s.close();
    throw e;
  }
  return { path: 'shared-fd', fds };
}

