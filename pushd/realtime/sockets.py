"""The WebSocket adapter the actors write through, and the registry of open sockets the
server closes with 1001 on shutdown."""

from __future__ import annotations

import asyncio

from aiohttp import WSMsgType, web

CLOSE_TIMEOUT = 5.0
"""Seconds a close may take. aiohttp's close first drains the send buffer, which never
empties for a client that stopped reading (the slow consumers closed with 4008): past
this, the TCP connection is aborted so that its socket, buffer and handler are freed."""


async def close_or_abort(
    ws: web.WebSocketResponse,
    transport: asyncio.BaseTransport | None,
    code: int,
    reason: str,
) -> None:
    """Close `ws` with `code`; abort its connection if the peer does not let it close
    within `CLOSE_TIMEOUT`."""
    if ws.closed:
        # Closed without finishing the handshake (a send to a client that stopped reading
        # was interrupted): the reader would wait on the connection for ever.
        _abort(transport)
        return
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await ws.close(code=code, message=reason.encode())
    except TimeoutError:
        _abort(transport)
    except asyncio.CancelledError:
        _abort(transport)
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        # Not a cancellation of this task: aiohttp keeps the flow-control waiter of a send
        # that was interrupted (slow consumer) and raises its CancelledError on the next
        # write. The close cannot complete; the connection is aborted above.


def _abort(transport: asyncio.BaseTransport | None) -> None:
    # A plain transport.close() (what aiohttp calls) still waits to flush to a peer that
    # never reads; abort() drops the buffer. Looked up by name: uvloop's transports have
    # it without registering as asyncio.WriteTransport.
    abort = getattr(transport, "abort", None)
    if abort is not None:
        abort()


class WebSocketTransport:
    """`actors.transport.Transport` over aiohttp's WebSocketResponse."""

    def __init__(self, ws: web.WebSocketResponse, connection: asyncio.BaseTransport | None) -> None:
        self._ws = ws
        self._connection = connection

    async def send(self, frame: bytes) -> None:
        if self._ws.closed:
            raise ConnectionError("socket closed")
        try:
            # The frame is JSON encoded once for every socket: send the bytes as a text
            # frame instead of decoding and re-encoding a str per socket.
            await self._ws.send_frame(frame, WSMsgType.TEXT)
        except (ConnectionResetError, RuntimeError) as exc:
            raise ConnectionError(str(exc)) from exc

    async def close(self, code: int, reason: str) -> None:
        await close_or_abort(self._ws, self._connection, code, reason)


class OpenSockets:
    """Every WebSocket currently open on this node, with its TCP connection."""

    def __init__(self) -> None:
        self._sockets: dict[web.WebSocketResponse, asyncio.BaseTransport | None] = {}

    def add(self, ws: web.WebSocketResponse, connection: asyncio.BaseTransport | None) -> None:
        self._sockets[ws] = connection

    def discard(self, ws: web.WebSocketResponse) -> None:
        self._sockets.pop(ws, None)

    def __len__(self) -> int:
        return len(self._sockets)

    async def close_all(self, code: int, reason: str) -> None:
        """Close every socket at once (server shutdown: 1001 "going away"); a client that
        does not read is cut off after `CLOSE_TIMEOUT`, so shutdown cannot hang on it."""
        await asyncio.gather(
            *(
                close_or_abort(ws, connection, code, reason)
                for ws, connection in list(self._sockets.items())
            ),
            return_exceptions=True,
        )
