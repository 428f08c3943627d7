"""What an actor needs from a client socket. The edge (pushd/realtime) adapts aiohttp's
WebSocketResponse to this; `actors/` never imports aiohttp."""

from __future__ import annotations

from enum import IntEnum
from typing import Protocol


class CloseCode(IntEnum):
    """WebSocket close codes pushd uses (docs/protocol.md has the table).

    4000-4499: the client should reconnect later (with backoff) and resume.
    4500-4999: the client must not reconnect with the same credentials.
    """

    NORMAL = 1000
    GOING_AWAY = 1001
    """Server shutting down or restarting: reconnect (to another node) and resume."""
    RECONNECT = 4000
    """Server-side reset (e.g. an actor failed repeatedly): reconnect and resume."""
    AUTH_TIMEOUT = 4001
    """No `auth` frame arrived in time."""
    SESSION_EXPIRED = 4002
    """The token of an open socket expired and no `refresh` replaced it: get a new token
    and reconnect (with `since`). Not 4502: the socket did nothing wrong."""
    SLOW_CONSUMER = 4008
    """The client did not read its frames fast enough; reconnect and resume."""
    PROTOCOL_ERROR = 4500
    """The client sent something that is not a valid frame; fix the client."""
    INVALID_TOKEN = 4501
    """The token is malformed, badly signed, or for another audience."""
    TOKEN_EXPIRED = 4502
    """The token expired: get a new token before connecting again."""
    USER_UNKNOWN = 4503
    """The token's user does not exist (any more)."""
    TOO_MANY_CONNECTIONS = 4504
    """The user already holds `limits.max_sockets_per_user` sockets on this node: a client
    that opens sockets in a loop; close some before opening more."""
    TOKEN_REVOKED = 4505
    """The user's tokens were revoked: get a new token before connecting again."""


class Transport(Protocol):
    """One client socket.

    `send` writes one text frame and returns when the socket took it (it may await while
    the kernel buffer is full). `close` sends a close frame with `code` and `reason`;
    afterwards `send` raises `ConnectionError`. Both may raise `ConnectionError` when the
    peer is gone.
    """

    async def send(self, frame: bytes) -> None:
        """Write one UTF-8 JSON text frame."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Close the socket with this code and reason. Idempotent."""
        ...
