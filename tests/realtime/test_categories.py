"""Keys limited to categories (docs/security.md), over real sockets: the user tokens such
a key issues carry its categories, and the socket, its replay, its acks and its read
frames stay within them; the HTTP history, counts and read-all filter in storage."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import jwt
from aiohttp.test_utils import TestClient

from actors.transport import CloseCode
from pushd.appkeys import CURSORS, STORAGE
from tests.app_client import ADMIN_KEY, AUTH, TOKEN_SECRET, create_key, create_user, send
from tests.realtime.test_ws import close_code_of

Client = TestClient[Any, Any]
WS = aiohttp.ClientWebSocketResponse


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def limited_key(client: Client, role: str = "publisher") -> str:
    key, _ = await create_key(client, role, categories=["billing"])
    return key


async def token_from(client: Client, key: str, user_id: str) -> str:
    response = await client.post(f"/api/users/{user_id}/tokens", headers=bearer(key))
    assert response.status == 201, await response.text()
    token: str = (await response.json())["token"]
    return token


async def open_socket(client: Client, token: str, **auth: Any) -> tuple[WS, dict[str, Any]]:
    ws = await client.ws_connect("/ws")
    await ws.send_json({"type": "auth", "token": token, **auth})
    welcome: dict[str, Any] = await ws.receive_json(timeout=5)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def next_frame(ws: WS) -> dict[str, Any]:
    frame: dict[str, Any] = await ws.receive_json(timeout=5)
    return frame


async def send_mixed(client: Client, user_id: str) -> dict[str, dict[str, Any]]:
    """Seqs 1..5: marketing, billing, uncategorised, billing, marketing."""
    sent = {}
    for name, category in (
        ("m1", "marketing"),
        ("b2", "billing"),
        ("n3", None),
        ("b4", "billing"),
        ("m5", "marketing"),
    ):
        fields = {} if category is None else {"category": category}
        sent[name] = await send(client, user_id, body=f"secret {name}", **fields)
    return sent


# item 1: tokens of a limited key -----------------------------------------------------------


async def test_a_limited_keys_token_carries_its_categories(client: Client) -> None:
    user = await create_user(client)
    token = await token_from(client, await limited_key(client), user["id"])
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["cats"] == ["billing"]
    unlimited = await token_from(client, (await create_key(client, "publisher"))[0], user["id"])
    assert "cats" not in jwt.decode(unlimited, options={"verify_signature": False})


async def test_a_token_with_a_malformed_categories_claim_is_refused(client: Client) -> None:
    """`cats: []` must not read as "no limit", nor a string as a list of letters."""
    user = await create_user(client)
    now = int(time.time())
    for cats in ([], "billing", [1], None):
        claims = {
            "sub": user["id"],
            "iat": now,
            "exp": now + 60,
            "iss": "pushd",
            "aud": "pushd-ws",
            "cats": cats,
        }
        ws = await client.ws_connect("/ws")
        await ws.send_json({"type": "auth", "token": jwt.encode(claims, TOKEN_SECRET)})
        assert await close_code_of(ws) == CloseCode.INVALID_TOKEN, cats


async def test_a_limited_socket_cannot_be_refreshed_with_a_wider_token(client: Client) -> None:
    user = await create_user(client)
    limited_token = await token_from(client, await limited_key(client), user["id"])
    ws, _ = await open_socket(client, limited_token)
    await ws.send_json(
        {"type": "refresh", "token": await token_from(client, ADMIN_KEY, user["id"])}
    )
    error = await next_frame(ws)
    assert (error["type"], error["code"]) == ("error", "invalid_token")
    await ws.send_json({"type": "refresh", "token": limited_token})
    assert (await next_frame(ws))["type"] == "refreshed"
    await ws.close()


async def test_a_limited_token_receives_only_its_categories_live(client: Client) -> None:
    """Guards issue #10 item 1: a billing-only key issued a token whose socket received
    every category. Hidden notifications must neither arrive nor show up as gap frames,
    and must not stall the stream (the next visible one arrives live)."""
    user = await create_user(client)
    limited, welcome = await open_socket(
        client, await token_from(client, await limited_key(client), user["id"])
    )
    assert (welcome["last_seq"], welcome["since"]) == (0, 0)
    full, _ = await open_socket(client, await token_from(client, ADMIN_KEY, user["id"]))
    sent = await send_mixed(client, user["id"])
    received = [await next_frame(limited) for _ in range(2)]
    assert [(f["type"], f["seq"], f["body"]) for f in received] == [
        ("notification", 2, "secret b2"),
        ("notification", 4, "secret b4"),
    ]
    assert [(await next_frame(full))["seq"] for _ in range(5)] == [1, 2, 3, 4, 5]
    later = await send(client, user["id"], category="billing")
    assert (await next_frame(limited))["id"] == later["id"]
    assert sent["m5"]["seq"] < later["seq"]
    for ws in (limited, full):
        await ws.close()


async def test_a_limited_token_replays_and_resumes_only_its_categories(client: Client) -> None:
    user = await create_user(client)
    await send_mixed(client, user["id"])
    token = await token_from(client, await limited_key(client), user["id"])
    ws, welcome = await open_socket(client, token, since=0)
    # The newest seq the token may see, not the user's (which counts every category).
    assert (welcome["last_seq"], welcome["since"]) == (4, 0)
    assert [(await next_frame(ws))["seq"] for _ in range(2)] == [2, 4]
    await ws.send_json({"type": "resume", "since": 1})
    assert await next_frame(ws) == {"type": "resumed", "since": 1}
    assert [(await next_frame(ws))["seq"] for _ in range(2)] == [2, 4]
    later = await send(client, user["id"], category="billing")
    frame = await next_frame(ws)
    assert (frame["type"], frame["seq"]) == ("notification", later["seq"])
    await ws.close()
    # Without `since`, from the ack cursor: the same stream.
    again, welcome = await open_socket(client, token)
    assert (welcome["last_seq"], welcome["since"]) == (6, 0)
    assert [(await next_frame(again))["seq"] for _ in range(3)] == [2, 4, 6]
    await again.close()


async def test_a_limited_tokens_ack_stops_before_other_categories(client: Client) -> None:
    """The user's ack cursor says "the user has every notification up to here": a
    billing-only socket cannot say that of seq 1 (marketing), so its ack of 4 must not
    mark seq 1 delivered nor hide it from the user's other clients."""
    user = await create_user(client)
    token = await token_from(client, await limited_key(client), user["id"])
    await send(client, user["id"], category="billing")  # 1
    await send(client, user["id"], category="billing")  # 2
    await send(client, user["id"], category="marketing")  # 3
    await send(client, user["id"], category="billing")  # 4
    ws, _ = await open_socket(client, token)
    assert [(await next_frame(ws))["seq"] for _ in range(3)] == [1, 2, 4]
    await ws.send_json({"type": "ack", "seq": 4})
    await ws.send_json({"type": "ping"})
    assert (await next_frame(ws))["type"] == "pong"
    await client.app[CURSORS].flush()
    stored = await client.app[STORAGE].get_user(user["id"])
    assert stored is not None
    assert (stored.sent_seq, stored.ack_seq) == (2, 2)
    await ws.close()


async def test_a_limited_socket_reads_and_read_syncs_only_its_categories(client: Client) -> None:
    user = await create_user(client)
    sent = await send_mixed(client, user["id"])
    limited, _ = await open_socket(
        client, await token_from(client, await limited_key(client), user["id"]), since=5
    )
    full, _ = await open_socket(client, await token_from(client, ADMIN_KEY, user["id"]), since=5)
    # A read frame of the limited socket marks only what it may see.
    await limited.send_json({"type": "read", "ids": [sent["m1"]["id"], sent["b2"]["id"]]})
    synced = await next_frame(full)
    assert (synced["type"], synced["ids"]) == ("read", [sent["b2"]["id"]])
    assert (await next_frame(limited))["ids"] == [sent["b2"]["id"]]
    m1 = await client.app[STORAGE].get_notification(sent["m1"]["id"])
    assert m1 is not None
    assert m1.read_at is None
    # Reads of other categories are not synced to it: the next frame it gets is b4's.
    await full.send_json({"type": "read", "ids": [sent["m1"]["id"], sent["n3"]["id"]]})
    synced_ids: set[str] = set()
    while synced_ids != {sent["m1"]["id"], sent["n3"]["id"]}:
        synced_ids.update((await next_frame(full))["ids"])
    marked = await client.post(f"/api/notifications/{sent['b4']['id']}/read", headers=AUTH)
    assert marked.status == 200
    synced = await next_frame(limited)
    assert (synced["type"], synced["ids"]) == ("read", [sent["b4"]["id"]])
    # A read-all of every category is synced as it is (it names only a seq).
    await client.post(f"/api/users/{user['id']}/notifications/read-all", headers=AUTH)
    synced = await next_frame(limited)
    assert (synced["ids"], synced["through_seq"]) == ([], 5)
    for ws in (limited, full):
        await ws.close()


# item 4: the HTTP paths of a limited key ---------------------------------------------------


async def test_read_all_by_a_limited_key_touches_only_its_categories(client: Client) -> None:
    """Guards issue #10 item 4: read-all with the id of another category answered
    `{"marked": 1}` and marked it; without ids it marked every category."""
    user = await create_user(client)
    sent = await send_mixed(client, user["id"])
    key = await limited_key(client)
    url = f"/api/users/{user['id']}/notifications/read-all"
    other = await client.post(url, json={"ids": [sent["m1"]["id"]]}, headers=bearer(key))
    assert await other.json() == {"marked": 0, "through_seq": None}
    everything = await client.post(url, headers=bearer(key))
    # through_seq: the newest seq the key may see, not the user's last_seq (5).
    assert await everything.json() == {"marked": 2, "through_seq": 4}
    page = await client.get(f"/api/notifications/user/{user['id']}?unread=true", headers=AUTH)
    unread = [item["id"] for item in (await page.json())["items"]]
    assert unread == [sent[name]["id"] for name in ("m5", "n3", "m1")]


async def test_a_limited_readers_counts_and_pages_see_only_its_categories(
    client: Client,
) -> None:
    """Guards the unread count of every category and `limit=1` pages that came back
    empty with a `next_cursor` naming the seq of a hidden notification."""
    user = await create_user(client)
    await send_mixed(client, user["id"])
    key = await limited_key(client, "reader")
    url = f"/api/notifications/user/{user['id']}?limit=1"
    seen, cursors, page = [], [], {"next_cursor": ""}
    while page["next_cursor"] is not None:
        cursor = f"&cursor={page['next_cursor']}" if page["next_cursor"] else ""
        page = await (await client.get(url + cursor, headers=bearer(key))).json()
        assert len(page["items"]) == 1 or page["next_cursor"] is None, page
        assert page["unread_count"] == 2
        seen += [item["seq"] for item in page["items"]]
        cursors.append(page["next_cursor"])
    assert seen == [4, 2]
    assert cursors == ["4", None]
