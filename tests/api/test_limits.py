"""Rate limits (per API key, per recipient) and input limits (body, payload, frame,
sockets per user), over real sockets; the cluster-wide ones with two apps on one Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from actors.transport import CloseCode
from pushd.access.rate_limits import client_network
from tests import services
from tests.app_client import AUTH, MakeClient, create_user, user_token
from tests.realtime.test_ws import close_code_of, connect

Client = TestClient[Any, Any]


async def post(client: Client, user_id: str, **fields: Any) -> aiohttp.ClientResponse:
    payload = {"user_id": user_id, "title": "hello", **fields}
    response: aiohttp.ClientResponse = await client.post(
        "/api/notifications", json=payload, headers=AUTH
    )
    return response


async def rate_limited(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """Assert a 429 from the error catalogue with a whole-second Retry-After."""
    assert response.status == 429, await response.text()
    assert response.headers["Retry-After"].isdigit()
    assert int(response.headers["Retry-After"]) >= 1
    error: dict[str, Any] = (await response.json())["error"]
    assert error["code"] == "rate_limited"
    return error


async def test_an_api_key_over_its_rate_gets_429_with_retry_after(
    make_client: MakeClient,
) -> None:
    client = await make_client(limits={"api_key_rate": 0.5, "api_key_burst": 3})
    for _ in range(3):
        assert (await client.get("/api/stats", headers=AUTH)).status == 200
    error = await rate_limited(await client.get("/api/stats", headers=AUTH))
    assert "rate limit" in error["message"]
    assert (await client.get("/metrics", headers=AUTH)).status == 429
    # The health check needs no key, so it spends no key's budget.
    assert (await client.get("/api/healthcheck")).status == 200


async def test_zero_disables_the_api_key_limit(make_client: MakeClient) -> None:
    client = await make_client(limits={"api_key_rate": 0, "api_key_burst": 1})
    for _ in range(20):
        assert (await client.get("/api/stats", headers=AUTH)).status == 200


async def test_a_recipient_over_its_budget_gets_429_naming_the_user(
    make_client: MakeClient,
) -> None:
    client = await make_client(limits={"per_recipient": {"inapp": "2/minute"}})
    user, other = await create_user(client), await create_user(client)
    for _ in range(2):
        assert (await post(client, user["id"])).status == 202
    error = await rate_limited(await post(client, user["id"]))
    assert user["id"] in error["message"]
    assert "2/minute" in error["message"]
    assert error["field"] == "user_id"
    assert (await post(client, other["id"])).status == 202


async def test_a_channel_without_a_rate_is_not_limited(make_client: MakeClient) -> None:
    client = await make_client(limits={"per_recipient": {}})
    user = await create_user(client)
    for _ in range(30):
        assert (await post(client, user["id"])).status == 202


async def test_two_nodes_on_one_redis_share_every_budget(
    make_client: MakeClient, postgres_url: str, redis_prefix: str, tmp_path: Any
) -> None:
    """Two apps sharing PostgreSQL (so the same API key id) and one Redis prefix, as two
    nodes of a cluster: one node's requests spend the other's budget."""
    shared = {
        "storage": {"url": postgres_url},
        "state": {"url": services.REDIS_URL, "prefix": redis_prefix},
        "limits": {
            "api_key_rate": 0.01,
            "api_key_burst": 8,
            "per_recipient": {"inapp": "3/hour"},
        },
    }
    node_a = await make_client(server={"data_dir": str(tmp_path / "a")}, **shared)
    node_b = await make_client(server={"data_dir": str(tmp_path / "b")}, **shared)
    user = await create_user(node_a)  # request 1 of 8
    assert (await post(node_a, user["id"])).status == 202  # 2; recipient 1 of 3
    assert (await post(node_b, user["id"])).status == 202  # 3; recipient 2 of 3
    assert (await post(node_a, user["id"])).status == 202  # 4; recipient 3 of 3
    error = await rate_limited(await post(node_b, user["id"]))  # 5
    assert user["id"] in error["message"]
    for node in (node_a, node_b, node_a):  # 6, 7, 8
        assert (await node.get("/api/stats", headers=AUTH)).status == 200
    await rate_limited(await node_b.get("/api/stats", headers=AUTH))
    await rate_limited(await node_a.get("/api/stats", headers=AUTH))


async def test_calls_without_a_valid_key_share_one_budget_per_source_on_every_node(
    make_client: MakeClient, redis_prefix: str, tmp_path: Any
) -> None:
    """Guards unauthenticated floods (issue #10 item 2): failed authentications spend a
    budget per source address, held in the shared state so that it holds cluster-wide;
    past it, 429 with Retry-After. A valid key from the same address is not held back."""
    shared = {
        "state": {"url": services.REDIS_URL, "prefix": redis_prefix},
        "limits": {"unauthenticated_rate": 0.01, "unauthenticated_burst": 4},
    }
    node_a = await make_client(server={"data_dir": str(tmp_path / "a")}, **shared)
    node_b = await make_client(server={"data_dir": str(tmp_path / "b")}, **shared)
    unknown = {"Authorization": "Bearer pk_unknown"}
    statuses = []
    for node in (node_a, node_b, node_a, node_b):
        statuses.append((await node.post("/api/users", json={}, headers=unknown)).status)
    assert statuses == [401] * 4
    error = await rate_limited(await node_b.post("/api/users", json={}))
    assert "without a valid API key" in error["message"]
    await rate_limited(await node_a.get("/api/stats"))
    assert (await node_a.get("/api/stats", headers=AUTH)).status == 200
    assert (await node_b.post("/api/users", json={}, headers=AUTH)).status == 201


async def test_zero_disables_the_unauthenticated_limit(make_client: MakeClient) -> None:
    client = await make_client(limits={"unauthenticated_rate": 0, "unauthenticated_burst": 1})
    for _ in range(10):
        assert (await client.post("/api/users", json={})).status == 401


@pytest.mark.parametrize(
    ("remote", "source"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        (None, "unknown"),
        ("not an address", "not an address"),
    ],
)
def test_a_source_is_an_ipv4_address_or_an_ipv6_slash_64(remote: str | None, source: str) -> None:
    """An IPv6 host usually holds a whole /64: counted per address, it would get a fresh
    budget (and a fresh audit record) per address it makes up."""
    assert client_network(remote) == source


async def test_unreachable_redis_fails_health_but_not_requests(make_client: MakeClient) -> None:
    """Limits fail open: a Redis outage must not become an API outage, but the health
    check must say so."""
    client = await make_client(
        state={"url": "redis://127.0.0.1:1/0"}, limits={"per_recipient": {"inapp": "1/hour"}}
    )
    health = await client.get("/api/healthcheck")
    assert health.status == 503
    body = await health.json()
    assert body["state"]["ok"] is False
    assert body["state"]["backend"] == "RedisState"
    assert body["storage"]["ok"] is True
    user = await create_user(client)
    for _ in range(3):
        assert (await post(client, user["id"])).status == 202


async def test_healthcheck_reports_the_state_backend(client: Client) -> None:
    body = await (await client.get("/api/healthcheck")).json()
    assert body["state"] == {"ok": True, "backend": "MemoryState"}


async def test_body_size_error_names_the_limit(make_client: MakeClient) -> None:
    client = await make_client(server={"max_body_bytes": 1024})
    response = await client.post("/api/users", json={"name": "x" * 4096}, headers=AUTH)
    assert response.status == 413
    error = (await response.json())["error"]
    assert error["code"] == "payload_too_large"
    assert "1024" in error["message"]
    assert "server.max_body_bytes" in error["message"]


async def test_notification_payload_is_capped_by_configuration(make_client: MakeClient) -> None:
    client = await make_client(
        limits={"title_max_chars": 10, "body_max_chars": 20, "data_max_bytes": 50}
    )
    user = await create_user(client)
    for fields, field, setting in (
        ({"title": "x" * 11}, "title", "limits.title_max_chars"),
        ({"body": "x" * 21}, "body", "limits.body_max_chars"),
        ({"data": {"k": "x" * 50}}, "data", "limits.data_max_bytes"),
    ):
        response = await post(client, user["id"], **fields)
        assert response.status == 422, await response.text()
        error = (await response.json())["error"]
        assert (error["field"], error["code"]) == (field, "validation_failed")
        assert setting in error["message"]
    accepted = await post(client, user["id"], title="x" * 10, body="y" * 20, data={"k": "v"})
    assert accepted.status == 202
    doc = await (await client.get("/api/openapi.json", headers=AUTH)).json()
    title = doc["components"]["schemas"]["SendNotification"]["properties"]["title"]
    assert {"type": "string", "maxLength": 10} in title["anyOf"]


async def test_a_websocket_frame_over_the_limit_closes_with_1009(make_client: MakeClient) -> None:
    client = await make_client(limits={"ws_max_frame_bytes": 1024})
    user = await create_user(client)
    ws, _ = await connect(client, await user_token(client, user["id"]))
    await ws.send_str('{"type": "ping", "pad": "' + "x" * 2048 + '"}')
    assert await close_code_of(ws) == 1009


async def test_too_many_sockets_for_one_user_are_refused_with_4009(
    make_client: MakeClient,
) -> None:
    client = await make_client(limits={"max_sockets_per_user": 2})
    user, other = await create_user(client), await create_user(client)
    token = await user_token(client, user["id"])
    first, _ = await connect(client, token)
    await connect(client, token)
    third = await client.ws_connect("/ws")
    await third.send_json({"type": "auth", "token": token})
    closing = await third.receive(timeout=5)
    assert closing.type == aiohttp.WSMsgType.CLOSE
    assert closing.data == CloseCode.TOO_MANY_CONNECTIONS
    assert int(CloseCode.TOO_MANY_CONNECTIONS) == 4009  # documented in docs/protocol.md
    assert "2 sockets" in str(closing.extra)
    await connect(client, await user_token(client, other["id"]))  # others unaffected
    # A socket that closes gives its place back.
    await first.close()
    async with asyncio.timeout(5):
        while True:
            fourth = await client.ws_connect("/ws")
            await fourth.send_json({"type": "auth", "token": token})
            frame = await fourth.receive(timeout=5)
            if frame.type == aiohttp.WSMsgType.TEXT:
                assert frame.json()["type"] == "welcome"
                break
            await asyncio.sleep(0.05)  # the server may not have seen the close yet
