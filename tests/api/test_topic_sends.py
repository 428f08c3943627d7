"""Topic sends as durable send jobs over the real app (pushd/api/topic_send.py,
pushd/audiences/fanout.py): a 202 with a send id, each subscriber's notification on
their socket with their next seq, progress at `GET /api/sends/{id}`, who may send and
see it, and a send carried on after a restart with each subscriber reached once."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from pushd.appkeys import AUDIENCES, STORAGE
from pushd.ids import now_ms
from storage.records import NewSend
from tests.api.test_broadcast import (
    GREETING,
    NEWS,
    accepted_send,
    finished,
    leave_half_sent,
    post,
    save_template,
    titles_of,
)
from tests.api.test_topics import create_topic
from tests.app_client import AUTH, MakeClient, create_key, create_user, send, user_token
from tests.realtime.test_ws import connect, next_notification

Client = TestClient[Any, Any]


async def subscribe(client: Client, slug: str, user_ids: list[str]) -> None:
    response = await client.post(
        f"/api/topics/{slug}/subscribers", json={"user_ids": user_ids}, headers=AUTH
    )
    assert response.status == 200, await response.text()


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_a_topic_send_reaches_each_subscriber_once_with_their_next_seq(
    client: Client,
) -> None:
    await create_topic(client, "news")
    subscribers = [(await create_user(client))["id"] for _ in range(4)]
    outsider = (await create_user(client))["id"]
    erased = (await create_user(client))["id"]
    await subscribe(client, "news", [*subscribers, erased])
    assert (await client.delete(f"/api/users/{erased}", headers=AUTH)).status == 204
    first = await send(client, subscribers[0])
    ws, _ = await connect(client, await user_token(client, subscribers[0]))
    assert (await next_notification(ws))["seq"] == first["seq"]  # the backlog
    send_id = await accepted_send(client, {"topic": "news", "title": "Topical"})
    frame = await next_notification(ws)
    assert (frame["seq"], frame["title"]) == (first["seq"] + 1, "Topical")
    await ws.close()
    progress = await finished(client, send_id)
    assert (progress["status"], progress["audience"], progress["topic"]) == (
        "done",
        "topic",
        "news",
    )
    assert progress["segment_id"] is None
    recipients = progress["recipients"]
    assert (recipients["resolved"], recipients["committed"], recipients["skipped"]) == (4, 4, 0)
    for user_id in subscribers:
        assert (await titles_of(client, user_id)).count("Topical") == 1
    assert "Topical" not in await titles_of(client, outsider)


async def test_a_subscriber_over_their_rate_limit_is_skipped_and_counted(
    make_client: MakeClient,
) -> None:
    client = await make_client(limits={"per_recipient": {"inapp": "1/hour"}})
    await create_topic(client, "news")
    busy, free = [(await create_user(client))["id"] for _ in range(2)]
    await subscribe(client, "news", [busy, free])
    await send(client, busy)  # their one notification this hour
    send_id = await accepted_send(client, {"topic": "news", "title": "Limited"})
    progress = await finished(client, send_id)
    recipients = progress["recipients"]
    assert (recipients["resolved"], recipients["committed"], recipients["skipped"]) == (2, 1, 1)
    assert "Limited" not in await titles_of(client, busy)
    assert "Limited" in await titles_of(client, free)


async def test_an_unknown_topic_is_a_404_and_writes_no_send(client: Client) -> None:
    response = await post(client, {"topic": "nope", "title": "x"})
    assert response.status == 404, await response.text()
    assert (await response.json())["error"]["field"] == "topic"
    storage = client.app[STORAGE]
    assert await storage.unfinished_sends(node_id="any-node", now=now_ms(), limit=10) == []


async def test_a_publisher_key_sends_to_a_topic_and_a_limited_key_sees_only_its_sends(
    client: Client,
) -> None:
    """A topic send needs no broadcast permission; a category-limited key sends only its
    categories and sees only their sends."""
    await create_topic(client, "news")
    await subscribe(client, "news", [(await create_user(client))["id"]])
    plain, record = await create_key(client, "publisher")
    assert record["broadcast"] is False
    limited, _ = await create_key(client, "publisher", categories=["alerts"])
    ok = await post(client, {"topic": "news", "title": "x"}, _auth(plain))
    assert ok.status == 202, await ok.text()
    unlimited_send = (await ok.json())["send_id"]
    other = await post(client, {"topic": "news", "title": "x"}, _auth(limited))
    assert other.status == 403, await other.text()
    assert (await other.json())["error"]["field"] == "category"
    hidden = await client.get(f"/api/sends/{unlimited_send}", headers=_auth(limited))
    assert hidden.status == 404
    own = await post(client, {"topic": "news", "title": "x", "category": "alerts"}, _auth(limited))
    assert own.status == 202, await own.text()
    own_send = (await own.json())["send_id"]
    seen = await client.get(f"/api/sends/{own_send}", headers=_auth(limited))
    assert seen.status == 200
    assert (await seen.json())["topic"] == "news"


async def test_a_topic_send_left_unfinished_resumes_after_a_restart(
    make_client: MakeClient,
) -> None:
    """Guards exactly-once across a crash: the cursor stops at subscribers[1], but the
    notification of subscribers[2] was committed before the crash. The next start takes
    the send over, skips subscribers[2] and reaches the other subscribers once each, and
    nobody outside the topic."""
    first = await make_client(audiences={"poll_interval": 3600.0, "chunk_size": 2})
    await create_topic(first, "news")
    subscribers = sorted([(await create_user(first))["id"] for _ in range(5)])
    outsider = (await create_user(first))["id"]
    await subscribe(first, "news", subscribers)
    storage = first.app[STORAGE]
    await leave_half_sent(
        storage,
        "snd_topic_crash",
        {"kind": "topic", "topic": "news"},
        '{"topic": "news", "title": "Resumed"}',
        subscribers,
    )
    await first.close()
    await asyncio.sleep(0.01)  # the dead node's lease runs out

    second = await make_client(audiences={"chunk_size": 2})
    progress = await finished(second, "snd_topic_crash")
    assert progress["status"] == "done"
    assert (progress["recipients"]["resolved"], progress["recipients"]["committed"]) == (5, 5)
    for user_id in subscribers:
        assert (await titles_of(second, user_id)).count("Resumed") == 1
    assert "Resumed" not in await titles_of(second, outsider)


async def test_stopping_a_topic_send_midway_then_starting_reaches_everyone_once(
    make_client: MakeClient,
) -> None:
    first = await make_client(audiences={"chunk_size": 1})
    await create_topic(first, "news")
    subscribers = [(await create_user(first))["id"] for _ in range(6)]
    await subscribe(first, "news", subscribers)
    send_id = await accepted_send(first, {"topic": "news", "title": "Interrupted"})
    await first.close()  # wherever the fan-out was, it stops here
    second = await make_client(audiences={"chunk_size": 1})
    progress = await finished(second, send_id)
    assert (progress["status"], progress["recipients"]["committed"]) == ("done", 6)
    for user_id in subscribers:
        assert (await titles_of(second, user_id)).count("Interrupted") == 1


async def test_a_topic_deleted_during_its_send_ends_it(make_client: MakeClient) -> None:
    """The send outlives its topic: with the subscriptions gone there is nobody left to
    reach, and the send ends `done` rather than failing at every poll."""
    client = await make_client(audiences={"poll_interval": 3600.0})
    storage = client.app[STORAGE]
    await storage.create_send(
        NewSend(
            id="snd_topic_gone",
            audience={"kind": "topic", "topic": "gone"},
            content='{"topic": "gone", "title": "Nobody"}',
            created_at=now_ms(),
        )
    )
    client.app[AUDIENCES].wake()  # stored behind the API's back: no poll for an hour
    progress = await finished(client, "snd_topic_gone")
    assert (progress["status"], progress["recipients"]["resolved"]) == ("done", 0)


async def test_a_topic_send_on_postgresql(make_client: MakeClient, postgres_url: str) -> None:
    client = await make_client(storage={"url": postgres_url}, audiences={"chunk_size": 2})
    await create_topic(client, "news")
    subscribers = [(await create_user(client))["id"] for _ in range(3)]
    outsider = (await create_user(client))["id"]
    await subscribe(client, "news", subscribers)
    send_id = await accepted_send(client, {"topic": "news", "title": "On PG"})
    progress = await finished(client, send_id)
    assert (progress["status"], progress["recipients"]["committed"]) == ("done", 3)
    for user_id in subscribers:
        assert (await titles_of(client, user_id)).count("On PG") == 1
    assert "On PG" not in await titles_of(client, outsider)


async def test_a_template_topic_send_is_a_job_rendered_per_subscriber(client: Client) -> None:
    await save_template(client, "greeting", GREETING)
    await create_topic(client, "news")
    ada = (await create_user(client, name="Ada", locale="fr"))["id"]
    bob = (await create_user(client, name="Bob"))["id"]
    nameless = (await create_user(client))["id"]
    outsider = (await create_user(client, name="Out"))["id"]
    await subscribe(client, "news", [ada, bob, nameless])
    send_id = await accepted_send(client, {"topic": "news", "template": "greeting"} | NEWS)
    progress = await finished(client, send_id)
    assert (progress["status"], progress["audience"]) == ("done", "topic")
    recipients = progress["recipients"]
    assert (recipients["resolved"], recipients["committed"], recipients["skipped"]) == (3, 2, 1)
    assert await titles_of(client, ada) == ["Salut Ada"]
    assert await titles_of(client, bob) == ["Hi Bob"]
    assert await titles_of(client, nameless) == []
    assert await titles_of(client, outsider) == []


async def test_a_template_topic_send_with_an_unknown_template_is_a_404_and_writes_no_send(
    client: Client,
) -> None:
    await create_topic(client, "news")
    response = await post(client, {"topic": "news", "template": "nope"})
    assert response.status == 404, await response.text()
    assert (await response.json())["error"]["field"] == "template"
    storage = client.app[STORAGE]
    assert await storage.unfinished_sends(node_id="any-node", now=now_ms(), limit=10) == []


async def test_a_stored_send_renders_its_fixed_version_not_the_latest(
    make_client: MakeClient,
) -> None:
    """What a chunk run after a new version was saved renders: the version stored in
    the send, read by the fan-out (here after v2 was saved, before the send started)."""
    client = await make_client(audiences={"poll_interval": 3600.0})
    await save_template(client, "greeting", GREETING)
    await save_template(client, "greeting", {"locales": {"en": {"inapp": {"title": "v2"}}}})
    await create_topic(client, "news")
    ada = (await create_user(client, name="Ada"))["id"]
    await subscribe(client, "news", [ada])
    await client.app[STORAGE].create_send(
        NewSend(
            id="snd_pinned",
            audience={"kind": "topic", "topic": "news"},
            content='{"topic": "news", "template": "greeting", "template_version": 1, '
            '"data": {"news": "x"}}',
            created_at=now_ms(),
        )
    )
    client.app[AUDIENCES].wake()
    progress = await finished(client, "snd_pinned")
    assert (progress["status"], progress["recipients"]["committed"]) == ("done", 1)
    assert await titles_of(client, ada) == ["Hi Ada"]


async def test_a_stored_send_whose_template_is_gone_fails_instead_of_going_out_blank(
    make_client: MakeClient,
) -> None:
    client = await make_client(audiences={"poll_interval": 3600.0})
    await create_topic(client, "news")
    await subscribe(client, "news", [(await create_user(client))["id"]])
    await client.app[STORAGE].create_send(
        NewSend(
            id="snd_templated",
            audience={"kind": "topic", "topic": "news"},
            content='{"topic": "news", "template": "hello", "template_version": 1}',
            created_at=now_ms(),
        )
    )
    client.app[AUDIENCES].wake()
    progress = await finished(client, "snd_templated")
    assert progress["status"] == "failed"
    assert "template" in progress["error"]
    assert progress["recipients"]["committed"] == 0
