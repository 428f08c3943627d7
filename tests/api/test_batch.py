"""`POST /api/notifications/batch` over the real app: a result per item, errors naming the
item, valid items committed together, per-item idempotency keys."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from pushd.appkeys import INGEST
from tests.app_client import AUTH, MakeClient, create_user, user_token
from tests.realtime.test_ws import connect, next_notification

Client = TestClient[Any, Any]


async def post_batch(client: Client, items: list[Any]) -> dict[str, Any]:
    response = await client.post("/api/notifications/batch", json={"items": items}, headers=AUTH)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_valid_items_are_committed_together_and_invalid_ones_named(client: Client) -> None:
    users = [(await create_user(client, external_id=f"crm-{i}"))["id"] for i in range(3)]
    ws, _ = await connect(client, await user_token(client, users[0]))
    batches_before = client.app[INGEST].batches
    answer = await post_batch(
        client,
        [
            {"user_id": users[0], "title": "one"},
            {"user_id": users[1]},  # neither title nor body
            {"external_id": "crm-2", "body": "three", "priority": "loud"},
            {"external_id": "crm-2", "body": "three"},
            "not an object",
            {"user_id": "usr_ghost", "title": "x"},
            {"user_id": users[0], "title": "again"},  # the same user twice
            {"user_id": users[1], "title": "two", "bogus": 1},
            {"user_id": users[1], "title": "two"},
        ],
    )
    results = answer["results"]
    assert [r["index"] for r in results] == list(range(9))
    assert [r["status"] for r in results] == [202, 422, 422, 202, 422, 404, 422, 422, 202]
    assert (answer["accepted"], answer["failed"]) == (3, 6)
    fields = [r.get("error", {}).get("field") for r in results]
    assert fields == [
        None,
        "items[1].title",
        "items[2].priority",
        None,
        "items[4]",
        "items[5].user_id",
        "items[6].user_id",
        "items[7].bogus",
        None,
    ]
    assert results[3]["notification"]["user_id"] == users[2]
    # One transaction for the three valid ones (nothing else was being sent).
    assert client.app[INGEST].batches == batches_before + 1
    frame = await next_notification(ws)
    assert (frame["id"], frame["title"]) == (results[0]["notification"]["id"], "one")


async def test_idempotency_keys_per_item(client: Client) -> None:
    user_a, user_b = (await create_user(client))["id"], (await create_user(client))["id"]
    items = [
        {"user_id": user_a, "title": "a", "idempotency_key": "job-1-a"},
        {"user_id": user_b, "title": "b", "idempotency_key": "job-1-b"},
    ]
    first = await post_batch(client, items)
    retried = await post_batch(client, items)
    assert [r["status"] for r in retried["results"]] == [202, 202]
    assert [r.get("replayed", False) for r in retried["results"]] == [True, True]
    assert [r["notification"] for r in retried["results"]] == [
        r["notification"] for r in first["results"]
    ]
    history = await client.get(f"/api/notifications/user/{user_a}", headers=AUTH)
    assert len((await history.json())["items"]) == 1
    reused = await post_batch(
        client, [{"user_id": user_a, "title": "other", "idempotency_key": "job-1-a"}]
    )
    [result] = reused["results"]
    assert (result["status"], result["error"]["code"]) == (422, "idempotency_key_reused")
    assert result["error"]["field"] == "items[0].idempotency_key"


async def test_batch_size_is_limited_by_config(make_client: MakeClient) -> None:
    client = await make_client(ingest={"batch_max_items": 2})
    user = await create_user(client)
    items = [{"user_id": user["id"], "title": str(i)} for i in range(3)]
    response = await client.post("/api/notifications/batch", json={"items": items}, headers=AUTH)
    assert response.status == 422
    assert (await response.json())["error"]["field"] == "items"
    empty = await client.post("/api/notifications/batch", json={"items": []}, headers=AUTH)
    assert empty.status == 422
