"""The data directory (pushd/process/datadir.py): created owner-only, and a start-up warning when
an existing one lets other local users in (issue #10 point 8): it holds the database,
the token secret and the encryption key."""

from __future__ import annotations

import logging
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pushd.app import Identity, build_app
from pushd.config.settings import load_config
from tests.app_client import ADMIN_KEY, TOKEN_SECRET

StartApp = Callable[[web.Application], Awaitable[Any]]


def app_on(data_dir: Path) -> web.Application:
    config = load_config(None, environ={}, overrides={"server": {"data_dir": str(data_dir)}})
    identity = Identity("test-node", admin_key=ADMIN_KEY)
    return build_app(config, identity=identity, token_secret=TOKEN_SECRET)


def data_dir_warnings(caplog: pytest.LogCaptureFixture, data_dir: Path) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and str(data_dir) in record.getMessage()
    ]


async def test_start_warns_when_the_data_dir_is_open_to_other_users(
    aiohttp_client: StartApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o755)
    caplog.set_level(logging.WARNING)
    await aiohttp_client(app_on(data_dir))
    (warning,) = data_dir_warnings(caplog, data_dir)
    assert "0755" in warning
    assert f"chmod 700 {data_dir}" in warning


async def test_a_data_dir_pushd_creates_is_owner_only_and_not_warned_about(
    aiohttp_client: StartApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    caplog.set_level(logging.WARNING)
    await aiohttp_client(app_on(data_dir))
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert data_dir_warnings(caplog, data_dir) == []
