"""API keys over real sockets: creation shown once, listing without secrets, category
limits, revocation that takes effect at once on this node and on another node."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests import services
from tests.app_client import ADMIN_KEY, AUTH, MakeClient, create_key, create_user, send

Client = TestClient[Any, Any]

# Long enough that a test passing within it proves the cache was dropped, not expired.
LONG_CACHE = {"api_key_cache_ttl": 3600.0}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def status_with(client: Client, key: str) -> int:
    return (await client.get("/api/users", headers=bearer(key))).status


async def test_a_key_is_shown_once_and_listed_without_secret(client: Client) -> None:
    key, record = await create_key(client, "publisher", categories=["billing", "alerts"])
    assert key.startswith("pk_")
    assert record["role"] == "publisher"
    assert record["categories"] == ["alerts", "billing"]
    assert record["revoked_at"] is None
    assert await status_with(client, key) == 200
    listed = await (await client.get("/api/keys", headers=AUTH)).json()
    assert [item["role"] for item in listed["items"]] == ["admin", "publisher"]
    got = await client.get(f"/api/keys/{record['id']}", headers=AUTH)
    assert await got.json() == record
    for body in (await (await client.get("/api/keys", headers=AUTH)).text(), str(record)):
        assert key not in body
        assert "hash" not in body
    missing = await client.get("/api/keys/key_nope", headers=AUTH)
    assert missing.status == 404
    assert (await missing.json())["error"]["field"] == "keyId"


async def test_bad_key_requests_name_the_field(client: Client) -> None:
    for body, field in (
        ({"name": "x", "role": "admin", "categories": ["billing"]}, "categories"),
        ({"name": "x", "role": "root"}, "role"),
        ({"name": "", "role": "reader"}, "name"),
        ({"name": "x", "role": "reader", "categories": ["Not A Slug"]}, "categories[0]"),
    ):
        response = await client.post("/api/keys", json=body, headers=AUTH)
        assert response.status == 422, body
        assert (await response.json())["error"]["field"] == field


async def test_a_category_limited_publisher_sends_only_its_categories(client: Client) -> None:
    key, _ = await create_key(client, "publisher", categories=["billing"])
    user = await create_user(client)
    base = {"user_id": user["id"], "title": "hi"}
    allowed = await client.post(
        "/api/notifications", json={**base, "category": "billing"}, headers=bearer(key)
    )
    assert allowed.status == 202
    for extra in ({"category": "marketing"}, {}):
        refused = await client.post(
            "/api/notifications", json={**base, **extra}, headers=bearer(key)
        )
        assert refused.status == 403
        error = (await refused.json())["error"]
        assert (error["code"], error["field"]) == ("forbidden", "category")
        assert "billing" in error["message"]


async def test_a_category_limited_reader_sees_only_its_categories(client: Client) -> None:
    key, _ = await create_key(client, "reader", categories=["billing"])
    user = await create_user(client)
    billing = await send(client, user["id"], category="billing")
    other = await send(client, user["id"], category="marketing")
    uncategorised = await send(client, user["id"])
    page = await client.get(f"/api/notifications/user/{user['id']}", headers=bearer(key))
    assert [item["id"] for item in (await page.json())["items"]] == [billing["id"]]
    assert (
        await client.get(f"/api/notifications/{billing['id']}", headers=bearer(key))
    ).status == 200
    for hidden in (other, uncategorised):
        response = await client.get(f"/api/notifications/{hidden['id']}", headers=bearer(key))
        assert response.status == 404
    everything = await client.get(f"/api/notifications/user/{user['id']}", headers=AUTH)
    assert len((await everything.json())["items"]) == 3


async def test_revocation_is_immediate_despite_the_cache(make_client: MakeClient) -> None:
    """Guards the per-node key cache outliving a revocation: the key was just used (so
    it is cached for an hour here) and must be refused on the very next request."""
    client = await make_client(auth=LONG_CACHE)
    key, record = await create_key(client, "publisher")
    assert await status_with(client, key) == 200
    revoked = await client.delete(f"/api/keys/{record['id']}", headers=AUTH)
    assert revoked.status == 200
    first_revoked_at = (await revoked.json())["revoked_at"]
    assert first_revoked_at is not None
    assert await status_with(client, key) == 401
    again = await client.delete(f"/api/keys/{record['id']}", headers=AUTH)
    assert again.status == 200
    assert (await again.json())["revoked_at"] == first_revoked_at
    assert (await client.delete("/api/keys/key_nope", headers=AUTH)).status == 404


async def test_the_last_admin_key_cannot_be_revoked(client: Client) -> None:
    keys = await (await client.get("/api/keys", headers=AUTH)).json()
    [bootstrap] = [item for item in keys["items"] if item["role"] == "admin"]
    refused = await client.delete(f"/api/keys/{bootstrap['id']}", headers=AUTH)
    assert refused.status == 409
    error = (await refused.json())["error"]
    assert "last live admin key" in error["message"]
    assert "Create another admin key first" in error["message"]
    assert await status_with(client, ADMIN_KEY) == 200
    second, _ = await create_key(client, "admin")
    assert (
        await client.delete(f"/api/keys/{bootstrap['id']}", headers=bearer(second))
    ).status == 200
    assert await status_with(client, ADMIN_KEY) == 401
    assert await status_with(client, second) == 200


async def refused_within(client: Client, key: str, seconds: float) -> float:
    """How long until `key` is refused on `client`'s node (fails after `seconds`)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while await status_with(client, key) != 401:
        assert loop.time() - started < seconds, "the key was still accepted"
        await asyncio.sleep(0.02)
    return loop.time() - started


async def test_revocation_on_one_node_reaches_another_at_once(
    make_client: MakeClient, postgres_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """Two nodes sharing PostgreSQL and one Redis prefix: node B has the key cached for
    an hour; revoking it on node A must make B refuse it within a moment."""
    shared = {
        "storage": {"url": postgres_url},
        "state": {"url": services.REDIS_URL, "prefix": redis_prefix},
        "auth": LONG_CACHE,
    }
    node_a = await make_client(server={"data_dir": str(tmp_path / "a")}, **shared)
    node_b = await make_client(server={"data_dir": str(tmp_path / "b")}, **shared)
    key, record = await create_key(node_a, "reader")
    assert await status_with(node_b, key) == 200  # cached on B from now on
    assert (await node_a.delete(f"/api/keys/{record['id']}", headers=AUTH)).status == 200
    assert await status_with(node_a, key) == 401
    assert await refused_within(node_b, key, seconds=3.0) < 3.0


async def test_a_node_without_the_broadcast_keeps_the_key_only_for_the_cache_ttl(
    make_client: MakeClient, postgres_url: str, tmp_path: Path
) -> None:
    """The other side of the contract: two nodes that share storage but no state (each
    in-process) cannot signal; B learns the revocation from storage once its cache entry
    expires, which bounds how long a key outlives its revocation."""
    shared = {"storage": {"url": postgres_url}, "auth": {"api_key_cache_ttl": 0.5}}
    node_a = await make_client(server={"data_dir": str(tmp_path / "a")}, **shared)
    node_b = await make_client(server={"data_dir": str(tmp_path / "b")}, **shared)
    key, record = await create_key(node_a, "reader")
    assert await status_with(node_b, key) == 200
    assert (await node_a.delete(f"/api/keys/{record['id']}", headers=AUTH)).status == 200
    assert await refused_within(node_b, key, seconds=3.0) < 3.0


@pytest.mark.slow  # runs `python -m pushd keys revoke` in a process
async def test_a_cli_revocation_reaches_running_nodes_through_redis(
    make_client: MakeClient, postgres_url: str, redis_prefix: str
) -> None:
    """`pushd keys revoke` runs in its own process: with a Redis state it publishes the
    revocation, and a running node drops the key it had cached for an hour."""
    node = await make_client(
        storage={"url": postgres_url},
        state={"url": services.REDIS_URL, "prefix": redis_prefix},
        auth=LONG_CACHE,
    )
    key, record = await create_key(node, "reader")
    assert await status_with(node, key) == 200
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PUSHD_")}
    environment |= {"PUSHD_STATE__URL": services.REDIS_URL, "PUSHD_STATE__PREFIX": redis_prefix}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pushd", "keys", "revoke", record["id"],
        "--storage-url", postgres_url,
        env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, output.decode()
    assert "warning" not in output.decode()
    assert await refused_within(node, key, seconds=3.0) < 3.0
