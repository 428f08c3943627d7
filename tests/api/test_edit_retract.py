"""Edit and retract of sent notifications (issue #13, point 7) over HTTP and a real
WebSocket: `updated` / `retracted` frames to a 1.3 client (none to an older one), the
current version on replay and in the history, unsent channel steps that send the new
content or are cancelled, and the errors that name the field."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.app_client import AUTH, MakeClient, create_key, create_user, send, user_token
from tests.channels.harness import AiohttpServer, allow_every_url, served
from tests.channels.smtp_server import LocalSmtpServer, RecordingHandler
from tests.channels.test_end_to_end import (
    WEBPUSH,
    add_webpush_device,
    start_pushd,
    vapid_public_key,
)
from tests.channels.webpush_endpoint import PushEndpoint

Client = TestClient[Any, Any]
Socket = aiohttp.ClientWebSocketResponse


async def connect(client: Client, user_id: str, **auth: Any) -> Socket:
    ws = await client.ws_connect("/ws")
    token = await user_token(client, user_id)
    await ws.send_json({"type": "auth", "token": token, **auth})
    welcome = await ws.receive_json(timeout=5)
    assert welcome["type"] == "welcome", welcome
    assert welcome["protocol"] == "1.3"
    return ws


async def next_frame(ws: Socket, *types: str) -> dict[str, Any]:
    """The next frame of one of `types` (pongs, cursors and the like are passed over)."""
    while True:
        frame: dict[str, Any] = await ws.receive_json(timeout=5)
        if frame["type"] in types:
            return frame


async def patch(client: Client, notification_id: str, **body: Any) -> aiohttp.ClientResponse:
    return await client.patch(f"/api/notifications/{notification_id}", json=body, headers=AUTH)


async def delete(client: Client, notification_id: str) -> aiohttp.ClientResponse:
    return await client.delete(f"/api/notifications/{notification_id}", headers=AUTH)


async def detail(client: Client, notification_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/notifications/{notification_id}", headers=AUTH)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_a_connected_client_gets_updated_then_retracted(make_client: MakeClient) -> None:
    client = await make_client()
    user = await create_user(client)
    sent = await send(client, user["id"], title="Build failed", body="main is red", data={"n": 1})
    ws = await connect(client, user["id"], protocol="1.3")
    first = await next_frame(ws, "notification")
    assert (first["id"], first["title"]) == (sent["id"], "Build failed")
    assert "version" not in first  # an unedited notification's frame does not grow

    edited = await patch(client, sent["id"], title="Build fixed", data=None)
    assert edited.status == 200, await edited.text()
    view = await edited.json()
    assert (view["title"], view["body"], view["data"]) == ("Build fixed", "main is red", None)
    assert (view["version"], view["retracted_at"]) == (2, None)
    assert view["updated_at"] is not None
    updated = await next_frame(ws, "updated", "notification", "retracted")
    assert updated["type"] == "updated"
    assert (updated["seq"], updated["id"], updated["version"]) == (sent["seq"], sent["id"], 2)
    assert (updated["title"], updated["body"], updated["data"]) == (
        "Build fixed",
        "main is red",
        None,
    )

    retract = await delete(client, sent["id"])
    assert retract.status == 200, await retract.text()
    gone = await retract.json()
    assert (gone["title"], gone["body"], gone["data"], gone["version"]) == (None, None, None, 3)
    assert gone["retracted_at"] is not None
    retracted = await next_frame(ws, "updated", "notification", "retracted")
    assert retracted["type"] == "retracted"
    assert (retracted["seq"], retracted["id"], retracted["version"]) == (sent["seq"], sent["id"], 3)

    # Retracting again answers the same and tells nobody anything new.
    again = await delete(client, sent["id"])
    assert again.status == 200
    assert (await again.json())["version"] == 3
    await ws.close()


async def test_a_client_older_than_1_3_gets_no_edit_frames(make_client: MakeClient) -> None:
    """Guards old clients: 1.2 never said to ignore unknown frame types, so the edit
    frames go only to a client that announced 1.3."""
    client = await make_client()
    user = await create_user(client)
    sent = await send(client, user["id"], title="first")
    ws = await connect(client, user["id"])  # no `protocol`: 1.2 or older
    assert (await next_frame(ws, "notification"))["id"] == sent["id"]
    assert (await patch(client, sent["id"], title="edited")).status == 200
    assert (await delete(client, sent["id"])).status == 200
    later = await send(client, user["id"], title="second")
    frame = await next_frame(ws, "notification", "updated", "retracted")
    assert (frame["type"], frame["id"]) == ("notification", later["id"])
    await ws.close()


async def test_resuming_replays_the_current_version(make_client: MakeClient) -> None:
    client = await make_client()
    user = await create_user(client)
    edited = await send(client, user["id"], title="before", body="b")
    retracted = await send(client, user["id"], title="secret")
    kept = await send(client, user["id"], title="kept")
    assert (await patch(client, edited["id"], body="after")).status == 200
    assert (await delete(client, retracted["id"])).status == 200

    ws = await connect(client, user["id"], since=0)
    replayed = [await next_frame(ws, "notification") for _ in range(3)]
    # Every seq is still covered once: the stream guarantee holds for old clients too.
    assert [f["seq"] for f in replayed] == [edited["seq"], retracted["seq"], kept["seq"]]
    assert (replayed[0]["title"], replayed[0]["body"], replayed[0]["version"]) == (
        "before",
        "after",
        2,
    )
    assert (replayed[1]["title"], replayed[1]["retracted"], replayed[1]["version"]) == (
        None,
        True,
        2,
    )
    assert "retracted" not in replayed[2]
    assert "version" not in replayed[2]
    await ws.close()


async def test_history_shows_the_current_version(make_client: MakeClient) -> None:
    client = await make_client()
    user = await create_user(client)
    edited = await send(client, user["id"], title="t1")
    retracted = await send(client, user["id"], title="t2")
    assert (await patch(client, edited["id"], title="t1 edited")).status == 200
    assert (await delete(client, retracted["id"])).status == 200
    page = await client.get(f"/api/notifications/user/{user['id']}", headers=AUTH)
    items = (await page.json())["items"]
    assert [(i["title"], i["version"], i["retracted_at"] is None) for i in items] == [
        (None, 2, False),
        ("t1 edited", 2, True),
    ]
    assert all(i["updated_at"] is not None for i in items)


async def test_bad_edits_are_refused_naming_the_field(make_client: MakeClient) -> None:
    client = await make_client()
    user = await create_user(client)
    sent = await send(client, user["id"], title="t")
    cases: list[tuple[dict[str, Any], int, str, str]] = [
        ({}, 422, "validation_failed", "title"),
        ({"title": None}, 422, "validation_failed", "title"),  # neither title nor body left
        ({"colour": "red"}, 422, "validation_failed", "colour"),
        ({"title": "x" * 1025}, 422, "validation_failed", "title"),
    ]
    for body, status, code, field in cases:
        response = await patch(client, sent["id"], **body)
        assert response.status == status, (body, await response.text())
        error = (await response.json())["error"]
        assert (error["code"], error["field"]) == (code, field), body
    unknown = await patch(client, "ntf_unknown", title="x")
    assert unknown.status == 404
    assert (await unknown.json())["error"]["field"] == "id"
    assert (await delete(client, sent["id"])).status == 200
    after_retract = await patch(client, sent["id"], title="x")
    assert after_retract.status == 409
    error = (await after_retract.json())["error"]
    assert (error["code"], error["field"]) == ("retracted", "id")
    assert (await detail(client, sent["id"]))["version"] == 2  # nothing was written


# Channel steps not sent yet ------------------------------------------------------------


@pytest.fixture
async def relay() -> AsyncIterator[LocalSmtpServer]:
    server = LocalSmtpServer(RecordingHandler())
    await server.start()
    yield server
    await server.stop()


async def start_with_email(make_client: MakeClient, relay: LocalSmtpServer) -> Client:
    provider = {
        "name": "relay",
        "host": "127.0.0.1",
        "port": relay.port,
        "security": "none",
        "from_address": "pushd@example.com",
        "timeout": 2.0,
    }
    return await make_client(
        outbound_url_check=allow_every_url,
        channels={"poll_interval": 0.05, "shutdown_timeout": 1.0, "email": [provider]},
    )


async def settled_email(client: Client, notification_id: str) -> dict[str, Any]:
    for _ in range(100):
        step: dict[str, Any]
        [step] = (await detail(client, notification_id))["channel_deliveries"]
        if step["status"] in {"sent", "failed", "cancelled"}:
            return step
        await asyncio.sleep(0.05)
    raise AssertionError(f"the email step of {notification_id} never settled: {step}")


async def test_an_unsent_email_step_sends_the_edited_subject(
    relay: LocalSmtpServer, make_client: MakeClient
) -> None:
    client = await start_with_email(make_client, relay)
    user = await create_user(client, email="ada@example.com")
    sent = await send(
        client, user["id"], title="Old subject", channels=[{"channel": "email", "delay": 0.4}]
    )
    assert (await patch(client, sent["id"], title="New subject")).status == 200
    step = await settled_email(client, sent["id"])
    assert step["status"] == "sent"
    [message] = relay.handler.received
    assert message.parsed()["Subject"] == "New subject"


async def test_a_retract_cancels_the_unsent_email_step(
    relay: LocalSmtpServer, make_client: MakeClient
) -> None:
    client = await start_with_email(make_client, relay)
    user = await create_user(client, email="ada@example.com")
    sent = await send(
        client, user["id"], title="Oops", channels=[{"channel": "email", "delay": 0.3}]
    )
    assert (await delete(client, sent["id"])).status == 200
    await asyncio.sleep(0.5)  # past the due time, several polls
    step = await settled_email(client, sent["id"])
    assert (step["status"], step["reason"], step["attempts"]) == ("cancelled", "retracted", 0)
    assert relay.handler.received == []


async def test_a_limited_key_edits_and_sees_only_its_categories(make_client: MakeClient) -> None:
    """Guards category-limited keys (docs/security.md): an edit frame tells the category
    of what changed, so a billing-only socket must get only billing edits, and a
    billing-only key must not learn that a marketing notification exists."""
    client = await make_client()
    user = await create_user(client)
    billing_key, _ = await create_key(client, "publisher", categories=["billing"])
    marketing = await send(client, user["id"], title="m", category="marketing")
    billing = await send(client, user["id"], title="b", category="billing")
    limited = await client.ws_connect("/ws")
    token = await client.post(
        f"/api/users/{user['id']}/tokens", headers={"Authorization": f"Bearer {billing_key}"}
    )
    await limited.send_json(
        {"type": "auth", "token": (await token.json())["token"], "protocol": "1.3"}
    )
    assert (await limited.receive_json(timeout=5))["type"] == "welcome"
    assert (await next_frame(limited, "notification"))["id"] == billing["id"]

    hidden = await client.patch(
        f"/api/notifications/{marketing['id']}",
        json={"title": "x"},
        headers={"Authorization": f"Bearer {billing_key}"},
    )
    assert hidden.status == 404
    assert (await patch(client, marketing["id"], title="m2")).status == 200  # admin
    assert (await patch(client, billing["id"], title="b2")).status == 200
    frame = await next_frame(limited, "updated", "retracted")
    assert (frame["id"], frame["title"], frame["category"]) == (billing["id"], "b2", "billing")
    await limited.close()


@pytest.fixture
async def push_endpoint(aiohttp_server: AiohttpServer) -> PushEndpoint:
    endpoint = PushEndpoint()
    endpoint.origin = await served(aiohttp_server, endpoint.app())
    return endpoint


async def test_an_edit_resends_a_sent_web_push_under_the_same_topic(
    push_endpoint: PushEndpoint, make_client: MakeClient
) -> None:
    client = await start_pushd(make_client, webpush=[WEBPUSH])
    user = await create_user(client)
    browser = push_endpoint.subscribe(vapid_public_key())
    await add_webpush_device(client, user["id"], browser)
    sent = await send(client, user["id"], title="Old", channels=[{"channel": "webpush"}])
    first = await settled_step(client, sent["id"], 1)
    assert first["status"] == "sent"

    assert (await patch(client, sent["id"], title="New")).status == 200
    steps = await settled_step(client, sent["id"], 2)
    assert [(s["status"], s["id"].endswith(".v2")) for s in steps] == [
        ("sent", False),
        ("sent", True),
    ]
    assert [p["title"] for p in push_endpoint.payloads(browser)] == ["Old", "New"]
    # The same Topic: the push service replaces the first if it still holds it.
    assert [push.headers["Topic"] for push in push_endpoint.received] == [sent["id"]] * 2


async def settled_step(client: Client, notification_id: str, count: int) -> Any:
    """The notification's channel deliveries once there are `count`, all sent or final."""
    for _ in range(100):
        steps = (await detail(client, notification_id))["channel_deliveries"]
        if len(steps) == count and all(s["status"] in {"sent", "failed"} for s in steps):
            return steps if count > 1 else steps[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"the push steps of {notification_id} never settled: {steps}")
