#!/usr/bin/env bash
# Prepares a clone for `npm test` (run by `npm run test:all`), on Debian 12 or similar:
#   1. installs the Debian packages the tests use, only those missing (scripts/system-deps.sh);
#   2. installs the npm dependencies of the broker and of the bench/ workspace (`npm ci`,
#      which also builds the SO_REUSEPORT addon; built again here, strictly, if that failed:
#      the tests need it);
#   3. builds the broker, the tests and the load tools (tsc), and the C load generator.
# Node.js 20 and npm must already be installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'test-setup: %s\n' "$*" >&2; }

bash scripts/system-deps.sh

major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$major" = 20 ] || say "warning: Node.js $(node --version) found; fleetmq is built and tested on Node.js 20"

if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm install --no-audit --no-fund
fi
# npm ci's install step builds the addon but does not fail when it cannot; the tests need it.
[ -f native/reuseport/build/Release/reuseport.node ] || npm run build:reuseport
npm run build:all
make -s -C native-bench
