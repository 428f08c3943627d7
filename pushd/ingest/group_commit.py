"""Accepting notifications: group commit, then the ordered hand-off to the bus, with the
outbox relay (pushd/ingest/outbox_relay.py) for when the bus cannot take them.

Concurrent `POST /api/notifications` requests queue their notification here. One
committer task takes whatever has queued up (up to `max_batch`) and writes it in one
transaction: under load the batches grow, so storage round trips stay few. Each request
is answered as soon as its batch is committed (a 202 means "on disk").

Committed batches then go, in commit order, to one publisher task that encodes each
notification's WebSocket frame once and publishes it to the bus. Keeping commit and
publish order the same is what delivers one user's notifications in seq order (and
sockets fill any hole from storage, see actors/connection.py).

When the bus refuses a publish, or on start-up (a crash may have left commits
unpublished), the publisher switches to relaying: the outbox relay publishes this node's
commits from storage until it has caught up with the committer, then the publisher goes
back to the in-memory hand-off. Nothing accepted is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import cast

from pushd.bus import Bus
from pushd.ingest.committed_publisher import CommittedPublisher
from storage import IdempotencyConflictError, Storage, StorageError, UnknownUserError
from storage.records import NewNotification, NotificationRecord

log = logging.getLogger("pushd.ingest.group_commit")

_Pending = tuple[NewNotification, "asyncio.Future[NotificationRecord]"]
# What one request queued: one notification, or a bulk request's all (never split, so
# that they are committed in one transaction).
_Group = list[_Pending]


class ClaimInFlightError(Exception):
    """The same Idempotency-Key is being committed by another request of this node."""


def _settle(future: asyncio.Future[NotificationRecord], error: Exception) -> None:
    if not future.done():  # the waiting request may have been cancelled meanwhile
        future.set_exception(error)


class NotificationIngest:
    """Owns the committer, publisher and mark tasks; `submit` is what handlers call."""

    def __init__(
        self,
        storage: Storage,
        bus: Bus,
        *,
        node_id: str,
        max_batch: int,
        queue_size: int,
        relay_page_size: int = 500,
        mark_interval: float = 1.0,
        on_commit: Callable[[int, float], None] | None = None,
    ) -> None:
        """`on_commit(size, seconds)` is told of every commit transaction (metrics)."""
        self._storage = storage
        self._on_commit = on_commit
        self._bus = bus
        self._node_id = node_id
        self._max_batch = max_batch
        self._publisher = CommittedPublisher(
            storage,
            bus,
            node_id=node_id,
            what="accepted notifications",
            relay_page_size=relay_page_size,
            mark_interval=mark_interval,
        )
        # Overflow policy: `submit` awaits space, so a flood of requests waits in aiohttp
        # instead of growing memory without bound. An entry is one request's group: at
        # most `ingest.batch_max_items` notifications (a bulk request), usually one.
        self._incoming: asyncio.Queue[_Group] = asyncio.Queue(maxsize=queue_size)
        self._tasks: list[asyncio.Task[None]] = []
        # Looked up once: asyncio.get_running_loop() is a getpid() system call in CPython
        # 3.11, and `submit` runs once per notification.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._claims_in_flight: set[tuple[str, str]] = set()
        self._waiting = 0  # `submit` calls not answered yet (the backlog)
        self.committed = 0
        self.batches = 0

    @property
    def relaying(self) -> bool:
        """True while publishing from storage (start-up, or the bus refused a publish)."""
        return self._publisher.relaying

    @property
    def published(self) -> int:
        """Notifications published from memory (not by the relay)."""
        return self._publisher.published

    @property
    def publish_failures(self) -> int:
        """Publishes the bus refused (each turned the relay on)."""
        return self._publisher.publish_failures

    @property
    def backlog(self) -> int:
        """Single sends waiting for their commit (queued or in the transaction under
        way): how far in-app delivery is behind in this process. At a steady rate it is
        about the rate times the commit time; near saturation, about the number of
        client connections sending. The channel dispatcher yields to it
        (actors/channel_dispatch.py)."""
        return self._waiting

    @property
    def relayed(self) -> int:
        """Notifications the outbox relay published from storage."""
        return self._publisher.relayed

    @property
    def publisher(self) -> CommittedPublisher:
        """What publishes the committed notifications (its relay figures are metrics)."""
        return self._publisher

    async def start(self) -> None:
        """Read the relay mark (raises `StorageError`), then start the tasks (owned here,
        stopped by `close`)."""
        self._loop = asyncio.get_running_loop()
        await self._publisher.start()
        self._tasks = [
            asyncio.create_task(self._commit_loop(), name="ingest-commit"),
            asyncio.create_task(self._publisher.run(), name="ingest-publish"),
            asyncio.create_task(self._publisher.store_mark_periodically(), name="ingest-mark"),
        ]

    async def close(self) -> None:
        """Commit and publish what was already accepted, then stop the tasks.

        The caller bounds this with its shutdown timeout; cancelling it stops at once.
        What could not be published stays after the stored mark and is relayed by the
        next start.
        """
        try:
            await self._incoming.join()
            await self._publisher.drain()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
            await self._publisher.close()

    @contextlib.contextmanager
    def claim(self, scope: str, key: str) -> Iterator[None]:
        """Hold an Idempotency-Key while its request runs; raises `ClaimInFlightError`
        if another request of this node holds it (other nodes are caught by storage)."""
        if (scope, key) in self._claims_in_flight:
            raise ClaimInFlightError(key)
        self._claims_in_flight.add((scope, key))
        try:
            yield
        finally:
            self._claims_in_flight.discard((scope, key))

    async def submit(self, notification: NewNotification) -> NotificationRecord:
        """Queue one notification and return its record once it is committed.

        Raises `UnknownUserError` if its user vanished, `IdempotencyConflictError` if its
        claim's key was stored meanwhile, `StorageUnavailableError` if the database
        cannot be written (nothing was accepted).
        """
        loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[NotificationRecord] = loop.create_future()
        self._waiting += 1
        try:
            try:
                self._incoming.put_nowait([(notification, future)])  # the common case
            except asyncio.QueueFull:
                await self._incoming.put([(notification, future)])
            return await future
        finally:
            self._waiting -= 1

    async def submit_many(
        self, notifications: Sequence[NewNotification]
    ) -> list[NotificationRecord | Exception]:
        """Queue notifications to be committed in ONE transaction (with whatever else is
        queued then); return, in order, each one's record, or the error `submit` would
        have raised for it. Those failing alone (`UnknownUserError`,
        `IdempotencyConflictError`) are left out and the rest committed together.
        """
        if not notifications:
            return []
        loop = self._loop or asyncio.get_running_loop()
        group: _Group = [(n, loop.create_future()) for n in notifications]
        await self._incoming.put(group)
        results = await asyncio.gather(*(f for _, f in group), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancellation
        return cast(list[NotificationRecord | Exception], results)

    # committing --------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            groups = [await self._incoming.get()]
            size = len(groups[0])
            while size < self._max_batch and not self._incoming.empty():
                groups.append(self._incoming.get_nowait())
                size += len(groups[-1])
            try:
                records = await self._commit([pending for group in groups for pending in group])
                await self._publisher.committed(records)
            finally:
                for _ in groups:
                    self._incoming.task_done()

    async def _commit(self, batch: Sequence[_Pending]) -> list[NotificationRecord]:
        live = [(n, f) for n, f in batch if not f.done()]  # a client may have gone away
        if not live:
            return []
        started = time.perf_counter()
        try:
            records = await self._storage.insert_notifications(
                [n for n, _ in live], node_id=self._node_id
            )
        except (UnknownUserError, IdempotencyConflictError) as exc:
            # Fail the notifications concerned only and commit the rest of the batch.
            rest = []
            for notification, future in live:
                if self._concerns(exc, notification):
                    _settle(future, exc)
                else:
                    rest.append((notification, future))
            return await self._commit(rest)
        except StorageError as exc:
            for _, future in live:
                _settle(future, exc)
            return []
        except Exception as exc:
            # A bug in what runs inside the commit (a value that cannot be encoded) fails
            # this batch's requests, nothing was committed; the committer itself goes on
            # serving the next batches (a dead committer would leave every send waiting).
            log.exception("a notification batch could not be committed")
            for _, future in live:
                _settle(future, exc)
            return []
        self.committed += len(records)
        self.batches += 1
        if self._on_commit is not None:
            self._on_commit(len(records), time.perf_counter() - started)
        for (_, future), record in zip(live, records, strict=True):
            if not future.done():
                future.set_result(record)
        return records

    @staticmethod
    def _concerns(error: Exception, notification: NewNotification) -> bool:
        if isinstance(error, UnknownUserError):
            return notification.user_id == error.user_id
        assert isinstance(error, IdempotencyConflictError)
        claim = notification.idempotency
        return claim is not None and (claim.scope, claim.key) == (error.scope, error.key)
