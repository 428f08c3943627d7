"""The WebSocket adapter the actors write through, and the registry of open sockets (and
Server-Sent Events streams) the server closes with 1001 on shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import WSMsgType, web
from aiohttp.base_protocol import BaseProtocol

from actors.connection import Connection
from actors.transport import CloseCode

CLOSE_TIMEOUT = 5.0
"""Seconds a close may take. aiohttp's close first drains the send buffer, which never
empties for a client that stopped reading (the slow consumers closed with 4008): past
this, the TCP connection is aborted so that its socket, buffer and handler are freed."""
_POLL_SECONDS = 0.05


async def close_or_abort(
    ws: web.WebSocketResponse, connection: BaseProtocol | None, code: int, reason: str
) -> None:
    """Close `ws` with `code`; abort its TCP connection if the peer does not let it close
    within `CLOSE_TIMEOUT`. `connection` is the request's protocol (its `transport` is
    None once the connection is gone)."""
    if ws.closed:
        # Closed without finishing the handshake (a send to a client that stopped
        # reading was interrupted): the reader would wait on the connection for ever.
        await _release(connection)
        return
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await ws.close(code=code, message=reason.encode())
    except TimeoutError:
        _abort(connection)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            _abort(connection)
            raise
        # Not a cancellation of this task: aiohttp keeps the flow-control waiter of a send
        # that was interrupted (slow consumer) and raises its CancelledError on the next
        # write. The close frame may be buffered: let a client that reads again get it.
        await _release(connection)


async def _release(connection: BaseProtocol | None) -> None:
    """Close the connection after its buffered frames (the close frame among them), or
    abort it if the peer has not taken them within `CLOSE_TIMEOUT`."""
    transport = None if connection is None else connection.transport
    if transport is None:
        return
    transport.close()
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + CLOSE_TIMEOUT
    while connection is not None and connection.transport is not None:
        if loop.time() >= give_up_at:
            _abort(connection)
            return
        await asyncio.sleep(_POLL_SECONDS)


def _abort(connection: BaseProtocol | None) -> None:
    # A plain transport.close() (what aiohttp calls) still waits to flush to a peer that
    # never reads; abort() drops the buffer. Looked up by name: uvloop's transports have
    # it without registering as asyncio.WriteTransport.
    transport = None if connection is None else connection.transport
    abort = getattr(transport, "abort", None)
    if abort is not None:
        abort()


class WebSocketTransport:
    """`actors.transport.Transport` over aiohttp's WebSocketResponse (one per open
    socket: slots, no `__dict__`)."""

    __slots__ = ("_connection", "_on_sent", "_ws")

    def __init__(
        self,
        ws: web.WebSocketResponse,
        connection: BaseProtocol | None,
        *,
        on_sent: Callable[[bytes], None] | None = None,
    ) -> None:
        """`on_sent` is told of every frame the socket took (delivery metrics)."""
        self._ws = ws
        self._connection = connection
        self._on_sent = on_sent

    async def send(self, frame: bytes) -> None:
        if self._ws.closed:
            raise ConnectionError("socket closed")
        try:
            # The frame is JSON encoded once for every socket: send the bytes as a text
            # frame instead of decoding and re-encoding a str per socket.
            await self._ws.send_frame(frame, WSMsgType.TEXT)
        except (ConnectionResetError, RuntimeError) as exc:
            raise ConnectionError(str(exc)) from exc
        if self._on_sent is not None:
            self._on_sent(frame)

    async def close(self, code: int, reason: str) -> None:
        await close_or_abort(self._ws, self._connection, code, reason)


class OpenSockets:
    """Every WebSocket currently open on this node, with its connection, and every
    Server-Sent Events stream (pushd/realtime/sse.py)."""

    def __init__(self) -> None:
        self._sockets: dict[web.WebSocketResponse, BaseProtocol | None] = {}
        self._streams: set[Connection] = set()

    def add_stream(self, connection: Connection) -> None:
        """An SSE stream: it has no socket of its own to close, its connection closes it."""
        self._streams.add(connection)

    def discard_stream(self, connection: Connection) -> None:
        self._streams.discard(connection)

    @property
    def streams(self) -> int:
        """How many SSE streams are open (not counted in `len`, which is WebSockets)."""
        return len(self._streams)

    def add(self, ws: web.WebSocketResponse, connection: BaseProtocol | None) -> None:
        self._sockets[ws] = connection

    def discard(self, ws: web.WebSocketResponse) -> None:
        self._sockets.pop(ws, None)

    def __len__(self) -> int:
        return len(self._sockets)

    async def close_all(self, code: CloseCode) -> None:
        """Close every socket at once with `code` and its reason (server shutdown: 1001
        "going away"); a client that does not read is cut off after `CLOSE_TIMEOUT`, so
        shutdown cannot hang on it."""
        reason = code.reason()
        # A stream's writer ends it with an `error` event naming `code` (or aborts a peer
        # that does not take it), and its handler returns: the server waits for that.
        for stream in list(self._streams):
            stream.close_soon(code)
        await asyncio.gather(
            *(
                close_or_abort(ws, connection, code, reason)
                for ws, connection in list(self._sockets.items())
            ),
            return_exceptions=True,
        )
