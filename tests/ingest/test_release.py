"""The release loop of scheduled sends (pushd/ingest/release.py): on time, after a
restart, and through the outbox when the bus refuses. Real SQLite storage and the real
in-process bus; only the bus's availability is switched."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from pushd.bus import BusMessage
from pushd.ids import now_ms
from pushd.ingest.release import ScheduledRelease, release_node_id
from storage import Storage, open_storage
from storage.records import NewNotification, ScheduledNotification
from tests.actors.doubles import eventually
from tests.ingest.test_outbox_relay import SwitchableBus, started_bus, storage_at


def scheduled(index: int, due_at: int) -> ScheduledNotification:
    notification = NewNotification(
        id=f"s{index:03}", user_id=f"u{index % 3}", body=str(index), created_at=due_at
    )
    return ScheduledNotification(notification=notification, due_at=due_at, accepted_at=now_ms())


@contextlib.asynccontextmanager
async def running_release(
    storage: Storage, bus: object, *, poll_interval: float = 0.02
) -> AsyncIterator[ScheduledRelease]:
    release = ScheduledRelease(
        storage,
        bus,  # type: ignore[arg-type]  # SwitchableBus forwards the rest of Bus
        node_id="node-a",
        poll_interval=poll_interval,
        batch_size=4,
        relay_page_size=3,
        mark_interval=0.05,
    )
    await release.start()
    try:
        yield release
    finally:
        await release.close()


async def test_due_sends_are_released_in_due_order_and_published(tmp_path: Path) -> None:
    received: list[BusMessage] = []
    bus = await started_bus(received)
    async with storage_at(tmp_path / "db") as storage:
        soon = now_ms() + 100
        for index in range(10):
            await storage.schedule_notification(scheduled(index, soon + (9 - index)))
        await storage.schedule_notification(scheduled(99, now_ms() + 3_600_000))
        async with running_release(storage, bus) as release:
            await eventually(lambda: len(received) == 10, within=3)
            assert release.released == 10
        # Per user, seqs follow due order: the latest index was due first.
        for user in range(3):
            mine = [m for m in received if m.user_id == f"u{user}"]
            assert [m.seq for m in mine] == list(range(1, len(mine) + 1))
        assert await storage.get_scheduled("s099") is not None
    await bus.close()


async def test_a_wake_up_releases_before_the_next_poll(tmp_path: Path) -> None:
    """Guards `wake`: with a poll every 30 s, a send due in 0.2 s must not wait for it."""
    received: list[BusMessage] = []
    bus = await started_bus(received)
    async with (
        storage_at(tmp_path / "db") as storage,
        running_release(storage, bus, poll_interval=30) as release,
    ):
        await eventually(lambda: release.released == 0)  # the first poll has run
        due = now_ms() + 200
        await storage.schedule_notification(scheduled(1, due))
        release.wake(due)
        await eventually(lambda: len(received) == 1, within=2)
        assert now_ms() >= due
    await bus.close()


async def test_rows_left_by_a_stopped_node_are_released_after_restart(tmp_path: Path) -> None:
    received: list[BusMessage] = []
    bus = await started_bus(received)
    async with storage_at(tmp_path / "db") as storage:
        for index in range(5):
            await storage.schedule_notification(scheduled(index, now_ms() - 1_000))
    # A new process on the same file: the rows were on disk all along.
    storage = await open_storage(f"sqlite:///{tmp_path / 'db'}")
    try:
        async with running_release(storage, bus):
            await eventually(lambda: len(received) == 5, within=3)
    finally:
        await storage.close()
    await bus.close()


async def test_what_the_bus_refused_is_relayed_from_storage(tmp_path: Path) -> None:
    """Guards the outbox of released sends: committed while the bus is down, they are
    published once it is back, from storage, under the loop's own node id."""
    received: list[BusMessage] = []
    bus = SwitchableBus(await started_bus(received))
    bus.down = True
    async with storage_at(tmp_path / "db") as storage:
        async with running_release(storage, bus) as release:
            for index in range(7):
                await storage.schedule_notification(scheduled(index, now_ms()))
            await eventually(lambda: release.released == 7, within=3)
            assert received == []
            assert bus.refused >= 1
            bus.down = False
            await eventually(lambda: len(received) >= 7, within=3)
        assert {m.seq for m in received if m.user_id == "u0"} == {1, 2, 3}
        mark = await storage.get_relay_mark(release_node_id("node-a"))
        assert mark is not None
        assert mark > 0
    await bus.bus.close()
