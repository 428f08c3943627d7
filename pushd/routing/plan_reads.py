"""What a channel plan needs of its recipients, read for many requests at once.

Expanding a plan reads the recipient's user row, devices and preferences
(`UserPreferences.plan_context`). One read per request is one storage job per
notification: on SQLite a job for the single worker thread, queued behind the group
commit, the cursor flushes and the dispatcher's leases, where a burst of sends with a
push step waited longest (docs/benchmarks.md, "In-app delivery with a push step").
`PlanReads` gathers the reads asked during one turn of the event loop and makes them
one `plan_contexts` call, the way the group commit gathers inserts: under load the
requests of a turn share one job, and a lone request waits for nothing but its turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from storage.areas.preferences import PlanContext

log = logging.getLogger(__name__)

MAX_USERS_PER_READ = 500
"""Users per `plan_contexts` call: bounds the IN list and one job's time on SQLite."""


class PlanContextSource(Protocol):
    async def plan_contexts(
        self, user_ids: Sequence[str], *, devices: bool
    ) -> dict[str, PlanContext]: ...


class PlanReads:
    """`read(user_id, devices=...)` answers as `plan_context` would; the reads asked in
    the same loop turn (with the same `devices`) go to storage together. Owns the
    tasks that run the reads: `close()` cancels them (their callers get the
    cancellation)."""

    def __init__(self, storage: PlanContextSource, *, max_users: int = MAX_USERS_PER_READ):
        self._storage = storage
        self._max_users = max_users
        # Waiting for the end of the current loop turn: user id, devices?, the answer.
        self._waiting: list[tuple[str, bool, asyncio.Future[PlanContext | None]]] = []
        self._reading: set[asyncio.Task[None]] = set()
        self._closed = False
        self._unanswered = 0

    @property
    def waiting(self) -> int:
        """Reads asked and not answered yet: requests held up by storage before their
        commit (with the commit queue, the in-app backlog the channel dispatcher yields
        to, actors/channel_dispatch.py)."""
        return self._unanswered

    async def read(self, user_id: str, *, devices: bool) -> PlanContext | None:
        """The user, their devices (read only when `devices`) and preferences, or None
        for an unknown user. Raises what storage raised for the shared read."""
        if self._closed:
            raise RuntimeError("PlanReads is closed")
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[PlanContext | None] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)  # after every request that runs in this turn
        self._waiting.append((user_id, devices, answer))
        self._unanswered += 1
        try:
            return await answer
        finally:
            self._unanswered -= 1

    async def close(self) -> None:
        """Cancel the reads under way and refuse new ones."""
        self._closed = True
        for task in self._reading:
            task.cancel()
        await asyncio.gather(*self._reading, return_exceptions=True)
        for _, _, answer in self._waiting:
            answer.cancel()
        self._waiting.clear()

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        for devices in (False, True):
            group = [entry for entry in waiting if entry[1] is devices]
            for start in range(0, len(group), self._max_users):
                task = asyncio.create_task(
                    self._read(group[start : start + self._max_users], devices=devices),
                    name="plan-reads",
                )
                self._reading.add(task)
                task.add_done_callback(self._reading.discard)

    async def _read(
        self,
        group: list[tuple[str, bool, asyncio.Future[PlanContext | None]]],
        *,
        devices: bool,
    ) -> None:
        try:
            found = await self._storage.plan_contexts(
                [user_id for user_id, _, _ in group], devices=devices
            )
        except BaseException as exc:
            for _, _, answer in group:
                if not answer.done():
                    if isinstance(exc, asyncio.CancelledError):
                        answer.cancel()
                    else:
                        answer.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for user_id, _, answer in group:
            if not answer.done():  # its request may have been cancelled meanwhile
                answer.set_result(found.get(user_id))
