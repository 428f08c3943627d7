"""`gather_eagerly`: gather's answers (results and exceptions in order, concurrency for
those that wait), without a task for a coroutine that finishes at its first step, and
with its tasks owned (a cancelled caller leaves none running)."""

from __future__ import annotations

import asyncio

import pytest

from pushd.ingest.eager import gather_eagerly


async def test_results_and_errors_in_order_with_tasks_only_for_those_that_wait() -> None:
    gate = asyncio.Event()
    tasks_before = len(asyncio.all_tasks())
    started: list[int] = []

    async def item(n: int) -> int:
        started.append(n)
        if n % 3 == 0:
            raise ValueError(n)
        if n % 3 == 1:
            await gate.wait()  # these wait, together
            await asyncio.sleep(0)
        return n * 10

    gathering = asyncio.ensure_future(gather_eagerly(item(n) for n in range(9)))
    await asyncio.sleep(0)
    # Every first step ran in the same turn, in order; only the 3 waiting ones are tasks.
    assert started == list(range(9))
    assert len(asyncio.all_tasks()) == tasks_before + 1 + 3
    gate.set()
    results = await gathering
    assert [r if isinstance(r, int) else repr(r) for r in results] == [
        "ValueError(0)", 10, 20, "ValueError(3)", 40, 50, "ValueError(6)", 70, 80
    ]  # fmt: skip


async def test_an_error_of_what_a_suspended_coroutine_awaits_reaches_it() -> None:
    waiting = asyncio.get_running_loop().create_future()

    async def item() -> str:
        try:
            await waiting
        except KeyError:
            return "handled"
        return "not thrown"

    gathering = asyncio.ensure_future(gather_eagerly([item()]))
    await asyncio.sleep(0)
    waiting.set_exception(KeyError("x"))
    assert await gathering == ["handled"]


async def test_a_cancelled_caller_leaves_no_task_running() -> None:
    cleaned: list[int] = []

    async def item(n: int) -> int:
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.append(n)
        return n

    gathering = asyncio.ensure_future(gather_eagerly(item(n) for n in range(4)))
    await asyncio.sleep(0)
    gathering.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gathering
    assert sorted(cleaned) == [0, 1, 2, 3]
    assert asyncio.all_tasks() == {asyncio.current_task()}
