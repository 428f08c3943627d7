"""The bounded buffer between a client's socket reader and the application."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

from pushd.client.events import Event


class EventInbox:
    """Events in arrival order, at most `size` of them.

    Overflow policy: backpressure. A full inbox makes the socket reader wait, so the
    client stops reading its socket; if the application stays behind long enough the
    server closes the socket as a slow consumer (4008), and the client reconnects and
    resumes with `since`. Nothing is dropped, and memory stays bounded.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"an event inbox holds at least one event (got {size})")
        self._size = size
        self._events: deque[Event] = deque()
        self._changed = asyncio.Condition()
        self._ended = False

    async def put(self, event: Event) -> None:
        """Add an event; waits while the inbox is full. Dropped once the inbox ended."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._events) < self._size or self._ended)
            if not self._ended:
                self._events.append(event)
                self._changed.notify_all()

    async def end(self, last: Event) -> None:
        """No more events after `last`, which is added even to a full inbox (one beyond
        the bound, so that ending never waits for the application): readers get what
        is left, then stop. Idempotent: a second end adds nothing."""
        async with self._changed:
            if not self._ended:
                self._events.append(last)
            self._ended = True
            self._changed.notify_all()

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda: bool(self._events) or self._ended)
                if not self._events:
                    return
                event = self._events.popleft()
                self._changed.notify_all()
            yield event
