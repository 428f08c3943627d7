"""The bus seam: how a committed notification travels from the node that accepted it to
the node holding the recipient's sockets. The database is the truth; the bus is only the
wake-up, so a message carries what a socket needs and nothing has to be re-read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import msgspec


class BusMessage(msgspec.Struct, frozen=True, array_like=True):
    """One notification for one user, ready to write to that user's sockets."""

    user_id: str
    seq: int
    frame: bytes
    """The WebSocket frame (JSON text), encoded once by the publisher."""


MessageHandler = Callable[[BusMessage], Awaitable[None]]


class BusError(Exception):
    """Base of the bus's errors."""


class BusUnavailableError(BusError):
    """The broker cannot be reached or did not confirm; the publish may be retried."""


class Bus(Protocol):
    """Routes `BusMessage`s by user to the node(s) watching that user.

    Guarantees every backend gives (tests/bus/test_contract.py):
    - `publish` returns only once the bus accepted every message (publisher confirms for
      RabbitMQ); otherwise it raises `BusUnavailableError`.
    - Messages for one user published by one node are handed to the handler in publish
      order.
    - The handler is awaited for one message at a time; a message is acknowledged only
      after the handler returned. If the handler raises, it is called again with the
      same message, before any later one, after a short wait; after a few attempts the
      message is dead-lettered (logged and dropped) so that one bad message cannot stall
      the node. If the node stops before the handler returned, the message is delivered
      again (at-least-once; with RabbitMQ, to the next bus with the same `node_id`).
    - A node receives at least the messages of the users it watches; it may receive
      others (same shard), which the handler ignores.
    """

    async def start(self, handler: MessageHandler) -> None:
        """Connect and start consuming for this node, calling `handler` per message.

        A broker that cannot be reached does not make this fail: the bus keeps
        reconnecting in the background, and `healthy()` says when it is back.
        """
        ...

    async def publish(self, messages: Sequence[BusMessage]) -> None:
        """Hand messages to the bus, pipelined; return once all are confirmed."""
        ...

    async def watch_user(self, user_id: str) -> None:
        """Route this user's messages to this node from now on (reference-counted).

        When it returns, any message published afterwards for this user reaches this node.
        Raises `BusUnavailableError` (and keeps no reference) if the broker cannot be told.
        """
        ...

    async def unwatch_user(self, user_id: str) -> None:
        """Drop one reference taken by `watch_user`; at zero the routing may be removed."""
        ...

    async def healthy(self) -> bool:
        """Whether the bus is connected and consuming right now."""
        ...

    async def close(self) -> None:
        """Stop consuming (unacknowledged messages go back to the broker), then disconnect.

        Idempotent. Waits for the handler call in progress to finish, for up to the
        backend's `close_grace` (10 s by default); past it the call is cancelled and its
        message is not acknowledged. Messages the in-process backend still holds are
        dropped (the database is the truth).
        """
        ...
