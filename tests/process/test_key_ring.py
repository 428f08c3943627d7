"""Which cipher a process uses (`[encryption]`, pushd/process/key_ring.py): the embedded default
encrypts with a key generated into the data dir, PostgreSQL needs configured keys."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest

from pushd.config.settings import ConfigError, load_config
from pushd.process import datadir
from pushd.process.key_ring import parse_keys, storage_cipher
from storage import PLAINTEXT

KEY = "k9:" + base64.b64encode(bytes(32)).decode()


def test_embedded_default_generates_a_key_once_next_to_the_token_secret(tmp_path: Path) -> None:
    config = load_config(None, environ={}, overrides={"server": {"data_dir": str(tmp_path)}})
    secret = datadir.token_secret(config)  # the file exists already: the key is added to it
    first = storage_cipher(config)
    assert first.active_key_id is not None
    assert storage_cipher(config).active_key_id == first.active_key_id
    stored = json.loads((tmp_path / "secrets.json").read_text())
    assert stored["token_secret"] == secret
    assert stored["encryption_key"].startswith(f"{first.active_key_id}:")
    assert (tmp_path / "secrets.json").stat().st_mode & 0o077 == 0
    # Rows of the generated key stay readable once keys are configured.
    sealed = first.seal("hello", "t.c:1")
    configured = load_config(
        None,
        environ={"PUSHD_ENCRYPTION__KEYS": json.dumps([KEY])},
        overrides={"server": {"data_dir": str(tmp_path)}},
    )
    ring = storage_cipher(configured)
    assert ring.active_key_id == "k9"
    assert ring.open(sealed, "t.c:1") == "hello"


def test_postgresql_without_keys_is_not_encrypted_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(
        None,
        environ={"PUSHD_STORAGE__URL": "postgresql://db/pushd"},
        overrides={"server": {"data_dir": str(tmp_path)}},
    )
    with caplog.at_level(logging.WARNING):
        assert storage_cipher(config) is PLAINTEXT
    assert "encryption at rest is OFF" in caplog.text
    assert not (tmp_path / "secrets.json").exists()
    keyed = load_config(
        None,
        environ={
            "PUSHD_STORAGE__URL": "postgresql://db/pushd",
            "PUSHD_ENCRYPTION__KEYS": f'["{KEY}"]',
        },
    )
    assert storage_cipher(keyed).active_key_id == "k9"


def test_disabled_means_plaintext(tmp_path: Path) -> None:
    config = load_config(
        None,
        environ={},
        overrides={"server": {"data_dir": str(tmp_path)}, "encryption": {"enabled": False}},
    )
    assert storage_cipher(config) is PLAINTEXT


def test_bad_keys_are_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"encryption\.keys"):
        load_config(None, environ={"PUSHD_ENCRYPTION__KEYS": '["k1:short"]'})
    with pytest.raises(ConfigError, match="used twice"):
        parse_keys([KEY, KEY])
    assert parse_keys([KEY]) == [("k9", bytes(32))]
