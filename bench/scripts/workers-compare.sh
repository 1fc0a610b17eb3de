#!/usr/bin/env bash
# The issue-4 runs behind benchmark.md ("Worker-threaded node"): fleetmq with 2 connection
# workers (the default on this 2-core machine) against Mosquitto and Aedes, native
# generator, 3 alternating rounds each; then the cross-worker cost. ~15 minutes; needs a
# quiet machine. Results: bench/results/<date>-<scenario>-native*.{json,md,svg}
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=${OUT:-bench/results}
W=${WORKERS:-2}
run() { node bench/dist/compare/cli.js "$@" --workers "$W" --generator native --out "$OUT"; }
run p2p -c 100 -q 0 -s 64 -I 0 --window 10 --duration 8 --warmup 2
run p2p -c 100 -q 0 -s 64 -I 5 --window 100 --duration 8 --warmup 2   # fixed 20k msg/s
run p2p -c 100 -q 1 -F 10 -s 64 -I 0 --window 10 --duration 8 --warmup 2
run fanout --pubs 5 --subs 500 -q 0 -s 64 -I 0 --window 10 --duration 8 --warmup 2
node bench/dist/cross-worker.js --workers "$W" --rounds 5 --json "$OUT/$(date -u +%F)-cross-worker.json" | tee "$OUT/$(date -u +%F)-cross-worker.md"
