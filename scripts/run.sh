#!/usr/bin/env bash
# README's "run" command: Tollgate on this machine. Starts the control plane on SQLite (seeded
# with a demo org, project, user, virtual key, daily budget and LiteLLM's price map), a mock LLM
# provider and Envoy with the Tollgate filter, all on 127.0.0.1, then prints a curl and a Python
# (official openai SDK) example that work as printed. Ctrl-C stops everything.
#
#   bash scripts/run.sh                  # all local: the mock provider answers
#   bash scripts/run.sh --help           # options: --port, --sync-interval-ms, --budget-usd, ...
#   OPENAI_API_KEY=sk-... bash scripts/run.sh \
#       --provider-url https://api.openai.com --provider-key-env OPENAI_API_KEY
#                                        # OpenAI traffic goes to the real OpenAI instead
#                                        # (--provider anthropic|gemini for the others)
#
# What runs is tests/e2e/src/bin/tollgate-demo.rs; `cargo test -p tollgate-tests --test demo`
# runs its printed examples. Secrets (tokens, the virtual key, a provider key) never reach the
# terminal: the examples read them from files in the demo's state directory. Envoy's config
# holds none: the provider keys and the data-plane token are SDS files in <state dir>/secrets,
# injected by each cluster after routing (envoy/README.md "Secrets").
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
echo "run: building the filter (wasm32-wasip1) and the control plane, mock provider and demo (release)"
cargo build --release --locked --target wasm32-wasip1 -p tollgate-filter -p tollgate-sync
cargo build --release --locked -p tollgate-control-plane -p tollgate-upstream -p tollgate-tests \
  --bin tollgate --bin tollgate-upstream --bin tollgate-demo
exec "${CARGO_TARGET_DIR:-target}/release/tollgate-demo" "$@"
