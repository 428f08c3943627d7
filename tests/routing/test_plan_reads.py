"""PlanReads: the plan reads of one loop turn share one storage call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from pushd.routing.plan_reads import PlanReads
from storage import Storage, open_storage
from storage.areas.preferences import PlanContext
from storage.records import NewUser


class CountingStorage:
    """The real storage, counting the batched reads and what each asked."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.calls: list[tuple[list[str], bool]] = []
        self.fail_with: Exception | None = None

    async def plan_contexts(
        self, user_ids: Sequence[str], *, devices: bool
    ) -> dict[str, PlanContext]:
        self.calls.append((list(user_ids), devices))
        if self.fail_with is not None:
            raise self.fail_with
        return await self.storage.plan_contexts(user_ids, devices=devices)


@pytest.fixture
async def counting(tmp_path: Path) -> AsyncIterator[CountingStorage]:
    storage = await open_storage(f"sqlite:///{tmp_path / 'plan.db'}")
    await storage.migrate()
    for n in range(5):
        await storage.create_user(NewUser(id=f"u{n}", created_at=1))
    try:
        yield CountingStorage(storage)
    finally:
        await storage.close()


async def test_reads_of_one_turn_are_one_call_and_each_gets_its_own_answer(
    counting: CountingStorage,
) -> None:
    reads = PlanReads(counting)
    answers = await asyncio.gather(
        *(reads.read(f"u{n}", devices=False) for n in range(5)),
        reads.read("nobody", devices=False),
    )
    assert len(counting.calls) == 1
    assert [a[0].id if a else None for a in answers] == ["u0", "u1", "u2", "u3", "u4", None]
    for n in range(5):
        assert answers[n] == await counting.storage.plan_context(f"u{n}", devices=False)
    await reads.close()


async def test_reads_with_and_without_devices_are_separate_calls_and_bounded(
    counting: CountingStorage,
) -> None:
    reads = PlanReads(counting, max_users=2)
    await asyncio.gather(
        *(reads.read(f"u{n}", devices=n % 2 == 0) for n in range(5)),
    )
    # u0, u2, u4 with devices (2 + 1 calls), u1, u3 without (1 call)
    assert sorted((len(ids), devices) for ids, devices in counting.calls) == [
        (1, True),
        (2, False),
        (2, True),
    ]
    await reads.close()


async def test_reads_of_later_turns_are_later_calls(counting: CountingStorage) -> None:
    reads = PlanReads(counting)
    first = await reads.read("u0", devices=True)
    second = await reads.read("u1", devices=True)
    assert first is not None
    assert second is not None
    assert len(counting.calls) == 2
    await reads.close()


async def test_a_failed_read_fails_every_request_of_its_call(counting: CountingStorage) -> None:
    reads = PlanReads(counting)
    counting.fail_with = ConnectionError("storage away")
    results = await asyncio.gather(
        reads.read("u0", devices=False), reads.read("u1", devices=False), return_exceptions=True
    )
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
    counting.fail_with = None
    assert await reads.read("u0", devices=False) is not None  # and the next turn works
    await reads.close()


async def test_after_close_no_read_is_taken(counting: CountingStorage) -> None:
    reads = PlanReads(counting)
    await reads.close()
    with pytest.raises(RuntimeError, match="closed"):
        await reads.read("u0", devices=False)


async def test_waiting_counts_the_reads_not_answered_yet(counting: CountingStorage) -> None:
    reads = PlanReads(counting)
    pending = [asyncio.create_task(reads.read(f"u{n}", devices=False)) for n in range(3)]
    await asyncio.sleep(0)  # each read is asked; the shared call has not answered yet
    assert reads.waiting == 3
    await asyncio.gather(*pending)
    assert reads.waiting == 0
    await reads.close()
