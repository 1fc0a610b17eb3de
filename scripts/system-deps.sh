#!/usr/bin/env bash
# Installs the Debian packages that the tests and the CI checks use, only those missing:
# mosquitto-clients, mosquitto, etcd-server (the cluster tests start their own members of
# /usr/bin/etcd), openssl, make, gcc, g++, python3. One `apt-get update`,
# `sudo` only when not root. Run by scripts/test-setup.sh and by .ci/run.
set -euo pipefail

say() { printf 'system-deps: %s\n' "$*" >&2; }

PACKAGES=(mosquitto-clients mosquitto etcd-server openssl make gcc g++ python3)

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
  # Debian starts a service for some packages; the tests run their own instances instead.
  # stop_service PACKAGE SERVICE WHY: stops and disables SERVICE if PACKAGE was just installed.
  stop_service() {
    [[ " ${missing[*]} " == *" $1 "* ]] || return 0
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
      ${sudo[@]+"${sudo[@]}"} systemctl disable --now "$2.service" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$2" ]; then
      ${sudo[@]+"${sudo[@]}"} "/etc/init.d/$2" stop >/dev/null 2>&1 || true
      ${sudo[@]+"${sudo[@]}"} update-rc.d "$2" disable >/dev/null 2>&1 || true
    fi
    say "stopped and disabled the $2 system service ($3)"
  }
  # mosquitto's would hold port 1883, fleetmq's default too; etcd's holds 2379/2380.
  stop_service mosquitto mosquitto 'it would hold port 1883'
  stop_service etcd-server etcd 'the tests start their own members'
fi

