"""The `pushd` command: `serve`, `migrate`, `keys`, `rekey`, `seed`, `check-config`, and
`send`, `users`, `status` against a running server (main.py dispatches)."""
