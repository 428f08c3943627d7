"""A socket lives as long as its token (docs/protocol.md, "Token expiry"): a
`token_expiring` frame asks for a fresh token `REFRESH_NOTICE_SECONDS` before the token
expires, a good `refresh` moves the expiry, and without one the socket is closed with
4002 "session expired" at expiry. The edge runs `TokenLifetime.run` in the socket's
TaskGroup, next to its reader and writer."""

from __future__ import annotations

import asyncio

from actors.connection import Connection
from actors.transport import CloseCode
from pushd.ids import from_ms, now_ms
from pushd.realtime.frames import TokenExpiringFrame, frame_encoder

REFRESH_NOTICE_SECONDS = 60
"""How long before expiry the client is asked for a fresh token: time for it to get one
from its backend. A token that lives less is asked for at once."""


class TokenLifetime:
    """When the token of one socket expires, and the timer that acts on it."""

    def __init__(self, connection: Connection, expires_at_ms: int) -> None:
        self._connection = connection
        self._expires_at_ms = expires_at_ms
        self._renewed = asyncio.Event()

    def renew(self, expires_at_ms: int) -> None:
        """The socket's token was replaced by a verified one that expires then."""
        self._expires_at_ms = expires_at_ms
        self._renewed.set()

    async def run(self) -> None:
        """Ask for a fresh token before expiry, and close the connection with
        `SESSION_EXPIRED` if none came by then; return after closing. The edge cancels
        it when the socket closes first."""
        while True:
            self._renewed.clear()
            expires_at_ms = self._expires_at_ms
            if await self._renewed_before(expires_at_ms - REFRESH_NOTICE_SECONDS * 1000):
                continue
            notice = TokenExpiringFrame(from_ms(expires_at_ms))
            self._connection.offer(frame_encoder.encode(notice))
            if await self._renewed_before(expires_at_ms):
                continue
            self._connection.close_soon(CloseCode.SESSION_EXPIRED)
            return

    async def _renewed_before(self, deadline_ms: int) -> bool:
        """Wait until `renew` is called (True) or the wall clock reaches `deadline_ms`."""
        try:
            async with asyncio.timeout(max(0, deadline_ms - now_ms()) / 1000):
                await self._renewed.wait()
        except TimeoutError:
            return False
        return True
