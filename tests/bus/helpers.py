"""Handlers that record what the bus hands them, for the bus suites."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Generic, TypeVar

from pushd.bus import Bus, BusMessage, MessageHandler

WAIT_SECONDS = 15.0


AnyBus = TypeVar("AnyBus", bound=Bus)


class Buses(Generic[AnyBus]):
    """The buses one test built, to close them all when it ends."""

    def __init__(self) -> None:
        self._made: list[AnyBus] = []

    def keep(self, bus: AnyBus) -> AnyBus:
        self._made.append(bus)
        return bus

    async def close_all(self) -> None:
        for bus in reversed(self._made):
            await bus.close()


async def started(bus: AnyBus, handler: MessageHandler, *users: str) -> AnyBus:
    """Start `bus` and watch `users` (each watch returns once routing is in place)."""
    await bus.start(handler)
    for user_id in users:
        await bus.watch_user(user_id)
    return bus


def messages_for(user_id: str, seqs: Iterable[int]) -> list[BusMessage]:
    """One message per seq, with a frame that says which it is."""
    return [BusMessage(user_id, seq, f'{{"seq":{seq}}}'.encode()) for seq in seqs]


class Recorder:
    """A handler that records every message and lets a test wait for a count."""

    def __init__(self) -> None:
        self.received: list[BusMessage] = []
        self.running = 0
        self.most_running = 0
        self._changed = asyncio.Event()

    async def __call__(self, message: BusMessage) -> None:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.handle(message)
            self.received.append(message)
            self._changed.set()
        finally:
            self.running -= 1

    async def handle(self, message: BusMessage) -> None:
        """What the handler does before the message counts as received (subclasses)."""

    def seqs(self, user_id: str) -> list[int]:
        """The seqs received for one user, in order of receipt."""
        return [m.seq for m in self.received if m.user_id == user_id]

    async def wait_for(self, count: int) -> None:
        """Return once at least `count` messages were received."""
        async with asyncio.timeout(WAIT_SECONDS):
            while len(self.received) < count:
                self._changed.clear()
                await self._changed.wait()

    async def wait_until_received(self, message: BusMessage) -> None:
        """Return once `message` was received."""
        async with asyncio.timeout(WAIT_SECONDS):
            while message not in self.received:
                self._changed.clear()
                await self._changed.wait()


class GatedRecorder(Recorder):
    """A Recorder whose handler waits at a gate: `entered` is set while it waits."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def handle(self, message: BusMessage) -> None:
        self.entered.set()
        await self.gate.wait()

    async def wait_entered(self) -> None:
        """Return once the handler is waiting at the gate."""
        async with asyncio.timeout(WAIT_SECONDS):
            await self.entered.wait()
