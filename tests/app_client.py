"""A whole pushd app (SQLite in tmp_path, in-process bus) behind a real socket."""

from __future__ import annotations

import asyncio
import atexit
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from pushd.app import Identity, build_app
from pushd.channels.http_client import UrlChecker
from pushd.config.settings import load_config
from storage import open_storage

ADMIN_KEY = "pk_test_admin_key_for_functional_tests_0123456789"
TOKEN_SECRET = "functional-test-token-secret-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}

AiohttpClient = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]
MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


# The fixtures of the services an app may be pointed at; each drops what it made (a
# database, a Redis prefix, a vhost) at teardown.
SERVICES = ("postgres_url", "redis_prefix", "amqp_url")


SQLITE_FILE = "pushd.db"  # where the embedded storage lives in the data dir
_migrated: list[Path] = []  # this run's migrated, empty SQLite database (made once)


async def _start_from_migrated_copy(database: Path) -> None:
    """Put a copy of an empty database at the newest schema where the app's SQLite
    storage will be, unless a database is there already (a restart in the same test).
    Migrating a fresh file took about 28 ms of every app's start-up, the largest part of
    it; the migrations themselves are tested on their own (tests/storage/)."""
    if await asyncio.to_thread(database.exists):
        return
    if not _migrated:
        folder = await asyncio.to_thread(tempfile.mkdtemp, prefix="pushd-migrated-")
        atexit.register(shutil.rmtree, folder, True)
        template = Path(folder) / SQLITE_FILE
        storage = await open_storage(f"sqlite:///{template}")
        try:
            await storage.migrate()
        finally:
            await storage.close()  # checkpoints the WAL: the one file holds everything
        _migrated.append(template)
    await asyncio.to_thread(shutil.copyfile, _migrated[0], database)


@pytest.fixture
def make_client(request: pytest.FixtureRequest, tmp_path: Path) -> MakeClient:
    """Build and start an app; keyword arguments override config sections.

    The services the test asks for are set up before the apps, so that they are torn
    down after them (teardown runs in reverse): an app whose database was dropped under
    it spent seconds of its shutdown retrying the writes it still had.
    """
    for service in SERVICES:
        if service in request.fixturenames:
            request.getfixturevalue(service)
    aiohttp_client: AiohttpClient = request.getfixturevalue("aiohttp_client")

    async def make(
        token_secret: str = TOKEN_SECRET,
        outbound_url_check: UrlChecker | None = None,
        **sections: dict[str, Any],
    ) -> TestClient[Any, Any]:
        overrides: dict[str, dict[str, Any]] = {"server": {"data_dir": str(tmp_path)}}
        for section, values in sections.items():
            overrides.setdefault(section, {}).update(values)
        config = load_config(None, environ={}, overrides=overrides)
        if not config.storage.url:
            await _start_from_migrated_copy(tmp_path / SQLITE_FILE)
        identity = Identity("test-node", admin_key=ADMIN_KEY)
        app = build_app(
            config,
            identity=identity,
            token_secret=token_secret,
            outbound_url_check=outbound_url_check,
        )
        return await aiohttp_client(app)

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient[Any, Any]:
    return await make_client()


async def create_user(client: TestClient[Any, Any], **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/users", json=fields, headers=AUTH)
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def send(client: TestClient[Any, Any], user_id: str, **fields: Any) -> dict[str, Any]:
    payload = {"user_id": user_id, "title": "hello", **fields}
    response = await client.post("/api/notifications", json=payload, headers=AUTH)
    assert response.status == 202, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def user_token(client: TestClient[Any, Any], user_id: str, **body: Any) -> str:
    response = await client.post(f"/api/users/{user_id}/tokens", json=body or None, headers=AUTH)
    assert response.status == 201, await response.text()
    token: str = (await response.json())["token"]
    return token


async def create_key(
    client: TestClient[Any, Any], role: str, **fields: Any
) -> tuple[str, dict[str, Any]]:
    """A new API key of `role` (created with the admin key): the secret and its record."""
    body = {"name": f"{role} key", "role": role, **fields}
    response = await client.post("/api/keys", json=body, headers=AUTH)
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created["key"], created["api_key"]
