"""Native WebSocket delivery through the per-user mailbox actors, over real sockets."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestClient

from actors.transport import CloseCode
from pushd.appkeys import MAILBOXES
from tests.actors.doubles import eventually
from tests.app_client import TOKEN_SECRET, MakeClient, create_user, send, user_token

Client = TestClient[Any, Any]
WS = aiohttp.ClientWebSocketResponse


async def connect(client: Client, token: str) -> tuple[WS, dict[str, Any]]:
    ws = await client.ws_connect("/ws")
    await ws.send_json({"type": "auth", "token": token})
    welcome = await ws.receive_json(timeout=5)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def next_notification(ws: WS) -> dict[str, Any]:
    frame: dict[str, Any] = await ws.receive_json(timeout=5)
    assert frame["type"] == "notification", frame
    return frame


async def close_code_of(ws: WS) -> int | None:
    message = await ws.receive(timeout=5)
    assert message.type in (
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSMsgType.CLOSED,
        aiohttp.WSMsgType.CLOSING,
    ), message
    return ws.close_code


def _connection_tasks() -> list[asyncio.Task[object]]:
    """Tasks running a `Connection`'s writer."""
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "").startswith("Connection.")
    ]


async def test_an_idle_socket_keeps_no_writer_task_and_starts_no_actor(client: Client) -> None:
    """Guards the memory per idle socket (issue #16): once the welcome is written, an
    authenticated socket that receives nothing has no writer task, and its user's
    mailbox is parked without an actor from the start; a notification still arrives."""
    user = await create_user(client)
    ws, _ = await connect(client, await user_token(client, user["id"]))
    mailboxes = client.app[MAILBOXES]
    await eventually(lambda: not _connection_tasks())  # ends once the welcome is out
    assert (len(mailboxes), mailboxes.actors_started) == (0, 0)
    assert mailboxes.get(user["id"])

    accepted = await send(client, user["id"])
    assert (await next_notification(ws))["seq"] == accepted["seq"]
    await ws.close()


async def test_notification_reaches_every_socket_of_the_user(client: Client) -> None:
    user = await create_user(client)
    other = await create_user(client)
    token = await user_token(client, user["id"])
    tab1, welcome = await connect(client, token)
    tab2, _ = await connect(client, token)
    stranger, _ = await connect(client, await user_token(client, other["id"]))
    assert welcome["user_id"] == user["id"]
    assert welcome["last_seq"] == 0

    accepted = await send(client, user["id"], body="hi", data={"x": 1})
    for ws in (tab1, tab2):
        frame = await next_notification(ws)
        assert frame["seq"] == accepted["seq"]
        assert frame["id"] == accepted["id"]
        assert (frame["title"], frame["body"], frame["data"]) == ("hello", "hi", {"x": 1})
        assert frame["created_at"]
    with pytest.raises(asyncio.TimeoutError):
        await stranger.receive(timeout=0.3)
    for ws in (tab1, tab2, stranger):
        await ws.close()


async def test_order_is_the_order_of_acceptance(client: Client) -> None:
    """Guards the commit→publish ordering: concurrent POSTs for one user must reach the
    socket in seq order, never reordered by the batcher or the bus."""
    user = await create_user(client)
    ws, _ = await connect(client, await user_token(client, user["id"]))
    accepted = await asyncio.gather(*(send(client, user["id"], body=str(i)) for i in range(200)))
    received = [(await next_notification(ws))["seq"] for _ in accepted]
    assert received == list(range(1, 201))
    await ws.close()


async def test_welcome_reports_last_seq(client: Client) -> None:
    user = await create_user(client)
    for _ in range(3):
        await send(client, user["id"])
    ws, welcome = await connect(client, await user_token(client, user["id"]))
    assert welcome["last_seq"] == 3
    assert welcome["ack_seq"] == 0
    await ws.close()


async def test_ping_pong_and_invalid_frames(client: Client) -> None:
    user = await create_user(client)
    ws, _ = await connect(client, await user_token(client, user["id"]))
    await ws.send_json({"type": "ping"})
    assert (await ws.receive_json(timeout=5))["type"] == "pong"
    await ws.send_str("{not json")
    error = await ws.receive_json(timeout=5)
    assert error["type"] == "error"
    assert error["code"] == "invalid_frame"
    await ws.send_json({"type": "ack", "seq": 0})
    await ws.send_json({"type": "ping"})
    assert (await ws.receive_json(timeout=5))["type"] == "pong"
    await ws.close()


async def test_bad_token_is_refused_with_do_not_reconnect_code(client: Client) -> None:
    ws = await client.ws_connect("/ws")
    await ws.send_json({"type": "auth", "token": "garbage"})
    assert await close_code_of(ws) == CloseCode.INVALID_TOKEN


async def test_expired_token_has_its_own_code(client: Client) -> None:
    user = await create_user(client)
    now = int(time.time())
    claims = {
        "sub": user["id"],
        "iat": now - 100,
        "exp": now - 10,
        "iss": "pushd",
        "aud": "pushd-ws",
    }
    expired = jwt.encode(claims, TOKEN_SECRET, algorithm="HS256")
    ws = await client.ws_connect("/ws")
    await ws.send_json({"type": "auth", "token": expired})
    assert await close_code_of(ws) == CloseCode.TOKEN_EXPIRED


async def test_token_signed_with_another_secret_is_invalid(client: Client) -> None:
    user = await create_user(client)
    now = int(time.time())
    claims = {"sub": user["id"], "iat": now, "exp": now + 60, "iss": "pushd", "aud": "pushd-ws"}
    forged = jwt.encode(claims, "another-secret-another-secret-another-secret", algorithm="HS256")
    ws = await client.ws_connect("/ws")
    await ws.send_json({"type": "auth", "token": forged})
    assert await close_code_of(ws) == CloseCode.INVALID_TOKEN


async def test_first_frame_must_be_auth(client: Client) -> None:
    ws = await client.ws_connect("/ws")
    await ws.send_json({"type": "ping"})
    assert await close_code_of(ws) == CloseCode.PROTOCOL_ERROR


async def test_silent_client_is_closed_after_auth_timeout(make_client: MakeClient) -> None:
    client = await make_client(auth={"ws_auth_timeout": 0.2})
    ws = await client.ws_connect("/ws")
    assert await close_code_of(ws) == CloseCode.AUTH_TIMEOUT


async def test_slow_consumer_is_closed_and_others_are_unaffected(make_client: MakeClient) -> None:
    """A socket that stops reading must be cut off with 4008 once its queue is full,
    while another user's socket keeps receiving everything."""
    client = await make_client(actors={"socket_queue_size": 8})
    slow_user = await create_user(client)
    fast_user = await create_user(client)
    slow, _ = await connect(client, await user_token(client, slow_user["id"]))
    fast, _ = await connect(client, await user_token(client, fast_user["id"]))
    # About 32 KB a notification (body and data near their caps), 6.4 MB in all: more
    # than the kernel's socket buffers between the two ends hold.
    big = "x" * 16000
    for i in range(200):
        await send(client, slow_user["id"], body=big, data={"pad": big})
        await send(client, fast_user["id"], body=str(i))
        frame = await next_notification(fast)
        assert frame["seq"] == i + 1
    # Drain the slow socket: some frames, then the close.
    codes = set()
    while True:
        message = await slow.receive(timeout=5)
        if message.type != aiohttp.WSMsgType.TEXT:
            codes.add(slow.close_code)
            break
    assert codes == {CloseCode.SLOW_CONSUMER}
    await fast.close()
