"""The audit trail's writer: records of who did what are appended to storage in batches
by one owned background task, so that auditing `POST /api/notifications` costs a queue
put per request, not a storage round trip. Failed authentications are not queued one by
one but tallied (pushd/access/failed_auth.py) and queued once per window.

What is recorded, and where, is docs/security.md ("Audit trail").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec

from actors.retry import Backoff
from pushd.access.failed_auth import FailedAuthTally
from storage import Storage, StorageError
from storage.records import NewAuditRecord

log = logging.getLogger("pushd.access.audit_writer")

# A failing storage is retried this many times (with backoff between attempts) before a
# batch is given up on and written to the log instead.
_WRITE_ATTEMPTS = 5
_WRITE_BACKOFF = Backoff(base=0.2, cap=1.6)

_record_encoder = msgspec.json.Encoder()


class AuditWriterClosedError(RuntimeError):
    """`record` was called after `close`: a component outlived the writer it uses."""


class AuditWriter:
    """Appends audit records to storage from a bounded queue, in batches.

    Queue: at most `queue_size` records wait. Overflow policy: a full queue makes
    `record` wait for space (backpressure reaches the request), it never drops one.
    One owned task takes everything queued (at most `max_batch`) and appends it in ONE
    transaction. A batch that storage keeps refusing is retried with backoff, then
    logged at ERROR level, one JSON line per record, so that no record disappears
    without a trace while the writer keeps going. `close` writes what is queued.

    Failed authentications (`record_failed_auth`) are tallied instead, and a second
    owned task queues the tally's records every `failed_auth_window` seconds; `flush`
    and `close` queue them at once.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        queue_size: int,
        max_batch: int,
        linger: float = 0.0,
        failed_auth_window: float = 60.0,
    ) -> None:
        self._storage = storage
        self._max_batch = max_batch
        self._linger = linger
        self._failed_auth = FailedAuthTally()
        self._failed_auth_window = failed_auth_window
        self._stopping = asyncio.Event()
        """Set by close: the tally task queues what it holds a last time and ends."""
        self._tally_task: asyncio.Task[None] | None = None
        # Held while drained tallies are being queued: a flush meanwhile waits for them.
        self._queueing_tallies = asyncio.Lock()
        self._batch_ready = asyncio.Event()
        """Set when a full batch is queued (or on close): the writer stops lingering."""
        # None is the stop marker put by close(), behind every record queued before it.
        self._queue: asyncio.Queue[NewAuditRecord | None] = asyncio.Queue(queue_size)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._queued = 0
        self._handled = 0
        self._progress = asyncio.Condition()
        self.written = 0
        """Records appended to storage."""
        self.batches = 0
        """Successful appends (transactions)."""
        self.logged_instead = 0
        """Records storage refused even after retries, written to the log instead."""

    @property
    def queue_depth(self) -> int:
        """Records waiting to be written (metrics)."""
        return self._queue.qsize()

    async def start(self) -> None:
        """Start the writer task and the tally task (owned by this object, awaited by
        `close`)."""
        self._task = asyncio.create_task(self._run(), name="pushd-audit-writer")
        self._tally_task = asyncio.create_task(
            self._queue_tallies_every_window(), name="pushd-audit-tally"
        )

    async def record(self, record: NewAuditRecord) -> None:
        """Queue one record; waits while the queue is full."""
        if self._closing:
            raise AuditWriterClosedError("the audit writer is closed; nothing can be recorded")
        await self._put(record)

    def record_failed_auth(
        self, *, key_id: str | None, source: str, action: str, result: str, at: int
    ) -> None:
        """Count one request that failed authentication (see `FailedAuthTally.add`); it
        is recorded with the others of its source and result at the end of the window."""
        if self._closing:
            raise AuditWriterClosedError("the audit writer is closed; nothing can be recorded")
        self._failed_auth.add(key_id=key_id, source=source, action=action, result=result, at=at)

    async def _put(self, record: NewAuditRecord) -> None:
        await self._queue.put(record)
        self._queued += 1
        if self._queue.qsize() >= self._max_batch:
            self._batch_ready.set()

    async def _queue_tallies(self) -> None:
        async with self._queueing_tallies:
            for record in self._failed_auth.drain():
                await self._put(record)

    async def _queue_tallies_every_window(self) -> None:
        # Ends on its own when close() sets `_stopping`, never cancelled: a cancellation
        # while queueing would lose the tallies already drained.
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._failed_auth_window):
                    await self._stopping.wait()
            await self._queue_tallies()
            if self._stopping.is_set():
                return

    async def flush(self) -> None:
        """Return once every record queued before this call has been handled (written,
        or logged after storage refused it), the failed authentications tallied so far
        included. Records queued meanwhile are not waited for, so a steady stream cannot
        hold the caller forever."""
        await self._queue_tallies()
        target = self._queued
        async with self._progress:
            await self._progress.wait_for(lambda: self._handled >= target)

    async def close(self) -> None:
        """Write everything queued, then stop the task. Idempotent."""
        if self._closing:
            if self._task is not None:
                await self._task
            return
        self._closing = True
        self._stopping.set()
        if self._tally_task is not None:
            await self._tally_task  # queues the last tallies, behind every record queued
        if self._task is None:
            return
        await self._queue.put(None)
        self._batch_ready.set()  # no lingering on the way down
        await self._task

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[NewAuditRecord] = []
            item = await self._queue.get()
            if item is not None and self._linger and self._queue.qsize() < self._max_batch:
                # Gather a batch: one transaction (on SQLite, one fsync on the writer
                # thread the notifications also need) per `linger` or per full batch,
                # whichever comes first, instead of one per burst of requests.
                self._batch_ready.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._linger):
                        await self._batch_ready.wait()
            while True:
                if item is None:
                    stopping = True
                    break
                batch.append(item)
                if len(batch) >= self._max_batch or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                await self._write(batch)
                async with self._progress:
                    self._handled += len(batch)
                    self._progress.notify_all()

    async def _write(self, batch: list[NewAuditRecord]) -> None:
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                await self._storage.append_audit(batch)
            except StorageError as exc:
                log.warning(
                    "audit: appending %d records failed (attempt %d of %d): %s",
                    len(batch),
                    attempt,
                    _WRITE_ATTEMPTS,
                    exc,
                )
                if attempt < _WRITE_ATTEMPTS:
                    await _WRITE_BACKOFF.wait(attempt - 1)
            else:
                self.written += len(batch)
                self.batches += 1
                return
        for record in batch:
            log.error("audit record not stored: %s", _record_encoder.encode(record).decode())
        self.logged_instead += len(batch)
