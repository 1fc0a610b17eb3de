// Recovery time of a durable node (docs/durability.md): a store holding S persistent
// sessions (one subscription each) and M queued QoS 1 messages spread over them is written
// with the broker's own store module, then a node is started on it
// (`--durability batch`) and timed from spawn to GET /status 200; the node's own
// `store.recovered` line gives the time spent reading the store. Then one session is
// taken up by a real client to check that its messages are there.
//
//   node bench/dist/recovery.js [--sessions 100000] [--messages 1000000] [--workers 2] [--payload 64]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, ROOT } from './compare/brokers.js';
import { installSignalHandlers, startChild, stopAll, stopChild } from './compare/children.js';
import { list, num } from './local.js';
import { Conn } from './load-conn.js';
import { encodeConnect } from './mqtt.js';

interface StoreDb {
  put(key: unknown[], value: unknown): Promise<boolean>;
  transaction(f: () => void): Promise<unknown>;
  flushed: Promise<boolean>;
  close(): Promise<void>;
}

const say = (msg: string): void => {
  process.stderr.write(`[recovery-bench] ${msg}\n`);
};

async function main(argv: string[]): Promise<number> {
  const sessions = num(argv, '--sessions', 100_000);
  const messages = num(argv, '--messages', 1_000_000);
  const workers = Number(list(argv, '--workers', '2')[0]);
  if (!Number.isInteger(workers) || workers < 0) throw new Error('--workers: an integer >= 0 (0: the inline node)');
  const payloadBytes = num(argv, '--payload', 64);
  installSignalHandlers(() => undefined);
  const dir = mkdtempSync(join(tmpdir(), 'fleetmq-recovery-'));
  try {
    // The broker's own store module: the same header and layout a node writes.
    const { openStore } = (await import(join(ROOT, 'dist/src/store/open.js'))) as { openStore: (d: string, o: { commitDelayMs: number }) => StoreDb };
    const db = openStore(join(dir, 'store'), { commitDelayMs: 0 });
    const t0 = Date.now();
    const payload = Buffer.alloc(payloadBytes, 0x61);
    const perSession = Math.floor(messages / sessions);
    let extra = messages - perSession * sessions;
    const BATCH = 2000;
    let written = 0;
    for (let s0 = 0; s0 < sessions; s0 += BATCH) {
      await db.transaction(() => {
        for (let s = s0; s < Math.min(sessions, s0 + BATCH); s++) {
          const id = `rec-${s}`;
          void db.put(['s', id], {
            expiry: 86_400, nextId: 1, q2: [], off: Date.now(),
            subs: [{ clientId: id, key: `rec/${s}/#`, filter: `rec/${s}/#`, group: null, qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0, subscriptionId: undefined }],
          });
          const n = perSession + (extra > 0 ? 1 : 0);
          if (extra > 0) extra--;
          for (let i = 1; i <= n; i++) {
            void db.put(['m', id, i], {
              d: { msg: { topic: `rec/${s}/m`, payload, qos: 1, retain: false, from: 'bench', props: undefined, expiresAt: 0 }, qos: 1, retain: false, subIds: undefined, shared: undefined },
              pid: 0, st: 0,
            });
          }
          written += n;
        }
      });
      if ((s0 / BATCH) % 10 === 0) say(`store: ${Math.min(sessions, s0 + BATCH)} sessions, ${written} messages written`);
    }
    await db.flushed;
    await db.close();
    say(`store written: ${sessions} sessions, ${written} messages in ${Date.now() - t0} ms`);

    const mqttPort = await freePort();
    const httpPort = await freePort();
    const spawnAt = Date.now();
    const node = startChild('fleetmq', process.execPath, [
      join(ROOT, 'dist/src/cli/main.js'), 'start', '--bind', '127.0.0.1', '--mqtt-port', String(mqttPort), '--http-port', String(httpPort),
      '--ws-port', '0', '--mqtts-port', '0', '--wss-port', '0', '--workers', String(workers), '--data-dir', dir, '--durability', 'batch', '--log-level', 'info',
    ]);
    let recoveredLine = '';
    let out = '';
    const onOut = (d: Buffer): void => {
      out += d.toString();
      const m = /\{[^\n]*"store\.recovered"[^\n]*\}/.exec(out);
      if (m && recoveredLine === '') recoveredLine = m[0];
    };
    node.proc.stdout?.on('data', onOut);
    node.proc.stderr?.on('data', onOut);
    let readyMs = -1;
    while (Date.now() - spawnAt < 120_000) {
      if (node.exit) throw new Error(`the node exited ${JSON.stringify(node.exit)}:\n${out.slice(-2000)}`);
      try {
        const r = await fetch(`http://127.0.0.1:${httpPort}/status`, { signal: AbortSignal.timeout(1000) });
        if (r.status === 200) {
          readyMs = Date.now() - spawnAt;
          break;
        }
      } catch {
        /* not yet */
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    if (readyMs < 0) throw new Error('the node did not answer /status 200 within 120 s');
    const rss = await fetch(`http://127.0.0.1:${httpPort}/api/v1/stats`).then((r) => r.json() as Promise<Record<string, unknown>>).catch(() => ({}));
    // One session taken up by a real client (clean session 0): its messages come.
    const c = new Conn(mqttPort);
    await new Promise<void>((r, reject) => {
      c.sock.once('connect', () => r());
      c.sock.once('error', reject);
    });
    let got = 0;
    c.onPublish = () => void got++; // Conn acknowledges QoS 1 itself
    const ack = c.next(2, 'CONNACK');
    c.sock.write(encodeConnect({ V: 4, clientId: 'rec-0', clean: false, keepalive: 0, username: null, password: null, sessionExpiry: 0 }));
    const connack = await ack;
    const present = (connack[2]! & 1) === 1;
    const want = perSession + (messages - perSession * sessions > 0 ? 1 : 0);
    const until = Date.now() + 5000;
    while (got < want && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    c.sock.destroy();
    const rec = recoveredLine ? (JSON.parse(recoveredLine) as Record<string, unknown>) : {};
    say(`node ready ${readyMs} ms after spawn; store.recovered ${JSON.stringify(rec)}`);
    say(`session rec-0: present=${present}, ${got}/${want} messages received`);
    process.stdout.write(JSON.stringify({ sessions, messages: written, workers, ready_ms: readyMs, recovered: rec, check: { present, got, want }, stats: rss }) + '\n');
    await stopChild(node);
    return got === want && present ? 0 : 1;
  } finally {
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

main(process.argv.slice(2)).then((code) => process.exit(code), (e: unknown) => {
  process.stderr.write(`[recovery-bench] ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
