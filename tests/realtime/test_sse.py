"""`GET /sse` over a real server: the socket's stream guarantee as Server-Sent Events
(`id:` = seq, resume from `Last-Event-ID`), heartbeats, token expiry and revocation, the
slow-consumer cut-off, tokens limited to categories, and refused credentials."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from actors.transport import CloseCode
from pushd.appkeys import METRICS
from pushd.ops.logs import scrub
from pushd.realtime import sse
from tests.actors.doubles import eventually
from tests.app_client import AUTH, MakeClient, create_user, send, user_token
from tests.realtime.test_categories import limited_key, send_mixed, token_from

Client = TestClient[Any, Any]


@dataclass
class Event:
    """One event as EventSource would dispatch it, or a comment (`event` "comment")."""

    event: str
    data: str = ""
    id: int | None = None
    comment: str | None = None

    def json(self) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(self.data)
        return frame


@dataclass
class Stream:
    """An open `/sse` response, read event by event."""

    response: aiohttp.ClientResponse
    comments: list[str] = field(default_factory=list)

    async def next(self, *, within: float = 5) -> Event | None:
        """The next event (comments are kept aside); None at the end of the stream."""
        async with asyncio.timeout(within):
            lines: list[str] = []
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    return None
                line = raw.decode().rstrip("\n")
                if line.startswith(":"):
                    self.comments.append(line)
                    continue
                if line:
                    lines.append(line)
                    continue
                if lines:
                    return _parse(lines)

    async def next_of(self, kind: str) -> Event:
        event = await self.next()
        assert event is not None, f"stream ended before a {kind} event"
        assert event.event == kind, event
        return event

    async def rest(self) -> list[Event]:
        """Every event until the server ends the stream."""
        events = []
        while (event := await self.next()) is not None:
            events.append(event)
        return events


def _parse(lines: list[str]) -> Event:
    values = dict(line.split(": ", 1) for line in lines)
    seq = values.get("id")
    return Event(values["event"], values.get("data", ""), None if seq is None else int(seq))


async def open_stream(
    client: Client, token: str | None = None, *, query: bool = False, **params: Any
) -> Stream:
    headers = {} if token is None or query else {"Authorization": f"Bearer {token}"}
    if token is not None and query:
        params["token"] = token
    last_event_id = params.pop("last_event_id", None)
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    response = await client.get("/sse", headers=headers, params=params)
    assert response.status == 200, await response.text()
    return Stream(response)


async def welcomed(client: Client, token: str, **params: Any) -> tuple[Stream, dict[str, Any]]:
    stream = await open_stream(client, token, **params)
    welcome = await stream.next_of("welcome")
    assert welcome.id is None
    return stream, welcome.json()


async def notifications(stream: Stream, count: int) -> list[Event]:
    return [await stream.next_of("notification") for _ in range(count)]


async def test_notifications_arrive_with_id_the_seq_in_order(client: Client) -> None:
    user = await create_user(client)
    for title in ("one", "two"):
        await send(client, user["id"], title=title)
    stream, welcome = await welcomed(client, await user_token(client, user["id"]))
    headers = stream.response.headers
    assert headers["Content-Type"] == "text/event-stream"
    assert headers["Cache-Control"] == "no-cache"
    assert headers["X-Accel-Buffering"] == "no"
    assert (welcome["since"], welcome["last_seq"]) == (0, 2)
    await send(client, user["id"], title="three")  # live, after the replay
    events = await notifications(stream, 3)
    assert [e.id for e in events] == [1, 2, 3]
    assert [e.json()["seq"] for e in events] == [1, 2, 3]
    assert [e.json()["title"] for e in events] == ["one", "two", "three"]
    stream.response.close()


async def test_a_reconnect_with_last_event_id_gets_exactly_the_missed_ones(client: Client) -> None:
    """What EventSource does after a dropped connection: the URL still carries the first
    `since`, the header carries the last id seen, and the header wins."""
    user = await create_user(client)
    token = await user_token(client, user["id"])
    first, _ = await welcomed(client, token, query=True, since=0)
    await send(client, user["id"], title="a")
    await send(client, user["id"], title="b")
    assert [e.id for e in await notifications(first, 2)] == [1, 2]
    first.response.close()
    for title in ("c", "d"):
        await send(client, user["id"], title=title)
    second, welcome = await welcomed(client, token, query=True, since=0, last_event_id=2)
    assert welcome["since"] == 2
    await send(client, user["id"], title="e")
    events = await notifications(second, 3)
    assert [(e.id, e.json()["title"]) for e in events] == [(3, "c"), (4, "d"), (5, "e")]
    await send(client, user["id"], title="f")
    assert (await second.next_of("notification")).id == 6  # no replay of 3..5 again
    second.response.close()


async def test_since_in_the_query_starts_the_stream_there(client: Client) -> None:
    user = await create_user(client)
    for title in ("a", "b", "c"):
        await send(client, user["id"], title=title)
    stream, welcome = await welcomed(client, await user_token(client, user["id"]), since=1)
    assert welcome["since"] == 1
    assert [e.id for e in await notifications(stream, 2)] == [2, 3]
    stream.response.close()


async def test_a_gap_event_carries_the_last_seq_it_covers_as_id(make_client: MakeClient) -> None:
    """Beyond the replay bound the stream says `gap`, and its id lets a reconnect resume
    after it."""
    client = await make_client(mailbox={"backlog_max_count": 2})
    user = await create_user(client)
    for title in ("a", "b", "c", "d"):
        await send(client, user["id"], title=title)
    stream, _ = await welcomed(client, await user_token(client, user["id"]))
    gap = await stream.next_of("gap")
    assert gap.id == 2
    assert (gap.json()["from_seq"], gap.json()["to_seq"]) == (1, 2)
    assert [e.id for e in await notifications(stream, 2)] == [3, 4]
    stream.response.close()


async def test_heartbeat_comments_arrive(make_client: MakeClient) -> None:
    client = await make_client(sse={"heartbeat_interval": 0.1})
    user = await create_user(client)
    stream, _ = await welcomed(client, await user_token(client, user["id"]))
    with contextlib.suppress(TimeoutError):
        await stream.next(within=0.5)  # no event comes: only comments
    assert stream.comments.count(": ping") >= 2
    stream.response.close()


async def test_an_expiring_token_ends_the_stream_with_an_error_event(client: Client) -> None:
    user = await create_user(client)
    stream, _ = await welcomed(client, await user_token(client, user["id"], ttl=2))
    await stream.next_of("token_expiring")
    events = await stream.rest()
    assert [e.event for e in events] == ["error"]
    assert events[0].json() == {
        "type": "error",
        "code": "session_expired",
        "message": CloseCode.SESSION_EXPIRED.reason(),
        "close_code": 4002,
        "reconnect": True,
    }


async def test_revoking_the_users_tokens_ends_the_stream(client: Client) -> None:
    user = await create_user(client)
    token = await user_token(client, user["id"])
    stream, _ = await welcomed(client, token)
    response = await client.post(f"/api/users/{user['id']}/tokens/revoke", headers=AUTH)
    assert response.status == 200, await response.text()
    events = await stream.rest()
    assert [(e.event, e.json()["close_code"]) for e in events] == [("error", 4505)]
    assert events[0].json()["reconnect"] is False
    again = await client.get("/sse", headers={"Authorization": f"Bearer {token}"})
    assert again.status == 401


async def test_a_limited_token_sees_only_its_categories(client: Client) -> None:
    user = await create_user(client)
    token = await token_from(client, await limited_key(client), user["id"])
    await send_mixed(client, user["id"])  # seqs 1..5; billing at 2 and 4
    stream, welcome = await welcomed(client, token)
    assert welcome["last_seq"] == 4
    replayed = await notifications(stream, 2)
    await send(client, user["id"], title="m6", category="marketing")
    await send(client, user["id"], title="b7", category="billing")
    live = await stream.next_of("notification")
    assert [e.id for e in [*replayed, live]] == [2, 4, 7]
    assert {e.json()["category"] for e in [*replayed, live]} == {"billing"}
    stream.response.close()


async def test_a_stream_without_a_good_token_is_refused_with_401(client: Client) -> None:
    user = await create_user(client)
    for headers, params in (
        ({}, {}),
        ({"Authorization": "Bearer not-a-token"}, {}),
        ({}, {"token": "not-a-token"}),
        ({"Authorization": "Basic abc"}, {}),
    ):
        response = await client.get("/sse", headers=headers, params=params)
        assert response.status == 401, (headers, params)
        assert (await response.json())["error"]["code"] == "unauthorized"
    token = await user_token(client, user["id"])
    response = await client.get(
        "/sse", headers={"Authorization": f"Bearer {token}", "Last-Event-ID": "abc"}
    )
    assert response.status == 422
    assert (await response.json())["error"]["field"] == "Last-Event-ID"


async def test_a_slow_reader_is_cut_off(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Guards the bounded per-stream queue: a reader that stops reading must be closed
    (slow consumer) and its connection freed, not buffered for without end."""
    monkeypatch.setattr(sse, "CLOSE_TIMEOUT", 0.5)
    client = await make_client(actors={"socket_queue_size": 8})
    user = await create_user(client)
    token = await user_token(client, user["id"])
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    host, port = str(client.server.host), int(client.server.port or 0)
    with contextlib.closing(sock):
        await loop.sock_connect(sock, (host, port))
        request = f"GET /sse HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"
        await loop.sock_sendall(sock, request.encode())
        assert b"200 OK" in await loop.sock_recv(sock, 1024)
        await eventually(lambda: _open_streams(client) == 1)
        big = "x" * 16_000
        body = {"user_id": user["id"], "title": "t", "body": big, "data": {"pad": big}}
        for _ in range(1000):
            response = await client.post("/api/notifications", json=body, headers=AUTH)
            assert response.status == 202
            if _open_streams(client) == 0:
                break
        await eventually(lambda: _open_streams(client) == 0, within=10)
    metrics = await (await client.get("/metrics", headers=AUTH)).text()
    assert "pushd_mailbox_sockets_dropped_total 1" in metrics


def _open_streams(client: Client) -> int:
    return int(client.app[METRICS].connections.get({}))


def test_the_access_log_never_shows_a_query_token() -> None:
    line = 'GET /sse?since=3&token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.sig HTTP/1.1" 200'
    scrubbed = scrub(line)
    assert "eyJ" not in scrubbed
    assert "since=3" in scrubbed


async def test_what_was_written_counts_as_acknowledged(make_client: MakeClient) -> None:
    """SSE has no `ack` frame: a stream opened without `since` (a new page) starts after
    what earlier streams were written, as a socket starts after its acks."""
    client = await make_client(mailbox={"cursor_flush_interval": 0.05})
    user = await create_user(client)
    token = await user_token(client, user["id"])
    for title in ("a", "b"):
        await send(client, user["id"], title=title)
    first, _ = await welcomed(client, token)
    assert [e.id for e in await notifications(first, 2)] == [1, 2]
    first.response.close()
    async with asyncio.timeout(5):
        while True:
            second, welcome = await welcomed(client, token)
            second.response.close()
            if welcome["ack_seq"] == 2:
                break
            await asyncio.sleep(0.05)
    assert welcome["since"] == 2


async def test_shutdown_ends_open_streams_with_going_away(client: Client) -> None:
    """Guards a shutdown that waited for ever on a stream: unlike a socket, an open
    stream has no reader that a close would end, only its writer."""
    user = await create_user(client)
    stream, _ = await welcomed(client, await user_token(client, user["id"]))
    async with asyncio.timeout(10):
        await client.server.close()
    events = await stream.rest()
    assert [(e.event, e.json()["close_code"]) for e in events] == [("error", 1001)]
    assert events[0].json()["reconnect"] is True


async def test_streams_count_against_the_users_socket_limit(make_client: MakeClient) -> None:
    client = await make_client(limits={"max_sockets_per_user": 1})
    user = await create_user(client)
    token = await user_token(client, user["id"])
    stream, _ = await welcomed(client, token)
    refused = await client.get("/sse", headers={"Authorization": f"Bearer {token}"})
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "5"
    assert (await refused.json())["error"]["code"] == "rate_limited"
    stream.response.close()


async def test_an_error_inside_the_stream_is_told_from_its_end(client: Client) -> None:
    """`since_ahead` is an `error` event too, but it ends nothing: no `close_code`, no
    `id:`, and the stream goes on."""
    user = await create_user(client)
    stream, welcome = await welcomed(client, await user_token(client, user["id"]), since=99)
    assert welcome["since"] == 0
    ahead = await stream.next_of("error")
    assert ahead.id is None
    assert ahead.json()["code"] == "since_ahead"
    assert "close_code" not in ahead.json()
    await send(client, user["id"], title="still open")
    assert (await stream.next_of("notification")).id == 1
    stream.response.close()
