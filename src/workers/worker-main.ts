// A connection worker thread: one broker engine with its own listeners (sharing the node's
// ports), its clients and their sessions, attached to the shared trie and rings by a Fabric.
import { parentPort, workerData } from 'node:worker_threads';
import { createAuthorizer } from '../auth/authorizer.js';
import { Broker } from '../broker/broker.js';
import type { SessionTransfer } from '../broker/transfer.js';
import { attachJournal, openEngineStore, restoreSessions, scheduleWills } from '../store/engine-store.js';
import { recoverStore, type Recovered } from '../store/recovery.js';
import { shareOf } from '../store/share.js';
import { reviveMessage } from '../broker/transfer.js';
import { Logger } from '../log/logger.js';
import { Counters } from '../metrics/counters.js';
import { startMqttListeners } from '../runtime/engine.js';
import { answerProbe } from '../runtime/probe.js';
import { loadUws } from '../transport/uws.js';
import type { Listener } from '../transport/types.js';
import { Fabric } from './fabric.js';
import type { FromWorker, FromWorkerRequest, ToWorker, WorkerData } from './protocol.js';
import type { ClaimReply } from './supervisor.js';
import type { AgentToWorker } from '../cluster/agent.js';
import { Forwarder } from '../cluster/forwarder.js';
import { GroupOnline } from '../cluster/group-online.js';
import type { WorkerToAgent } from './replicator.js';
import { listenNetServer } from '../transport/tcp.js';
import { randomBytes } from 'node:crypto';

const port = parentPort!;
const data = workerData as WorkerData;
const { id, plan, cfg } = data;
const send = (m: FromWorker): void => port.postMessage(m);
const log = new Logger(cfg.log.level, { node: cfg.node.name, worker: id }, (line) => send({ type: 'log', line }));

let listeners: Listener[] = [];
let uwsClosed = false;

/**
 * With this uWebSockets.js build a thread that ends while it holds a uWS socket aborts the
 * whole process (uv_loop_close with open handles): close every uWS listener and socket
 * first, synchronously, on every way out.
 */
function closeUwsNow(): void {
  if (uwsClosed) return;
  uwsClosed = true;
  for (const l of listeners) if (l.name === 'ws' || l.name === 'wss') void l.close();
}
const realExit = process.exit.bind(process);
process.exit = ((code?: number) => {
  closeUwsNow();
  realExit(code);
}) as typeof process.exit;
process.on('uncaughtException', (e) => {
  log.error('worker.crashed', { error: e, stack: e instanceof Error ? e.stack : undefined });
  closeUwsNow();
  realExit(70);
});

async function main(): Promise<void> {
  const { uws } = loadUws({ allowFallback: cfg.node.allow_uws_fallback, log });
  const auth = await createAuthorizer({ ...cfg.auth, cn_as_username: cfg.listeners.tls.cn_as_username }, log);
  const broker = new Broker(cfg, log, auth, new Counters(plan.counters[id]!));
  // $SYS is published once per node, by worker 0, with node-wide figures.
  broker.sysEnabled = id === 0;
  broker.nodeCounters = plan.counters.map((sab) => new Counters(sab));
  const pending = new Map<number, (v: unknown) => void>();
  let nextReq = 1;
  const askMain = <T>(m: FromWorkerRequest): Promise<T> => new Promise((resolve) => {
    const reqId = nextReq++;
    pending.set(reqId, resolve as (v: unknown) => void);
    send({ ...m, reqId } as FromWorker);
  });
  // Cluster: the forward channel (its own incarnation: a restarted worker numbers its
  // messages from 1 again, under a new key at the receivers).
  let forwarder: Forwarder | null = null;
  const agentPort = data.agentPort;
  const groupOnline = new GroupOnline();
  if (agentPort) {
    const fwdInc = `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
    forwarder = new Forwarder({
      cfg, worker: id, incarnation: () => fwdInc, dedupe: plan.dedupe, log,
      deliver: (m, nonShared, groups) => broker.receiveRemote(m, nonShared, groups),
      release: (clientId, cleanStart) => askMain<SessionTransfer | null>({ type: 'remoteRelease', clientId, cleanStart }),
      counters: broker.counters,
    });
    agentPort.on('message', (m: AgentToWorker) => {
      if (m.type === 'peers') forwarder!.setPeers(m.peers);
      else if (m.type === 'groupOnline') groupOnline.apply(m.entries);
      else if (m.type === 'retained' && broker.retained.set(reviveMessage(m.msg), m.seq)) broker.counters.retainedStored = broker.retained.size;
    });
  }
  const fabric = new Fabric({
    id, plan, trie: data.trie, broker, log,
    ask: (m) => askMain<ClaimReply>(m),
    tell: (m) => send(m),
    ...(forwarder && agentPort ? { cluster: { forwarder, toAgent: (m: WorkerToAgent) => agentPort.postMessage(m), groupOnline } } : {}),
  });
  broker.router = fabric;
  broker.gate = fabric.gate();
  for (const [m, seq] of data.retained) broker.retained.set(reviveMessage(m), seq);
  broker.counters.retainedStored = broker.retained.size;
  // Durable node: this worker's own handle on the store, and its share of the recovered
  // sessions (routed before the worker says it is ready).
  const store = openEngineStore(cfg);
  if (store) attachJournal(broker, store);
  fabric.start();
  let recovered: Recovered | null = null;
  if (store && data.recover) {
    // This worker's share of the sessions, routed before the worker says it is ready.
    const ids = data.recover.ids === null ? null : new Set(data.recover.ids);
    recovered = await recoverStore(store, Date.now(), ids === null ? (clientId) => shareOf(clientId, plan.workers) === id : (clientId) => ids.has(clientId));
    restoreSessions(broker, recovered.sessions);
    for (const m of recovered.retained) broker.retained.set(reviveMessage(m), 1);
    broker.counters.retainedStored = broker.retained.size;
    const routed = fabric.sync();
    if (routed !== null) await routed;
  }

  let stopping: Promise<void> | null = null;
  port.on('message', (m: ToWorker) => {
    switch (m.type) {
      case 'reply': {
        const f = pending.get(m.reqId);
        pending.delete(m.reqId);
        f?.(m.value);
        return;
      }
      case 'release': {
        const value = broker.handOver(m.clientId, m.cleanStart);
        // Durable node: what this worker wrote of the session is on disk before the new
        // owner writes it (LMDB commits each thread's batch on its own).
        broker.journal?.flushNow();
        const flushed = broker.journal?.barrier() ?? null;
        if (flushed === null) send({ type: 'reply', reqId: m.reqId, value });
        else void flushed.then(() => send({ type: 'reply', reqId: m.reqId, value }));
        return;
      }
      case 'dropRemote':
        void forwarder?.takeover(m.node, m.clientId, true);
        return;
      case 'probe':
        send({ type: 'reply', reqId: m.reqId, value: m.query.q === 'forwardStats' ? forwarder?.stats() ?? [] : answerProbe(broker, id, m.query) });
        return;
      case 'retainedSnapshot':
        send({ type: 'reply', reqId: m.reqId, value: broker.retained.entries() });
        return;
      case 'fault':
        if (!data.faultInjection) return;
        if (m.how === 'exit') process.exit(3);
        if (m.how === 'stall') {
          // Blocks this thread (no socket, no ring is served meanwhile): fills the rings to it.
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, m.ms ?? 1000);
          return;
        }
        setImmediate(() => {
          throw new Error('injected fault');
        });
        return;
      case 'abort':
        closeUwsNow();
        realExit(1);
        return;
      case 'recovered':
        // Every worker has its sessions routed: the wills recovered with this worker's share go now.
        if (recovered) scheduleWills(broker, recovered.wills);
        return;
      case 'stop':
        stopping ??= (async () => {
          await broker.stop(m.timeoutMs);
          // What the sessions wrote as their connections closed is on disk before the thread ends.
          broker.journal?.flushNow();
          await broker.journal?.barrier();
          await store?.close();
          closeUwsNow();
          for (const l of listeners.splice(0).reverse()) await l.close().catch(() => undefined);
          await fabric.stop();
          await forwarder?.close();
          agentPort?.close();
          await auth.close();
          send({ type: 'stopped' });
          port.close();
        })();
        return;
    }
  });

  try {
    listeners = await startMqttListeners(cfg, log, uws, broker, data.accept);
    if (forwarder) {
      const fd = data.accept.fds.forward;
      listeners.push(await listenNetServer(forwarder.serverOf(), {
        name: 'forward', bind: cfg.listeners.bind, port: cfg.cluster.forward_port, log,
        ...(data.accept.path === 'shared-fd' && fd !== undefined ? { fd } : { reusePort: true }),
      }));
    }
  } catch (e) {
    const err = e as Error & { code?: string };
    send({ type: 'failed', message: err.message, code: err.code });
    await fabric.stop();
    await auth.close();
    port.close();
    return;
  }
  broker.start();
  send({
    type: 'ready', slot: fabric.readerSlot,
    ...(recovered ? { recovered: { ids: recovered.sessions.map((r) => r.clientId), counts: { ...recovered.counts, retained: recovered.retained.length } } } : {}),
  });
}

void main().catch((e: unknown) => {
  const err = e as Error & { code?: string };
  send({ type: 'failed', message: err.message, code: err.code });
  closeUwsNow();
  realExit(1);
});
