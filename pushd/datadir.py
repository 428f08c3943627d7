"""Files pushd keeps in its data directory: the node id and generated secrets.

Created on first start with owner-only permissions; reused afterwards so restarts keep
the same node queue and keep issued tokens valid.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from pushd.config import Config


def _prepare(data_dir: str) -> Path:
    path = Path(data_dir)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def node_id(config: Config) -> str:
    """The configured node id, else the one stored in the data dir (generated once)."""
    if config.server.node_id:
        return config.server.node_id
    path = _prepare(config.server.data_dir) / "node_id"
    if not path.exists():
        _write_private(path, f"node-{secrets.token_hex(6)}\n")
    return path.read_text(encoding="utf-8").strip()


def token_secret(config: Config) -> str:
    """The configured token secret, else the one stored in data_dir/secrets.json."""
    if config.auth.token_secret:
        return config.auth.token_secret
    path = _prepare(config.server.data_dir) / "secrets.json"
    if not path.exists():
        _write_private(path, json.dumps({"token_secret": secrets.token_urlsafe(48)}) + "\n")
    stored = json.loads(path.read_text(encoding="utf-8"))
    secret = stored.get("token_secret") if isinstance(stored, dict) else None
    if not isinstance(secret, str):
        raise ValueError(f"{path} has no token_secret: delete the file to generate a new one")
    return secret
