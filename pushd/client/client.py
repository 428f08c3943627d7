"""`PushdClient`: a user's notification stream over pushd's WebSocket, kept open.

It connects with a token from the application's token getter, reconnects with backoff
(exponential, full jitter: `actors.retry.Backoff`) as the close code advises
(`pushd.client.policy`), resumes with `since` = the last seq it handed over, hands every
notification to the application exactly once and in order (it drops seqs it already
handed over, which a resume may replay), and acknowledges in batches.

Tasks: `connect()` starts one task, the connection loop, which the client owns; each
socket's acknowledger lives in a TaskGroup beside that socket's reader. `close()`
cancels and awaits the loop, so nothing outlives the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import msgspec

from actors.retry import Backoff, wait_until_set
from pushd.client.events import (
    Event,
    Frame,
    Gap,
    Notification,
    Read,
    Retracted,
    State,
    StateName,
    Updated,
)
from pushd.client.inbox import EventInbox
from pushd.client.policy import Advice, advice_for

log = logging.getLogger("pushd.client")

PROTOCOL: Final = "1.3"
"""The protocol version the client speaks: it gets `updated` and `retracted` frames."""

TokenGetter = Callable[[], Awaitable[str]]
"""Returns a user token (the application's backend issues it: POST /api/users/{id}/tokens)."""

_REMEMBERED_IDS = 1000
"""How many seq -> id pairs `mark_read` can translate (the newest notifications)."""


class ClientStoppedError(ConnectionError):
    """The client stopped for good before its socket was open (see `reason`)."""


@dataclass(frozen=True, slots=True)
class _Closed:
    """How one socket ended."""

    code: int | None
    reason: str
    welcomed: bool


class PushdClient:
    """One user's live notification stream.

    ```python
    client = PushdClient("https://pushd.example", token=fetch_token)
    await client.connect()
    async for event in client.events():
        ...
    ```
    """

    def __init__(
        self,
        url: str,
        token: TokenGetter,
        *,
        last_seq: int = 0,
        backoff: Backoff = Backoff(base=0.5, cap=30.0),  # noqa: B008 (frozen dataclass)
        ack_delay: float = 0.5,
        ack_every: int = 50,
        inbox_size: int = 1000,
        open_timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        """`url`: pushd's http(s) base URL (the ws(s) URL is derived). `last_seq`: the
        resume point of a client that persisted it. Acks go out `ack_delay` seconds
        after a notification, or at once every `ack_every` of them."""
        self._ws_url = _websocket_url(url)
        self._token_getter = token
        self.last_seq = last_seq
        self._backoff = backoff
        self._ack_delay = ack_delay
        self._ack_every = ack_every
        self._open_timeout = open_timeout
        self._session = session
        self._owns_session = session is None
        self._inbox = EventInbox(inbox_size)
        self._state: StateName = "closed"
        self._token: str | None = None
        self._refused_token: str | None = None
        """The token the server refused last: the getter returning it again ends it."""
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._opened: asyncio.Future[None] | None = None
        self._ids_by_seq: OrderedDict[int, str] = OrderedDict()
        self._acked_seq = 0
        self._ack_wanted = asyncio.Event()
        self._unacked = 0

    @property
    def state(self) -> StateName:
        return self._state

    async def connect(self) -> None:
        """Start the connection loop; return once the first socket is welcomed. Raises
        `ClientStoppedError` if the client stops before that (a refused token, ...),
        having closed the client."""
        if self._loop_task is not None:
            raise RuntimeError("connect() was already called on this client")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._opened = asyncio.get_running_loop().create_future()
        self._loop_task = asyncio.create_task(self._run(), name="pushd-client")
        try:
            await asyncio.shield(self._opened)
        except BaseException:
            # Stopped before opening, or connect() cancelled (a timeout of the caller's):
            # nothing may outlive it, `async with` calls no __aexit__ after this.
            await self.close()
            raise

    def events(self) -> AsyncIterator[Event]:
        """Every event in order; ends after the client stopped or was closed."""
        return aiter(self._inbox)

    async def mark_read(self, *ids_or_seqs: str | int) -> None:
        """Mark notifications read (ids, or seqs of notifications this client received).
        Raises `ConnectionError` while no socket is open: read state needs the server."""
        ids = [
            self._ids_by_seq.get(item, "") if isinstance(item, int) else item
            for item in ids_or_seqs
        ]
        ids = [item for item in ids if item]
        socket = self._socket
        if socket is None or socket.closed or self._state != "open":
            raise ConnectionError("not connected: mark read once the client is open again")
        for start in range(0, len(ids), 100):  # at most 100 ids per read frame
            await socket.send_json({"type": "read", "ids": ids[start : start + 100]})

    async def close(self) -> None:
        """Acknowledge what was handed over, close the socket, stop the loop (state
        `stopped`, reason "closed by the application"); idempotent."""
        task, self._loop_task = self._loop_task, None
        if self._socket is not None:
            await self._send_ack(self._socket)
        if task is not None:
            task.cancel()
            # wait(), not `await task`: the loop's own CancelledError stays in it, while a
            # cancellation of close() itself still propagates.
            await asyncio.wait([task])
        await self._stop("closed by the application")
        if self._owns_session and self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> PushdClient:
        await self.connect()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def _run(self) -> None:
        try:
            await self._reconnect_until_stopped()
        except Exception as exc:
            # A bug here must not leave connect() and events() waiting for ever.
            log.exception("pushd client failed")
            await self._stop(f"the client failed: {exc!r}")

    async def _reconnect_until_stopped(self) -> None:
        """Connect, serve, and reconnect as the close code advises, until stopped."""
        attempt = 0
        token_refused = False  # the last socket refused its token, and none opened since
        while True:
            await self._set_state("connecting")
            token = await self._current_token()
            if token is None:
                return
            closed = await self._serve_one(token)
            await self._set_state("closed", closed.reason, closed.code)
            if closed.welcomed:
                attempt, token_refused = 0, False
            advice = advice_for(closed.code)
            why = f"closed with {closed.code}: {closed.reason}"
            if advice is Advice.STOP:
                await self._stop(why)
                return
            if advice is Advice.NEW_TOKEN:
                if token_refused:
                    await self._stop(f"{why} (also with the token asked for again)")
                    return
                token_refused, self._refused_token, self._token = True, token, None
            await self._backoff.wait(attempt)
            attempt += 1

    async def _current_token(self) -> str | None:
        """The token to connect with: the one held, else a new one from the getter. None
        (and the client stopped) when the getter fails or returns a token just refused."""
        if self._token is not None:
            return self._token
        try:
            token = await self._token_getter()
        except Exception as exc:  # the application's getter: any failure stops the client
            await self._stop(f"the token getter failed: {exc!r}")
            return None
        if token == self._refused_token:
            await self._stop("the token getter returned the token the server refused")
            return None
        self._token = token
        return token

    async def _serve_one(self, token: str) -> _Closed:
        """One socket, from connect to close."""
        assert self._session is not None
        welcomed = False
        try:
            async with self._session.ws_connect(
                self._ws_url, heartbeat=30.0, timeout=aiohttp.ClientWSTimeout(ws_close=5.0)
            ) as socket:
                auth: Frame = {"type": "auth", "token": token, "protocol": PROTOCOL}
                if self.last_seq:
                    auth["since"] = self.last_seq
                await socket.send_json(auth)
                welcomed, refusal = await self._await_welcome(socket)
                if welcomed:
                    self._socket = socket
                    await self._set_state("open")
                    async with asyncio.TaskGroup() as tasks:
                        acker = tasks.create_task(self._acknowledge(socket))
                        reason = await self._read(socket)
                        acker.cancel()
                    return _Closed(socket.close_code, reason, welcomed)
                return _Closed(socket.close_code, refusal, welcomed)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return _Closed(None, f"connection failed: {exc!r}", welcomed)
        finally:
            self._socket = None

    async def _await_welcome(self, socket: aiohttp.ClientWebSocketResponse) -> tuple[bool, str]:
        """Whether the server welcomed the socket; if not, the reason it gave."""
        message = await socket.receive(timeout=self._open_timeout)
        if message.type == aiohttp.WSMsgType.CLOSE:
            return False, str(message.extra or "closed before welcome")
        welcome = _decode(message.data) if message.type == aiohttp.WSMsgType.TEXT else {}
        if welcome.get("type") != "welcome":
            await socket.close()
            return False, f"no welcome: {message.type.name} {str(message.data)[:100]}"
        # Below what was asked (`since_ahead`): the server's stream restarts there.
        self.last_seq = min(self.last_seq, int(welcome["since"])) if self.last_seq else 0
        self._acked_seq = max(int(welcome.get("ack_seq", 0)), 0)
        return True, ""

    async def _read(self, socket: aiohttp.ClientWebSocketResponse) -> str:
        """Hand the socket's frames over until it closes; returns the close reason."""
        while True:
            message = await socket.receive()
            if message.type == aiohttp.WSMsgType.CLOSE:
                return str(message.extra or "")
            if message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return _reason_of(socket)
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            frame = _decode(message.data)
            event = self._event_of(frame)
            if frame.get("type") == "token_expiring":
                await self._refresh(socket)
            if event is None:
                continue
            await self._inbox.put(event)
            if isinstance(event, Notification | Gap):
                self._unacked += 1
                self._ack_wanted.set()

    def _event_of(self, frame: Frame) -> Event | None:
        """The event for a frame, or None for one the application does not see (a seq
        already handed over, a frame type it does not know: protocol 1.3 says ignore)."""
        match frame.get("type"):
            case "notification" | "gap":
                return self._sequenced_event(frame)
            case "read":
                return Read(list(frame.get("ids") or []), frame.get("through_seq"), frame)
            case "updated":
                return Updated(str(frame["id"]), int(frame["version"]), frame)
            case "retracted":
                return Retracted(str(frame["id"]), int(frame["version"]), frame)
        return None

    def _sequenced_event(self, frame: Frame) -> Notification | Gap | None:
        """A notification or gap that covers seqs not handed over yet, else None: a
        resume replays from `since`, and the overlap must not reach the app twice."""
        if frame["type"] == "gap":
            to_seq = int(frame["to_seq"])
            if to_seq <= self.last_seq:
                return None
            self.last_seq = to_seq
            return Gap(int(frame["from_seq"]), to_seq, str(frame["reason"]), frame)
        seq = int(frame["seq"])
        if seq <= self.last_seq:
            return None
        self.last_seq = seq
        self._remember(seq, str(frame["id"]))
        return Notification(seq, str(frame["id"]), frame)

    def _remember(self, seq: int, notification_id: str) -> None:
        self._ids_by_seq[seq] = notification_id
        if len(self._ids_by_seq) > _REMEMBERED_IDS:
            self._ids_by_seq.popitem(last=False)

    async def _refresh(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        """Renew the socket's token before it expires (docs/protocol.md §1). A getter that
        fails leaves the socket to close with 4002; the loop then asks again."""
        try:
            token = await self._token_getter()
        except Exception as exc:  # the application's getter
            log.warning("token getter failed on token_expiring: %r", exc)
            return
        self._token = token
        await socket.send_json({"type": "refresh", "token": token})

    async def _acknowledge(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        """Send the highest seq handed over, `ack_delay` after the first one not acked
        yet, or as soon as `ack_every` are waiting."""
        while True:
            await self._ack_wanted.wait()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._ack_delay
            while self._unacked < self._ack_every and loop.time() < deadline:
                self._ack_wanted.clear()
                await wait_until_set(self._ack_wanted, deadline - loop.time())
            await self._send_ack(socket)

    async def _send_ack(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._ack_wanted.clear()
        self._unacked = 0
        if self.last_seq <= self._acked_seq or socket.closed:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await socket.send_json({"type": "ack", "seq": self.last_seq})
            self._acked_seq = self.last_seq

    async def _set_state(
        self, state: StateName, reason: str | None = None, code: int | None = None
    ) -> None:
        if state == self._state and reason is None:
            return
        self._state = state
        if state == "open" and self._opened is not None and not self._opened.done():
            self._opened.set_result(None)
        await self._inbox.put(State(state, reason, code))

    async def _stop(self, reason: str) -> None:
        """Stop for good: the last event is `State("stopped", reason)`; idempotent."""
        if self._state == "stopped":
            return
        log.info("pushd client stopped: %s", reason)
        self._state = "stopped"
        if self._opened is not None and not self._opened.done():
            self._opened.set_exception(ClientStoppedError(reason))
        await self._inbox.end(State("stopped", reason))


def _websocket_url(base: str) -> str:
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"pushd URL must be http(s)://host[:port] (got {base!r})")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws", "", ""))


_decoder = msgspec.json.Decoder(dict[str, Any])


def _decode(text: str) -> Frame:
    try:
        return _decoder.decode(text)
    except msgspec.DecodeError:
        return {}


def _reason_of(socket: aiohttp.ClientWebSocketResponse) -> str:
    exception = socket.exception()
    return str(exception) if exception is not None else "socket closed"
