"""Delivery guarantees over real sockets (issue #3): acks and resume, offline backlog,
gaps, expiry, read sync, delivery records and Idempotency-Key."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from pushd.appkeys import CURSORS
from tests.app_client import AUTH, MakeClient, create_user, send, user_token

Client = TestClient[Any, Any]
WS = aiohttp.ClientWebSocketResponse


async def connect(client: Client, user_id: str, **auth: Any) -> tuple[WS, dict[str, Any]]:
    ws = await client.ws_connect("/ws")
    await ws.send_json({"type": "auth", "token": await user_token(client, user_id), **auth})
    welcome: dict[str, Any] = await ws.receive_json(timeout=5)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def frames(ws: WS, count: int) -> list[dict[str, Any]]:
    return [await ws.receive_json(timeout=5) for _ in range(count)]


def covered(stream: list[dict[str, Any]], since: int) -> list[int]:
    """The seqs a stream of notification/gap frames covers, checking it is gap-free."""
    seqs, expected = [], since + 1
    for frame in stream:
        if frame["type"] == "notification":
            assert frame["seq"] == expected, stream
            seqs.append(frame["seq"])
            expected += 1
        elif frame["type"] == "gap":
            assert frame["from_seq"] == expected, stream
            expected = frame["to_seq"] + 1
    return seqs


async def flush_cursors(client: Client) -> None:
    """Write the batched cursors now instead of waiting for the flush interval."""
    await client.app[CURSORS].flush()


async def test_offline_notifications_arrive_on_connect_then_live(client: Client) -> None:
    user = await create_user(client)
    for i in range(5):
        await send(client, user["id"], body=str(i))
    ws, welcome = await connect(client, user["id"])
    assert (welcome["since"], welcome["last_seq"], welcome["ack_seq"]) == (0, 5, 0)
    await send(client, user["id"], body="live")
    assert covered(await frames(ws, 6), 0) == [1, 2, 3, 4, 5, 6]
    await ws.close()


async def test_reconnect_without_since_gets_what_was_not_acked(client: Client) -> None:
    """Guards the stored ack cursor: a client that acked 3 of 5 must get exactly 4 and 5."""
    user = await create_user(client)
    for _ in range(5):
        await send(client, user["id"])
    ws, _ = await connect(client, user["id"])
    await frames(ws, 5)
    await ws.send_json({"type": "ack", "seq": 3})
    await asyncio.sleep(0.05)
    await ws.close()
    await flush_cursors(client)
    again, welcome = await connect(client, user["id"])
    assert (welcome["ack_seq"], welcome["since"]) == (3, 3)
    assert covered(await frames(again, 2), 3) == [4, 5]
    await again.close()


async def test_resume_since_replays_in_order_while_new_ones_arrive(client: Client) -> None:
    """Guards the hand-over from replay to live: notifications sent during the replay
    must follow it with no gap and no duplicate."""
    user = await create_user(client)
    for _ in range(30):
        await send(client, user["id"])
    ws, welcome = await connect(client, user["id"], since=10)
    assert welcome["since"] == 10
    senders = asyncio.gather(*(send(client, user["id"]) for _ in range(20)))
    stream = await frames(ws, 40)
    await senders
    assert covered(stream, 10) == list(range(11, 51))
    await ws.close()


async def test_resume_frame_restarts_the_stream(client: Client) -> None:
    user = await create_user(client)
    for _ in range(4):
        await send(client, user["id"])
    ws, _ = await connect(client, user["id"], since=4)
    await ws.send_json({"type": "resume", "since": 1})
    assert await ws.receive_json(timeout=5) == {"type": "resumed", "since": 1}
    assert covered(await frames(ws, 3), 1) == [2, 3, 4]
    await ws.close()


async def test_since_beyond_the_backlog_bound_gets_a_gap(make_client: MakeClient) -> None:
    client = await make_client(mailbox={"backlog_max_count": 3})
    user = await create_user(client)
    for _ in range(8):
        await send(client, user["id"])
    ws, _ = await connect(client, user["id"], since=0)
    stream = await frames(ws, 4)
    assert stream[0] == {"type": "gap", "from_seq": 1, "to_seq": 5, "reason": "not_retained"}
    assert covered(stream, 0) == [6, 7, 8]
    await ws.close()
    await flush_cursors(client)
    listed = await client.get(f"/api/notifications/user/{user['id']}?limit=8", headers=AUTH)
    statuses = {n["seq"]: n["status"] for n in (await listed.json())["items"]}
    assert [statuses[seq] for seq in range(1, 9)] == ["expired"] * 5 + ["sent"] * 3


async def test_since_ahead_of_the_server_is_lowered_and_reported(client: Client) -> None:
    user = await create_user(client)
    await send(client, user["id"])
    ws, welcome = await connect(client, user["id"], since=99)
    assert welcome["since"] == 1
    error = await ws.receive_json(timeout=5)
    assert (error["type"], error["code"]) == ("error", "since_ahead")
    await ws.close()


async def test_expired_notifications_are_not_delivered(client: Client) -> None:
    user = await create_user(client)
    expiring = await send(client, user["id"], ttl=1)
    kept = await send(client, user["id"])
    await asyncio.sleep(1.1)
    ws, _ = await connect(client, user["id"])
    stream = await frames(ws, 2)
    assert stream[0] == {"type": "gap", "from_seq": 1, "to_seq": 1, "reason": "expired"}
    assert stream[1]["id"] == kept["id"]
    await ws.close()
    detail = await (await client.get(f"/api/notifications/{expiring['id']}", headers=AUTH)).json()
    [delivery] = detail["deliveries"]
    assert (detail["status"], delivery["status"], delivery["sent_at"]) == (
        "expired",
        "expired",
        None,
    )
    assert "expired" in delivery["last_error"]


async def test_ttl_and_expires_at_are_validated(client: Client) -> None:
    user = await create_user(client)
    for extra, field in (
        ({"ttl": 5, "expires_at": "2099-01-01T00:00:00Z"}, "ttl"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"ttl": 0}, "ttl"),
    ):
        body = {"user_id": user["id"], "title": "t", **extra}
        response = await client.post("/api/notifications", json=body, headers=AUTH)
        assert response.status == 422, extra
        assert (await response.json())["error"]["field"] == field


async def test_read_on_one_socket_is_synced_to_the_others_and_the_api(client: Client) -> None:
    user = await create_user(client)
    first = await send(client, user["id"])
    second = await send(client, user["id"])
    phone, _ = await connect(client, user["id"])
    laptop, _ = await connect(client, user["id"])
    await frames(phone, 2)
    await frames(laptop, 2)
    await phone.send_json({"type": "read", "ids": [first["id"], "ntf_unknown"]})
    for ws in (phone, laptop):
        assert await ws.receive_json(timeout=5) == {
            "type": "read",
            "ids": [first["id"]],
            "through_seq": None,
            "category": None,
        }
    page = await (
        await client.get(f"/api/notifications/user/{user['id']}?unread=true", headers=AUTH)
    ).json()
    assert [n["id"] for n in page["items"]] == [second["id"]]
    assert page["unread_count"] == 1
    response = await client.post(f"/api/users/{user['id']}/notifications/read-all", headers=AUTH)
    assert await response.json() == {"marked": 1, "through_seq": 2}
    assert (await laptop.receive_json(timeout=5))["through_seq"] == 2
    one = await client.post(f"/api/notifications/{second['id']}/read", headers=AUTH)
    assert (await one.json())["status"] == "read"
    await phone.close()
    await laptop.close()
    replayed, _ = await connect(client, user["id"], since=0)
    assert [f["read"] for f in await frames(replayed, 2)] == [True, True]
    await replayed.close()


async def test_delivery_record_moves_forward_with_timestamps(client: Client) -> None:
    user = await create_user(client)
    sent = await send(client, user["id"])
    url = f"/api/notifications/{sent['id']}"
    assert (await (await client.get(url, headers=AUTH)).json())["status"] == "queued"
    ws, _ = await connect(client, user["id"])
    await frames(ws, 1)
    await asyncio.sleep(0.05)
    await flush_cursors(client)
    assert (await (await client.get(url, headers=AUTH)).json())["status"] == "sent"
    await ws.send_json({"type": "ack", "seq": 1})
    await asyncio.sleep(0.05)
    await flush_cursors(client)
    assert (await (await client.get(url, headers=AUTH)).json())["status"] == "delivered"
    await client.post(f"{url}/read", headers=AUTH)
    detail = await (await client.get(url, headers=AUTH)).json()
    [delivery] = detail["deliveries"]
    assert delivery["status"] == "read"
    events = (await (await client.get(f"{url}/events", headers=AUTH)).json())["items"]
    assert [e["status"] for e in events] == ["queued", "sent", "delivered", "read"]
    times = [e["at"] for e in events]
    assert times == sorted(times)
    await ws.close()


async def test_an_ack_cannot_claim_more_than_the_socket_was_sent(client: Client) -> None:
    user = await create_user(client)
    await send(client, user["id"])
    ws, _ = await connect(client, user["id"])
    await frames(ws, 1)
    await ws.send_json({"type": "ack", "seq": 50})
    await asyncio.sleep(0.05)
    await flush_cursors(client)
    await send(client, user["id"])
    await ws.close()
    _, welcome = await connect(client, user["id"])
    assert welcome["ack_seq"] == 1


async def test_idempotency_key_replays_refuses_and_scopes(client: Client) -> None:
    user = await create_user(client)
    body = {"user_id": user["id"], "title": "pay", "data": {"a": 1, "b": 2}}
    headers = {**AUTH, "Idempotency-Key": "order-42"}
    first = await client.post("/api/notifications", json=body, headers=headers)
    assert first.status == 202
    assert "Idempotent-Replayed" not in first.headers
    # Same body (keys in another order): the original answer, marked as a replay.
    reordered = {"data": {"b": 2, "a": 1}, "title": "pay", "user_id": user["id"]}
    again = await client.post("/api/notifications", json=reordered, headers=headers)
    assert again.status == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await again.json() == await first.json()
    other = await client.post(
        "/api/notifications", json={**body, "title": "refund"}, headers=headers
    )
    assert other.status == 422
    assert (await other.json())["error"]["code"] == "idempotency_key_reused"
    page = await (await client.get(f"/api/notifications/user/{user['id']}", headers=AUTH)).json()
    assert len(page["items"]) == 1
    bad = await client.post(
        "/api/notifications", json=body, headers={**AUTH, "Idempotency-Key": "x" * 300}
    )
    assert bad.status == 422
    assert (await bad.json())["error"]["field"] == "Idempotency-Key"


async def test_concurrent_duplicates_get_one_notification(client: Client) -> None:
    """Guards two retries racing: exactly one commits; the other is told to retry
    (409 + Retry-After) or gets the replay, never a second notification."""
    user = await create_user(client)
    body = {"user_id": user["id"], "title": "once"}
    headers = {**AUTH, "Idempotency-Key": "race-1"}
    responses = await asyncio.gather(
        *(client.post("/api/notifications", json=body, headers=headers) for _ in range(5))
    )
    statuses = sorted(r.status for r in responses)
    assert statuses.count(202) >= 1
    assert set(statuses) <= {202, 409}
    for response in responses:
        if response.status == 409:
            assert response.headers["Retry-After"] == "1"
    ids = {(await r.json())["id"] for r in responses if r.status == 202}
    assert len(ids) == 1
    page = await (await client.get(f"/api/notifications/user/{user['id']}", headers=AUTH)).json()
    assert len(page["items"]) == 1


async def test_expired_idempotency_key_can_be_reused(make_client: MakeClient) -> None:
    client = await make_client(ingest={"idempotency_window": 0.05})
    user = await create_user(client)
    headers = {**AUTH, "Idempotency-Key": "short"}
    body = {"user_id": user["id"], "title": "a"}
    first = await client.post("/api/notifications", json=body, headers=headers)
    await asyncio.sleep(0.1)
    second = await client.post("/api/notifications", json=body, headers=headers)
    assert second.status == 202
    assert "Idempotent-Replayed" not in second.headers
    assert (await second.json())["seq"] == (await first.json())["seq"] + 1
