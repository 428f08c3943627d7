"""`pushd.client.PushdClient` against a real pushd (the whole app behind a real socket):
resume after a disconnection, the close-code policy, batched acks and reads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from actors.retry import Backoff
from actors.transport import CloseCode
from pushd.appkeys import SOCKETS
from pushd.client import Event, Notification, PushdClient, Read, State
from tests.app_client import AUTH, MakeClient, create_user, send, user_token

Client = TestClient[Any, Any]
QUICK = Backoff(base=0.05, cap=0.2)
WAIT_SECONDS = 5.0


@pytest.fixture
async def server(make_client: MakeClient) -> Client:
    # Acks reach storage within 50 ms, so that a test sees the cursor move soon.
    return await make_client(mailbox={"cursor_flush_interval": 0.05})


class Recorder:
    """Reads a client's events in a task the test owns, and lets the test wait for them."""

    def __init__(self, client: PushdClient) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Condition()
        self._client = client

    async def run(self) -> None:
        async for event in self._client.events():
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()

    async def wait_for(self, what: str, predicate: Callable[[list[Event]], bool]) -> None:
        try:
            async with asyncio.timeout(WAIT_SECONDS), self._changed:
                await self._changed.wait_for(lambda: predicate(self.events))
        except TimeoutError:
            pytest.fail(f"timed out waiting for {what}; events: {self.events}")

    @property
    def seqs(self) -> list[int]:
        return [e.seq for e in self.events if isinstance(e, Notification)]

    @property
    def states(self) -> list[State]:
        return [e for e in self.events if isinstance(e, State)]


Start = Callable[[PushdClient], Awaitable[Recorder]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Connects clients whose events are recorded; closes them all at the end, which
    ends their event streams and so the recording tasks (owned here, awaited here)."""
    clients: list[PushdClient] = []
    recordings: list[asyncio.Task[None]] = []

    async def connect(client: PushdClient) -> Recorder:
        recorder = Recorder(client)
        clients.append(client)
        recordings.append(asyncio.create_task(recorder.run()))
        await client.connect()
        return recorder

    yield connect
    for client in clients:
        await client.close()
    await asyncio.gather(*recordings)


def base_url(server: Client) -> str:
    return str(server.make_url("")).rstrip("/")


def fixed(token: str, calls: list[str] | None = None) -> Callable[[], Awaitable[str]]:
    """A token getter that always answers `token` (and counts its calls)."""

    async def get() -> str:
        if calls is not None:
            calls.append(token)
        return token

    return get


async def stored_ack_seq(server: Client, token: str) -> int:
    """The user's stored ack cursor, as a fresh socket's welcome tells it."""
    ws = await server.ws_connect("/ws")
    await ws.send_json({"type": "auth", "token": token})
    welcome = await ws.receive_json(timeout=5)
    await ws.close()
    ack_seq: int = welcome["ack_seq"]
    return ack_seq


async def test_notifications_sent_while_disconnected_arrive_once_in_order(
    server: Client, start: Start
) -> None:
    """The socket is closed by the server with 4002 (session expired): the client asks
    its token getter, which the test holds until two notifications were sent. They can
    only reach the client by the resume after `since`: exactly once, in order."""
    user = await create_user(server)
    gate = asyncio.Event()
    gate.set()

    async def gated_token() -> str:
        await gate.wait()
        return await user_token(server, user["id"])

    client = PushdClient(base_url(server), gated_token, backoff=QUICK)
    recorder = await start(client)
    for n in range(3):
        await send(server, user["id"], body=str(n))
    await recorder.wait_for("the first three", lambda _: recorder.seqs == [1, 2, 3])

    gate.clear()
    await server.app[SOCKETS].close_all(CloseCode.SESSION_EXPIRED)
    await recorder.wait_for("closed", lambda _: recorder.states[-1].state == "connecting")
    for n in range(3, 5):
        await send(server, user["id"], body=str(n))
    gate.set()
    await send(server, user["id"], body="live")  # may come live or replayed: once either way
    await recorder.wait_for("all six", lambda _: len(recorder.seqs) >= 6)
    await asyncio.sleep(0.2)  # a duplicate would arrive by now
    assert recorder.seqs == [1, 2, 3, 4, 5, 6]
    bodies = [e.body for e in recorder.events if isinstance(e, Notification)]
    assert bodies == ["0", "1", "2", "3", "4", "live"]
    assert [s.state for s in recorder.states].count("open") == 2


async def test_a_server_reset_is_followed_by_a_resume(server: Client, start: Start) -> None:
    """4000 (reconnect range): same token, backoff, resume; nothing lost or repeated."""
    user = await create_user(server)
    calls: list[str] = []
    token = await user_token(server, user["id"])
    recorder = await start(PushdClient(base_url(server), fixed(token, calls), backoff=QUICK))
    await send(server, user["id"])
    await recorder.wait_for("one", lambda _: recorder.seqs == [1])
    for _ in range(3):
        await server.app[SOCKETS].close_all(CloseCode.RECONNECT)
        await send(server, user["id"])
    await recorder.wait_for("four", lambda _: len(recorder.seqs) >= 4)
    await asyncio.sleep(0.2)
    assert recorder.seqs == [1, 2, 3, 4]
    assert calls == [token]  # a reset is no reason to ask for another token


async def test_a_revoked_token_stops_reconnection(server: Client, start: Start) -> None:
    user = await create_user(server)
    calls: list[str] = []
    token = await user_token(server, user["id"])
    client = PushdClient(base_url(server), fixed(token, calls), backoff=QUICK)
    recorder = await start(client)
    response = await server.post(f"/api/users/{user['id']}/tokens/revoke", headers=AUTH)
    assert response.status == 200, await response.text()
    await recorder.wait_for("stopped", lambda _: recorder.states[-1].state == "stopped")
    stopped = recorder.states[-1]
    assert stopped.reason is not None
    assert "refused" in stopped.reason, stopped.reason
    assert calls == [token, token]  # asked again once, got the refused token back
    assert [s.code for s in recorder.states if s.state == "closed"] == [CloseCode.TOKEN_REVOKED]
    assert client.state == "stopped"
    await asyncio.sleep(0.3)
    assert recorder.states[-1].state == "stopped"  # no attempt after that


async def test_a_second_refused_token_stops_reconnection(server: Client, start: Start) -> None:
    """The getter answers a new token that the server refuses too (4501): stop then."""
    user = await create_user(server)
    tokens = [await user_token(server, user["id"]), "not.a.token"]
    calls: list[str] = []

    async def get() -> str:
        calls.append(tokens[min(len(calls), 1)])
        return calls[-1]

    recorder = await start(PushdClient(base_url(server), get, backoff=QUICK))
    response = await server.post(f"/api/users/{user['id']}/tokens/revoke", headers=AUTH)
    assert response.status == 200
    await recorder.wait_for("stopped", lambda _: recorder.states[-1].state == "stopped")
    assert str(CloseCode.INVALID_TOKEN.value) in (recorder.states[-1].reason or "")
    assert calls == tokens


async def test_batched_acks_move_the_stored_cursor(server: Client, start: Start) -> None:
    user = await create_user(server)
    token = await user_token(server, user["id"])
    client = PushdClient(base_url(server), fixed(token), ack_delay=0.05, ack_every=100)
    recorder = await start(client)
    for _ in range(5):
        await send(server, user["id"])
    await recorder.wait_for("five", lambda _: len(recorder.seqs) == 5)
    # Polling: the cursor is in storage, with no event to wait on.
    async with asyncio.timeout(WAIT_SECONDS):
        while (acked := await stored_ack_seq(server, token)) != 5:
            assert acked < 5
            await asyncio.sleep(0.05)


async def test_a_persisted_last_seq_resumes_after_it(server: Client, start: Start) -> None:
    user = await create_user(server)
    for _ in range(3):
        await send(server, user["id"])
    token = await user_token(server, user["id"])
    recorder = await start(PushdClient(base_url(server), fixed(token), last_seq=2))
    await recorder.wait_for("the third", lambda _: recorder.seqs == [3])
    await asyncio.sleep(0.2)
    assert recorder.seqs == [3]


async def test_mark_read_by_seq_reaches_storage_and_every_socket(
    server: Client, start: Start
) -> None:
    user = await create_user(server)
    token = await user_token(server, user["id"])
    client = PushdClient(base_url(server), fixed(token))
    recorder = await start(client)
    accepted = await send(server, user["id"])
    await recorder.wait_for("one", lambda _: recorder.seqs == [1])
    await client.mark_read(1)
    await recorder.wait_for("a read", lambda events: any(isinstance(e, Read) for e in events))
    reads = [e for e in recorder.events if isinstance(e, Read)]
    assert reads[0].ids == [accepted["id"]]
    response = await server.get(f"/api/notifications/{accepted['id']}", headers=AUTH)
    assert (await response.json())["read_at"] is not None


async def test_an_unknown_user_stops_at_once(server: Client, start: Start) -> None:
    """4503 is in the do-not-reconnect range: connect() fails with the reason."""
    user = await create_user(server)
    token = await user_token(server, user["id"])
    response = await server.delete(f"/api/users/{user['id']}", headers=AUTH)
    assert response.status in (200, 204), await response.text()
    calls: list[str] = []
    with pytest.raises(ConnectionError, match="4503"):
        await start(PushdClient(base_url(server), fixed(token, calls), backoff=QUICK))
    assert calls == [token]


async def test_close_does_not_wait_for_an_application_that_stopped_reading(
    server: Client,
) -> None:
    """The inbox is full and nobody reads it (backpressure on the socket reader):
    close() still returns, and the events end with `stopped`."""
    user = await create_user(server)
    token = await user_token(server, user["id"])
    client = PushdClient(base_url(server), fixed(token), inbox_size=2)
    await client.connect()
    for _ in range(4):
        await send(server, user["id"])
    await asyncio.sleep(0.2)
    async with asyncio.timeout(WAIT_SECONDS):
        await client.close()
    events = [event async for event in client.events()]
    assert events[-1] == State("stopped", "closed by the application")
    assert len(events) == 3  # the full inbox, then the end
