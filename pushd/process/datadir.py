"""Files pushd keeps in its data directory: the node id and generated secrets.

Created on first start with owner-only permissions (the directory 0700, the files 0600);
reused afterwards so restarts keep the same node queue and keep issued tokens valid. A
directory other users may enter is warned about at start (`warn_if_open_to_others`).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import stat
from pathlib import Path

from pushd.config.settings import Config

log = logging.getLogger("pushd")


def _prepare(data_dir: str) -> Path:
    path = Path(data_dir)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def warn_if_open_to_others(config: Config) -> None:
    """Log a WARNING when the data dir exists and other local users may enter or read
    it: it holds secrets.json and, for the embedded shape, the database."""
    path = Path(config.server.data_dir).resolve()
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        log.warning(
            "data dir %s is open to other local users (mode %04o): it holds the token "
            "secret, the encryption key and, with SQLite, the database. Fix: chmod 700 %s",
            path,
            mode,
            path,
        )


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


def _rewrite_private(path: Path, text: str) -> None:
    """Replace the file's content at once (a crash leaves the old or the new one)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    _write_private(temporary, text)
    os.replace(temporary, path)


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


def stored_encryption_key(config: Config) -> str | None:
    """The encryption key data_dir/secrets.json holds, if any (never creates one)."""
    path = Path(config.server.data_dir) / "secrets.json"
    if not path.exists():
        return None
    stored = json.loads(path.read_text(encoding="utf-8"))
    key = stored.get("encryption_key") if isinstance(stored, dict) else None
    return key if isinstance(key, str) else None


def encryption_key(config: Config) -> str:
    """The encryption key stored in data_dir/secrets.json (`<key id>:<base64>`),
    generated and added to the file on first use. Losing it makes the encrypted columns
    unreadable: back the file up with the database."""
    path = _prepare(config.server.data_dir) / "secrets.json"
    stored = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    if not isinstance(stored, dict):
        raise ValueError(f"{path} is not a JSON object: restore it from a backup")
    key = stored.get("encryption_key")
    if key is None:
        secret = base64.b64encode(secrets.token_bytes(32)).decode()
        key = f"k{secrets.token_hex(4)}:{secret}"
        text = json.dumps({**stored, "encryption_key": key}) + "\n"
        if path.exists():
            _rewrite_private(path, text)
        else:
            _write_private(path, text)
    if not isinstance(key, str):
        raise ValueError(f"{path}: encryption_key is not a string: restore it from a backup")
    return key
