"""User tokens over real WebSockets: isolation between users, key rotation, and per-user
revocation that closes every session with 4505 on every node."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from actors.transport import CloseCode
from pushd.appkeys import MAILBOXES, STORAGE
from tests import services
from tests.app_client import AUTH, TOKEN_SECRET, MakeClient, create_user, send, user_token
from tests.realtime.test_ws import close_code_of, connect, next_notification

Client = TestClient[Any, Any]

NEW_SECRET = "rotated-token-secret-for-functional-tests-0123456789"
OLDEST_SECRET = "oldest-token-secret-for-functional-tests-0123456789"


async def refused_with(client: Client, token: str) -> int | None:
    ws = await client.ws_connect("/ws")
    await ws.send_json({"type": "auth", "token": token})
    return await close_code_of(ws)


async def nothing_arrives(ws: aiohttp.ClientWebSocketResponse) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive(timeout=0.3)


# isolation -------------------------------------------------------------------------------


async def test_a_token_for_one_user_never_serves_another(client: Client) -> None:
    """Guards cross-user leaks: A's socket must not receive B's notifications, A's acks
    must not move B's cursor, and no frame field can name another user."""
    alice, bob = await create_user(client), await create_user(client)
    alice_ws, welcome = await connect(client, await user_token(client, alice["id"]))
    bob_ws, _ = await connect(client, await user_token(client, bob["id"]))
    assert welcome["user_id"] == alice["id"]

    for_bob = await send(client, bob["id"], body="for bob only")
    assert (await next_notification(bob_ws))["id"] == for_bob["id"]
    await nothing_arrives(alice_ws)

    await alice_ws.send_json({"type": "ack", "seq": for_bob["seq"] + 10})
    await alice_ws.send_json({"type": "ack", "seq": 99, "user_id": bob["id"]})
    error = await alice_ws.receive_json(timeout=5)
    assert (error["type"], error["code"]) == ("error", "invalid_frame")
    await alice_ws.send_json({"type": "auth", "token": await user_token(client, bob["id"])})
    error = await alice_ws.receive_json(timeout=5)
    assert error["code"] == "already_authenticated"
    for_bob_again = await send(client, bob["id"])
    assert (await next_notification(bob_ws))["id"] == for_bob_again["id"]
    await nothing_arrives(alice_ws)  # a second auth frame did not switch the socket to bob
    found = await client.app[STORAGE].get_user(bob["id"])
    assert found is not None
    assert found.ack_seq == 0

    for_alice = await send(client, alice["id"])
    assert (await next_notification(alice_ws))["id"] == for_alice["id"]
    await nothing_arrives(bob_ws)
    for ws in (alice_ws, bob_ws):
        await ws.close()


# rotation --------------------------------------------------------------------------------


async def test_rotation_keeps_tokens_of_the_previous_secret(
    make_client: MakeClient, tmp_path: Path
) -> None:
    """A token signed before the rotation still works after it (its secret moved to
    previous_token_secrets); once that secret is removed, the token is refused."""
    storage = {"url": f"sqlite:///{tmp_path / 'shared.db'}"}
    before = await make_client(storage=storage)
    user = await create_user(before)
    old_token = await user_token(before, user["id"])

    rotated = await make_client(
        NEW_SECRET,
        storage=storage,
        auth={"previous_token_secrets": [TOKEN_SECRET, OLDEST_SECRET]},
    )
    ws, welcome = await connect(rotated, old_token)
    assert welcome["user_id"] == user["id"]
    await ws.close()
    new_token = await user_token(rotated, user["id"])
    ws, _ = await connect(rotated, new_token)
    await ws.close()
    # Only the current secret signs: the new token does not verify under the old one.
    assert await refused_with(before, new_token) == CloseCode.INVALID_TOKEN

    removed = await make_client(NEW_SECRET, storage=storage)
    assert await refused_with(removed, old_token) == CloseCode.INVALID_TOKEN
    ws, _ = await connect(removed, new_token)
    await ws.close()


# revocation ------------------------------------------------------------------------------


async def revoke(client: Client, user_id: str) -> dict[str, Any]:
    response = await client.post(f"/api/users/{user_id}/tokens/revoke", headers=AUTH)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_revocation_closes_every_session_and_refuses_old_tokens(client: Client) -> None:
    user, other = await create_user(client), await create_user(client)
    old_token = await user_token(client, user["id"])
    tab1, _ = await connect(client, old_token)
    tab2, _ = await connect(client, await user_token(client, user["id"]))
    bystander, _ = await connect(client, await user_token(client, other["id"]))

    revoked = await revoke(client, user["id"])
    assert revoked["user_id"] == user["id"]
    for ws in (tab1, tab2):
        assert await close_code_of(ws) == CloseCode.TOKEN_REVOKED
    assert await refused_with(client, old_token) == CloseCode.TOKEN_REVOKED

    fresh, welcome = await connect(client, await user_token(client, user["id"]))
    assert welcome["user_id"] == user["id"]
    accepted = await send(client, user["id"])
    assert (await next_notification(fresh))["id"] == accepted["id"]
    # Another user's session is untouched.
    for_other = await send(client, other["id"])
    assert (await next_notification(bystander))["id"] == for_other["id"]
    await fresh.close()
    await bystander.close()
    missing = await client.post("/api/users/usr_nope/tokens/revoke", headers=AUTH)
    assert missing.status == 404


async def test_revocation_on_one_node_closes_sessions_on_another(
    make_client: MakeClient, postgres_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    shared = {
        "storage": {"url": postgres_url},
        "state": {"url": services.REDIS_URL, "prefix": redis_prefix},
    }
    node_a = await make_client(server={"data_dir": str(tmp_path / "a")}, **shared)
    node_b = await make_client(server={"data_dir": str(tmp_path / "b")}, **shared)
    user = await create_user(node_a)
    token = await user_token(node_a, user["id"])
    on_b, _ = await connect(node_b, token)
    await revoke(node_a, user["id"])
    assert await close_code_of(on_b) == CloseCode.TOKEN_REVOKED
    assert await refused_with(node_b, token) == CloseCode.TOKEN_REVOKED
    fresh, _ = await connect(node_b, await user_token(node_a, user["id"]))
    await fresh.close()


async def test_a_socket_reads_its_user_only_once_attached(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the race of a revocation landing while a socket authenticates: the user's
    token cutoff must be read after the socket is attached to the user's mailbox, so a
    revocation stored before the read is seen, and one stored after it reaches the
    socket through the mailbox's CloseAll. Read before attaching, the socket could miss
    both."""
    user = await create_user(client)
    token = await user_token(client, user["id"])
    storage = client.app[STORAGE]
    read_cutoff = storage.get_user_and_token_cutoff
    attached_at_read: list[int] = []

    async def observed(user_id: str) -> Any:
        actor = client.app[MAILBOXES].get(user_id)
        attached_at_read.append(0 if actor is None else 1)
        return await read_cutoff(user_id)

    monkeypatch.setattr(storage, "get_user_and_token_cutoff", observed)
    ws, _ = await connect(client, token)
    assert attached_at_read == [1]
    await ws.close()
