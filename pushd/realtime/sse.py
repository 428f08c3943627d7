"""`GET /sse`: the user's notification stream as Server-Sent Events, for clients that
cannot hold a WebSocket (docs/protocol.md, "Server-Sent Events").

The same machinery as the socket (pushd/realtime/ws.py): one `Connection` owned by the
user's mailbox actor, caught up from storage (`StoredBacklog`), filtered for a token
limited to categories, closed when its token expires or when it falls behind. Only the
transport differs: `ServerSentEventsTransport` writes each frame as an event whose
`id:` is the highest seq it covers, so the browser's `Last-Event-ID` on reconnect is the
`since` of the socket's `resume`.

SSE is one-way, so there is no `ack` frame: a notification written to the stream counts
as acknowledged (see `_serve`), and `read` goes through the HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from typing import Annotated

import msgspec
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol

from actors.connection import Connection
from actors.runtime import ActorSystemStoppedError
from actors.transport import CloseCode
from actors.user_mailbox import Attach, Detach
from pushd.access.user_token_auth import authenticate_user_token
from pushd.access.user_tokens import VerifiedToken
from pushd.api.errors import ApiError, ErrorCode, validation_error
from pushd.appkeys import BUS, CONFIG, CURSORS, LIMITS, MAILBOXES, METRICS, SOCKETS, STORAGE
from pushd.bus import BusError
from pushd.ids import new_id
from pushd.realtime.categories import frame_filter
from pushd.realtime.cursors import CursorRecorder
from pushd.realtime.expiry import TokenLifetime
from pushd.realtime.ws import read_user, start_stream, stored_backlog
from storage import StorageError

CLOSE_TIMEOUT = 5.0
"""Seconds the closing `error` event may take to be written. A client that stopped
reading (a slow consumer) never takes it: past this, its TCP connection is aborted so
that the socket, its buffer and this handler are freed."""

HEARTBEAT = b": ping\n\n"
"""A comment line: EventSource ignores it, proxies see traffic, and a write to a peer
that is gone fails, which is how the server learns it (no reader, unlike a socket)."""

STREAM_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    # nginx buffers responses by default, which would hold events back.
    "X-Accel-Buffering": "no",
}

Since = Annotated[int, msgspec.Meta(ge=0, le=2**53)]


class StreamQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    token: (
        Annotated[
            str,
            msgspec.Meta(
                max_length=4096,
                description="The user token, for browsers' EventSource, which cannot send "
                "headers. Prefer `Authorization: Bearer`: a URL can end up in proxies' "
                "access logs (docs/security.md).",
            ),
        ]
        | None
    ) = None
    since: Annotated[
        Since | None,
        msgspec.Meta(
            description="The highest seq the client already holds (default: the user's "
            "ack cursor). A `Last-Event-ID` header wins over it."
        ),
    ] = None


class ClosingEvent(msgspec.Struct, tag="error", tag_field="type"):
    """The last event of a stream the server ends: what the socket's close code and
    reason would say, and whether reconnecting can help."""

    code: str
    message: str
    close_code: int
    reconnect: bool


class _Sequenced(msgspec.Struct):
    """The fields of a server frame that give its event its type and `id:`."""

    type: str
    seq: int | None = None
    to_seq: int | None = None


_sequenced_decoder = msgspec.json.Decoder(_Sequenced)
_encoder = msgspec.json.Encoder()


def event_of(frame: bytes) -> bytes:
    """The SSE event of a server frame: `id:` the highest seq a notification or gap
    covers (none for frames outside the stream, so the browser keeps the last one),
    `event:` the frame's type, `data:` the frame. A JSON frame is one line (msgspec
    escapes newlines in strings), so one `data:` line holds it."""
    about = _sequenced_decoder.decode(frame)
    # Only the stream's frames move the id: another frame may name a seq it is about.
    covered = {"notification": about.seq, "gap": about.to_seq}.get(about.type)
    head = b"" if covered is None else b"id: %d\n" % covered
    return head + b"event: " + about.type.encode() + b"\ndata: " + frame + b"\n\n"


def closing_event(code: int, reason: str) -> bytes:
    """The `error` event that ends a stream closed with `code` (docs/protocol.md §4)."""
    close_code = CloseCode(code)
    closing = ClosingEvent(close_code.name.lower(), reason, code, close_code.reconnects)
    return b"event: error\ndata: " + _encoder.encode(closing) + b"\n\n"


class ServerSentEventsTransport:
    """`actors.transport.Transport` over an aiohttp StreamResponse sending events."""

    def __init__(
        self,
        response: web.StreamResponse,
        connection: BaseProtocol | None,
        *,
        on_sent: Callable[[bytes], None] | None = None,
    ) -> None:
        """`on_sent` is told of every frame the stream took (delivery metrics)."""
        self._response = response
        self._connection = connection
        self._on_sent = on_sent
        self._closed = False

    async def send(self, frame: bytes) -> None:
        await self._write(event_of(frame))
        if self._on_sent is not None:
            self._on_sent(frame)

    async def heartbeat(self) -> None:
        """Write the `: ping` comment; `ConnectionError` if the peer is gone."""
        await self._write(HEARTBEAT)

    async def close(self, code: int, reason: str) -> None:
        """End the stream with the `error` event naming `code`, or abort the connection
        of a peer that does not take it within `CLOSE_TIMEOUT`."""
        if self._closed:
            return
        self._closed = True
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._response.write(closing_event(code, reason))
                await self._response.write_eof()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            self._abort()
            if task is not None and task.cancelling():
                raise
            # Otherwise aiohttp re-raised the flow-control wait of a write that was
            # interrupted (slow consumer): the peer is not reading, so it is cut off.
        except (TimeoutError, ConnectionResetError, RuntimeError):
            self._abort()

    async def _write(self, data: bytes) -> None:
        if self._closed:
            raise ConnectionError("stream closed")
        try:
            await self._response.write(data)
        except (ConnectionResetError, RuntimeError) as exc:
            raise ConnectionError(str(exc)) from exc

    def _abort(self) -> None:
        # Looked up by name: uvloop's transports have it without registering as
        # asyncio.WriteTransport. A plain close would wait to flush to a peer that never
        # reads.
        transport = None if self._connection is None else self._connection.transport
        abort = getattr(transport, "abort", None)
        if abort is not None:
            abort()


async def stream_notifications(request: web.Request, query: StreamQuery) -> web.StreamResponse:
    """Authenticate (401 before any event), then stream until the token expires, the
    client falls behind or goes away, or the server stops."""
    token = await _authenticate(request, query.token)
    since = _since(request, query.since)
    quota = request.app[LIMITS].sockets
    if not quota.acquire(token.user_id):
        raise ApiError(
            ErrorCode.RATE_LIMITED,
            f"this user already has {quota.per_user} sockets and streams open on this "
            "node: close one or retry later",
            headers={"Retry-After": "5"},
        )
    try:
        response = web.StreamResponse(headers=STREAM_HEADERS)
        await response.prepare(request)
        await _serve(request, response, token, since)
    finally:
        quota.release(token.user_id)
    return response


async def _authenticate(request: web.Request, query_token: str | None) -> VerifiedToken:
    """The `Authorization` header's token, else the query's (what EventSource can send),
    checked as every user-token route checks it."""
    if query_token is not None and "Authorization" not in request.headers:
        return await authenticate_user_token(request, query_token)
    return await authenticate_user_token(request)


def _since(request: web.Request, query_since: int | None) -> int | None:
    """Where the stream starts: `Last-Event-ID` (sent by EventSource when it reconnects,
    so it wins over the `since` still in the URL), else `?since=`, else None."""
    last_event_id = request.headers.get("Last-Event-ID")
    if last_event_id is None:
        return query_since
    try:
        since = msgspec.json.decode(last_event_id.strip(), type=Since)
    except msgspec.DecodeError:
        raise validation_error(
            "Last-Event-ID must be the seq of the last event received (an integer >= 0)",
            "Last-Event-ID",
        ) from None
    return since


async def _serve(
    request: web.Request, response: web.StreamResponse, token: VerifiedToken, since: int | None
) -> None:
    """Attach the stream's connection to the user's mailbox actor, start it after
    `since` and run its writer, expiry timer and heartbeat until it closes."""
    app, user_id = request.app, token.user_id
    config, cursors = app[CONFIG], app[CURSORS]
    transport = ServerSentEventsTransport(
        response, request.protocol, on_sent=app[METRICS].delivery_observer()
    )
    connection = Connection(
        transport,
        queue_size=config.actors.socket_queue_size,
        connection_id=new_id("con"),
        backlog=stored_backlog(app, token),
        # One-way: what was written counts as acknowledged. A client that missed events
        # in a dying connection gets them again through Last-Event-ID.
        on_sent=functools.partial(_sent_and_acked, cursors, user_id, token.categories),
        since=None,  # started below, once the user's cursors are read
        visible=frame_filter(token.categories),
    )
    bus, mailboxes, metrics = app[BUS], app[MAILBOXES], app[METRICS]
    try:
        await bus.watch_user(user_id)
    except BusError:
        await transport.close(CloseCode.RECONNECT, CloseCode.RECONNECT.reason("bus unavailable"))
        return
    metrics.connections.inc({})
    app[SOCKETS].add_stream(connection)  # closed with 1001 "going away" on shutdown
    try:
        # Attached BEFORE the user is read, as on the socket (ws._serve): nothing
        # committed or revoked in between is missed.
        await mailboxes.tell(user_id, Attach(connection))
        await _stream(request, transport, connection, token, since)
    except ActorSystemStoppedError:
        await transport.close(CloseCode.GOING_AWAY, CloseCode.GOING_AWAY.reason())
    finally:
        metrics.connections.dec({})
        metrics.stream_closed("sse", connection.close_code)
        app[SOCKETS].discard_stream(connection)
        connection.close_soon(CloseCode.NORMAL)
        with contextlib.suppress(ActorSystemStoppedError):
            await mailboxes.tell(user_id, Detach(connection))
        await bus.unwatch_user(user_id)


def _sent_and_acked(
    cursors: CursorRecorder, user_id: str, categories: tuple[str, ...] | None, seq: int
) -> None:
    cursors.sent(user_id, seq, within=categories)
    cursors.acked(user_id, seq, within=categories)


async def _stream(
    request: web.Request,
    transport: ServerSentEventsTransport,
    connection: Connection,
    token: VerifiedToken,
    since: int | None,
) -> None:
    """Check the user and its revocation cutoff again (now that the stream is attached),
    then welcome, replay and go live."""
    try:
        found = await read_user(request.app[STORAGE], token.user_id, token.categories)
    except StorageError:
        reason = CloseCode.RECONNECT.reason("storage unavailable")
        await transport.close(CloseCode.RECONNECT, reason)
        return
    if found is None or token.issued_at_ms <= found[1]:
        code = CloseCode.USER_UNKNOWN if found is None else CloseCode.TOKEN_REVOKED
        await transport.close(code, code.reason())
        return
    user, _, newest_visible = found
    start_stream(connection, user, since, token.expires_at_ms, newest_visible)
    lifetime = TokenLifetime(connection, token.expires_at_ms)
    lifetime.start()
    interval = request.app[CONFIG].sse.heartbeat_interval
    try:
        async with asyncio.TaskGroup() as tasks:
            heartbeat = tasks.create_task(_beat(transport, connection, interval))
            await connection.run_writer()
            heartbeat.cancel()
    finally:
        lifetime.stop()


async def _beat(
    transport: ServerSentEventsTransport, connection: Connection, interval: float
) -> None:
    """Write a heartbeat every `interval` seconds; a peer that is gone ends the stream."""
    while True:
        await asyncio.sleep(interval)
        try:
            await transport.heartbeat()
        except ConnectionError:
            connection.close_soon(CloseCode.NORMAL)
            return
