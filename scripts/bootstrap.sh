#!/usr/bin/env bash
# Create .venv and install pushd into it (editable, with or without dev extras).
# Sourced by scripts/serve.sh and scripts/test.sh so both set up the same way.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS="${1:-}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x "$ROOT/.venv/bin/python" ]; then
    echo "==> creating virtualenv in .venv"
    "$PY" -m venv "$ROOT/.venv"
fi
STAMP="$ROOT/.venv/.installed${EXTRAS:+-$EXTRAS}"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    echo "==> installing pushd${EXTRAS:+[$EXTRAS]} into .venv"
    "$ROOT/.venv/bin/python" -m pip install --quiet --upgrade pip
    "$ROOT/.venv/bin/python" -m pip install --quiet -e "$ROOT${EXTRAS:+[$EXTRAS]}"
    touch "$STAMP"
fi
