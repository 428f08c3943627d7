"""Retention (issue #4 point 6): the server runs the purge in the background."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from pushd.appkeys import STORAGE
from tests.app_client import MakeClient, create_user
from tests.ops.test_retention_job import DAY_S, aged, left_of

RETENTION = {"per_category": {"chat": DAY_S}, "interval": 0.05, "batch_size": 1}


async def _purged_in_the_background(client: TestClient[Any, Any]) -> None:
    created = await create_user(client)
    storage = client.app[STORAGE]
    await aged(storage, created["id"])
    async with asyncio.timeout(10):
        while ("chat", 3) in await left_of(storage, created["id"]):  # noqa: ASYNC110 - polls storage
            await asyncio.sleep(0.05)
    left = await left_of(storage, created["id"])
    assert ("chat", 0) in left
    assert ("billing", 40) in left  # under the 90-day default


async def test_the_server_purges_in_the_background(make_client: MakeClient) -> None:
    await _purged_in_the_background(await make_client(retention=RETENTION))


async def test_the_server_purges_in_the_background_on_postgresql(
    make_client: MakeClient, postgres_url: str
) -> None:
    client = await make_client(retention=RETENTION, storage={"url": postgres_url})
    await _purged_in_the_background(client)
