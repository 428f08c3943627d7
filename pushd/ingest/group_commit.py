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
from collections.abc import Iterator, Sequence
from typing import cast

from pushd.bus import Bus, BusError
from pushd.ids import now_ms
from pushd.ingest.outbox_relay import OutboxRelay, bus_messages
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
    ) -> None:
        self._storage = storage
        self._bus = bus
        self._node_id = node_id
        self._max_batch = max_batch
        self._relay = OutboxRelay(
            storage, bus, node_id=node_id, page_size=relay_page_size, mark_interval=mark_interval
        )
        # Overflow policy: `submit` awaits space, so a flood of requests waits in aiohttp
        # instead of growing memory without bound. An entry is one request's group: at
        # most `ingest.batch_max_items` notifications (a bulk request), usually one.
        self._incoming: asyncio.Queue[_Group] = asyncio.Queue(maxsize=queue_size)
        # Committed batches waiting for the bus; when full, the committer waits (the bus
        # is the bottleneck, and committing faster than it publishes would only buffer).
        # While relaying, nothing is queued here: the relay reads storage instead.
        self._to_publish: asyncio.Queue[list[NotificationRecord]] = asyncio.Queue(maxsize=64)
        self._tasks: list[asyncio.Task[None]] = []
        # Looked up once: asyncio.get_running_loop() is a getpid() system call in CPython
        # 3.11, and `submit` runs once per notification.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._claims_in_flight: set[tuple[str, str]] = set()
        self._relaying = True  # until start-up has caught up with what is on disk
        self._committed_gid = 0
        self.committed = 0
        self.batches = 0
        self.published = 0
        self.publish_failures = 0

    @property
    def relaying(self) -> bool:
        """True while publishing from storage (start-up, or the bus refused a publish)."""
        return self._relaying

    @property
    def relayed(self) -> int:
        """Notifications the outbox relay published from storage."""
        return self._relay.relayed

    async def start(self) -> None:
        """Read the relay mark (raises `StorageError`), then start the tasks (owned here,
        stopped by `close`)."""
        self._loop = asyncio.get_running_loop()
        mark = await self._relay.load_mark()
        self._committed_gid = max(mark, await self._storage.max_gid(self._node_id))
        self._tasks = [
            asyncio.create_task(self._commit_loop(), name="ingest-commit"),
            asyncio.create_task(self._publish_loop(), name="ingest-publish"),
            asyncio.create_task(self._relay.store_mark_periodically(), name="ingest-mark"),
        ]

    async def close(self) -> None:
        """Commit and publish what was already accepted, then stop the tasks.

        The caller bounds this with its shutdown timeout; cancelling it stops at once.
        What could not be published stays after the stored mark and is relayed by the
        next start.
        """
        try:
            await self._incoming.join()
            await self._to_publish.join()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
            with contextlib.suppress(StorageError):
                await self._relay.store_mark()

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
        try:
            self._incoming.put_nowait([(notification, future)])  # the common case: no await
        except asyncio.QueueFull:
            await self._incoming.put([(notification, future)])
        return await future

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
                if records:
                    self._committed_gid = max(self._committed_gid, records[-1].gid)
                    if not self._relaying:
                        await self._to_publish.put(records)
            finally:
                for _ in groups:
                    self._incoming.task_done()

    async def _commit(self, batch: Sequence[_Pending]) -> list[NotificationRecord]:
        live = [(n, f) for n, f in batch if not f.done()]  # a client may have gone away
        if not live:
            return []
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
        self.committed += len(records)
        self.batches += 1
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

    # publishing ----------------------------------------------------------------------

    async def _publish_loop(self) -> None:
        while True:
            if self._relaying:
                await self._relay.catch_up(lambda: self._committed_gid, self._drop_queued_batches)
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
                    log.warning("bus publish failed, relaying from storage: %s", exc)
                    self._relaying = True
                    continue
                self.published += len(records)
                self._relay.published_gid = records[-1].gid
            finally:
                for _ in batches:
                    self._to_publish.task_done()

    def _drop_queued_batches(self) -> None:
        while not self._to_publish.empty():
            self._to_publish.get_nowait()
            self._to_publish.task_done()
