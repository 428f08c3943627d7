"""Accepting notifications: group commit, then the ordered hand-off to the bus.

Concurrent `POST /api/notifications` requests queue their notification here. One
committer task takes whatever has queued up (up to `max_batch`) and writes it in one
transaction: under load the batches grow, so storage round trips stay few. Each request
is answered as soon as its batch is committed (a 202 means "on disk").

Committed batches then go, in commit order, to one publisher task that encodes each
notification's WebSocket frame once and publishes it to the bus. Keeping commit and
publish order the same is what delivers one user's notifications in seq order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from pushd.api.schemas import from_ms
from pushd.bus import Bus, BusError, BusMessage
from pushd.realtime.frames import NotificationFrame, frame_encoder
from storage import Storage, StorageError, UnknownUserError
from storage.records import NewNotification, NotificationRecord

log = logging.getLogger("pushd.ingest")

_Pending = tuple[NewNotification, "asyncio.Future[NotificationRecord]"]

PUBLISH_ATTEMPTS = 5


def encode_notification_frame(record: NotificationRecord) -> bytes:
    """The `notification` frame for this record, as sent to every socket of the user."""
    return frame_encoder.encode(
        NotificationFrame(
            seq=record.seq,
            id=record.id,
            title=record.title,
            body=record.body,
            data=record.data,
            category=record.category,
            priority=record.priority,
            created_at=from_ms(record.created_at),
        )
    )


def _settle(future: asyncio.Future[NotificationRecord], error: Exception) -> None:
    if not future.done():  # the waiting request may have been cancelled meanwhile
        future.set_exception(error)


class NotificationIngest:
    """Owns the committer and publisher tasks; `submit` is what request handlers call."""

    def __init__(self, storage: Storage, bus: Bus, *, max_batch: int, queue_size: int) -> None:
        self._storage = storage
        self._bus = bus
        self._max_batch = max_batch
        # Overflow policy: `submit` awaits space, so a flood of requests waits in aiohttp
        # instead of growing memory without bound.
        self._incoming: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=queue_size)
        # Committed batches waiting for the bus; when full, the committer waits (the bus
        # is the bottleneck, and committing faster than it publishes would only buffer).
        self._to_publish: asyncio.Queue[list[NotificationRecord]] = asyncio.Queue(maxsize=64)
        self._tasks: list[asyncio.Task[None]] = []
        self.committed = 0
        self.batches = 0
        self.published = 0
        self.publish_failures = 0

    async def start(self) -> None:
        """Start the committer and publisher tasks (owned here, stopped by `close`)."""
        self._tasks = [
            asyncio.create_task(self._commit_loop(), name="ingest-commit"),
            asyncio.create_task(self._publish_loop(), name="ingest-publish"),
        ]

    async def close(self) -> None:
        """Commit and publish what was already accepted, then stop the tasks.

        The caller bounds this with its shutdown timeout; cancelling it stops at once.
        """
        try:
            await self._incoming.join()
            await self._to_publish.join()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []

    async def submit(self, notification: NewNotification) -> NotificationRecord:
        """Queue one notification and return its record once it is committed.

        Raises `UnknownUserError` if its user vanished, `StorageUnavailableError` if the
        database cannot be written (nothing was accepted).
        """
        future: asyncio.Future[NotificationRecord] = asyncio.get_running_loop().create_future()
        try:
            self._incoming.put_nowait((notification, future))  # the common case: no await
        except asyncio.QueueFull:
            await self._incoming.put((notification, future))
        return await future

    async def _commit_loop(self) -> None:
        while True:
            batch = [await self._incoming.get()]
            while len(batch) < self._max_batch and not self._incoming.empty():
                batch.append(self._incoming.get_nowait())
            try:
                records = await self._commit(batch)
                if records:
                    await self._to_publish.put(records)
            finally:
                for _ in batch:
                    self._incoming.task_done()

    async def _commit(self, batch: Sequence[_Pending]) -> list[NotificationRecord]:
        live = [(n, f) for n, f in batch if not f.done()]  # a client may have gone away
        if not live:
            return []
        try:
            records = await self._storage.insert_notifications([n for n, _ in live])
        except UnknownUserError as exc:
            # Fail that user's notifications only and commit the rest of the batch.
            rest = []
            for notification, future in live:
                if notification.user_id == exc.user_id:
                    _settle(future, exc)
                else:
                    rest.append((notification, future))
            return await self._commit(rest)
        except StorageError as exc:
            for _, future in live:
                _settle(future, exc)
            return []
        self.committed += len(records)
        self.batches += 1
        for (_, future), record in zip(live, records, strict=True):
            if not future.done():
                future.set_result(record)
        return records

    async def _publish_loop(self) -> None:
        while True:
            # Everything committed while the previous publish waited for its confirms
            # goes out in one publish: the broker's confirm latency is paid once per
            # round, not once per committed batch, and commit order is kept.
            batches = [await self._to_publish.get()]
            while not self._to_publish.empty():
                batches.append(self._to_publish.get_nowait())
            try:
                messages = [
                    BusMessage(r.user_id, r.seq, encode_notification_frame(r))
                    for records in batches
                    for r in records
                ]
                await self._publish_with_retry(messages)
            finally:
                for _ in batches:
                    self._to_publish.task_done()

    async def _publish_with_retry(self, messages: list[BusMessage]) -> None:
        delay = 0.05
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                await self._bus.publish(messages)
            except BusError as exc:
                log.warning("bus publish failed (attempt %d): %s", attempt, exc)
                await asyncio.sleep(delay)
                delay *= 4
            else:
                self.published += len(messages)
                return
        # The notifications are committed; clients fetch them through the API. Issue #3's
        # outbox relay will re-publish them instead of giving up.
        self.publish_failures += len(messages)
        log.error("gave up publishing %d committed notifications to the bus", len(messages))
