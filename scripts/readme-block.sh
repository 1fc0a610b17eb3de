#!/usr/bin/env bash
# Prints the Nth (1-based) ```sh block of README.md, so that CI runs the README's commands
# exactly as written there (the two cannot drift apart).
#   scripts/readme-block.sh 1    # the command that starts a node
#   scripts/readme-block.sh 2    # the command that runs the tests
set -euo pipefail
n="${1:?usage: readme-block.sh N [README]}"
readme="${2:-$(dirname "${BASH_SOURCE[0]}")/../README.md}"
block="$(awk -v want="$n" '
  /^```sh[[:space:]]*$/ { inside = 1; count++; next }
  /^```[[:space:]]*$/   { if (inside && count == want) exit; inside = 0; next }
  inside && count == want { print }
' "$readme")"
if [ -z "$block" ]; then
  echo "readme-block: README has no sh block number $n" >&2
  exit 1
fi
printf '%s\n' "$block"
