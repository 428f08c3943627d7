"""What a client does after its socket closed, decided by the close code alone (the
ranges of docs/protocol.md §4, from the one table in `actors.transport.CloseCode`)."""

from __future__ import annotations

import enum
from typing import Final

from actors.transport import CloseCode


class Advice(enum.Enum):
    """The three answers a close code can give."""

    RECONNECT = enum.auto()
    """Reconnect with backoff and resume with `since`, with the same token."""
    NEW_TOKEN = enum.auto()
    """The token is no good any more: ask the token getter for another one, once."""
    STOP = enum.auto()
    """Reconnecting cannot help: stop for good."""


TOKEN_REFUSALS: Final = frozenset(
    {
        CloseCode.SESSION_EXPIRED,  # 4002: in the reconnect range, but with a new token
        CloseCode.INVALID_TOKEN,
        CloseCode.TOKEN_EXPIRED,
        CloseCode.TOKEN_REVOKED,
    }
)
"""Codes that refuse the token, not the client: another token may be welcome."""

LEGACY_TOO_MANY_CONNECTIONS: Final = 4504
"""Servers before protocol 1.2 sent it for the per-user socket cap: it means 4009."""

FIX_THE_CLIENT: Final = frozenset({1002, 1003, 1007, 1009})
"""WebSocket-layer codes for frames the client should not have sent: retrying repeats them."""


def advice_for(code: int | None) -> Advice:
    """What to do after a close with `code` (None: the connection broke or never opened,
    which is the network's fault, so reconnect)."""
    if code is None or code == LEGACY_TOO_MANY_CONNECTIONS:
        return Advice.RECONNECT
    if code in TOKEN_REFUSALS:
        return Advice.NEW_TOKEN
    if code in FIX_THE_CLIENT or code >= CloseCode.PROTOCOL_ERROR:
        # 4500-4999: do not reconnect with the same credentials (docs/protocol.md §4).
        return Advice.STOP
    return Advice.RECONNECT
