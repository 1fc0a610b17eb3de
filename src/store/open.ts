// The node's crash-safe local store (docs/durability.md): one LMDB environment under
// <data-dir>/store, opened by every engine thread of the node (LMDB serialises writers
// across threads). Its first key is a header naming the format: a store without it that
// holds keys, or one of another format or version, is refused, as is one LMDB cannot open —
// never emptied to start afresh.
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { open, type RootDatabase } from 'lmdb';

export const STORE_FORMAT = 'fleetmq-store';
export const STORE_VERSION = 1;
const HEADER_KEY = ['h'];

export class StoreError extends Error {
  constructor(readonly code: 'STORE_CORRUPT' | 'STORE_FOREIGN' | 'STORE_VERSION' | 'STORE_OPEN_FAILED', message: string) {
    super(message);
    this.name = 'StoreError';
  }
}

export interface StoreOptions {
  /** LMDB's commitDelay (0: the writes of each event-loop turn commit at once; Journal keeps its own group-commit window). */
  commitDelayMs: number;
}

/** Opens (or creates) the store in `dir`; throws a StoreError naming the path when it cannot be used. */
export function openStore(dir: string, o: StoreOptions): RootDatabase {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const hasData = existsSync(join(dir, 'data.mdb'));
  if (!hasData) {
    const other = readdirSync(dir).filter((f) => f !== 'lock.mdb');
    if (other.length > 0) throw new StoreError('STORE_FOREIGN', `store ${dir}: holds files that are not an LMDB store (${other.slice(0, 3).join(', ')}): refusing to use it; point node.data_dir elsewhere or empty it`);
  }
  if (hasData) checkLmdbHeader(join(dir, 'data.mdb'), dir);
  let db: RootDatabase;
  try {
    // Shared structures: msgpack records whose property names are stored once (faster to
    // decode, smaller); kept under a symbol key, outside the array keys of the layout.
    db = open({ path: dir, commitDelay: o.commitDelayMs, compression: false, mapSize: 2 * 1024 ** 3, sharedStructuresKey: Symbol.for('fleetmq.structures') });
  } catch (e) {
    throw new StoreError(hasData ? 'STORE_CORRUPT' : 'STORE_OPEN_FAILED', `store ${dir}: cannot be opened (${(e as Error).message})${hasData ? ': it may be corrupt; move it away to start with an empty store' : ''}`);
  }
  let header: unknown;
  try {
    header = db.get(HEADER_KEY);
    if (header === undefined) {
      for (const { key } of db.getRange({ limit: 1 })) {
        void db.close();
        throw new StoreError('STORE_FOREIGN', `store ${dir}: an LMDB store without a fleetmq header (first key ${JSON.stringify(key)}): refusing to use it`);
      }
      db.putSync(HEADER_KEY, { format: STORE_FORMAT, version: STORE_VERSION, created: Date.now() });
      return db;
    }
  } catch (e) {
    if (e instanceof StoreError) throw e;
    void db.close();
    throw new StoreError('STORE_CORRUPT', `store ${dir}: cannot be read (${(e as Error).message}): it may be corrupt; move it away to start with an empty store`);
  }
  const h = header as { format?: unknown; version?: unknown };
  if (h === null || typeof h !== 'object' || h.format !== STORE_FORMAT) {
    void db.close();
    throw new StoreError('STORE_FOREIGN', `store ${dir}: its header is not a fleetmq store's (${JSON.stringify(header)}): refusing to use it`);
  }
  if (h.version !== STORE_VERSION) {
    void db.close();
    throw new StoreError('STORE_VERSION', `store ${dir}: format version ${String(h.version)}, this fleetmq reads version ${STORE_VERSION}`);
  }
  return db;
}

/** LMDB's meta page magic (MDB_MAGIC) and data format version (MDB_DATA_VERSION of lmdb-js's LMDB). */
const MDB_MAGIC = 0xbeefc0de;
const MDB_DATA_VERSION = 2;

/**
 * The first meta page must carry LMDB's magic and version before LMDB maps the file: lmdb-js
 * dies with SIGSEGV on some files that are not LMDB data (a crash, not an error we can name).
 * Deeper damage (a torn B-tree page) is not looked for here.
 */
function checkLmdbHeader(file: string, dir: string): void {
  const b = Buffer.alloc(32);
  let n = 0;
  const fd = openSync(file, 'r');
  try {
    n = readSync(fd, b, 0, 32, 0);
  } finally {
    closeSync(fd);
  }
  if (n < 32 || b.readUInt32LE(24) !== MDB_MAGIC) {
    throw new StoreError('STORE_CORRUPT', `store ${dir}: data.mdb is not an LMDB file (no meta page magic): it may be corrupt; move it away to start with an empty store`);
  }
  if (b.readUInt32LE(28) !== MDB_DATA_VERSION) {
    throw new StoreError('STORE_VERSION', `store ${dir}: LMDB data version ${b.readUInt32LE(28)}, this build reads version ${MDB_DATA_VERSION}`);
  }
}
