// A scratch directory for a test file (or describe block).
import { after, before } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TempDir {
  /** The directory (set once the `before` hook ran). */
  readonly path: string;
  /** A path inside the directory. */
  file(name: string): string;
}

/** A fresh directory `<os tmp>/<prefix>XXXXXX`, made in `before` and removed in `after`. */
export function tempDir(prefix: string): TempDir {
  let path = '';
  before(() => {
    path = mkdtempSync(join(tmpdir(), prefix));
  });
  after(() => {
    if (path) rmSync(path, { recursive: true, force: true });
  });
  return {
    get path() {
      return path;
    },
    file: (name: string): string => join(path, name),
  };
}
