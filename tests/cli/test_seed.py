"""`pushd seed`: users and notifications written through the storage layer, on SQLite
and PostgreSQL, readable afterwards through storage and the API (decrypted alike)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from pushd.app import Identity, build_app
from pushd.cli import seed
from pushd.cli.main import _parser
from pushd.config.settings import load_config
from pushd.process.key_ring import storage_cipher
from storage import open_storage
from tests.app_client import ADMIN_KEY, AUTH, TOKEN_SECRET, AiohttpClient
from tests.storage.conftest import storage_url

__all__ = ["storage_url"]


async def test_seeded_rows_are_there_and_readable(
    storage_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(
        None,
        environ={},
        overrides={"server": {"data_dir": str(tmp_path)}, "storage": {"url": storage_url}},
    )
    args = _parser().parse_args(["seed", "--users", "30", "--notifications", "700"])
    printed: list[str] = []
    assert await seed.run(config, args, printed.append) == 0
    assert printed[0].startswith("seeded 30 users in ")
    assert "700 notifications" in printed[0]
    assert "rows/s" in printed[0]
    assert "notifications: 700/700" in capsys.readouterr().err  # progress, not a TTY

    cipher = await asyncio.to_thread(storage_cipher, config)
    storage = await open_storage(config.storage_url, cipher=cipher)
    try:
        users = await storage.list_users(after_id=None, limit=100)
        assert len(users) == 30
        assert all(u.email and u.email.endswith("@example.com") for u in users)
        assert all(u.timezone and u.locale and u.name for u in users)
        total = 0
        for user in users:
            rows = await storage.list_notifications(user.id, before_seq=None, limit=1000)
            seqs = [row.seq for row in reversed(rows)]
            assert seqs == list(range(1, len(rows) + 1))  # increasing, gap-free
            assert user.last_seq == len(rows)
            assert all(row.title and row.body for row in rows)
            total += len(rows)
        assert total == 700
    finally:
        await storage.close()


async def test_seeded_data_reads_through_the_api(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    """Seeded with encryption at rest on (the SQLite default): the server started on
    the same data dir reads the sealed names and bodies."""
    config = load_config(None, environ={}, overrides={"server": {"data_dir": str(tmp_path)}})
    args = _parser().parse_args(["seed", "--users", "3", "--notifications", "12"])
    ignored: list[str] = []
    assert await seed.run(config, args, ignored.append) == 0
    app = build_app(
        config, identity=Identity("test-node", admin_key=ADMIN_KEY), token_secret=TOKEN_SECRET
    )
    client = await aiohttp_client(app)
    users = (await (await client.get("/api/users", headers=AUTH)).json())["items"]
    assert len(users) == 3
    assert all("@example.com" in user["email"] for user in users)
    counts = 0
    for user in users:
        page = await client.get(f"/api/notifications/user/{user['id']}", headers=AUTH)
        assert page.status == 200, await page.text()
        items = (await page.json())["items"]
        assert all(item["title"] for item in items)
        counts += len(items)
    assert counts == 12


@pytest.mark.slow
@pytest.mark.parametrize("argv", [["--users", "0"], ["--users", "2", "--notifications", "-1"]])
def test_bad_counts_exit_2(tmp_path: Path, argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pushd", "seed", "--data-dir", str(tmp_path), *argv],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--users must be at least 1" in result.stdout


@pytest.mark.slow
def test_unreachable_storage_exits_1(tmp_path: Path) -> None:
    url = "postgresql://pushd@127.0.0.1:1/nothing"
    result = subprocess.run(
        [sys.executable, "-m", "pushd", "seed", "--users", "1", "--storage-url", url,
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
