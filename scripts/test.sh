#!/usr/bin/env bash
# The whole check, as CI runs it: services, virtualenv, lint, types, the full test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k websocket; the quick loop is
# scripts/test.sh -m "not slow").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/services.sh
bash scripts/bootstrap.sh dev
echo "==> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "==> mypy (strict)"
# Incremental: .mypy_cache keeps what did not change (about 2 s then, 8 s cold).
.venv/bin/mypy
echo "==> pytest"
# Keep compiled modules and pytest's rewritten test modules in __pycache__ (ignored by git)
# even where the environment says not to: compiling them all again cost each run 5 s.
unset PYTHONDONTWRITEBYTECODE
# Three pytest-xdist workers: most tests wait on sockets and timers, so three share two
# cores well. The slow tests form one group that runs on one worker, one at a time
# (tests/conftest.py). `-n 0` among the arguments runs everything in this process.
exec .venv/bin/pytest -p no:cacheprovider -n "${PUSHD_TEST_WORKERS:-3}" --dist loadgroup "$@"
