#!/usr/bin/env bash
# The runs behind benchmark.md: every scenario, all three brokers, both generators,
# 3 alternating rounds each. Takes ~40 minutes on a 2-core machine; needs a quiet
# machine (nothing else running). Results: bench/results/<date>-<scenario>-<gen>.{json,md,svg}
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT=${OUT:-bench/results}
GENS=${GENS:-"native ts"}
run() { node bench/dist/compare/cli.js "$@" --out "$OUT"; }
for g in $GENS; do
  run p2p -c 100 -q 0 -s 64 -I 0 --window 10 --duration 8 --warmup 2 --generator "$g"
  run p2p -c 100 -q 0 -s 64 -I 5 --window 100 --duration 8 --warmup 2 --generator "$g"   # fixed 20k msg/s
  run p2p -c 100 -q 1 -F 10 -s 64 -I 0 --window 10 --duration 8 --warmup 2 --generator "$g"
  run fanout --pubs 5 --subs 500 -q 0 -s 64 -I 0 --window 10 --duration 8 --warmup 2 --generator "$g"
  run fanin-shared --pubs 100 --subs 10 -q 0 -s 64 -I 0 --window 10 --duration 8 --warmup 2 --generator "$g"
  run wildcard-scale -c 1000 -q 0 -s 64 -I 100 --duration 8 --warmup 2 --generator "$g"
  run conn -c 5000 -R 2000 --duration 5 --generator "$g"
done
