"""Topics over the real app: the admin routes, a user's own subscriptions with their user
token, and `POST /api/notifications` with `topic` reaching each subscriber's socket (the
send job itself: tests/api/test_topic_sends.py)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from pushd.appkeys import AUDIENCES
from tests.api.test_broadcast import finished
from tests.app_client import AUTH, MakeClient, create_key, create_user, user_token
from tests.realtime.test_ws import connect, next_notification

Client = TestClient[Any, Any]


async def create_topic(client: Client, slug: str, **fields: Any) -> dict[str, Any]:
    body = {"slug": slug, "name": f"Topic {slug}", **fields}
    response = await client.post("/api/topics", json=body, headers=AUTH)
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def subscriber_ids(client: Client, slug: str, limit: int = 200) -> list[str]:
    """Every subscriber, walking the pages."""
    ids: list[str] = []
    cursor: str | None = None
    while True:
        query = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
        response = await client.get(f"/api/topics/{slug}/subscribers", params=query, headers=AUTH)
        assert response.status == 200, await response.text()
        page = await response.json()
        ids += [s["user_id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids


async def test_topic_admin_routes(client: Client) -> None:
    created = await create_topic(client, "news", self_subscribe=True)
    assert (created["slug"], created["self_subscribe"]) == ("news", True)
    again = await client.post("/api/topics", json={"slug": "news", "name": "x"}, headers=AUTH)
    assert again.status == 409
    assert (await again.json())["error"]["field"] == "slug"
    bad = await client.post("/api/topics", json={"slug": "Not A Slug", "name": "x"}, headers=AUTH)
    assert bad.status == 422
    assert (await bad.json())["error"]["field"] == "slug"
    await create_topic(client, "alerts")
    listed = await client.get("/api/topics", params={"limit": "1"}, headers=AUTH)
    page = await listed.json()
    assert [t["slug"] for t in page["items"]] == ["alerts"]
    assert page["next_cursor"] == "alerts"
    one = await client.get("/api/topics/news", headers=AUTH)
    assert (await one.json())["name"] == "Topic news"
    assert (await client.delete("/api/topics/news", headers=AUTH)).status == 204
    missing = await client.get("/api/topics/news", headers=AUTH)
    assert missing.status == 404
    assert (await missing.json())["error"]["field"] == "topic"


async def test_subscribe_unsubscribe_and_list(client: Client) -> None:
    await create_topic(client, "news")
    users = [(await create_user(client))["id"] for _ in range(3)]
    put = await client.put(f"/api/topics/news/subscribers/{users[0]}", headers=AUTH)
    assert put.status == 201
    assert (await put.json())["created"] is True
    again = await client.put(f"/api/topics/news/subscribers/{users[0]}", headers=AUTH)
    assert again.status == 200
    assert (await again.json())["created"] is False
    ghost = await client.put("/api/topics/news/subscribers/usr_ghost", headers=AUTH)
    assert ghost.status == 404
    assert (await ghost.json())["error"]["field"] == "userId"
    no_topic = await client.put(f"/api/topics/nope/subscribers/{users[0]}", headers=AUTH)
    assert (await no_topic.json())["error"]["field"] == "topic"
    bulk = await client.post(
        "/api/topics/news/subscribers",
        json={"user_ids": [users[1], users[0], "usr_ghost", users[2]]},
        headers=AUTH,
    )
    assert bulk.status == 200, await bulk.text()
    assert [(r["user_id"], r["outcome"]) for r in (await bulk.json())["results"]] == [
        (users[1], "subscribed"),
        (users[0], "already_subscribed"),
        ("usr_ghost", "unknown_user"),
        (users[2], "subscribed"),
    ]
    assert await subscriber_ids(client, "news", limit=2) == sorted(users)
    mine = await client.get(f"/api/users/{users[1]}/topics", headers=AUTH)
    assert [s["topic"] for s in (await mine.json())["items"]] == ["news"]
    gone = await client.delete(f"/api/topics/news/subscribers/{users[1]}", headers=AUTH)
    assert gone.status == 204
    not_there = await client.delete(f"/api/topics/news/subscribers/{users[1]}", headers=AUTH)
    assert not_there.status == 204  # idempotent
    no_topic = await client.delete(f"/api/topics/nope/subscribers/{users[1]}", headers=AUTH)
    assert no_topic.status == 404
    assert await subscriber_ids(client, "news") == sorted([users[0], users[2]])


async def test_a_user_subscribes_themself_with_their_token(client: Client) -> None:
    await create_topic(client, "open", self_subscribe=True)
    await create_topic(client, "closed")
    user = await create_user(client)
    bearer = {"Authorization": f"Bearer {await user_token(client, user['id'])}"}
    joined = await client.put("/api/me/topics/open", headers=bearer)
    assert joined.status == 201, await joined.text()
    assert (await joined.json())["user_id"] == user["id"]
    assert await subscriber_ids(client, "open") == [user["id"]]
    refused = await client.put("/api/me/topics/closed", headers=bearer)
    assert refused.status == 403
    assert (await refused.json())["error"]["field"] == "topic"
    # An API key is not a user token.
    assert (await client.put("/api/me/topics/open", headers=AUTH)).status == 401
    assert (await client.put("/api/me/topics/open")).status == 401
    left = await client.delete("/api/me/topics/open", headers=bearer)
    assert left.status == 204
    assert await subscriber_ids(client, "open") == []


async def test_a_category_limited_token_may_subscribe_and_a_revoked_one_may_not(
    client: Client,
) -> None:
    await create_topic(client, "open", self_subscribe=True)
    user = await create_user(client)
    key, _ = await create_key(client, "publisher", categories=["billing"])
    issued = await client.post(
        f"/api/users/{user['id']}/tokens", headers={"Authorization": f"Bearer {key}"}
    )
    assert issued.status == 201, await issued.text()
    bearer = {"Authorization": f"Bearer {(await issued.json())['token']}"}
    assert (await client.put("/api/me/topics/open", headers=bearer)).status == 201
    revoke = await client.post(f"/api/users/{user['id']}/tokens/revoke", headers=AUTH)
    assert revoke.status == 200, await revoke.text()
    assert (await client.delete("/api/me/topics/open", headers=bearer)).status == 401


async def test_a_topic_send_reaches_every_subscriber_in_chunks(make_client: MakeClient) -> None:
    """Guards the fan-out's paging: with chunks of 2, five subscribers take three pages,
    and each gets their own notification (own id, own seq) on their socket."""
    client = await make_client(audiences={"chunk_size": 2})
    await create_topic(client, "news")
    users = [(await create_user(client))["id"] for _ in range(5)]
    outsider = (await create_user(client))["id"]
    response = await client.post(
        "/api/topics/news/subscribers", json={"user_ids": users}, headers=AUTH
    )
    assert response.status == 200
    sockets = [(await connect(client, await user_token(client, u)))[0] for u in users]
    chunks_before = client.app[AUDIENCES].chunks
    sent = await client.post(
        "/api/notifications", json={"topic": "news", "title": "hello all"}, headers=AUTH
    )
    assert sent.status == 202, await sent.text()
    accepted = await sent.json()
    assert (accepted["topic"], accepted["audience"], accepted["status"]) == (
        "news",
        "topic",
        "pending",
    )
    assert accepted["send_id"].startswith("snd")
    assert sent.headers["Location"] == f"/api/sends/{accepted['send_id']}"
    progress = await finished(client, accepted["send_id"])
    assert progress["status"] == "done"
    assert (progress["recipients"]["committed"], progress["recipients"]["skipped"]) == (5, 0)
    assert client.app[AUDIENCES].chunks == chunks_before + 3  # pages of 2, 2 and 1
    ids = set()
    for user_id, ws in zip(users, sockets, strict=True):
        frame = await next_notification(ws)
        assert (frame["title"], frame["seq"]) == ("hello all", 1)
        ids.add(frame["id"])
        history = await client.get(f"/api/notifications/user/{user_id}", headers=AUTH)
        assert [n["id"] for n in (await history.json())["items"]] == [frame["id"]]
    assert len(ids) == 5
    nothing = await client.get(f"/api/notifications/user/{outsider}", headers=AUTH)
    assert (await nothing.json())["items"] == []


async def test_topic_send_refusals(client: Client) -> None:
    await create_topic(client, "news")
    user = await create_user(client)
    cases = [
        ({"topic": "nope", "title": "x"}, {}, 404, "topic"),
        ({"topic": "news", "user_id": user["id"], "title": "x"}, {}, 422, "topic"),
        ({"topic": "news", "title": "x"}, {"Idempotency-Key": "k1"}, 422, "Idempotency-Key"),
    ]
    for body, headers, status, field in cases:
        response = await client.post("/api/notifications", json=body, headers={**AUTH, **headers})
        assert response.status == status, (body, await response.text())
        assert (await response.json())["error"]["field"] == field
    empty = await client.post(
        "/api/notifications", json={"topic": "news", "title": "x"}, headers=AUTH
    )
    assert empty.status == 202
    progress = await finished(client, (await empty.json())["send_id"])
    assert (progress["status"], progress["recipients"]["resolved"]) == ("done", 0)


async def test_subscriptions_are_exported_and_erased(client: Client) -> None:
    await create_topic(client, "news")
    user = await create_user(client)
    await client.put(f"/api/topics/news/subscribers/{user['id']}", headers=AUTH)
    export = await client.get(f"/api/users/{user['id']}/export", headers=AUTH)
    assert export.status == 200
    assert [s["topic"] for s in (await export.json())["topics"]] == ["news"]
    assert (await client.delete(f"/api/users/{user['id']}", headers=AUTH)).status == 204
    assert await subscriber_ids(client, "news") == []
