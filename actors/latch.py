"""A one-shot flag to wait on, for the objects there is one of per actor or socket."""

from __future__ import annotations

import asyncio


class Latch:
    """Like a one-shot `asyncio.Event` (set once, never cleared), but the future waiters
    sleep on is made only when someone waits. An Event allocates its waiter deque up
    front, about 0.7 kB; there are a few per live actor and per socket, most are never
    waited on, and with thousands of idle sockets they showed in the memory per socket.
    """

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        """Set the flag and wake every waiter (idempotent)."""
        if self._set:
            return
        self._set = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        """Return once the flag is set. A waiter that is cancelled leaves the others
        waiting (they share one future, shielded from each one's cancellation)."""
        if self._set:
            return
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._waiter)
