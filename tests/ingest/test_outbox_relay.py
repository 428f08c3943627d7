"""The outbox relay of `NotificationIngest` (issue #3 point 6): a 202 is on disk, and
what the bus refused (or never saw because the process died) is published later from
storage, in order. Real SQLite storage and the real in-process bus; only the bus's
availability is switched by `SwitchableBus`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from pushd.bus import Bus, BusMessage, BusUnavailableError, MessageHandler, open_bus
from pushd.ingest.group_commit import NotificationIngest
from storage import Storage, open_storage
from storage.records import NewNotification, NewUser
from tests.actors.doubles import eventually


class SwitchableBus:
    """A real bus whose publishes fail while `down` is set, as a broker outage would."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.down = False
        self.refused = 0

    async def publish(self, messages: Sequence[BusMessage]) -> None:
        if self.down:
            self.refused += 1
            raise BusUnavailableError("broker down (test)")
        await self.bus.publish(messages)

    def __getattr__(self, name: str) -> object:
        return getattr(self.bus, name)


@contextlib.asynccontextmanager
async def storage_at(path: Path) -> AsyncIterator[Storage]:
    """A migrated SQLite storage with the users u0, u1 and u2."""
    store = await open_storage(f"sqlite:///{path}", pool_size=1)
    try:
        await store.migrate()
        for u in range(3):
            await store.create_user(NewUser(id=f"u{u}", created_at=1))
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def running_ingest(storage: Storage, bus: object) -> AsyncIterator[NotificationIngest]:
    ingest = NotificationIngest(
        storage,
        bus,  # type: ignore[arg-type]  # SwitchableBus forwards the rest of Bus
        node_id="node-a",
        max_batch=16,
        queue_size=256,
        relay_page_size=7,
        mark_interval=0.05,
    )
    await ingest.start()
    try:
        yield ingest
    finally:
        await asyncio.wait_for(ingest.close(), 5)


async def started_bus(received: list[BusMessage]) -> Bus:
    bus = open_bus("memory://", node_id="node-a")

    async def handler(message: BusMessage) -> None:
        received.append(message)

    keep: MessageHandler = handler
    await bus.start(keep)
    return bus


def note(i: int) -> NewNotification:
    return NewNotification(id=f"n{i}", user_id=f"u{i % 3}", title=str(i), created_at=1)


async def test_notifications_accepted_while_the_bus_is_down_are_relayed(tmp_path: Path) -> None:
    received: list[BusMessage] = []
    bus = await started_bus(received)
    switchable = SwitchableBus(bus)
    async with (
        storage_at(tmp_path / "db") as storage,
        running_ingest(storage, switchable) as ingest,
    ):
        await eventually(lambda: not ingest.relaying)
        switchable.down = True
        records = [await ingest.submit(note(i)) for i in range(30)]  # all 202-able
        await eventually(lambda: ingest.relaying and switchable.refused > 0)
        assert received == []
        switchable.down = False
        await eventually(lambda: len(received) == 30, within=5)
        await eventually(lambda: not ingest.relaying, within=5)
        later = await ingest.submit(note(30))
        await eventually(lambda: len(received) == 31)
    await bus.close()
    assert [(m.user_id, m.seq) for m in received] == [(r.user_id, r.seq) for r in [*records, later]]


async def test_a_restart_relays_what_the_previous_process_never_published(
    tmp_path: Path,
) -> None:
    """Guards kill -9 between commit and publish: the next start must publish the
    committed notifications after the stored mark."""
    received: list[BusMessage] = []
    bus = await started_bus(received)
    switchable = SwitchableBus(bus)
    async with storage_at(tmp_path / "db") as storage:
        async with running_ingest(storage, switchable) as first:
            await eventually(lambda: not first.relaying)
            switchable.down = True
            for i in range(12):
                await first.submit(note(i))
        assert received == []
        switchable.down = False
        async with running_ingest(storage, switchable):
            await eventually(lambda: len(received) == 12, within=5)
        assert await storage.get_relay_mark("node-a") == max(
            r.gid for r in await storage.unpublished_notifications("node-a", after_gid=0, limit=99)
        )
    await bus.close()
    assert sorted((m.user_id, m.seq) for m in received) == sorted(
        (f"u{i % 3}", i // 3 + 1) for i in range(12)
    )
