"""SIGTERM on a real process: stop accepting, close sockets with 1001, drain, exit 0."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from tests.process.server_process import ServerProcess

ADMIN_KEY = "pk_shutdown_test_admin_key_0123456789abcdefgh"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}

pytestmark = pytest.mark.slow


async def test_sigterm_closes_sockets_with_1001_and_exits_0(tmp_path: Path) -> None:
    env = {"PUSHD_ADMIN_KEY": ADMIN_KEY, "PUSHD_SERVER__SHUTDOWN_TIMEOUT": "5"}
    async with (
        await ServerProcess.start(tmp_path, env=env) as server,
        aiohttp.ClientSession() as session,
    ):
        async with session.post(f"{server.url}/api/users", json={}, headers=AUTH) as response:
            user_id = (await response.json())["id"]
        async with session.post(
            f"{server.url}/api/users/{user_id}/tokens", headers=AUTH
        ) as response:
            token = (await response.json())["token"]
        sockets = []
        for _ in range(3):
            ws = await session.ws_connect(f"{server.url}/ws")
            await ws.send_json({"type": "auth", "token": token})
            assert (await ws.receive_json(timeout=10))["type"] == "welcome"
            sockets.append(ws)

        started = time.monotonic()
        stopping = asyncio.create_task(server.stop())
        for ws in sockets:
            message = await ws.receive(timeout=10)
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == 1001
        assert await stopping == 0, server.log()
        elapsed = time.monotonic() - started
        assert elapsed < 5, f"shutdown took {elapsed:.1f}s"
        assert "pushd: stopped" in server.log()
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"{server.url}/api/healthcheck")


async def test_first_start_prints_admin_key_once_and_it_works(tmp_path: Path) -> None:
    async with await ServerProcess.start(tmp_path) as server, aiohttp.ClientSession() as session:
        lines = [line for line in server.output if "admin API key" in line]
        assert len(lines) == 1
        key = lines[0].rsplit(" ", 1)[-1].strip()
        async with session.get(
            f"{server.url}/api/users", headers={"Authorization": f"Bearer {key}"}
        ) as response:
            assert response.status == 200
        assert await server.stop() == 0
    async with await ServerProcess.start(tmp_path) as again:
        assert not any("admin API key" in line for line in again.output)
        assert await again.stop() == 0
    assert key not in (tmp_path / "pushd.db").read_bytes().decode(errors="replace")


async def test_bad_config_stops_startup_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"server\.port"):
        await ServerProcess.start(tmp_path, env={"PUSHD_SERVER__PORT": "eighty"})
