#!/usr/bin/env bash
# Coverage-guided fuzzing of tollgate-core (the fuzz/ cargo-fuzz crate, libFuzzer).
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Installs what is missing (cargo-fuzz; uses the nightly toolchain when rustup has one, else
# stable with RUSTC_BOOTSTRAP=1), builds every target once, then runs each for
# SECONDS_PER_TARGET (default 60) from the committed seeds (fuzz/seeds/<target>) plus the
# corpus grown by earlier runs (fuzz/corpus/<target>, not committed). Prints libFuzzer's final
# figures per target; exits non-zero after the last target if any crashed, naming each
# reproducer (rerun one: `cargo +nightly fuzz run -s none -a TARGET PATH`).
# scripts/test.sh runs it bounded (FUZZ_SECONDS, 20 s per target); the long runs in
# notes/reliability-fuzz.md are this script with 600.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    cargo=(cargo +nightly)
else
    # libFuzzer's instrumentation flags are stable rustc flags; cargo-fuzz only needs
    # nightly features unlocked, which RUSTC_BOOTSTRAP does on a stable toolchain.
    echo "fuzz: no nightly toolchain, using stable with RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
    cargo=(cargo)
fi
if ! "${cargo[@]}" fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

# -s none: the code under test is safe Rust (core forbids unsafe), so AddressSanitizer would
# halve the speed for nothing; -a keeps debug assertions and overflow checks on.
flags=(-s none -a)
if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
    flags+=(--target-dir "$CARGO_TARGET_DIR/fuzz")
fi
cd fuzz
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <("${cargo[@]}" fuzz list)
fi

echo "== building ${#targets[@]} fuzz targets"
"${cargo[@]}" fuzz build "${flags[@]}"

# FUZZ_SEED fixes libFuzzer's random seed (scripts/test.sh sets it, so CI explores the same
# way every run instead of failing at random on whatever a new path finds first).
seed=()
[[ -n "${FUZZ_SEED:-}" ]] && seed=("-seed=$FUZZ_SEED")

mkdir -p logs
failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    dict=()
    [[ -f "dict/$t.dict" ]] && dict=("-dict=dict/$t.dict")
    echo "== fuzz $t for ${seconds}s"
    status=0
    "${cargo[@]}" fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        "${dict[@]}" "${seed[@]}" >"logs/$t.log" 2>&1 || status=$?
    # The last coverage line (cov: edges, ft: features, corp: units/bytes) and the totals.
    grep -E '^#[0-9]+' "logs/$t.log" | tail -n 1 || true
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)|^Done' "logs/$t.log" || true
    if [[ $status -ne 0 ]]; then
        echo "!! $t FAILED (exit $status); log: fuzz/logs/$t.log"
        grep -E 'panicked at|Test unit written to' "logs/$t.log" | head -n 5 || true
        failed+=("$t")
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz: crashes in: ${failed[*]} (reproducers under fuzz/artifacts/, logs under fuzz/logs/)"
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash"
