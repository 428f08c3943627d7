"""The release of scheduled sends: the loop that commits due scheduled notifications to
their users' mailboxes and hands them to the bus (issue #13).

Storage is the truth here too. `Storage.release_due` takes due rows and inserts them as
notifications in one transaction, so a row is released exactly once whatever the number
of nodes running this loop (no leader: PostgreSQL's `SKIP LOCKED` gives concurrent
nodes disjoint rows), and a restart loses nothing (the rows are on disk until released).

The released notifications are then published like the group committer's
(pushd/ingest/group_commit.py), with the same outbox guarantee: they are committed
under a node id of their own (`<node>.scheduler`), with their own relay mark, so that
when a publish fails, or after a crash, an `OutboxRelay` publishes them from storage.
A node id of their own because the relay reads a node's commits in gid order after its
mark, which holds only when one task commits under that id: the group committer and this
loop commit concurrently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from actors.retry import Backoff, wait_until_set
from pushd.bus import Bus
from pushd.ids import now_ms
from pushd.ingest.committed_publisher import CommittedPublisher
from storage import Storage, StorageError
from storage.records import NotificationRecord

log = logging.getLogger("pushd.ingest.release")

# Between attempts while storage refuses a release.
RELEASE_BACKOFF = Backoff(base=0.05, cap=2.0)

ReleaseObserver = Callable[[Sequence[NotificationRecord], int], None]
"""Called with each released batch and the instant (epoch ms) it was committed; a
record's `created_at` is its due instant, so the difference is its release lag."""


def release_node_id(node_id: str) -> str:
    """The node id the release loop of `node_id` commits under (its outbox)."""
    return f"{node_id}.scheduler"


class ScheduledRelease:
    """Releases due scheduled notifications of this database, batch by batch.

    Polls every `poll_interval` seconds, sooner after `wake` for a send due before the
    next poll, and at once again while batches come back full. Owns its tasks: `start`
    creates them, `close` cancels and awaits them.
    """

    def __init__(
        self,
        storage: Storage,
        bus: Bus,
        *,
        node_id: str,
        poll_interval: float,
        batch_size: int,
        relay_page_size: int = 500,
        mark_interval: float = 1.0,
        on_released: ReleaseObserver | None = None,
    ) -> None:
        self._storage = storage
        self._bus = bus
        self._node_id = release_node_id(node_id)
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._on_released = on_released
        self._publisher = CommittedPublisher(
            storage,
            bus,
            node_id=self._node_id,
            what="released sends",
            relay_page_size=relay_page_size,
            mark_interval=mark_interval,
        )
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.released = 0
        """Notifications this node released."""
        self.polled_at = time.monotonic()
        """When storage last answered a release poll (time.monotonic())."""

    @property
    def publisher(self) -> CommittedPublisher:
        """What publishes the released sends (its relay figures are metrics)."""
        return self._publisher

    @property
    def publish_failures(self) -> int:
        """Publishes of released sends the bus refused (each turned the relay on)."""
        return self._publisher.publish_failures

    async def start(self) -> None:
        """Read the relay mark (raises `StorageError`), then start the tasks."""
        await self._publisher.start()
        self._tasks = [
            asyncio.create_task(self._release_loop(), name="scheduled-release"),
            asyncio.create_task(self._publisher.run(), name="scheduled-publish"),
            asyncio.create_task(self._publisher.store_mark_periodically(), name="scheduled-mark"),
        ]

    async def close(self) -> None:
        """Stop the tasks (a release in flight is cancelled: its transaction rolls back,
        or it committed and the next start relays it), then store the relay mark."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._publisher.close()

    def wake(self, due_at: int) -> None:
        """A send due at `due_at` (epoch ms) was stored: release it on time even when
        the next poll comes later. One timer at most: the earliest wins."""
        loop = asyncio.get_running_loop()
        at = loop.time() + max(0.0, (due_at - now_ms()) / 1000)
        if at >= loop.time() + self._poll_interval:
            return  # a poll comes first
        if self._timer is not None:
            if loop.time() < self._timer.when() <= at:
                return
            self._timer.cancel()
        self._timer = loop.call_at(at, self._wake.set)

    async def _release_loop(self) -> None:
        attempt = 0
        while True:
            try:
                records = await self._storage.release_due(
                    now_ms(), limit=self._batch_size, node_id=self._node_id
                )
            except StorageError as exc:
                log.warning("release of scheduled sends waiting (%s)", exc)
                await RELEASE_BACKOFF.wait(attempt)
                attempt += 1
                continue
            attempt = 0
            self.polled_at = time.monotonic()
            if records:
                await self._committed(records)
                if len(records) == self._batch_size:
                    continue  # more may be due already
            await self._sleep()

    async def _committed(self, records: list[NotificationRecord]) -> None:
        self.released += len(records)
        if self._on_released is not None:
            self._on_released(records, now_ms())
        await self._publisher.committed(records)

    async def _sleep(self) -> None:
        # A wake-up set while releasing is kept: this sleep then returns at once, and
        # the extra poll finds the send or nothing.
        await wait_until_set(self._wake, self._poll_interval)
        self._wake.clear()
