#!/usr/bin/env bash
# One command for the peer comparison: installs Go and x/sync from Debian if
# they are missing, then runs the harness (medians over rounds, ratios to Go).
#
#   bash benches/peers/run.sh [--rounds N] [--scale X] [--only W,..] [--out DIR]
#
# The scaling CSV and chart go to target/peers/ (or --out), so a run leaves
# the source tree clean; `--out benches/peers` updates the checked-in copies.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/golang.org/x/sync/singleflight ]; then
  echo "installing golang-go and golang-golang-x-sync-dev" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go golang-golang-x-sync-dev >/dev/null
fi
exec cargo bench --bench peers -- "$@"
