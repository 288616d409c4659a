#!/usr/bin/env bash
# The linker for wasm32-wasip1 (.cargo/config.toml): rust-lld, then, for release builds,
# binaryen's `wasm-opt` (-O3; the filter -Oz) over the linked module in place.
#
# Why here and not a separate step: every consumer (Envoy configs, the harness, the e2e tests,
# the benches) runs `cargo build --release --target wasm32-wasip1` and takes the module from
# target/wasm32-wasip1/release, so optimizing at link time means they all load the module we
# ship. wasm-opt shrinks the release filter by ~11 % and makes it slightly faster in the harness
# and no slower in Envoy (BENCHMARKS.md); it also drops the function names section, so profile
# with `--profile profiling`, which keeps them and skips this step.
#
# scripts/setup.sh installs binaryen. TOLLGATE_WASM_OPT=0 links without it (a bigger module).
set -euo pipefail

out=""
prev=""
for arg in "$@"; do
    if [[ "$prev" == "-o" ]]; then out="$arg"; fi
    prev="$arg"
done

# The proxy-wasm SDK exports every callback of the ABI. The filter module (an HTTP filter that
# makes no HTTP, gRPC or foreign-function calls and reads no shared queue: the sync service
# does) is linked without the ones Envoy would never call on it, so their dispatch code goes
# too (-12 KB). Envoy treats an absent callback export as "not implemented". The harness test
# `the_filter_exports_only_the_callbacks_it_uses` pins the list. `memcmp` (filter/src/memcmp.rs,
# which the module links instead of wasi-libc's) is the module's own, not the host's to call.
args=("$@")
case "$out" in
    */tollgate_filter.wasm)
        unused=" proxy_on_grpc_receive proxy_on_grpc_close proxy_on_grpc_receive_initial_metadata \
proxy_on_grpc_receive_trailing_metadata proxy_on_http_call_response proxy_on_foreign_function \
proxy_on_queue_ready proxy_on_new_connection proxy_on_downstream_data proxy_on_upstream_data \
proxy_on_downstream_connection_close proxy_on_upstream_connection_close memcmp "
        args=()
        skip=0
        for arg in "$@"; do
            if [[ $skip == 1 ]]; then
                skip=0
                if [[ "$unused" == *" $arg "* ]]; then
                    unset 'args[${#args[@]}-1]'
                    continue
                fi
            fi
            [[ "$arg" == "--export" ]] && skip=1
            args+=("$arg")
        done
        ;;
esac

# rustc calls its linker with the arguments for rust-lld (`-flavor wasm ...`) and puts the
# toolchain's rust-lld on PATH.
rust-lld "${args[@]}"
case "$out" in
    */release/deps/*.wasm) ;;
    *) exit 0 ;;
esac
if [[ "${TOLLGATE_WASM_OPT:-1}" == "0" ]]; then
    exit 0
fi
if ! command -v wasm-opt >/dev/null; then
    echo "wasm-link: binaryen's wasm-opt not found: run scripts/setup.sh (apt-get install binaryen), or set TOLLGATE_WASM_OPT=0 to link without it" >&2
    exit 1
fi
# Features come from the module's target_features section; names and producers are dropped.
# --low-memory-unused: rust-lld lays a wasm32 module out stack first (the stack fills
# [0, 1 MiB) growing down, data starts at 1 MiB), so the low 1 KiB is touched only by a stack
# already overflowed; the assumption lets binaryen fold constant offsets into loads and stores
# (-3.9 KB). --converge repeats -O3 until the module stops shrinking (-0.2 KB).
# The filter module at -Oz: its request path is built at opt-level 2 and its cold code in a crate
# of its own at "z" (Cargo.toml, filter/load), which at -O3 came to 601.6 KB, over the 600 KB
# budget; -Oz is 592.3 KB for +0.6 % fuel per request (BENCHMARKS.md, issue 17). The other
# modules, the floor and no-op baselines among them, stay at -O3.
level=-O3
case "$out" in
    */tollgate_filter.wasm) level=-Oz ;;
esac
wasm-opt "$level" --converge --low-memory-unused --strip-debug --strip-producers "$out" -o "$out.opt"
mv "$out.opt" "$out"
