#!/usr/bin/env node
// npm's `install` step (it runs at `npm ci` / `npm install`, in a clone and in an installed
// package): builds native/reuseport/build/Release/reuseport.node, the SO_REUSEPORT addon
// (docs/accept.md), with node-gyp, offline.
//
// The addon is optional: without it the node accepts TCP/TLS connections on one listening
// socket shared by its worker threads (uneven spread, docs/workers.md). So a failed build
// does not fail the install: the cause is written to native/reuseport/build-status.json,
// which the broker reads to name the cause and the fix in its start-up warning, and to
// stderr (npm shows it with --foreground-scripts). `--strict` (npm run build:reuseport)
// exits 1 instead. FLEETMQ_SKIP_ADDON=1 skips the build (and records that).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const ADDON_DIR = resolve(HERE, '..', 'native', 'reuseport');
const STATUS_FILE = join(ADDON_DIR, 'build-status.json');
const OUTPUT = join(ADDON_DIR, 'build', 'Release', 'reuseport.node');
const strict = process.argv.includes('--strict');
const FIX = 'install make, g++ and python3 (Debian: apt-get install -y make g++ python3), then run `npm run build:reuseport`';

function record(ok, cause) {
  try {
    writeFileSync(STATUS_FILE, JSON.stringify({ ok, cause, node: process.version, at: new Date().toISOString() }) + '\n');
  } catch {
    /* read-only install: the broker then says only that the addon is missing */
  }
}

function finish(ok, cause) {
  record(ok, cause);
  if (ok) {
    process.stderr.write(`fleetmq: built ${OUTPUT}\n`);
    process.exit(0);
  }
  process.stderr.write(
    `fleetmq: the SO_REUSEPORT addon was not built: ${cause}.\n` +
      '  The broker still starts; its worker threads then share one listening socket (uneven accept spread).\n' +
      `  Fix: ${FIX}.\n`,
  );
  process.exit(strict ? 1 : 0);
}

function onPath(cmd) {
  if (cmd.includes('/')) return existsSync(cmd);
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, cmd))) return true;
  }
  return false;
}

/** node-gyp's entry script: npm's own copy (npm sets npm_config_node_gyp in its scripts). */
function findNodeGyp() {
  const fromNpm = process.env.npm_config_node_gyp;
  if (fromNpm && existsSync(fromNpm)) return fromNpm;
  const prefix = resolve(dirname(process.execPath), '..');
  for (const p of [
    join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    join(prefix, 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ]) {
    if (existsSync(p)) return p;
  }
  return null;
}

if (process.env.FLEETMQ_SKIP_ADDON === '1') finish(false, 'skipped (FLEETMQ_SKIP_ADDON=1)');
if (process.platform !== 'linux') finish(false, `the addon is Linux-only (platform ${process.platform})`);

const missing = ['make', 'python3'].filter((c) => !onPath(c));
const cxx = process.env.CXX || 'g++';
if (!onPath(cxx)) missing.push(cxx);
if (missing.length > 0) finish(false, `${missing.join(', ')} not found on PATH`);

const gyp = findNodeGyp();
if (gyp === null) finish(false, 'node-gyp not found (it ships with npm; run the install with npm)');

const args = [gyp, 'rebuild'];
// Build against the headers installed with Node (offline): without a nodedir node-gyp
// downloads them. npm's own `nodedir` setting, when set, wins (node-gyp reads it).
const nodePrefix = resolve(dirname(process.execPath), '..');
if (!process.env.npm_config_nodedir && existsSync(join(nodePrefix, 'include', 'node', 'node_api.h')) &&
  existsSync(join(nodePrefix, 'include', 'node', 'common.gypi'))) {
  args.push(`--nodedir=${nodePrefix}`);
}
mkdirSync(ADDON_DIR, { recursive: true });
rmSync(OUTPUT, { force: true });
const r = spawnSync(process.execPath, args, { cwd: ADDON_DIR, encoding: 'utf8', timeout: 180_000 });
if (r.status === 0 && existsSync(OUTPUT)) finish(true, null);
const out = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n');
const errLine = out.filter((l) => /error/i.test(l)).slice(0, 3).join(' | ') || out.slice(-3).join(' | ');
finish(false, r.error ? `node-gyp did not run: ${r.error.message}` : `node-gyp failed (exit ${r.status}): ${errLine.slice(0, 400)}`);
