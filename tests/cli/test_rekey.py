"""`pushd rekey` as an operator runs it after a key rotation (real process): every row
ends under the active key, with progress, and running it again does nothing."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from pathlib import Path

import pytest

from storage import KeyRing
from tests.cli.test_main import pushd
from tests.storage.conftest import note, opened, raw_sql, user

# Every test here runs `python -m pushd` in a process of its own.
pytestmark = pytest.mark.slow

K1 = ("k1", bytes(range(32)))
K2 = ("k2", bytes(range(64, 96)))
PROGRESS = re.compile(r"^rekeyed ([\d,]+) / ([\d,]+) rows \((\d+)%\)$", re.MULTILINE)


def spec(key: tuple[str, bytes]) -> str:
    return f"{key[0]}:{base64.b64encode(key[1]).decode()}"


async def test_rekey_moves_every_row_to_the_active_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'pushd.db'}"
    async with opened(url, KeyRing([K1])) as store:
        await store.migrate()
        await store.create_user(user("u1", name="Ada", email="ada@example.org"))
        await store.insert_notifications(
            [note(f"n{i}", "u1", title="T", body="B") for i in range(7)]
        )
    flags = ["--storage-url", url, "--data-dir", str(tmp_path), "--batch-size", "3"]

    monkeypatch.setenv("PUSHD_ENCRYPTION__KEYS", json.dumps([spec(K2)]))
    missing = await asyncio.to_thread(pushd, "rekey", *flags)
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "sealed with key 'k1'" in missing.stdout

    monkeypatch.setenv("PUSHD_ENCRYPTION__KEYS", json.dumps([spec(K2), spec(K1)]))
    first = await asyncio.to_thread(pushd, "rekey", *flags)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "8 rows to re-encrypt with key 'k2'" in first.stdout
    progress = PROGRESS.findall(first.stdout)
    assert progress[-1] == ("8", "8", "100")
    assert len(progress) == 4  # 1 user, then 7 notifications in batches of 3
    rows = await raw_sql(url, "SELECT title, body FROM notifications")
    rows += await raw_sql(url, "SELECT name, email FROM users")
    assert all(value.startswith("enc:v1:k2:") for row in rows for value in row)

    again = await asyncio.to_thread(pushd, "rekey", *flags)
    assert again.returncode == 0
    assert "0 rows to re-encrypt" in again.stdout
    assert not PROGRESS.findall(again.stdout)
    audit = await raw_sql(url, "SELECT action, result FROM audit_log ORDER BY id")
    assert audit == [("storage.rekey", "error"), ("storage.rekey", "ok"), ("storage.rekey", "ok")]


def test_rekey_refuses_when_encryption_is_off(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pushd.db'}"
    config = tmp_path / "off.toml"
    config.write_text("[encryption]\nenabled = false\n")
    result = pushd("rekey", "--config", str(config), "--storage-url", url)
    assert result.returncode == 1
    assert "encryption is off" in result.stdout


def test_a_malformed_key_stops_start_up_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUSHD_ENCRYPTION__KEYS", json.dumps(["k1:not-base64"]))
    result = pushd("rekey", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "encryption.keys" in result.stdout
    monkeypatch.setenv("PUSHD_ENCRYPTION__KEYS", json.dumps([spec(K1), spec(K1)]))
    twice = pushd("rekey", "--data-dir", str(tmp_path))
    assert twice.returncode == 2
    assert "used twice" in twice.stdout
