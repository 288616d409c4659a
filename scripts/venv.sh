#!/usr/bin/env bash
# A Python venv with a pinned requirements file installed, reinstalled only when that file
# changes (its SHA-256 is stamped in the venv). Safe to run again.
#
#   bash scripts/venv.sh VENV_DIR REQUIREMENTS_FILE
#
# scripts/setup.sh makes the project's .venv with it; benches/peers/run.sh LiteLLM's own venv.
set -euo pipefail
venv=$1
req=$2
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
  echo "venv: creating $venv"
  python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "venv: installing $req into $venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  echo "$want" >"$stamp"
fi
