"""The `pushd` command: `serve`, `migrate`, `keys`, `rekey` (main.py dispatches)."""
