"""`gather_eagerly`: asyncio.gather for many small coroutines that mostly finish without
waiting for anything.

A bulk request prepares up to 1,000 notifications and a fan-out chunk builds 500, each
in a coroutine of its own so that those that do wait (a storage read shared with the
other recipients of the loop turn, a Redis rate limit, a template) wait together. Most
wait for nothing: with no channel plan, no template and the in-process shared state,
the coroutine returns at its first step. `asyncio.gather` still wraps each in a Task
(creation, a loop round trip to start it, a done callback, its result collected): about
5 µs of the server's CPU per bulk notification and per fan-out recipient, of 60-85
(bench/bulk.py and bench/topic_fanout.py, docs/benchmarks.md "Audiences").

Here each coroutine's first step runs at once, in the caller's task; only a coroutine
that suspends is carried on in a task of its own, from where it stopped. Python 3.12's
`asyncio.eager_task_factory` does the same for a whole loop; this is the one place that
needs it, on 3.11. Every coroutine's first step still runs in the same loop turn, in
order, so reads that are shared per loop turn (pushd/routing/plan_reads.py) are shared
as before. One difference: a first step runs in the caller's context, not a copy of it,
so the coroutines given here must not set context variables (none of its callers do).
"""

from __future__ import annotations

import asyncio
import inspect
import types
from collections.abc import Coroutine, Generator, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


@types.coroutine
def _carry_on(coroutine: Coroutine[Any, Any, T], waiting_on: Any) -> Generator[Any, Any, T]:
    """Go on with `coroutine`, which yielded `waiting_on` at its first step, inside the
    awaiting task: what the task sends in (None when the awaited future is done) or
    throws in (its cancellation) goes to the coroutine, as if the task had started it."""
    while True:
        try:
            sent = yield waiting_on
        except BaseException as exc:  # thrown into the task: the coroutine handles it
            try:
                waiting_on = coroutine.throw(exc)
            except StopIteration as stop:
                done: T = stop.value
                return done
        else:
            try:
                waiting_on = coroutine.send(sent)
            except StopIteration as stop:
                result: T = stop.value
                return result


async def _finish(coroutine: Coroutine[Any, Any, T], waiting_on: Any) -> T:
    return await _carry_on(coroutine, waiting_on)


def _cancel_if_still_suspended(coroutine: Coroutine[Any, Any, Any]) -> None:
    # A task cancelled before its first step never resumed the coroutine it was to carry
    # on: the cancellation is thrown into the coroutine here, so that its handlers and
    # `finally` blocks run as under gather.
    if inspect.getcoroutinestate(coroutine) != inspect.CORO_SUSPENDED:
        return
    try:
        coroutine.throw(asyncio.CancelledError())
    except (asyncio.CancelledError, Exception):
        return  # it ended, with the cancellation or with an error of its own
    coroutine.close()  # it awaits again after the cancellation: stopped there


async def gather_eagerly(
    coroutines: Iterable[Coroutine[Any, Any, T]],
) -> list[T | Exception]:
    """Run `coroutines` concurrently and return, in order, each one's result or the
    `Exception` it raised (`asyncio.gather(..., return_exceptions=True)`), starting each
    at once in the caller's task and creating a task only for those that suspend.

    The tasks are owned here: they are awaited before this returns, and cancelled (and
    awaited) if the caller is cancelled; a coroutine not started yet is closed."""
    results: list[Any] = []  # a suspended one's place holds None until it is done
    started: dict[int, Coroutine[Any, Any, T]] = {}  # those that suspended, by place
    suspended: list[tuple[int, asyncio.Task[T]]] = []
    pending = iter(coroutines)
    try:
        for coroutine in pending:
            try:
                waiting_on = coroutine.send(None)
            except StopIteration as stop:
                results.append(stop.value)
            except Exception as exc:  # returned in its place, as gather does
                results.append(exc)
            else:
                task = asyncio.create_task(_finish(coroutine, waiting_on))
                suspended.append((len(results), task))
                started[len(results)] = coroutine
                results.append(None)
        if suspended:
            finished = await asyncio.gather(*(t for _, t in suspended), return_exceptions=True)
            for (index, _), result in zip(suspended, finished, strict=True):
                if isinstance(result, BaseException) and not isinstance(result, Exception):
                    raise result  # a task cancelled by itself: not a result
                results[index] = result
    except BaseException:
        for coroutine in pending:  # never started: closed, not left "never awaited"
            coroutine.close()
        for _, task in suspended:
            task.cancel()
        await asyncio.gather(*(t for _, t in suspended), return_exceptions=True)
        for index, _ in suspended:
            _cancel_if_still_suspended(started[index])
        raise
    return results
