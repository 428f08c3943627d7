"""The outbox relay: publishing this node's commits from storage when the in-memory
hand-off of pushd/ingest/group_commit.py cannot be trusted to have done it.

The outbox is the notifications table itself: every row carries the node that committed
it and a global commit order (`gid`), and the node keeps a durable mark of the gid up to
which its commits were published. When the bus refuses a publish, or on start-up (a
crash may have left commits unpublished), the publisher hands over to this relay: it
reads the node's commits after the mark from storage, page by page, and publishes them
until it has caught up with the committer. Nothing accepted is dropped: at worst a
notification is published twice (after a crash, up to one mark interval), which sockets
skip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from actors.retry import Backoff
from pushd.bus import Bus, BusError, BusMessage
from pushd.ids import now_ms
from pushd.realtime.frames import encode_notification_frame
from storage import Storage, StorageError
from storage.records import NotificationRecord

log = logging.getLogger("pushd.ingest.outbox_relay")

# Between attempts of the outbox relay while storage or the bus refuses.
RELAY_BACKOFF = Backoff(base=0.05, cap=2.0)


def bus_messages(records: Sequence[NotificationRecord], now: int) -> list[BusMessage]:
    """The bus messages of `records`, each with its frame encoded once."""
    # Expired ones are not published: a socket that sees the next seq reads the hole
    # from storage, which answers it with a `gap`.
    return [
        BusMessage(r.user_id, r.seq, encode_notification_frame(r))
        for r in records
        if r.expires_at is None or r.expires_at > now
    ]


class OutboxRelay:
    """Tracks how far this node's commits were published, keeps that mark durable, and
    publishes from storage what lies after it."""

    def __init__(
        self,
        storage: Storage,
        bus: Bus,
        *,
        node_id: str,
        page_size: int = 500,
        mark_interval: float = 1.0,
    ) -> None:
        self._storage = storage
        self._bus = bus
        self._node_id = node_id
        self._page_size = page_size
        self._mark_interval = mark_interval
        self._stored_mark = 0
        self.published_gid = 0
        """The last gid published, by the relay or by the in-memory hand-off."""
        self.relayed = 0
        """Notifications published from storage."""

    async def load_mark(self) -> int:
        """Read the stored mark (raises `StorageError`) and return it."""
        mark = await self._storage.get_relay_mark(self._node_id)
        if mark is None:
            # A node that never recorded a mark has published nothing it committed
            # before; a fresh node has committed nothing.
            mark = 0
        self.published_gid = self._stored_mark = mark
        return mark

    async def catch_up(
        self, committed_gid: Callable[[], int], drop_queued: Callable[[], None]
    ) -> None:
        """Publish this node's commits after the mark from storage until none is left
        and `committed_gid()` is reached. Retries storage and bus failures until then.

        Returns without awaiting after its last check, so that the caller can switch
        back to the in-memory hand-off before another batch is committed.
        `drop_queued` discards batches queued for that hand-off meanwhile: they are on
        disk, after the mark, and read here.
        """
        attempt = 0
        while True:
            drop_queued()
            try:
                records = await self._storage.unpublished_notifications(
                    self._node_id, after_gid=self.published_gid, limit=self._page_size
                )
                if records:
                    await self._bus.publish(bus_messages(records, now_ms()))
            except (StorageError, BusError) as exc:
                log.warning(
                    "outbox relay waiting (%s); retrying within %.2fs",
                    exc,
                    RELAY_BACKOFF.bound(attempt),
                )
                await RELAY_BACKOFF.wait(attempt)
                attempt += 1
                continue
            attempt = 0
            if records:
                self.relayed += len(records)
                self.published_gid = records[-1].gid
            if len(records) < self._page_size and self.published_gid >= committed_gid():
                log.info("outbox relay caught up at gid %d", self.published_gid)
                return

    async def store_mark(self) -> None:
        """Make the published gid durable (raises `StorageError`)."""
        if self.published_gid > self._stored_mark:
            mark = self.published_gid
            await self._storage.set_relay_mark(self._node_id, mark)
            self._stored_mark = mark

    async def store_mark_periodically(self) -> None:
        """Store the mark once per interval until cancelled."""
        # Once per interval, not per publish: on SQLite every write is an fsync. A crash
        # re-publishes at most one interval's notifications, which sockets skip.
        while True:
            await asyncio.sleep(self._mark_interval)
            try:
                await self.store_mark()
            except StorageError as exc:
                log.warning("relay mark not stored (retrying): %s", exc)
