"""Batched cursor writes: how far each user's sockets were sent and acknowledged.

Every socket reports each sequenced frame it wrote and every `ack` it got; the recorder
keeps only the highest seq per user and writes them all every `interval` seconds, a few
hundred users per storage call (issue #3: "batched, not one write per frame"). After a
crash the stored cursors lag by at most one interval, so a client without `since` may
get up to that much again: duplicates, never gaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pushd.ids import now_ms
from storage import Storage, StorageError

log = logging.getLogger("pushd.cursors")

USERS_PER_WRITE = 250
"""Users per storage call of a flush. SQLite has one writer: with 1,000 users online on
a large file, one transaction for all of them held it for about 28 ms (p50; 45 ms p99),
and every notification commit queued behind it waited as long. A call is awaited before
the next is made, so the commits queued meanwhile go in between."""


Within = tuple[str, ...] | None
"""The categories of a socket whose token is limited to them, None for every one: such a
socket's cursors stop before notifications of other categories (`Storage.advance_cursors`)."""


class CursorRecorder:
    """Owns the flush task; `sent` and `acked` are what sockets call (never wait)."""

    def __init__(self, storage: Storage, *, interval: float) -> None:
        self._storage = storage
        self._interval = interval
        # Bounded by the number of users whose sockets moved within one interval (one
        # entry each, per distinct set of categories of limited tokens), which the
        # per-user socket limit and the node's sockets bound.
        self._sent: dict[Within, dict[str, int]] = {}
        self._acked: dict[Within, dict[str, int]] = {}
        self._task: asyncio.Task[None] | None = None
        self.flushes = 0
        self.flush_failures = 0

    def sent(self, user_id: str, seq: int, within: Within = None) -> None:
        """A socket of the user took every frame up to `seq`."""
        _keep_highest(self._sent.setdefault(within, {}), user_id, seq)

    def acked(self, user_id: str, seq: int, within: Within = None) -> None:
        """A client of the user acknowledged every seq up to `seq`."""
        _keep_highest(self._acked.setdefault(within, {}), user_id, seq)

    async def start(self) -> None:
        """Start the periodic flush (stopped by `close`)."""
        self._task = asyncio.create_task(self._flush_periodically(), name="cursor-flush")

    async def close(self) -> None:
        """Stop the periodic flush and write what is pending."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def flush(self) -> None:
        """Write the pending cursors, `USERS_PER_WRITE` users per storage call (limited
        sockets' apart, per set of categories). On a storage failure what was not written
        is kept (merged with newer cursors) for the next flush."""
        sent, acked = self._sent, self._acked
        if not sent and not acked:
            return
        self._sent, self._acked = {}, {}
        scopes = list({**sent, **acked})
        for index, within in enumerate(scopes):
            if not await self._flush_within(sent.get(within, {}), acked.get(within, {}), within):
                for later in scopes[index + 1 :]:
                    self._keep(sent.get(later, {}), acked.get(later, {}), later)
                return
        self.flushes += 1

    async def _flush_within(
        self, sent: dict[str, int], acked: dict[str, int], within: Within
    ) -> bool:
        """Write these cursors; False (the rest kept) on a storage failure."""
        users = list({**sent, **acked})  # in the order they were first reported
        for start in range(0, len(users), USERS_PER_WRITE):
            chunk = users[start : start + USERS_PER_WRITE]
            try:
                await self._storage.advance_cursors(
                    sent={u: sent[u] for u in chunk if u in sent},
                    acked={u: acked[u] for u in chunk if u in acked},
                    at=now_ms(),
                    within=within,
                )
            except StorageError as exc:
                self.flush_failures += 1
                log.warning("cursor flush failed, retrying next time: %s", exc)
                rest = users[start:]
                self._keep(
                    {u: sent[u] for u in rest if u in sent},
                    {u: acked[u] for u in rest if u in acked},
                    within,
                )
                return False
        return True

    def _keep(self, sent: dict[str, int], acked: dict[str, int], within: Within) -> None:
        for user_id, seq in sent.items():
            self.sent(user_id, seq, within)
        for user_id, seq in acked.items():
            self.acked(user_id, seq, within)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()


def _keep_highest(cursors: dict[str, int], user_id: str, seq: int) -> None:
    if seq > cursors.get(user_id, 0):
        cursors[user_id] = seq
