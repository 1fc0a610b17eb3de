#!/usr/bin/env bash
# Proves what the README promises a new user (run by .ci/run before the tests):
#
#   clone   clones this checkout's HEAD into a temporary folder and runs the README's first
#           sh block there exactly as written (read from README.md);
#   package packs that clone (npm pack), and runs the README's package block
#           (`npm install ./fleetmq-*.tgz && npx fleetmq start`) in an empty folder.
#
# Each time: wait for GET /status to answer 200, pass one message with mosquitto_sub /
# mosquitto_pub, send SIGTERM to the node and check that the command exits 0. The node
# runs with its embedded defaults; only its ports are moved to free ones through the
# FLEETMQ_LISTENERS__*_PORT environment overrides, so that the check runs beside anything
# else. Prints how long each step took.
#
#   scripts/check-first-command.sh [clone|package|all]      (default all)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
what="${1:-all}"
READY_TIMEOUT_S=600   # npm ci + build on a cold npm cache
STOP_TIMEOUT_S=30

say() { printf 'check-first-command: %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

for cmd in git npm node mosquitto_pub mosquitto_sub setsid pgrep; do
  command -v "$cmd" >/dev/null 2>&1 || fail "$cmd is not installed (scripts/system-deps.sh installs what the checks need)"
done

work="$(mktemp -d "${TMPDIR:-/tmp}/fleetmq-first-command.XXXXXX")"
pgid=''
cleanup() {
  if [ -n "$pgid" ]; then kill -KILL -- "-$pgid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

free_ports() {
  node -e '
    const net = require("node:net");
    const got = new Set();
    (async () => {
      while (got.size < 3) {
        got.add(await new Promise((r) => { const s = net.createServer().listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => r(p)); }); }));
      }
      console.log([...got].join(" "));
    })();'
}

# run_and_check LABEL DIR BLOCK: runs BLOCK with bash in DIR, then the checks above.
run_and_check() {
  local label="$1" dir="$2" block="$3"
  local mqtt ws http log="$work/$label.log"
  read -r mqtt ws http < <(free_ports)
  say "[$label] in $dir: $block"
  say "[$label] ports: mqtt $mqtt, ws $ws, http $http (FLEETMQ_LISTENERS__*_PORT)"
  local t0 t1
  t0="$(date +%s.%N)"
  # Its own session (setsid), so that the node and everything it starts can be found and
  # stopped even when the check fails.
  (cd "$dir" && FLEETMQ_LISTENERS__MQTT_PORT="$mqtt" FLEETMQ_LISTENERS__WS_PORT="$ws" \
    FLEETMQ_LISTENERS__HTTP_PORT="$http" exec setsid bash -c "$block") >"$log" 2>&1 &
  local pid=$!
  pgid="$pid"
  local status='' deadline=$((SECONDS + READY_TIMEOUT_S))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" || true
      tail -n 40 "$log" >&2
      fail "[$label] the command ended before GET /status answered 200"
    fi
    status="$(node -e 'fetch(process.argv[1]).then((r) => console.log(r.status), () => console.log(0))' "http://127.0.0.1:$http/status")"
    [ "$status" = 200 ] && break
    sleep 0.5
  done
  if [ "$status" != 200 ]; then
    tail -n 40 "$log" >&2
    fail "[$label] GET /status did not answer 200 within ${READY_TIMEOUT_S} s"
  fi
  t1="$(date +%s.%N)"
  say "[$label] GET /status 200 after $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"
  node -e 'fetch(process.argv[1]).then((r) => r.text()).then((t) => console.error("  /status: " + t))' "http://127.0.0.1:$http/status"

  local topic="first-command/$label/$$" payload="hello from $label $$"
  local got="$work/$label.msg"
  mosquitto_sub -h 127.0.0.1 -p "$mqtt" -t "$topic" -C 1 -W 20 -q 1 >"$got" &
  local sub=$!
  # Publish until the subscriber has its message (its SUBSCRIBE may still be on the way).
  local n=0
  while kill -0 "$sub" 2>/dev/null && [ "$n" -lt 40 ]; do
    mosquitto_pub -h 127.0.0.1 -p "$mqtt" -t "$topic" -m "$payload" -q 1
    n=$((n + 1))
    sleep 0.25
  done
  wait "$sub" || fail "[$label] mosquitto_sub got no message (exit $?)"
  [ "$(cat "$got")" = "$payload" ] || fail "[$label] mosquitto_sub got '$(cat "$got")', expected '$payload'"
  say "[$label] one message passed (mosquitto_pub → mosquitto_sub, QoS 1)"

  # SIGTERM to the node itself (the shell and npx wait for it and pass its exit status on).
  local node_pid
  node_pid="$(pgrep -s "$pid" -f '(cli/main\.js|/fleetmq) start' | head -n 1 || true)"
  [ -n "$node_pid" ] || fail "[$label] no node process found in session $pid"
  kill -TERM "$node_pid"
  local code=0 stop_deadline=$((SECONDS + STOP_TIMEOUT_S))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$stop_deadline" ]; do sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    tail -n 20 "$log" >&2
    fail "[$label] still running ${STOP_TIMEOUT_S} s after SIGTERM"
  fi
  wait "$pid" || code=$?
  pgid=''
  if [ "$code" -ne 0 ]; then
    tail -n 40 "$log" >&2
    fail "[$label] exited $code after SIGTERM, expected 0"
  fi
  grep -q '"msg":"node.stopped"' "$log" || fail "[$label] the node did not log node.stopped"
  say "[$label] SIGTERM → exit 0"
}

clone="$work/clone"
say "cloning $ROOT (HEAD $(git -C "$ROOT" rev-parse --short HEAD)) into $clone"
git clone -q --no-hardlinks "$ROOT" "$clone"

if [ "$what" = clone ] || [ "$what" = all ]; then
  run_and_check clone "$clone" "$(bash "$clone/scripts/readme-block.sh" 1 "$clone/README.md")"
fi

if [ "$what" = package ] || [ "$what" = all ]; then
  if [ ! -d "$clone/node_modules" ]; then
    (cd "$clone" && npm ci --no-audit --no-fund >/dev/null)
  fi
  (cd "$clone" && npm pack --silent >/dev/null)
  empty="$work/empty"
  mkdir -p "$empty"
  mv "$clone"/fleetmq-*.tgz "$empty/"
  say "packed $(basename "$empty"/fleetmq-*.tgz) ($(du -k "$empty"/fleetmq-*.tgz | cut -f1) KiB)"
  run_and_check package "$empty" "$(bash "$clone/scripts/readme-block.sh" 3 "$clone/README.md")"
fi
say "ok"
