"""Delivery optimisation over a real app (pushd/routing/engagement.py), with synthetic
read histories written through storage: `deliver_at_local: "best"` picks the user's
reading hour, a category with `channel_order = "engagement"` sends the fastest-read
channel first, preferences still skip a channel, and each delivery's `decision` is shown
by `GET /api/notifications/{id}`."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient

from pushd.appkeys import STORAGE
from pushd.ids import now_ms
from storage import Storage
from storage.records import DeliveryOutcome, NewNotification, PlannedDelivery
from tests.app_client import AUTH, MakeClient, create_user

Client = TestClient[Any, Any]
DAY = 86_400_000
PARIS = ZoneInfo("Europe/Paris")
NOT_SENT: dict[str, int] = {}
"""A read of a notification without channel deliveries."""
# Never contacted: the steps below are planned for later, then read or left alone.
RELAY = {
    "name": "relay",
    "host": "127.0.0.1",
    "port": 2,
    "security": "none",
    "from_address": "pushd@example.com",
}
SMS = {
    "name": "sms",
    "kind": "http",
    "url": "https://sms.example.com/send",
    "from_number": "+15550000000",
}
ALERTS = {
    "name": "Alerts",
    "channel_order": "engagement",
    "plan": [{"channel": "email", "delay": 600.0}, {"channel": "sms", "delay": 1800.0}],
}
EVENING = {
    "name": "Evening",
    "plan": [{"channel": "email", "delay": 0.0}],
    "send_window": {"start": "08:00", "end": "21:00"},
}


@pytest.fixture
async def client(make_client: MakeClient) -> Client:
    return await make_client(
        channels={"email": [RELAY], "sms": [SMS]},
        routing={"categories": {"alerts": ALERTS, "evening": EVENING}},
    )


async def history(
    storage: Storage, user_id: str, reads: list[tuple[int, dict[str, int]]], *, tag: str
) -> None:
    """Past notifications of `user_id` read at each instant, with, per channel, a
    delivery sent that many ms before the read. The rows are due far in the future so
    that the app's own channel workers never lease them; the test leases them."""
    future = now_ms() + 365 * DAY
    batch = [
        NewNotification(
            id=f"{tag}{i}",
            user_id=user_id,
            created_at=read - DAY,
            deliveries=tuple(
                PlannedDelivery(id=f"{tag}{i}-{channel}", channel=channel, due_at=future)
                for channel in delays
            ),
        )
        for i, (read, delays) in enumerate(reads)
    ]
    await storage.insert_notifications(batch)
    sent_at = {
        f"{tag}{i}-{c}": read - d for i, (read, ds) in enumerate(reads) for c, d in ds.items()
    }
    if sent_at:
        leased = await storage.lease_due_deliveries(
            ["email", "sms"], now=future, limit=1000, owner="test", lease_ms=60_000
        )
        await storage.record_delivery_outcomes(
            [
                DeliveryOutcome(delivery_id=row.id, at=sent_at[row.id], status="sent", provider="p")
                for row in leased
            ]
        )
    for i, (read, _) in enumerate(reads):
        await storage.mark_read(user_id, [f"{tag}{i}"], read)


async def send(client: Client, **body: Any) -> Any:
    return await client.post("/api/notifications", json=body, headers=AUTH)


async def detail(client: Client, notification_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/notifications/{notification_id}", headers=AUTH)
    assert response.status == 200, await response.text()
    found: dict[str, Any] = await response.json()
    return found


def at_hour(days_ago: int, hour: int) -> int:
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days_ago)
    return int(dt.datetime.combine(day, dt.time(hour, 5), tzinfo=dt.UTC).timestamp() * 1000)


async def test_engagement_order_sends_the_fastest_read_channel_first(client: Client) -> None:
    user = await create_user(client, email="ada@example.org", phone="+33611223344")
    reads = [(now_ms() - (i + 1) * DAY, {"email": 3_600_000, "sms": 30_000}) for i in range(3)]
    await history(client.app[STORAGE], user["id"], reads, tag="h")

    accepted = await send(client, user_id=user["id"], title="alert", category="alerts")
    assert accepted.status == 202, await accepted.text()
    shown = await detail(client, (await accepted.json())["id"])
    rows = sorted(shown["channel_deliveries"], key=lambda row: row["due_at"])
    # SMS is read in 30 s, email in an hour: SMS takes the first step's delay.
    assert [row["channel"] for row in rows] == ["sms", "email"]
    created = dt.datetime.fromisoformat(shown["created_at"])
    delays = [(dt.datetime.fromisoformat(row["due_at"]) - created).total_seconds() for row in rows]
    assert [round(d) for d in delays] == [600, 1800]
    decision = rows[0]["decision"]
    assert decision["order"] == "engagement"
    assert decision["median_read_seconds"] == {"email": 3600.0, "sms": 30.0}
    assert decision["channels"] == ["sms", "email"]


async def test_engagement_order_still_respects_preferences(client: Client) -> None:
    user = await create_user(client, email="ada@example.org", phone="+33611223344")
    reads = [(now_ms() - (i + 1) * DAY, {"email": 3_600_000, "sms": 30_000}) for i in range(3)]
    await history(client.app[STORAGE], user["id"], reads, tag="p")
    turned_off = await client.put(
        f"/api/users/{user['id']}/preferences",
        json={"categories": {"alerts": {"sms": False}}},
        headers=AUTH,
    )
    assert turned_off.status == 200, await turned_off.text()

    accepted = await send(client, user_id=user["id"], title="alert", category="alerts")
    shown = await detail(client, (await accepted.json())["id"])
    by_channel = {row["channel"]: row for row in shown["channel_deliveries"]}
    assert (by_channel["sms"]["status"], by_channel["sms"]["reason"]) == ("skipped", "preference")
    assert by_channel["email"]["status"] == "scheduled"


async def test_a_plan_category_keeps_its_order_and_has_no_decision(client: Client) -> None:
    user = await create_user(client, email="ada@example.org")
    accepted = await send(client, user_id=user["id"], title="x", category="evening")
    shown = await detail(client, (await accepted.json())["id"])
    assert [row["decision"] for row in shown["channel_deliveries"]] == [None]


async def test_best_hour_is_the_users_reading_hour_within_the_window(client: Client) -> None:
    # A zone one hour ahead of UTC all year: the history spans a month, and a zone with
    # summer time would move the reads' local hour when a change falls inside it.
    user = await create_user(client, email="ada@example.org", timezone="Etc/GMT-1")
    # 12 reads at 17:05 UTC and 20 at 22:05 UTC: 22:05 UTC is 23:05 there, outside the
    # category's 08:00-21:00 window, so the 17:05 reads (18:05 local) win.
    reads = [(at_hour(day + 1, 17), NOT_SENT) for day in range(12)]
    reads += [(at_hour(day + 1, 22), NOT_SENT) for day in range(20)]
    await history(client.app[STORAGE], user["id"], reads, tag="b")

    response = await send(
        client, user_id=user["id"], title="later", category="evening", deliver_at_local="best"
    )
    assert response.status == 202, await response.text()
    accepted = await response.json()
    due = dt.datetime.fromisoformat(accepted["send_at"]).astimezone(dt.UTC)
    local = due.astimezone(ZoneInfo("Etc/GMT-1"))
    offset = local.utcoffset()
    assert offset is not None
    offset_hours = int(offset.total_seconds() // 3600)
    assert (local.hour, local.minute) == (17 + offset_hours, 0)
    # Shown with the scheduled send, and carried by its planned delivery to the row
    # committed at release.
    shown = (await detail(client, accepted["id"]))["decision"]["time"]
    assert (shown["time"], shown["hour"], shown["reads"], shown["reads_at_hour"]) == (
        "best",
        17 + offset_hours,
        32,
        12,
    )
    record = await client.app[STORAGE].get_scheduled(accepted["id"])
    assert record is not None
    assert record.notification.deliveries[0].decision == {"time": shown}


async def test_best_hour_without_enough_history_is_the_default(client: Client) -> None:
    user = await create_user(client, email="ada@example.org")
    await history(client.app[STORAGE], user["id"], [(at_hour(1, 3), NOT_SENT)], tag="d")
    response = await send(
        client, user_id=user["id"], title="later", category="evening", deliver_at_local="best"
    )
    accepted = await response.json()
    due = dt.datetime.fromisoformat(accepted["send_at"]).astimezone(dt.UTC)
    assert (due.hour, due.minute) == (9, 0)
    shown = await detail(client, accepted["id"])
    assert shown["decision"]["time"] == {
        "time": "default",
        "clock": "09:00",
        "reads": 1,
        "min_reads": 10,
        "window": {"start": "08:00", "end": "21:00"},
    }


async def test_a_bad_deliver_at_local_is_refused_naming_the_field(client: Client) -> None:
    user = await create_user(client)
    response = await send(client, user_id=user["id"], title="x", deliver_at_local="worst")
    assert response.status == 422
    assert "deliver_at_local" in await response.text()


async def test_a_plan_given_in_the_request_is_kept_as_given(client: Client) -> None:
    user = await create_user(client, email="ada@example.org", phone="+33611223344")
    reads = [(now_ms() - (i + 1) * DAY, {"email": 3_600_000, "sms": 30_000}) for i in range(3)]
    await history(client.app[STORAGE], user["id"], reads, tag="r")
    steps = [{"channel": "email", "delay": 60.0}, {"channel": "sms", "delay": 120.0}]
    accepted = await send(
        client, user_id=user["id"], title="alert", category="alerts", channels=steps
    )
    shown = await detail(client, (await accepted.json())["id"])
    rows = sorted(shown["channel_deliveries"], key=lambda row: row["due_at"])
    assert [(row["channel"], row["decision"]) for row in rows] == [("email", None), ("sms", None)]


async def test_categories_show_and_validate_the_optimisation_settings(client: Client) -> None:
    body = {
        "name": "Digest",
        "channel_order": "engagement",
        "send_window": {"start": "08:00", "end": "21:00"},
    }
    created = await client.put("/api/categories/digest", json=body, headers=AUTH)
    assert created.status == 201, await created.text()
    view = await created.json()
    assert (view["channel_order"], view["send_window"]) == (
        "engagement",
        {"start": "08:00", "end": "21:00"},
    )
    bad = await client.put(
        "/api/categories/digest",
        json={**body, "send_window": {"start": "8 am", "end": "21:00"}},
        headers=AUTH,
    )
    assert bad.status == 422
    assert "send_window.start" in await bad.text()
    other = await client.put(
        "/api/categories/digest", json={**body, "channel_order": "random"}, headers=AUTH
    )
    assert other.status == 422
    assert "channel_order" in await other.text()


async def test_a_best_send_without_channel_steps_still_shows_why(client: Client) -> None:
    user = await create_user(client)
    response = await send(client, user_id=user["id"], title="later", deliver_at_local="best")
    accepted = await response.json()
    shown = await detail(client, accepted["id"])
    assert shown["planned_channels"] == []
    assert shown["decision"] == {
        "time": {"time": "default", "clock": "09:00", "reads": 0, "min_reads": 10}
    }
    explicit = await send(client, user_id=user["id"], title="later", deliver_at_local="09:00")
    assert (await detail(client, (await explicit.json())["id"]))["decision"] is None
