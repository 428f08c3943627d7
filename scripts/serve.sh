#!/usr/bin/env bash
# Run pushd on the embedded defaults: SQLite in ./data, in-process bus, no other service.
# Extra arguments go to `pushd serve` (e.g. --port 9000).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
exec "$ROOT/.venv/bin/pushd" serve --config "$ROOT/config.toml" --data-dir "${PUSHD_DATA_DIR:-$ROOT/data}" "$@"
