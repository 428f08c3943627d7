"""The outbox relay's view of a node's commits: the row is the truth, the bus the wake-up."""

from __future__ import annotations

from typing import Protocol

from storage.records import NotificationRecord


class OutboxRelay(Protocol):
    """What a node committed (by `gid`) and how far it handed that to the bus."""

    async def get_relay_mark(self, node_id: str) -> int | None:
        """The gid up to which this node's commits were handed to the bus, or None if
        the node never recorded one."""
        ...

    async def set_relay_mark(self, node_id: str, published_gid: int) -> None:
        """Record the node's mark (it never moves back)."""
        ...

    async def unpublished_notifications(
        self, node_id: str, *, after_gid: int, limit: int
    ) -> list[NotificationRecord]:
        """Notifications committed by `node_id` with `gid > after_gid`, in gid order, at
        most `limit`."""
        ...

    async def max_gid(self, node_id: str) -> int:
        """The highest gid committed by `node_id` (0 if none)."""
        ...
