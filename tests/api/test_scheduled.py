"""Scheduled sends over HTTP and a real WebSocket (issue #13): 202 `scheduled` without a
seq, delivered after the due time with the next seq, cancelled before it, retracted after it,
listed for the user, replayed with Idempotency-Key, refused with the field at fault."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp.test_utils import TestClient

from pushd.appkeys import STORAGE
from pushd.ids import now_ms
from tests.app_client import AUTH, MakeClient, create_key, create_user, send, user_token

Client = TestClient[Any, Any]


async def post(client: Client, headers: dict[str, str] | None = None, **body: Any) -> Any:
    return await client.post("/api/notifications", json=body, headers={**AUTH, **(headers or {})})


async def schedule(client: Client, user_id: str, **fields: Any) -> dict[str, Any]:
    response = await post(client, user_id=user_id, title="later", **fields)
    assert response.status == 202, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def connect(client: Client, user_id: str) -> aiohttp.ClientWebSocketResponse:
    ws = await client.ws_connect("/ws")
    await ws.send_json({"type": "auth", "token": await user_token(client, user_id)})
    welcome = await ws.receive_json(timeout=5)
    assert welcome["type"] == "welcome", welcome
    return ws


async def next_notification(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    while True:
        frame: dict[str, Any] = await ws.receive_json(timeout=5)
        if frame["type"] == "notification":
            return frame


async def test_scheduled_send_is_accepted_without_seq_then_delivered_with_the_next(
    make_client: MakeClient,
) -> None:
    client = await make_client(scheduler={"poll_interval": 0.05})
    user = await create_user(client)
    first = await send(client, user["id"], body="now")
    ws = await connect(client, user["id"])
    assert (await next_notification(ws))["seq"] == first["seq"]

    accepted_at = now_ms()
    accepted = await schedule(client, user["id"], delay=0.5, body="scheduled")
    assert accepted["status"] == "scheduled"
    assert "seq" not in accepted
    due = datetime.fromisoformat(accepted["send_at"])
    assert abs(due.timestamp() * 1000 - (accepted_at + 500)) < 300

    shown = await client.get(f"/api/notifications/{accepted['id']}", headers=AUTH)
    assert shown.status == 200
    view = await shown.json()
    assert (view["status"], view["seq"], view["body"]) == ("scheduled", None, "scheduled")
    # Something sent now goes first: the scheduled one took no seq.
    second = await send(client, user["id"], body="now again")
    assert second["seq"] == first["seq"] + 1
    assert (await next_notification(ws))["seq"] == second["seq"]

    frame = await next_notification(ws)
    assert (frame["id"], frame["seq"], frame["body"]) == (
        accepted["id"],
        second["seq"] + 1,
        "scheduled",
    )
    assert now_ms() >= due.timestamp() * 1000
    await ws.close()

    released = await client.get(f"/api/notifications/{accepted['id']}", headers=AUTH)
    assert (await released.json())["seq"] == second["seq"] + 1
    # Once released, DELETE retracts it (tests/api/test_edit_retract.py).
    retract = await client.delete(f"/api/notifications/{accepted['id']}", headers=AUTH)
    assert retract.status == 200
    retracted = await retract.json()
    assert (retracted["seq"], retracted["title"]) == (second["seq"] + 1, None)
    assert retracted["retracted_at"] is not None


async def test_cancel_before_release_keeps_it_out_of_the_mailbox(make_client: MakeClient) -> None:
    client = await make_client(scheduler={"poll_interval": 0.05})
    user = await create_user(client)
    accepted = await schedule(client, user["id"], delay=0.4)
    cancel = await client.delete(f"/api/notifications/{accepted['id']}", headers=AUTH)
    assert cancel.status == 200, await cancel.text()
    cancelled = await cancel.json()
    assert (cancelled["status"], cancelled["cancelled_at"] is not None) == ("cancelled", True)
    again = await client.delete(f"/api/notifications/{accepted['id']}", headers=AUTH)
    assert (again.status, (await again.json())["status"]) == (200, "cancelled")
    await asyncio.sleep(0.8)
    assert await client.app[STORAGE].get_notification(accepted["id"]) is None
    shown = await client.get(f"/api/notifications/{accepted['id']}", headers=AUTH)
    assert (await shown.json())["status"] == "cancelled"
    unknown = await client.delete("/api/notifications/ntf_nope", headers=AUTH)
    assert unknown.status == 404


async def test_history_lists_scheduled_and_cancelled_ones(client: Client) -> None:
    user = await create_user(client)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    one = await schedule(client, user["id"], send_at=later)
    two = await schedule(client, user["id"], delay=3600)
    await client.delete(f"/api/notifications/{two['id']}", headers=AUTH)
    listed = await client.get(
        f"/api/notifications/user/{user['id']}/scheduled?limit=1", headers=AUTH
    )
    assert listed.status == 200, await listed.text()
    page = await listed.json()
    assert [(i["id"], i["status"]) for i in page["items"]] == [(one["id"], "scheduled")]
    rest = await client.get(
        f"/api/notifications/user/{user['id']}/scheduled?cursor={page['next_cursor']}",
        headers=AUTH,
    )
    assert [(i["id"], i["status"]) for i in (await rest.json())["items"]] == [
        (two["id"], "cancelled")
    ]
    # The history's items stay the released notifications (existing clients see no
    # item without a seq); its first page lists the scheduled ones apart, with status.
    history = await (await client.get(f"/api/notifications/user/{user['id']}", headers=AUTH)).json()
    assert history["items"] == []
    assert [(i["id"], i["status"]) for i in history["scheduled"]] == [
        (one["id"], "scheduled"),
        (two["id"], "cancelled"),
    ]
    # Not repeated on later pages, and bounded by the page's limit.
    await send(client, user["id"], title="now")
    await send(client, user["id"], title="now again")
    first = await (
        await client.get(f"/api/notifications/user/{user['id']}?limit=1", headers=AUTH)
    ).json()
    assert len(first["items"]) == 1
    assert [i["id"] for i in first["scheduled"]] == [one["id"]]
    later_page = await (
        await client.get(
            f"/api/notifications/user/{user['id']}?limit=1&cursor={first['next_cursor']}",
            headers=AUTH,
        )
    ).json()
    assert later_page["scheduled"] == []


async def test_a_limited_key_sees_only_its_categories_scheduled_in_the_history(
    client: Client,
) -> None:
    user = await create_user(client)
    await schedule(client, user["id"], delay=3600, category="billing")
    news = await schedule(client, user["id"], delay=3600, category="news")
    secret, _ = await create_key(client, "reader", categories=["news"])
    limited = {"Authorization": f"Bearer {secret}"}
    history = await (
        await client.get(f"/api/notifications/user/{user['id']}", headers=limited)
    ).json()
    assert [i["id"] for i in history["scheduled"]] == [news["id"]]


async def test_bad_schedules_are_refused_naming_the_field(client: Client) -> None:
    user = await create_user(client)
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"send_at": past}, "send_at"),
        ({"delay": 5, "deliver_at_local": "09:00"}, "deliver_at_local"),
        ({"deliver_at_local": "25:00"}, "deliver_at_local"),
        ({"delay": -1}, "delay"),
        (
            {"delay": 10, "expires_at": (datetime.now(UTC) + timedelta(seconds=5)).isoformat()},
            "expires_at",
        ),
    ]
    for fields, field in cases:
        response = await post(client, user_id=user["id"], title="t", **fields)
        assert response.status == 422, (fields, await response.text())
        assert field in (await response.json())["error"]["field"], fields
    missing = await post(client, user_id="usr_missing", title="t", delay=60)
    assert missing.status == 404


async def test_idempotency_key_replays_the_scheduled_answer(client: Client) -> None:
    user = await create_user(client)
    body = {"user_id": user["id"], "title": "once", "delay": 3600}
    headers = {"Idempotency-Key": "sched-1"}
    first = await post(client, headers, **body)
    assert first.status == 202
    replay = await post(client, headers, **body)
    assert replay.status == 202
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert await replay.json() == await first.json()
    other = await post(client, headers, **{**body, "title": "another"})
    assert other.status == 422


async def test_deliver_at_local_uses_the_users_time_zone(client: Client) -> None:
    user = await create_user(client, timezone="Asia/Tokyo")
    accepted = await schedule(client, user["id"], deliver_at_local="09:00")
    due = datetime.fromisoformat(accepted["send_at"])
    tokyo = due.astimezone(ZoneInfo("Asia/Tokyo"))
    assert (tokyo.hour, tokyo.minute) == (9, 0)
    assert timedelta(0) < due - datetime.now(UTC) <= timedelta(days=1)


async def test_export_lists_scheduled_sends_and_erase_removes_them(client: Client) -> None:
    user = await create_user(client)
    headers = {"Idempotency-Key": "export-1"}
    body = {"user_id": user["id"], "title": "secret plan", "delay": 3600}
    accepted = await (await post(client, headers, **body)).json()
    exported = await client.get(f"/api/users/{user['id']}/export", headers=AUTH)
    assert exported.status == 200
    document = await exported.json()
    assert [(s["id"], s["title"]) for s in document["scheduled_notifications"]] == [
        (accepted["id"], "secret plan")
    ]
    # Its Idempotency-Key (seq 0 until released) is exported too.
    assert [(k["key"], k["seq"]) for k in document["idempotency_keys"]] == [("export-1", 0)]
    erased = await client.delete(f"/api/users/{user['id']}", headers=AUTH)
    assert erased.status in (200, 204), await erased.text()
    assert await client.app[STORAGE].get_scheduled(accepted["id"]) is None


async def test_a_schedule_on_a_topic_send_is_refused(client: Client) -> None:
    await client.post("/api/topics", json={"slug": "news", "name": "News"}, headers=AUTH)
    response = await post(client, topic="news", title="t", delay=60)
    assert response.status == 422, await response.text()
    assert (await response.json())["error"]["field"] == "delay"


async def test_a_schedule_on_a_batch_item_is_refused_not_sent_now(client: Client) -> None:
    user = await create_user(client)
    items = [
        {"user_id": user["id"], "title": "now"},
        {"user_id": user["id"], "title": "later?", "delay": 60},
    ]
    response = await client.post("/api/notifications/batch", json={"items": items}, headers=AUTH)
    results = (await response.json())["results"]
    assert [r["status"] for r in results] == [202, 422]
    assert results[1]["error"]["field"] == "items[1].delay"
    history = await client.get(f"/api/notifications/user/{user['id']}", headers=AUTH)
    assert [n["title"] for n in (await history.json())["items"]] == ["now"]
