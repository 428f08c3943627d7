"""The WebSocket adapter the actors write through, and the registry of open sockets the
server closes with 1001 on shutdown."""

from __future__ import annotations

import asyncio

from aiohttp import WSMsgType, web


class WebSocketTransport:
    """`actors.transport.Transport` over aiohttp's WebSocketResponse."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self._ws = ws

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
        if not self._ws.closed:
            await self._ws.close(code=code, message=reason.encode())


class OpenSockets:
    """Every WebSocket currently open on this node."""

    def __init__(self) -> None:
        self._sockets: set[web.WebSocketResponse] = set()

    def add(self, ws: web.WebSocketResponse) -> None:
        self._sockets.add(ws)

    def discard(self, ws: web.WebSocketResponse) -> None:
        self._sockets.discard(ws)

    def __len__(self) -> int:
        return len(self._sockets)

    async def close_all(self, code: int, reason: str) -> None:
        """Close every socket at once (server shutdown: 1001 "going away")."""
        sockets = list(self._sockets)
        await asyncio.gather(
            *(ws.close(code=code, message=reason.encode()) for ws in sockets),
            return_exceptions=True,
        )
