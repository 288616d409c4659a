#!/usr/bin/env bash
# The one test command: README's "test" and exactly what CI (.ci/run) runs.
# Sets up what is missing (scripts/setup.sh), then formatting, clippy (native and wasm32),
# every test of the workspace, all with the committed Cargo.lock, and a bounded fuzz run of
# every fuzz target (scripts/fuzz.sh, FUZZ_SECONDS per target, default 20; 0 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# Crates that build for wasm32-wasip1 and are linted for it too.
wasm_crates=(-p tollgate-core -p tollgate-load -p tollgate-filter -p tollgate-sync -p tollgate-noop -p tollgate-floor -p tollgate-hostcalls)

echo "== cargo fmt --check"
cargo fmt --all --check
# The fuzz crate is its own workspace (it needs nightly), so `--all` does not reach it.
cargo fmt --manifest-path fuzz/Cargo.toml --check
echo "== clippy (native)"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The fuzz crate too (its own workspace and lock file; stable clippy checks it fine).
cargo clippy --manifest-path fuzz/Cargo.toml --all-targets --locked -- -D warnings
echo "== clippy (wasm32-wasip1)"
cargo clippy "${wasm_crates[@]}" --target wasm32-wasip1 --locked -- -D warnings
echo "== wasm modules (release) for the harness and Envoy tests"
cargo build --release --locked --target wasm32-wasip1 -p tollgate-filter -p tollgate-sync -p tollgate-noop -p tollgate-floor
wasm_dir="${CARGO_TARGET_DIR:-target}/wasm32-wasip1/release"
ls -l "$wasm_dir/tollgate_filter.wasm" "$wasm_dir/tollgate_sync.wasm" "$wasm_dir/tollgate_noop.wasm"
# The filter's size budget (issue "The filter": at most 600 KB uncompressed, release): the
# module every worker loads. The sync service (tollgate_sync.wasm) runs once per Envoy.
filter_bytes=$(stat -c %s "$wasm_dir/tollgate_filter.wasm")
if (( filter_bytes > 600000 )); then
    echo "tollgate_filter.wasm is $filter_bytes bytes, over the 600,000-byte budget" >&2
    exit 1
fi
echo "== bench scripts (syntax; benches/peers renders its configs without running)"
bash -n benches/load/compare.sh benches/load/prepare.sh benches/peers/run.sh scripts/venv.sh
.venv/bin/python benches/peers/run.py --dry-run
echo "== tests"
# Includes the tests that drive the venv's Python tools (scripts/setup.sh installs them):
# schemathesis over the API and the client generated from its OpenAPI document
# (control-plane/tests/schemathesis.rs, openapi_client.rs), the official SDKs and raw HTTP/2
# shapes through Envoy (tests/e2e).
cargo test --workspace --locked
fuzz_seconds="${FUZZ_SECONDS:-20}"
if [[ "$fuzz_seconds" -gt 0 ]]; then
    echo "== fuzz (${fuzz_seconds}s per target)"
    FUZZ_SEED="${FUZZ_SEED:-1}" bash scripts/fuzz.sh "$fuzz_seconds"
fi
