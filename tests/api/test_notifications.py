"""The user's history (`GET /api/notifications/user/{userId}`, pushd/api/notifications.py)
filtered by channel delivery: `channel` and `status` over a real app, paged with the
other filters, refused by name when invalid, and described in the OpenAPI document."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pushd.appkeys import STORAGE
from pushd.ids import now_ms
from storage.records import DeliveryOutcome
from tests.app_client import AUTH, MakeClient, create_key, create_user, send

Client = TestClient[Any, Any]
# Never contacted: the email step is planned 10 minutes later, and the test settles it.
RELAY = {
    "name": "relay",
    "host": "127.0.0.1",
    "port": 2,
    "security": "none",
    "from_address": "pushd@example.com",
}
STATUSES = {"scheduled", "queued", "sending", "sent", "delivered", "failed", "skipped", "cancelled"}


@pytest.fixture
async def client(make_client: MakeClient) -> Client:
    return await make_client(
        channels={"email": [RELAY], "plans": {"default": [{"channel": "email", "delay": 600.0}]}}
    )


async def settle_emails(client: Client, statuses: dict[str, str]) -> None:
    """Lease the email steps due within the hour and give each notification's the status
    of `statuses` (notification id -> status); every leased step must be named there."""
    storage = client.app[STORAGE]
    now = now_ms() + 3_600_000
    leased = await storage.lease_due_deliveries(
        ["email"], now=now, limit=100, owner="test", lease_ms=60_000
    )
    assert {d.notification_id for d in leased} == set(statuses)
    await storage.record_delivery_outcomes(
        [
            DeliveryOutcome(
                delivery_id=d.id, at=now, status=statuses[d.notification_id], attempt=d.attempts
            )
            for d in leased
        ]
    )


async def history(client: Client, user_id: str, key: str | None = None, **query: str) -> list[str]:
    """The ids of every page of the user's filtered history, following the cursors."""
    headers = AUTH if key is None else {"Authorization": f"Bearer {key}"}
    ids: list[str] = []
    cursor: str | None = None
    while True:
        params = query | ({"cursor": cursor} if cursor else {})
        response = await client.get(
            f"/api/notifications/user/{user_id}", params=params, headers=headers
        )
        assert response.status == 200, await response.text()
        page = await response.json()
        if "limit" in query:
            assert len(page["items"]) == int(query["limit"]) or page["next_cursor"] is None
        ids += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


async def test_channel_and_status_keep_notifications_with_a_matching_delivery(
    client: Client,
) -> None:
    user = await create_user(client, email="ada@example.com")
    other = await create_user(client, email="bob@example.com")
    sent, failed, billing, mine_too = [
        (await send(client, user["id"], **fields))["id"]
        for fields in ({}, {}, {"category": "billing"}, {})
    ]
    inapp_only = (await send(client, user["id"], channels=[]))["id"]
    theirs = (await send(client, other["id"]))["id"]
    await settle_emails(
        client,
        {sent: "sent", failed: "failed", billing: "failed", mine_too: "sent", theirs: "failed"},
    )

    assert await history(client, user["id"]) == [inapp_only, mine_too, billing, failed, sent]
    assert await history(client, user["id"], channel="email") == [mine_too, billing, failed, sent]
    assert await history(client, user["id"], status="failed") == [billing, failed]
    assert await history(client, user["id"], channel="email", status="sent") == [mine_too, sent]
    assert await history(client, user["id"], channel="sms") == []
    # Pages of one, through the cursors: full, and only over listed notifications.
    assert await history(client, user["id"], status="sent", limit="1") == [mine_too, sent]
    assert await history(client, user["id"], channel="email", limit="3") == [
        mine_too,
        billing,
        failed,
        sent,
    ]


async def test_the_filters_combine_with_unread_and_a_keys_categories(client: Client) -> None:
    user = await create_user(client, email="ada@example.com")
    news, billing, read = [
        (await send(client, user["id"], category=category))["id"]
        for category in ("news", "billing", "billing")
    ]
    await settle_emails(client, {news: "failed", billing: "failed", read: "failed"})
    response = await client.post(f"/api/notifications/{read}/read", headers=AUTH)
    assert response.status == 200
    assert await history(client, user["id"], status="failed", unread="true") == [billing, news]
    key, _ = await create_key(client, "reader", categories=["billing"])
    assert await history(client, user["id"], key, status="failed", limit="1") == [read, billing]
    assert await history(client, user["id"], key, status="failed", unread="true") == [billing]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("channel", "inapp"),
        ("channel", "EMAIL"),
        ("channel", ""),
        ("status", "read"),
        ("status", "bogus"),
    ],
)
async def test_an_unknown_channel_or_status_is_refused_by_name(
    client: Client, field: str, value: str
) -> None:
    user = await create_user(client)
    response = await client.get(
        f"/api/notifications/user/{user['id']}", params={field: value}, headers=AUTH
    )
    assert response.status == 400, await response.text()
    error = (await response.json())["error"]
    assert (error["code"], error["field"]) == ("invalid_query", field)


async def test_the_document_lists_the_values_the_filters_take(client: Client) -> None:
    doc = await (await client.get("/api/openapi.json", headers=AUTH)).json()
    operation = doc["paths"]["/api/notifications/user/{userId}"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
    assert not parameters["channel"]["required"]
    assert not parameters["status"]["required"]

    def values(schema: dict[str, Any]) -> list[str]:
        [enum] = [option for option in schema["anyOf"] if "enum" in option]
        found: list[str] = enum["enum"]
        return found

    channels = values(parameters["channel"]["schema"])
    assert set(channels) == {"email", "webpush", "fcm", "apns", "sms", "webhook", "push"}
    assert set(values(parameters["status"]["schema"])) == STATUSES
