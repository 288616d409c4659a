#!/usr/bin/env bash
# Tollgate side by side with LiteLLM's proxy (issue 17): the mock provider called directly,
# Envoy with no filter, Envoy + Tollgate and LiteLLM's proxy under the same wrk load at 1 and
# 16 connections, rounds interleaved, each proxy pinned to core 0. Writes the "Side by side
# with LiteLLM (issue 17)" section of BENCHMARKS.md and benches/peers/README.md.
#
#   bash benches/peers/run.sh [--rounds 3] [--duration 8] [--connections 1,16] [--dry-run]
#
# Builds what it needs (benches/load/prepare.sh), installs LiteLLM's proxy pinned
# (benches/peers/requirements.txt) into benches/peers/.venv, then runs benches/peers/run.py
# (its docstring says exactly what is measured). About 5 minutes with the defaults.
# --dry-run renders the configs and checks the inputs, and neither builds nor installs.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ " $* " == *" --dry-run "* ]]; then
  exec python3 benches/peers/run.py "$@"
fi
bash benches/load/prepare.sh
bash scripts/venv.sh benches/peers/.venv benches/peers/requirements.txt
exec .venv/bin/python benches/peers/run.py --command "bash benches/peers/run.sh" "$@"
