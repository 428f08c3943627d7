"""`NotificationIngest.submit_many`, the group commit of a bulk request: its
notifications are committed in one transaction (never split, even past `max_batch`),
each answered in order, and one that fails alone leaves the rest committed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from pushd.bus import BusMessage
from storage import UnknownUserError
from storage.records import NewNotification, NotificationRecord
from tests.ingest.test_outbox_relay import running_ingest, started_bus, storage_at


def note(notification_id: str, user_id: str) -> NewNotification:
    return NewNotification(id=notification_id, user_id=user_id, title="t", created_at=1)


async def test_a_group_is_one_transaction_and_answers_each_in_order(tmp_path: Path) -> None:
    received: list[BusMessage] = []
    bus = await started_bus(received)
    async with storage_at(tmp_path / "db.sqlite") as store, running_ingest(store, bus) as ingest:
        # 20 > max_batch (16): a bulk request's group is still not split.
        group = [note(f"n{i}", f"u{i % 3}") for i in range(20)]
        group[5] = note("n5", "ghost")
        before = ingest.batches
        results = await ingest.submit_many(group)
        assert ingest.batches == before + 1
        assert isinstance(results[5], UnknownUserError)
        committed = [r for r in results if isinstance(r, NotificationRecord)]
        assert [r.id for r in committed] == [n.id for i, n in enumerate(group) if i != 5]
        assert await ingest.submit_many([]) == []
    await bus.close()


async def test_the_backlog_counts_the_single_sends_waiting_for_their_commit(
    tmp_path: Path,
) -> None:
    received: list[BusMessage] = []
    bus = await started_bus(received)
    async with storage_at(tmp_path / "db.sqlite") as store, running_ingest(store, bus) as ingest:
        assert ingest.backlog == 0
        sends = [asyncio.create_task(ingest.submit(note(f"n{i}", "u1"))) for i in range(10)]
        await asyncio.sleep(0)  # each has queued its notification and waits for the commit
        assert ingest.backlog == 10
        await asyncio.gather(*sends)
        assert ingest.backlog == 0
        failed = asyncio.create_task(ingest.submit(note("n-ghost", "ghost")))
        await asyncio.sleep(0)
        assert ingest.backlog == 1
        with pytest.raises(UnknownUserError):
            await failed
        assert ingest.backlog == 0  # a refused send leaves the backlog too
    await bus.close()


async def test_a_batch_that_fails_inside_the_commit_fails_its_requests_not_the_committer(
    tmp_path: Path,
) -> None:
    received: list[BusMessage] = []
    bus = await started_bus(received)
    async with storage_at(tmp_path / "db.sqlite") as store, running_ingest(store, bus) as ingest:
        # What the API never lets through (its bodies are JSON), as a bug upstream might.
        broken = msgspec.structs.replace(note("n-broken", "u1"), data={"x": object()})
        async with asyncio.timeout(10):  # a dead committer would leave them waiting
            with pytest.raises(TypeError):
                await ingest.submit(broken)
            assert await store.get_notification("n-broken") is None
            # The committer still serves the next requests.
            record = await ingest.submit(note("n-after", "u1"))
        assert record.id == "n-after"
    await bus.close()
