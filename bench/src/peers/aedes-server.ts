// A minimal Aedes broker for the peer comparison (bench/src/compare): node:net with
// TCP_NODELAY, in-memory persistence, anonymous clients, on 127.0.0.1.
//
//   node bench/dist/peers/aedes-server.js --config FILE    (JSON: host, port, queueLimit, ...)
//   node bench/dist/peers/aedes-server.js --port N [--host H]
//
// Prints one line `{"msg":"aedes.ready","port":N,"version":"1.2.0","pid":P}` on stdout once
// listening; errors go to stderr. SIGTERM / SIGINT close the broker and exit 0.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer, type Socket } from 'node:net';
import { dirname, join } from 'node:path';

interface AedesServerConfig {
  host: string;
  port: number;
  queueLimit: number;
  heartbeatInterval: number;
  concurrency: number;
  noDelay: boolean;
}

function parseArgs(argv: string[]): AedesServerConfig {
  const cfg: AedesServerConfig = { host: '127.0.0.1', port: 1883, queueLimit: 1000, heartbeatInterval: 3_600_000, concurrency: 100, noDelay: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    if (a === '--config' && v !== undefined) {
      Object.assign(cfg, JSON.parse(readFileSync(v, 'utf8')) as Partial<AedesServerConfig>);
      i++;
    } else if (a === '--port' && v !== undefined) {
      cfg.port = Number(v);
      i++;
    } else if (a === '--host' && v !== undefined) {
      cfg.host = v;
      i++;
    } else {
      process.stderr.write(`aedes-server: unknown argument ${String(a)}\n`);
      process.exit(2);
    }
  }
  return cfg;
}

async function main(): Promise<void> {
  const cfg = parseArgs(process.argv.slice(2));
  const { Aedes } = await import('aedes');
  const require = createRequire(import.meta.url);
  const pkgPath = join(dirname(require.resolve('aedes')), 'package.json');
  const version = (JSON.parse(readFileSync(pkgPath, 'utf8')) as { version: string }).version;
  const broker = await Aedes.createBroker({
    queueLimit: cfg.queueLimit,
    heartbeatInterval: cfg.heartbeatInterval,
    concurrency: cfg.concurrency,
  });
  let errors = 0;
  broker.on('clientError', (_client, err) => {
    // Client errors (resets when a generator stops) are normal; report the first few only.
    if (++errors <= 5) process.stderr.write(`aedes-server: client error: ${err.message}\n`);
  });
  const server = createServer({ noDelay: cfg.noDelay }, (socket: Socket) => {
    if (cfg.noDelay) socket.setNoDelay(true);
    broker.handle(socket);
  });
  server.on('error', (err) => {
    process.stderr.write(`aedes-server: ${err.message}\n`);
    process.exit(1);
  });
  server.listen(cfg.port, cfg.host, () => {
    process.stdout.write(JSON.stringify({ msg: 'aedes.ready', host: cfg.host, port: cfg.port, version, pid: process.pid }) + '\n');
  });
  let closing = false;
  const stop = (): void => {
    if (closing) process.exit(0);
    closing = true;
    const force = setTimeout(() => process.exit(0), 2000);
    force.unref();
    server.close();
    broker.close(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((e: unknown) => {
  process.stderr.write(`aedes-server: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exit(1);
});
