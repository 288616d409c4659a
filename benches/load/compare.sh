#!/usr/bin/env bash
# Load comparison: Envoy with no filter, with the no-op wasm filter and with Tollgate, under the
# same metered chat-completion load, rounds interleaved, Envoy pinned to core 0 and the load
# generator (wrk) with the mock provider and the control plane pinned to core 1. Writes
# BENCHMARKS.md (req/s, p50, p99, Envoy CPU µs per request, the ratios, the machine, this command).
#
#   bash benches/load/compare.sh [--rounds 5] [--duration 10] [--connections 32] [--breakdown]
#                                [--out FILE]
#
# --breakdown adds Tollgate with keys carrying no budget and four budgets (fixed vs per-budget
# cost). BENCHMARKS.md in the repository was written with --breakdown.
#
# Sets up what is missing (scripts/setup.sh; wrk through apt-get), builds in release, then runs
# benches/load/compare.py (its docstring says exactly what is measured). About 3 minutes with
# the defaults, 5 with --breakdown.
set -euo pipefail
cd "$(dirname "$0")/../.."

bash scripts/setup.sh
if ! command -v wrk >/dev/null; then
  echo "compare: installing wrk"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq wrk; \
  else sudo apt-get update -qq && sudo apt-get install -y -qq wrk; fi
fi
echo "compare: building (release): the filter and the no-op filter (wasm32-wasip1), the control plane, the mock provider"
cargo build --release --locked --target wasm32-wasip1 -p tollgate-filter -p tollgate-sync -p tollgate-noop -p tollgate-floor
# The same package and binary set as scripts/run.sh, so both share one release build.
cargo build --release --locked -p tollgate-control-plane -p tollgate-upstream -p tollgate-tests \
  --bin tollgate --bin tollgate-upstream --bin tollgate-demo
exec .venv/bin/python benches/load/compare.py --command "bash benches/load/compare.sh" "$@"
