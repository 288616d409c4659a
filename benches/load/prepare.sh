#!/usr/bin/env bash
# What the load benches need before they run: scripts/setup.sh (Envoy in .venv, the wasm
# target), wrk (apt-get), and a release build of Tollgate's filter and sync service
# (wasm32-wasip1), the control plane and the mock provider. Extra `-p PACKAGE` arguments add
# wasm32 packages to the build (compare.sh adds the no-op and floor modules).
#
#   bash benches/load/prepare.sh [-p tollgate-noop -p tollgate-floor]
#
# Used by benches/load/compare.sh and benches/peers/run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

bash scripts/setup.sh
if ! command -v wrk >/dev/null; then
  echo "prepare: installing wrk"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk; \
  else sudo apt-get update -qq && sudo apt-get install -y -qq wrk; fi
fi
echo "prepare: building (release): the wasm modules, the control plane, the mock provider"
cargo build --release --locked --target wasm32-wasip1 -p tollgate-filter -p tollgate-sync "$@"
# The same package and binary set as scripts/run.sh, so both share one release build.
cargo build --release --locked -p tollgate-control-plane -p tollgate-upstream -p tollgate-tests \
  --bin tollgate --bin tollgate-upstream --bin tollgate-demo
