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
# Sets up what is missing and builds in release (benches/load/prepare.sh), then runs
# benches/load/compare.py (its docstring says exactly what is measured). About 3 minutes with
# the defaults, 5 with --breakdown.
set -euo pipefail
cd "$(dirname "$0")/../.."

bash benches/load/prepare.sh -p tollgate-noop -p tollgate-floor -p tollgate-hostcalls
exec .venv/bin/python benches/load/compare.py --command "bash benches/load/compare.sh" "$@"
