"""Batched writes of delivery outcomes (actors/channel_recorder.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.channel_recorder import OutcomeRecorder
from storage import open_storage
from storage.records import DeliveryOutcome
from tests.actors.channel_doubles import DeliveriesSpy
from tests.actors.doubles import eventually


@pytest.fixture
async def spy(tmp_path: Path) -> AsyncIterator[DeliveriesSpy]:
    """Storage (SQLite) behind a spy; outcomes of rows it does not hold are ignored."""
    storage = await open_storage(f"sqlite:///{tmp_path / 'pushd.db'}")
    await storage.migrate()
    yield DeliveriesSpy(storage)
    await storage.close()


def outcome(n: int) -> DeliveryOutcome:
    return DeliveryOutcome(delivery_id=f"dlv_{n}", at=1, status="sent")


async def test_a_full_batch_is_written_without_waiting_for_the_interval(
    spy: DeliveriesSpy,
) -> None:
    recorder = OutcomeRecorder(spy, flush_interval=30, flush_size=3)
    writing = asyncio.create_task(recorder.run())
    try:
        for n in range(3):
            recorder.add(outcome(n))
        await eventually(lambda: spy.writes == [3])
        recorder.add(outcome(3))
        await asyncio.sleep(0.05)
        assert recorder.unwritten == 1  # waits for company, up to the interval
        recorder.close()
        await asyncio.wait_for(writing, 1)
    finally:
        writing.cancel()
    assert spy.writes == [3, 1]
    assert recorder.written == 4


async def test_close_writes_what_waits_at_once(spy: DeliveriesSpy) -> None:
    recorder = OutcomeRecorder(spy, flush_interval=30, flush_size=100)
    writing = asyncio.create_task(recorder.run())
    recorder.add(outcome(1))
    await asyncio.sleep(0.01)
    recorder.close()
    await asyncio.wait_for(writing, 1)
    assert spy.writes == [1]
