"""Committed notifications to the bus, in commit order, with the outbox relay behind.

Both committers of notifications (the group commit of accepted sends and the release of
scheduled ones) hand what they committed to `CommittedPublisher.committed`. While the bus
takes them, batches go from memory; from the first refusal (and at start-up, until what a
crash left behind is published) the relay reads storage instead, and the in-memory path
resumes once it has caught up. Storage is the truth, the bus only the wake-up: a batch the
bus refused is never lost, and never published twice by this node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from pushd.bus import Bus, BusError
from pushd.ingest.outbox_relay import OutboxRelay, bus_messages
from storage import Storage, StorageError
from storage.records import NotificationRecord, now_ms

log = logging.getLogger(__name__)


class CommittedPublisher:
    """Publishes the commits of one node id (`node_id`: whose rows the relay reads).

    `start()` reads the relay mark; `run()` is the publishing loop and
    `store_mark_periodically()` the mark's, both run in tasks their owner creates and
    cancels; `close()` stores the mark last."""

    def __init__(
        self,
        storage: Storage,
        bus: Bus,
        *,
        node_id: str,
        what: str,
        relay_page_size: int = 500,
        mark_interval: float = 1.0,
    ) -> None:
        self._storage = storage
        self._bus = bus
        self._node_id = node_id
        self._what = what  # for the log: "bus publish of <what> failed"
        self._relay = OutboxRelay(
            storage, bus, node_id=node_id, page_size=relay_page_size, mark_interval=mark_interval
        )
        # Overflow policy: when full, the committer waits in `committed` (the bus is the
        # bottleneck, and committing faster than it publishes would only buffer). While
        # relaying nothing is queued here: the relay reads storage instead.
        self._to_publish: asyncio.Queue[list[NotificationRecord]] = asyncio.Queue(maxsize=64)
        self._relaying = True  # until start-up has published what a crash left behind
        self._relaying_since = time.monotonic()
        self._committed_gid = 0
        self.published = 0
        self.publish_failures = 0

    @property
    def relaying(self) -> bool:
        """True while publishing from storage (start-up, or the bus refused a publish)."""
        return self._relaying

    @property
    def relay_lag_seconds(self) -> float:
        """How long the relay has been catching up (0 when publishing from memory)."""
        return time.monotonic() - self._relaying_since if self._relaying else 0.0

    @property
    def relayed(self) -> int:
        """Notifications the outbox relay published from storage."""
        return self._relay.relayed

    async def start(self) -> None:
        """Read the relay mark and the newest commit (raises `StorageError`)."""
        mark = await self._relay.load_mark()
        self._committed_gid = max(mark, await self._storage.max_gid(self._node_id))

    async def committed(self, records: list[NotificationRecord]) -> None:
        """`records` were committed (in gid order): publish them."""
        if not records:
            return
        # Before any await: the relay's last check must see this commit (see `run`).
        self._committed_gid = max(self._committed_gid, *(r.gid for r in records))
        if not self._relaying:
            await self._to_publish.put(records)

    async def drain(self) -> None:
        """Until every batch handed over so far was published or given to the relay."""
        await self._to_publish.join()

    async def store_mark_periodically(self) -> None:
        await self._relay.store_mark_periodically()

    async def close(self) -> None:
        """Store the relay mark (after the owner cancelled `run`)."""
        with contextlib.suppress(StorageError):
            await self._relay.store_mark()

    async def run(self) -> None:
        while True:
            if self._relaying:
                await self._relay.catch_up(lambda: self._committed_gid, self._drop_queued)
                # No await since the relay's last check: a batch committed from now on
                # is queued for the in-memory path, and one committed before was relayed.
                self._relaying = False
                continue
            # Everything committed while the previous publish waited for its confirms
            # goes out in one publish: the broker's confirm latency is paid once per
            # round, not once per committed batch, and commit order is kept.
            batches = [await self._to_publish.get()]
            while not self._to_publish.empty():
                batches.append(self._to_publish.get_nowait())
            try:
                # Batches queued before a relay caught up are already published.
                records = [r for b in batches for r in b if r.gid > self._relay.published_gid]
                if not records:
                    continue
                try:
                    await self._bus.publish(bus_messages(records, now_ms()))
                except BusError as exc:
                    self.publish_failures += 1
                    log.warning(
                        "bus publish of %s failed, relaying from storage: %s", self._what, exc
                    )
                    self._relaying = True
                    self._relaying_since = time.monotonic()
                    continue
                self.published += len(records)
                self._relay.published_gid = max(r.gid for r in records)
            finally:
                for _ in batches:
                    self._to_publish.task_done()

    def _drop_queued(self) -> None:
        while not self._to_publish.empty():
            self._to_publish.get_nowait()
            self._to_publish.task_done()
