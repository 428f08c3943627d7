"""A socket lives as long as its token (docs/protocol.md, "Token expiry"): a
`token_expiring` frame asks for a fresh token `REFRESH_NOTICE_SECONDS` before the token
expires, a good `refresh` moves the expiry, and without one the socket is closed with
4002 "session expired" at expiry. The edge starts a `TokenLifetime` once the
stream is up and stops it when the socket closes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from actors.connection import Connection
from actors.transport import CloseCode
from pushd.ids import from_ms, now_ms
from pushd.realtime.frames import TokenExpiringFrame, frame_encoder

REFRESH_NOTICE_SECONDS = 60
"""How long before expiry the client is asked for a fresh token: time for it to get one
from its backend. A token that lives less is asked for at once."""


class TokenLifetime:
    """When the token of one socket expires, and the one timer that acts on it.

    A loop timer, not a task: a task, its Event and its timeout cost about 2 kB per
    socket, and nearly every socket is idle nearly all the time.
    """

    def __init__(self, connection: Connection, expires_at_ms: int) -> None:
        self._connection = connection
        self._expires_at_ms = expires_at_ms
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Arm the timer: the `token_expiring` notice first, then the close."""
        self._at(self._expires_at_ms - REFRESH_NOTICE_SECONDS * 1000, self._notice)

    def renew(self, expires_at_ms: int) -> None:
        """The socket's token was replaced by a verified one that expires then."""
        self._expires_at_ms = expires_at_ms
        if self._timer is not None:
            self.start()

    def stop(self) -> None:
        """The socket closed first: nothing more to do (idempotent)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _at(self, deadline_ms: int, action: Callable[[], None]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0, deadline_ms - now_ms()) / 1000
        self._timer = loop.call_at(loop.time() + delay, action)

    def _notice(self) -> None:
        self._connection.offer(
            frame_encoder.encode(TokenExpiringFrame(from_ms(self._expires_at_ms)))
        )
        self._at(self._expires_at_ms, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self._connection.close_soon(CloseCode.SESSION_EXPIRED)
