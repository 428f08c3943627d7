#!/usr/bin/env bash
# The whole check, as CI runs it: services, virtualenv, lint, types, the full test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k websocket).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/services.sh
bash scripts/bootstrap.sh dev
echo "==> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "==> mypy (strict)"
.venv/bin/mypy
echo "==> pytest"
exec .venv/bin/pytest -p no:cacheprovider "$@"
