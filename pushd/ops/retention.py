"""The retention job (`[retention]`, README "Retention"): deletes old notifications,
the cursor history no remaining notification needs, expired Idempotency-Keys and audit
records older than `audit_max_age`. A category's own `retention`
(pushd/routing/categories.py) wins over `retention.per_category`.

One owned task; every `interval` seconds it purges batch after batch, each batch one
short transaction of at most `batch_size` rows, yielding to the event loop between two
batches, until nothing is left to purge. Every node of a cluster runs it: two nodes
purging at once delete each row once (the other one's batch just finds fewer rows).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from pushd.config.settings import RetentionConfig
from pushd.ids import now_ms
from storage import Storage, StorageError

log = logging.getLogger("pushd.ops.retention")

# Between two batches: long enough to let requests and commits through, short enough
# that a large backlog drains quickly.
_PAUSE_BETWEEN_BATCHES_S = 0.01


@dataclass
class PurgeCounts:
    """Rows deleted by one run."""

    notifications: int = 0
    idempotency_keys: int = 0
    audit_records: int = 0


class RetentionJob:
    """Purges what retention allows, periodically (`start`/`close`) or once (`run_once`)."""

    def __init__(
        self,
        storage: Storage,
        config: RetentionConfig,
        *,
        idempotency_window: float,
        category_retention: Callable[[], Mapping[str, float]] = dict,
    ) -> None:
        self._storage = storage
        self._config = config
        # Read at each run: categories defined through the API change while running.
        self._category_retention = category_retention
        self._idempotency_window_ms = int(idempotency_window * 1000)
        self._task: asyncio.Task[None] | None = None
        self.runs = 0
        """Completed runs (for tests and metrics)."""

    async def start(self) -> None:
        """Start the periodic task (owned here, cancelled and awaited by `close`)."""
        self._task = asyncio.create_task(self._loop(), name="pushd-retention")

    async def close(self) -> None:
        """Stop the task (a batch in flight is cancelled: its transaction rolls back).
        Idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _loop(self) -> None:
        while True:
            try:
                counts = await self.run_once()
            except StorageError as exc:
                log.warning("retention: purge failed, retrying next run: %s", exc)
            else:
                if counts.notifications or counts.idempotency_keys or counts.audit_records:
                    log.info(
                        "retention: purged %d notifications, %d idempotency keys and %d "
                        "audit records",
                        counts.notifications,
                        counts.idempotency_keys,
                        counts.audit_records,
                    )
            await asyncio.sleep(self._config.interval)

    async def run_once(self) -> PurgeCounts:
        """Purge everything that is due now, batch by batch; return what was deleted."""
        config, counts, now = self._config, PurgeCounts(), now_ms()
        limit = config.batch_size
        # A category's own retention wins over `retention.per_category`.
        per_category = {**config.per_category, **self._category_retention()}
        for category, max_age in per_category.items():
            if max_age > 0:
                before = now - int(max_age * 1000)
                counts.notifications += await self._drain(
                    functools.partial(
                        self._storage.purge_notifications,
                        created_before=before,
                        limit=limit,
                        category=category,
                    )
                )
        if config.notifications_max_age > 0:
            before = now - int(config.notifications_max_age * 1000)
            # Categories with their own age (0 included: kept forever) are not purged here.
            listed = list(per_category)
            counts.notifications += await self._drain(
                lambda: self._storage.purge_notifications(
                    created_before=before, limit=limit, except_categories=listed
                )
            )
        expired = now - self._idempotency_window_ms
        counts.idempotency_keys += await self._drain(
            lambda: self._storage.purge_idempotency(before=expired, limit=limit)
        )
        if config.audit_max_age > 0:
            aged = now - int(config.audit_max_age * 1000)
            counts.audit_records += await self._drain(
                lambda: self._storage.purge_audit(before=aged, limit=limit)
            )
        self.runs += 1
        return counts

    async def _drain(self, purge_batch: Callable[[], Awaitable[int]]) -> int:
        total = 0
        while True:
            deleted = await purge_batch()
            total += deleted
            if deleted < self._config.batch_size:
                return total
            await asyncio.sleep(_PAUSE_BETWEEN_BATCHES_S)
