#!/usr/bin/env bash
# Prepares a clone for `npm test` (run by `npm run test:all`), on Debian 12 or similar:
#   1. installs the Debian packages the tests use, only those missing
#      (mosquitto-clients, mosquitto, openssl, make, gcc, g++, python3): one `apt-get update`, `sudo` only when
#      not root;
#   2. installs the npm dependencies (`npm ci`, or `npm install` without a lockfile);
#   3. builds (tsc).
# Node.js 20 and npm must already be installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'test-setup: %s\n' "$*" >&2; }

PACKAGES=(mosquitto-clients mosquitto openssl make gcc g++ python3)

# Is Debian package $1 installed? Without dpkg, look for the programs instead.
have_package() {
  if command -v dpkg-query >/dev/null 2>&1; then
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = 'install ok installed' ]
    return
  fi
  case "$1" in
    mosquitto-clients) command -v mosquitto_pub >/dev/null 2>&1 && command -v mosquitto_sub >/dev/null 2>&1 ;;
    mosquitto) command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}

missing=()
for p in "${PACKAGES[@]}"; do
  have_package "$p" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    say "missing ${missing[*]} and apt-get is not available: install them, then run again"
    exit 1
  fi
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      say "missing ${missing[*]}: run as root or install sudo"
      exit 1
    fi
    sudo=(sudo)
  fi
  say "installing ${missing[*]}"
  ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # The mosquitto package starts a system broker on port 1883; the tests start their own
  # mosquitto when they need one, and fleetmq's default port is 1883 too. Stop it.
  if [[ " ${missing[*]} " == *' mosquitto '* ]]; then
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
      ${sudo[@]+"${sudo[@]}"} systemctl disable --now mosquitto.service >/dev/null 2>&1 || true
    elif [ -x /etc/init.d/mosquitto ]; then
      ${sudo[@]+"${sudo[@]}"} /etc/init.d/mosquitto stop >/dev/null 2>&1 || true
      ${sudo[@]+"${sudo[@]}"} update-rc.d mosquitto disable >/dev/null 2>&1 || true
    fi
    say "stopped and disabled the mosquitto system service (it would hold port 1883)"
  fi
fi

major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$major" = 20 ] || say "warning: Node.js $(node --version) found; fleetmq is built and tested on Node.js 20"

if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm install --no-audit --no-fund
fi
# The load tools keep their own dependencies (aedes, hdr-histogram-js) in bench/.
npm --prefix bench ci --no-audit --no-fund
npm run build
make -s -C native-bench
# SO_REUSEPORT listening sockets for connection workers (N-API addon, built offline).
bash native/reuseport/build.sh
