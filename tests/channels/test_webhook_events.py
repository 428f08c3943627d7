"""Webhook events end to end: a running pushd, an endpoint registered through the API
that verifies every signature with the function docs/channels.md shows
(tests/channels/webhook_receiver.py), and a local SMTP relay that a notification's email
step goes through. The endpoint gets `notification.accepted` with the notification and
`delivery.updated` once the email is sent; an endpoint that answers 410 is disabled."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.app_client import AUTH, MakeClient, create_user
from tests.channels.harness import AiohttpServer, allow_every_url, served
from tests.channels.smtp_server import LocalSmtpServer, RecordingHandler
from tests.channels.webhook_receiver import ReceivedEvent, WebhookReceiver

Client = TestClient[Any, Any]
BOTH = ["notification.accepted", "delivery.updated"]
FAST = {"poll_interval": 0.05, "backoff_base": 0.05, "backoff_cap": 0.1, "max_attempts": 3}


@pytest.fixture
async def relay() -> AsyncIterator[LocalSmtpServer]:
    server = LocalSmtpServer(RecordingHandler())
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def receiver(aiohttp_server: AiohttpServer) -> tuple[WebhookReceiver, str]:
    local = WebhookReceiver(secrets=[])
    return local, await served(aiohttp_server, local.app())


async def start_pushd(make_client: MakeClient, relay: LocalSmtpServer, **webhook: Any) -> Client:
    email = {
        "name": "relay",
        "host": "127.0.0.1",
        "port": relay.port,
        "security": "none",
        "from_address": "pushd@example.com",
    }
    return await make_client(
        # The receiver is plain http on loopback, which the real check refuses.
        outbound_url_check=allow_every_url,
        channels={**FAST, "email": [email], "webhook": {"sweep_interval": 0.05, **webhook}},
    )


async def register(client: Client, url: str, types: list[str] = BOTH) -> dict[str, Any]:
    response = await client.post(
        "/api/webhooks", json={"url": url, "event_types": types}, headers=AUTH
    )
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def send_email(client: Client) -> str:
    user = await create_user(client, email="ada@example.com")
    payload = {
        "user_id": user["id"],
        "title": "Build failed",
        "category": "builds",
        "channels": [{"channel": "email"}],
    }
    response = await client.post("/api/notifications", json=payload, headers=AUTH)
    assert response.status == 202, await response.text()
    notification_id: str = (await response.json())["id"]
    return notification_id


async def eventually(check: Callable[[], Any], within: float = 5.0) -> None:
    """Wait until `check()` (a bool, or a coroutine of one) is true."""
    deadline = time.monotonic() + within
    while True:
        done = check()
        if inspect.isawaitable(done):
            done = await done
        if done:
            return
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def events(received: list[ReceivedEvent]) -> list[dict[str, Any]]:
    return [json.loads(event.body) for event in received]


async def test_events_arrive_signed_for_the_notification_and_its_email(
    make_client: MakeClient, relay: LocalSmtpServer, receiver: tuple[WebhookReceiver, str]
) -> None:
    endpoint, origin = receiver
    client = await start_pushd(make_client, relay)
    created = await register(client, f"{origin}/hook")
    endpoint.secrets.append(created["secret"])
    notification_id = await send_email(client)

    await eventually(lambda: len(endpoint.received) >= 2)
    assert endpoint.refused == 0
    accepted, updated = sorted(events(endpoint.received), key=lambda e: e["type"] != BOTH[0])
    assert accepted["type"] == "notification.accepted"
    assert accepted["data"]["notification_id"] == notification_id
    assert accepted["data"]["category"] == "builds"
    [planned] = accepted["data"]["deliveries"]
    assert (planned["channel"], planned["status"]) == ("email", "queued")
    assert "Build failed" not in json.dumps(accepted)  # the content is not sent
    assert updated["type"] == "delivery.updated"
    assert updated["data"]["delivery_id"] == planned["delivery_id"]
    assert (updated["data"]["channel"], updated["data"]["status"]) == ("email", "sent")
    assert updated["data"]["provider"] == "relay"
    headers = {e.headers["Pushd-Event-Type"]: e.headers for e in endpoint.received}
    assert headers["delivery.updated"]["Pushd-Event-Id"] == updated["id"]
    # Each event once: the webhook rows' own statuses are not announced.
    await asyncio.sleep(0.3)
    assert len(endpoint.received) == 2
    # The webhook rows are the notification's deliveries like any other.
    detail = await (await client.get(f"/api/notifications/{notification_id}", headers=AUTH)).json()
    channels = sorted((d["channel"], d["status"]) for d in detail["channel_deliveries"])
    assert channels == [("email", "sent"), ("webhook", "sent"), ("webhook", "sent")]


async def test_after_rotation_either_secret_verifies(
    make_client: MakeClient, relay: LocalSmtpServer, receiver: tuple[WebhookReceiver, str]
) -> None:
    endpoint, origin = receiver
    client = await start_pushd(make_client, relay)
    created = await register(client, f"{origin}/hook", ["notification.accepted"])
    webhook_id = created["webhook"]["id"]
    rotated = await (
        await client.post(f"/api/webhooks/{webhook_id}/rotate-secret", headers=AUTH)
    ).json()
    endpoint.secrets[:] = [created["secret"]]  # a receiver not updated yet
    await send_email(client)
    await eventually(lambda: len(endpoint.received) == 1)
    endpoint.secrets[:] = [rotated["secret"]]  # an updated one
    await send_email(client)
    await eventually(lambda: len(endpoint.received) == 2)
    assert endpoint.refused == 0
    signature = endpoint.received[-1].headers["Pushd-Signature"]
    assert signature.count("v1=") == 2


async def test_an_endpoint_that_answers_410_is_disabled_with_the_reason(
    make_client: MakeClient, relay: LocalSmtpServer, receiver: tuple[WebhookReceiver, str]
) -> None:
    endpoint, origin = receiver
    client = await start_pushd(make_client, relay)
    webhook_id = (await register(client, f"{origin}/gone", ["notification.accepted"]))["webhook"][
        "id"
    ]

    async def disabled() -> bool:
        response = await client.get(f"/api/webhooks/{webhook_id}", headers=AUTH)
        return (await response.json())["enabled"] is False

    await send_email(client)
    await eventually(disabled)
    webhook = await (await client.get(f"/api/webhooks/{webhook_id}", headers=AUTH)).json()
    assert "410 Gone" in webhook["disabled_reason"]
    assert endpoint.hits["/gone"] == 1  # permanent: not retried
    # Disabled: the next notification plans no event for it.
    await send_email(client)
    await asyncio.sleep(0.3)
    assert endpoint.hits["/gone"] == 1
    enabled = await client.post(f"/api/webhooks/{webhook_id}/enable", headers=AUTH)
    assert (await enabled.json())["disabled_reason"] is None


async def test_an_endpoint_that_keeps_failing_is_disabled(
    make_client: MakeClient, relay: LocalSmtpServer, receiver: tuple[WebhookReceiver, str]
) -> None:
    _, origin = receiver
    client = await start_pushd(make_client, relay, disable_after=2)
    webhook_id = (await register(client, f"{origin}/refuse", ["notification.accepted"]))["webhook"][
        "id"
    ]
    for _ in range(2):
        await send_email(client)

    async def disabled() -> bool:
        response = await client.get(f"/api/webhooks/{webhook_id}", headers=AUTH)
        return (await response.json())["enabled"] is False

    await eventually(disabled)
    webhook = await (await client.get(f"/api/webhooks/{webhook_id}", headers=AUTH)).json()
    assert webhook["consecutive_failures"] == 2
    assert "2 events in a row failed" in webhook["disabled_reason"]
    assert "400" in webhook["disabled_reason"]
