"""The health check tells the truth about storage and bus, and a dead database turns
requests into 503s with Retry-After, never 500s."""

from __future__ import annotations

import asyncio

import aiohttp
import asyncpg
import pytest

from actors.retry import Backoff
from actors.transport import CloseCode
from pushd.access import audit_writer
from tests import services
from tests.app_client import AUTH, MakeClient, create_user, user_token


async def test_unreachable_broker_makes_healthcheck_503(make_client: MakeClient) -> None:
    client = await make_client(bus={"url": "amqp://guest:guest@127.0.0.1:1/"})
    response = await client.get("/api/healthcheck")
    assert response.status == 503
    assert response.headers["Retry-After"]
    body = await response.json()
    assert body["status"] == "unavailable"
    assert body["bus"]["ok"] is False
    assert body["bus"]["backend"] == "RabbitBus"  # what is behind the counting wrapper
    assert body["storage"]["ok"] is True


async def test_lost_database_gives_503_with_retry_after(
    make_client: MakeClient, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kills the server's database connections and removes the database under a running
    pushd: health and writes must answer 503 naming storage, not 500."""
    # The audit records of these calls cannot be stored either: retried at the writer's
    # pace, they held the app's shutdown for 6 s.
    monkeypatch.setattr(audit_writer, "_WRITE_BACKOFF", Backoff(base=0.001, cap=0.001))
    client = await make_client(storage={"url": postgres_url})
    user = await create_user(client)
    database = postgres_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(services.pg_url("postgres"))
    try:
        await admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
    finally:
        await admin.close()
    await asyncio.sleep(0.1)

    health = await client.get("/api/healthcheck")
    assert health.status == 503
    assert (await health.json())["storage"]["ok"] is False

    response = await client.post(
        "/api/notifications", json={"user_id": user["id"], "title": "t"}, headers=AUTH
    )
    assert response.status == 503, await response.text()
    assert response.headers["Retry-After"]
    assert (await response.json())["error"]["code"] == "storage_unavailable"


async def test_socket_is_told_to_reconnect_later_while_the_broker_is_down(
    make_client: MakeClient,
) -> None:
    """A socket that cannot be routed to (bus down) must be closed with a documented
    "reconnect later" code, not dropped by an unhandled error."""
    client = await make_client(bus={"url": "amqp://guest:guest@127.0.0.1:1/"})
    user = await create_user(client)
    token = await user_token(client, user["id"])
    ws = await client.ws_connect("/ws")
    await ws.send_json({"type": "auth", "token": token})
    message = await ws.receive(timeout=10)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == CloseCode.RECONNECT
