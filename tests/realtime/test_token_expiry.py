"""A socket lives as long as its token, over real WebSockets: the token's lifetime is
bounded by `auth.token_max_ttl`, the server asks for a fresh token before expiry
(`token_expiring`), a `refresh` keeps the socket, and without one the socket is closed
with 4002 "session expired" at expiry. Tokens live 2-3 s here, so these tests wait."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import jwt
from aiohttp.test_utils import TestClient

from actors.transport import CloseCode
from tests.app_client import AUTH, TOKEN_SECRET, create_user, send, user_token
from tests.realtime.test_ws import WS, close_code_of, connect, next_notification

Client = TestClient[Any, Any]
YEAR = 365 * 86400


def forged(user_id: str, *, iat: float, exp: float) -> str:
    """A token signed with the server's own secret but with claims pushd never issues."""
    claims = {"sub": user_id, "iat": iat, "exp": exp, "iss": "pushd", "aud": "pushd-ws"}
    return jwt.encode(claims, TOKEN_SECRET, algorithm="HS256")


async def refused_with(client: Client, token: str) -> int | None:
    ws = await client.ws_connect("/ws")
    await ws.send_json({"type": "auth", "token": token})
    return await close_code_of(ws)


def instant(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


async def next_frame(ws: WS, kind: str) -> dict[str, Any]:
    frame: dict[str, Any] = await ws.receive_json(timeout=5)
    assert frame["type"] == kind, frame
    return frame


async def test_a_token_living_longer_than_token_max_ttl_is_refused(client: Client) -> None:
    """Guards issue #10: a token with `exp` 31 years ahead opened a socket."""
    user = await create_user(client)
    now = time.time()
    assert await refused_with(client, forged(user["id"], iat=now, exp=now + 31 * YEAR)) == (
        CloseCode.INVALID_TOKEN
    )


async def test_an_absurd_iat_is_refused_as_an_invalid_token(client: Client) -> None:
    """Guards issue #10: `iat = -1e308` raised OverflowError in the handler instead of
    closing with 4501."""
    user = await create_user(client)
    now = time.time()
    assert await refused_with(client, forged(user["id"], iat=-1e308, exp=now + 60)) == (
        CloseCode.INVALID_TOKEN
    )


async def test_a_socket_is_closed_when_its_token_expires(client: Client) -> None:
    """Guards issue #10: a socket stayed open after its token expired. A client that
    ignores `token_expiring` (a v1.1 client) is closed with 4002 at expiry."""
    user = await create_user(client)
    ws, welcome = await connect(client, await user_token(client, user["id"], ttl=2))
    expiring = await next_frame(ws, "token_expiring")
    assert expiring["expires_at"] == welcome["token_expires_at"]
    expires_at = instant(expiring["expires_at"])
    assert expires_at - time.time() <= 2
    assert await close_code_of(ws) == CloseCode.SESSION_EXPIRED
    assert time.time() >= expires_at - 0.1


async def test_a_refresh_keeps_the_socket_past_the_first_token(client: Client) -> None:
    user = await create_user(client)
    ws, _ = await connect(client, await user_token(client, user["id"], ttl=2))
    first_expiry = instant((await next_frame(ws, "token_expiring"))["expires_at"])

    await ws.send_json({"type": "refresh", "token": await user_token(client, user["id"], ttl=3)})
    refreshed = await next_frame(ws, "refreshed")
    second_expiry = instant(refreshed["expires_at"])
    assert second_expiry > first_expiry
    # The new token expires within the notice period too: asked again at once.
    assert (await next_frame(ws, "token_expiring"))["expires_at"] == refreshed["expires_at"]

    await asyncio.sleep(first_expiry - time.time() + 0.3)
    accepted = await send(client, user["id"])
    assert (await next_notification(ws))["seq"] == accepted["seq"]
    assert await close_code_of(ws) == CloseCode.SESSION_EXPIRED
    assert time.time() >= second_expiry - 0.1


async def test_a_refresh_with_an_unusable_token_keeps_the_current_one(client: Client) -> None:
    """A refresh can never switch the socket to another user or extend it with a token
    that would be refused at auth: each is answered with an error frame, and the socket
    goes on under its current token."""
    user, other = await create_user(client), await create_user(client)
    revoked = await user_token(client, user["id"])
    response = await client.post(f"/api/users/{user['id']}/tokens/revoke", headers=AUTH)
    assert response.status == 200
    ws, welcome = await connect(client, await user_token(client, user["id"]))
    now = time.time()
    refusals = {
        "garbage": "invalid_token",
        await user_token(client, other["id"]): "invalid_token",
        forged(user["id"], iat=now, exp=now + 31 * YEAR): "invalid_token",
        forged(user["id"], iat=now - 100, exp=now - 10): "token_expired",
        revoked: "token_revoked",
    }
    for token, code in refusals.items():
        await ws.send_json({"type": "refresh", "token": token})
        error = await next_frame(ws, "error")
        assert error["code"] == code, error
    await ws.send_json({"type": "ping"})
    await next_frame(ws, "pong")
    accepted = await send(client, user["id"])
    frame = await next_notification(ws)
    assert (frame["seq"], frame["id"]) == (accepted["seq"], accepted["id"])
    assert welcome["user_id"] == user["id"]
    await ws.close()
