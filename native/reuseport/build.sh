#!/usr/bin/env bash
# Builds native/reuseport/build/Release/reuseport.node (the SO_REUSEPORT addon, docs/accept.md)
# with node-gyp, offline: node-gyp is the copy bundled with npm (`npx node-gyp` would try
# to download it), and the headers are those installed with Node (<prefix>/include/node),
# since node-gyp would otherwise download them too. Needs g++, make and python3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

gyp=''
npm_bin="$(command -v npm || true)"
if [ -n "$npm_bin" ]; then
  npm_dir="$(cd "$(dirname "$(readlink -f "$npm_bin")")/.." && pwd)"
  [ -f "$npm_dir/node_modules/node-gyp/bin/node-gyp.js" ] && gyp="$npm_dir/node_modules/node-gyp/bin/node-gyp.js"
fi

nodedir="$(cd "$(dirname "$(readlink -f "$(command -v node)")")/.." && pwd)"
args=(rebuild)
if [ -f "$nodedir/include/node/node_api.h" ] && [ -f "$nodedir/include/node/common.gypi" ]; then
  args+=("--nodedir=$nodedir")
fi

if [ -n "$gyp" ]; then
  node "$gyp" "${args[@]}"
else
  npx --yes node-gyp "${args[@]}"
fi
test -f build/Release/reuseport.node
