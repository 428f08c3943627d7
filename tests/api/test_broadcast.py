"""Broadcast and segment sends over the real app (pushd/api/sends.py,
pushd/audiences/fanout.py): a 202 with a send id, every recipient's notification in
their mailbox (and on their socket, with their next seq), progress at
`GET /api/sends/{id}`, who may send, and a send carried on after a restart with each
recipient reached exactly once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient

from pushd.appkeys import STORAGE
from pushd.ids import now_ms
from storage import Storage
from storage.records import NewNotification, NewSend, SendChunk
from tests.app_client import AUTH, MakeClient, create_key, create_user, send, user_token
from tests.realtime.test_ws import connect, next_notification

Client = TestClient[Any, Any]


async def post(client: Client, body: dict[str, Any], headers: dict[str, str] = AUTH) -> Any:
    return await client.post("/api/notifications", json=body, headers=headers)


async def accepted_send(client: Client, body: dict[str, Any]) -> str:
    response = await post(client, body)
    assert response.status == 202, await response.text()
    accepted = await response.json()
    assert response.headers["Location"] == f"/api/sends/{accepted['send_id']}"
    send_id: str = accepted["send_id"]
    return send_id


async def finished(client: Client, send_id: str) -> dict[str, Any]:
    """The send's progress once done or failed (within 10 s)."""
    async with asyncio.timeout(10):
        while True:
            response = await client.get(f"/api/sends/{send_id}", headers=AUTH)
            assert response.status == 200, await response.text()
            progress: dict[str, Any] = await response.json()
            if progress["status"] in ("done", "failed"):
                return progress
            await asyncio.sleep(0.05)


async def titles_of(client: Client, user_id: str) -> list[str]:
    response = await client.get(f"/api/notifications/user/{user_id}", headers=AUTH)
    assert response.status == 200, await response.text()
    return [n["title"] for n in (await response.json())["items"]]


async def test_broadcast_reaches_every_user_and_a_connected_socket(client: Client) -> None:
    users = [(await create_user(client))["id"] for _ in range(5)]
    erased = (await create_user(client))["id"]
    assert (await client.delete(f"/api/users/{erased}", headers=AUTH)).status == 204
    first = await send(client, users[0])
    ws, _ = await connect(client, await user_token(client, users[0]))
    assert (await next_notification(ws))["seq"] == first["seq"]  # the backlog
    send_id = await accepted_send(client, {"broadcast": True, "title": "To all"})
    frame = await next_notification(ws)
    assert (frame["seq"], frame["title"]) == (first["seq"] + 1, "To all")
    await ws.close()
    progress = await finished(client, send_id)
    assert progress["status"] == "done"
    assert progress["audience"] == "broadcast"
    assert progress["recipients"]["resolved"] == 5
    assert progress["recipients"]["committed"] == 5
    assert progress["recipients"]["skipped"] == 0
    for user_id in users:
        assert (await titles_of(client, user_id)).count("To all") == 1


async def test_segment_send_on_postgresql(make_client: MakeClient, postgres_url: str) -> None:
    """The cluster's storage: the filter's SQL (jsonb tag test) and the send's rows."""
    client = await make_client(storage={"url": postgres_url}, audiences={"chunk_size": 2})
    tagged = [(await create_user(client, tags=["pro"], locale="de"))["id"] for _ in range(3)]
    other = (await create_user(client, tags=["free"], locale="de"))["id"]
    segment = {"all": [{"tag": "pro"}, {"locale": "de"}]}
    send_id = await accepted_send(client, {"segment": segment, "title": "On PG"})
    progress = await finished(client, send_id)
    assert (progress["status"], progress["recipients"]["committed"]) == ("done", 3)
    for user_id in tagged:
        assert (await titles_of(client, user_id)).count("On PG") == 1
    assert "On PG" not in await titles_of(client, other)


async def test_segment_send_reaches_only_the_matching_users(client: Client) -> None:
    german_pro = await create_user(client, locale="de-AT", tags=["pro"])
    german_free = await create_user(client, locale="de", tags=["free"])
    french_pro = await create_user(client, locale="fr", tags=["pro"])
    paying = await create_user(client, attributes={"plan": "team"})
    segment = {
        "any": [
            {"all": [{"tag": "pro"}, {"locale": "de"}]},
            {"attribute": "plan", "eq": "team"},
        ]
    }
    send_id = await accepted_send(client, {"segment": segment, "title": "Segmented"})
    progress = await finished(client, send_id)
    assert (progress["status"], progress["recipients"]["committed"]) == ("done", 2)
    for user, reached in ((german_pro, True), (german_free, False), (french_pro, False)):
        assert ("Segmented" in await titles_of(client, user["id"])) is reached
    assert "Segmented" in await titles_of(client, paying["id"])


async def test_saved_segment_count_and_send(client: Client) -> None:
    for tags in (["beta"], ["beta", "pro"], []):
        await create_user(client, tags=tags)
    created = await client.post(
        "/api/segments", json={"name": "Beta", "filter": {"tag": "beta"}}, headers=AUTH
    )
    assert created.status == 201, await created.text()
    segment_id = (await created.json())["id"]
    count = await client.get(f"/api/segments/{segment_id}/count", headers=AUTH)
    assert await count.json() == {"matching": 2, "at_least": False}
    send_id = await accepted_send(client, {"segment": segment_id, "title": "Beta news"})
    progress = await finished(client, send_id)
    assert progress["segment_id"] == segment_id
    assert progress["recipients"]["committed"] == 2
    listed = await client.get("/api/segments", headers=AUTH)
    assert [s["id"] for s in (await listed.json())["items"]] == [segment_id]
    assert (await client.delete(f"/api/segments/{segment_id}", headers=AUTH)).status == 204
    gone = await post(client, {"segment": segment_id, "title": "x"})
    assert gone.status == 404
    assert (await gone.json())["error"]["field"] == "segment"


async def test_refusals_name_the_field(client: Client) -> None:
    user = await create_user(client)
    cases = [
        ({"segment": {"all": [{"tag": 3}]}, "title": "x"}, 422, "segment.all[0].tag"),
        ({"segment": {"nope": 1}, "title": "x"}, 422, "segment"),
        ({"broadcast": True, "user_id": user["id"], "title": "x"}, 422, "broadcast"),
        ({"broadcast": True, "segment": {"tag": "a"}, "title": "x"}, 422, "broadcast"),
        ({"broadcast": False, "title": "x"}, 422, "broadcast"),
        ({"segment": "seg_missing", "title": "x"}, 404, "segment"),
        ({"broadcast": True, "template": "welcome"}, 404, "template"),
    ]
    for body, status, field in cases:
        response = await post(client, body)
        assert response.status == status, (body, await response.text())
        assert (await response.json())["error"]["field"] == field, body
    later = await post(client, {"broadcast": True, "title": "x", "delay": 60})
    assert later.status == 422, await later.text()
    bad_segment = await client.post(
        "/api/segments", json={"name": "x", "filter": {"any": [{"locale": 1}]}}, headers=AUTH
    )
    assert bad_segment.status == 422
    assert (await bad_segment.json())["error"]["field"] == "filter.any[0].locale"


async def test_who_may_broadcast(client: Client) -> None:
    await create_user(client)
    plain, _ = await create_key(client, "publisher")
    allowed, record = await create_key(client, "publisher", broadcast=True)
    assert record["broadcast"] is True
    limited, _ = await create_key(client, "publisher", broadcast=True, categories=["news"])
    reader = await client.post(
        "/api/keys", json={"name": "r", "role": "reader", "broadcast": True}, headers=AUTH
    )
    assert reader.status == 422
    assert (await reader.json())["error"]["field"] == "broadcast"
    refused = await post(client, {"broadcast": True, "title": "x"}, _auth(plain))
    assert refused.status == 403
    assert (await refused.json())["error"]["field"] == "broadcast"
    by_segment = await post(client, {"segment": {"tag": "a"}, "title": "x"}, _auth(plain))
    assert (await by_segment.json())["error"]["field"] == "segment"
    ok = await post(client, {"broadcast": True, "title": "x"}, _auth(allowed))
    assert ok.status == 202, await ok.text()
    send_id = (await ok.json())["send_id"]
    # A category-limited key sends only its categories, and sees only their sends.
    other = await post(client, {"broadcast": True, "title": "x"}, _auth(limited))
    assert (await other.json())["error"]["field"] == "category"
    hidden = await client.get(f"/api/sends/{send_id}", headers=_auth(limited))
    assert hidden.status == 404
    news = await post(client, {"broadcast": True, "title": "x", "category": "news"}, _auth(limited))
    assert news.status == 202, await news.text()
    seen = await client.get(f"/api/sends/{(await news.json())['send_id']}", headers=_auth(limited))
    assert seen.status == 200
    segments = await client.post(
        "/api/segments", json={"name": "x", "filter": {"tag": "a"}}, headers=_auth(allowed)
    )
    assert segments.status == 403


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def leave_half_sent(
    storage: Storage, send_id: str, audience: dict[str, Any], content: str, users: list[str]
) -> None:
    """A send as a node that died mid-send leaves it: leased by that node (for 1 ms), its
    cursor recorded at users[1] after 2 committed, and the notification of users[2]
    committed too (the window between a chunk's commit and its record)."""
    now = now_ms()
    await storage.create_send(
        NewSend(id=send_id, audience=audience, content=content, created_at=now)
    )
    assert await storage.lease_send(send_id, node_id="dead-node", now=now, until=now + 1)
    for user_id in users[:3]:
        note = NewNotification(
            id=f"ntf_{user_id}", user_id=user_id, title="Resumed", created_at=now, send_id=send_id
        )
        await storage.insert_notifications([note])
    chunk = SendChunk(cursor_user_id=users[1], resolved=2, committed=2, skipped=0)
    assert await storage.record_send_chunk(
        send_id, chunk, node_id="dead-node", now=now, until=now + 1
    )


async def test_a_send_left_unfinished_resumes_after_a_restart(make_client: MakeClient) -> None:
    """Guards exactly-once across a crash: the send's cursor stops at users[1], but the
    notification of users[2] was committed before the crash (the window between a
    chunk's commit and its record). The next start takes the send over once the dead
    node's lease ran out, skips users[2] and reaches the others once each."""
    quiet = {"poll_interval": 3600.0, "chunk_size": 2}
    first = await make_client(audiences=quiet)
    users = sorted([(await create_user(first))["id"] for _ in range(6)])
    storage = first.app[STORAGE]
    body = '{"broadcast": true, "title": "Resumed"}'
    await leave_half_sent(storage, "snd_crash", {"kind": "broadcast"}, body, users)
    await first.close()
    await asyncio.sleep(0.01)  # the dead node's lease runs out

    second = await make_client(audiences={"chunk_size": 2})
    progress = await finished(second, "snd_crash")
    assert progress["status"] == "done"
    assert progress["recipients"]["committed"] == 6
    assert progress["recipients"]["resolved"] == 6
    for user_id in users:
        assert (await titles_of(second, user_id)).count("Resumed") == 1


async def test_stopping_mid_send_then_starting_reaches_everyone_once(
    make_client: MakeClient,
) -> None:
    first = await make_client(audiences={"chunk_size": 1})
    users = [(await create_user(first))["id"] for _ in range(8)]
    send_id = await accepted_send(first, {"broadcast": True, "title": "Interrupted"})
    await first.close()  # wherever the fan-out was, it stops here
    second = await make_client(audiences={"chunk_size": 1})
    progress = await finished(second, send_id)
    assert (progress["status"], progress["recipients"]["committed"]) == ("done", 8)
    for user_id in users:
        assert (await titles_of(second, user_id)).count("Interrupted") == 1


GREETING = {
    "default_locale": "en",
    "locales": {
        "en": {"inapp": {"title": "Hi {{ user.name }}", "body": "{{ news }}"}},
        "fr": {"inapp": {"title": "Salut {{ user.name }}", "body": "{{ news }}"}},
    },
}
NEWS = {"data": {"news": "Launch"}}


async def save_template(client: Client, template_id: str, template: dict[str, Any]) -> int:
    response = await client.put(f"/api/templates/{template_id}", json=template, headers=AUTH)
    assert response.status == 200, await response.text()
    version: int = (await response.json())["version"]
    return version


async def test_a_broadcast_with_a_template_renders_each_users_own_title(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """Each user gets the template in their locale with their profile; users it cannot be
    rendered for (no name, and the template gives no default) are skipped and counted,
    the reason logged once for the send."""
    await save_template(client, "greeting", GREETING)
    ada = (await create_user(client, name="Ada", locale="fr-CA"))["id"]
    bob = (await create_user(client, name="Bob", locale="en"))["id"]
    nameless = [(await create_user(client))["id"] for _ in range(2)]
    ws, _ = await connect(client, await user_token(client, ada))
    with caplog.at_level(logging.WARNING, logger="pushd.audiences.fanout"):
        send_id = await accepted_send(
            client, {"broadcast": True, "template": "greeting", "data": {"news": "Launch"}}
        )
        frame = await next_notification(ws)
        await ws.close()
        progress = await finished(client, send_id)
    assert (frame["title"], frame["body"]) == ("Salut Ada", "Launch")
    assert progress["status"] == "done"
    recipients = progress["recipients"]
    assert (recipients["resolved"], recipients["committed"], recipients["skipped"]) == (4, 2, 2)
    assert await titles_of(client, ada) == ["Salut Ada"]
    assert await titles_of(client, bob) == ["Hi Bob"]
    for user_id in nameless:
        assert await titles_of(client, user_id) == []
    skipped_logs = [r for r in caplog.records if "cannot be rendered" in r.getMessage()]
    assert len(skipped_logs) == 1
    assert send_id in skipped_logs[0].getMessage()


async def test_a_template_saved_mid_send_does_not_change_what_it_renders(
    make_client: MakeClient,
) -> None:
    """The 202 fixes the template's version in the stored send: a version saved right
    after it (while chunks of one user are still being sent) is not what anyone gets."""
    client = await make_client(audiences={"chunk_size": 1})
    assert await save_template(client, "greeting", GREETING) == 1
    users = [(await create_user(client, name=f"U{n}"))["id"] for n in range(6)]
    send_id = await accepted_send(client, {"broadcast": True, "template": "greeting"} | NEWS)
    changed = {"locales": {"en": {"inapp": {"title": "Changed {{ user.name }}"}}}}
    assert await save_template(client, "greeting", changed) == 2
    stored = await client.app[STORAGE].get_send(send_id)
    assert stored is not None
    assert msgspec.json.decode(stored.content)["template_version"] == 1
    progress = await finished(client, send_id)
    assert (progress["status"], progress["recipients"]["committed"]) == ("done", 6)
    for number, user_id in enumerate(users):
        assert await titles_of(client, user_id) == [f"Hi U{number}"]


async def test_a_segment_send_with_a_template_version_renders_that_version(
    client: Client,
) -> None:
    await save_template(client, "greeting", GREETING)
    await save_template(client, "greeting", {"locales": {"en": {"inapp": {"title": "v2"}}}})
    pro = (await create_user(client, name="Pro", tags=["pro"]))["id"]
    free = (await create_user(client, name="Free", tags=["free"]))["id"]
    body = {"segment": {"tag": "pro"}, "template": "greeting", "template_version": 1} | NEWS
    progress = await finished(client, await accepted_send(client, body))
    assert (progress["status"], progress["recipients"]["committed"]) == ("done", 1)
    assert await titles_of(client, pro) == ["Hi Pro"]
    assert await titles_of(client, free) == []
    missing = await post(client, {**body, "template_version": 3})
    assert missing.status == 404, await missing.text()
    assert (await missing.json())["error"]["field"] == "template"
