"""What an actor needs from a client socket. The edge (pushd/realtime) adapts aiohttp's
WebSocketResponse to this; `actors/` never imports aiohttp."""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import Final, NamedTuple, Protocol

MAX_REASON_BYTES = 123
"""A close frame's payload is at most 125 bytes (RFC 6455 §5.5), two of them the code."""


class CloseCode(IntEnum):
    """WebSocket close codes pushd uses. docs/protocol.md has the table, and the text
    sent with each code is in `CLOSE_REASONS` below.

    1000, 1001 and 4000-4499: the client should reconnect later (with backoff) and resume.
    4500-4999: the client must not reconnect with the same credentials (or frames).
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
    TOO_MANY_CONNECTIONS = 4009
    """The user already holds `limits.max_sockets_per_user` sockets on this node: close
    one of them, or reconnect later with backoff (a place frees up when one closes).
    In the reconnect range on purpose: the credentials are fine, only the moment is not
    (it was 4504, in the "do not reconnect" range, while telling the client to retry)."""
    PROTOCOL_ERROR = 4500
    """The client sent something that is not a valid frame; fix the client."""
    INVALID_TOKEN = 4501
    """The token is malformed, badly signed, or for another audience."""
    TOKEN_EXPIRED = 4502
    """The token expired: get a new token before connecting again."""
    USER_UNKNOWN = 4503
    """The token's user does not exist (any more)."""
    TOKEN_REVOKED = 4505
    """The user's tokens were revoked: get a new token before connecting again."""

    @property
    def reconnects(self) -> bool:
        """Whether a client closed with this code should reconnect (later, with backoff)."""
        return self < 4500

    def reason(self, cause: str | None = None) -> str:
        """The close reason to send with this code: what happened (`cause`, else the
        code's usual cause), then what the client should do. A long cause is cut so that
        the whole fits in `MAX_REASON_BYTES` and the advice is never lost."""
        usual, advice = CLOSE_REASONS[self]
        tail = f": {advice}" if advice else ""
        room = MAX_REASON_BYTES - len(tail.encode())
        # errors="ignore": a character cut in half is dropped, not sent as invalid UTF-8.
        return (cause or usual).encode()[:room].decode(errors="ignore") + tail


class CloseReason(NamedTuple):
    """The text sent with a close code, in two parts: "<cause>: <advice>"."""

    cause: str
    """What usually happened; a caller may name it more precisely (`reason(cause)`)."""
    advice: str
    """What the client should do: always sent, so that it agrees with the code's range."""


CLOSE_REASONS: Final[Mapping[CloseCode, CloseReason]] = {
    CloseCode.NORMAL: CloseReason("", ""),
    CloseCode.GOING_AWAY: CloseReason("server going away", "reconnect and resume"),
    CloseCode.RECONNECT: CloseReason("server-side reset", "reconnect later and resume"),
    CloseCode.AUTH_TIMEOUT: CloseReason(
        "no auth frame in time", "reconnect and send an auth frame first"
    ),
    CloseCode.SESSION_EXPIRED: CloseReason("token expired", "reconnect with a new token"),
    CloseCode.SLOW_CONSUMER: CloseReason("slow consumer", "reconnect and resume"),
    CloseCode.TOO_MANY_CONNECTIONS: CloseReason(
        "too many sockets for this user on this node", "close one or reconnect later"
    ),
    CloseCode.PROTOCOL_ERROR: CloseReason("not a valid frame", "fix the client"),
    CloseCode.INVALID_TOKEN: CloseReason("invalid token", "do not reconnect with it"),
    CloseCode.TOKEN_EXPIRED: CloseReason("token expired", "get a new token"),
    CloseCode.USER_UNKNOWN: CloseReason("user does not exist", "do not reconnect"),
    CloseCode.TOKEN_REVOKED: CloseReason("the user's tokens were revoked", "get a new token"),
}
"""Every close code with the text sent with it. docs/protocol.md §4 shows the same
table (tests/actors/test_transport.py checks that they agree)."""


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
