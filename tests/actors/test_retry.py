"""The one backoff helper (actors/retry.py) every retry loop uses."""

from __future__ import annotations

import asyncio
import time

import pytest

from actors.retry import Backoff, wait_until_set


def test_bound_grows_exponentially_up_to_the_cap() -> None:
    backoff = Backoff(base=0.1, cap=1.0, factor=2.0)
    assert [backoff.bound(n) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_a_very_late_attempt_does_not_overflow() -> None:
    assert Backoff(base=0.1, cap=5.0).bound(10_000) == 5.0


def test_full_jitter_draws_between_zero_and_the_bound() -> None:
    backoff = Backoff(base=1.0, cap=8.0)
    assert backoff.delay(3, draw=lambda: 0.0) == 0.0
    assert backoff.delay(3, draw=lambda: 0.5) == 4.0
    delays = [backoff.delay(2) for _ in range(2000)]
    assert min(delays) >= 0.0
    assert max(delays) <= 4.0
    # Spread over the whole range, not clustered near the bound (that would be "equal
    # jitter", which still synchronises clients that failed together).
    assert min(delays) < 0.4
    assert max(delays) > 3.6


def test_retry_after_is_a_floor() -> None:
    backoff = Backoff(base=0.1, cap=1.0)
    assert backoff.delay(0, floor=7.0, draw=lambda: 1.0) == 7.0


@pytest.mark.parametrize(
    ("base", "cap", "factor"), [(0.0, 1.0, 2.0), (2.0, 1.0, 2.0), (1.0, 2.0, 0.5)]
)
def test_nonsense_settings_are_refused(base: float, cap: float, factor: float) -> None:
    with pytest.raises(ValueError, match="Backoff needs"):
        Backoff(base=base, cap=cap, factor=factor)


async def test_wait_returns_early_when_stopped() -> None:
    stop = asyncio.Event()
    backoff = Backoff(base=30.0, cap=30.0)
    started = time.monotonic()
    waiting = asyncio.ensure_future(backoff.wait(0, stop=stop, floor=30.0))
    await asyncio.sleep(0.05)
    stop.set()
    assert await waiting is False
    assert time.monotonic() - started < 5.0
    assert await backoff.wait(0, stop=stop) is False


async def test_wait_sleeps_the_delay_and_says_go_on() -> None:
    backoff = Backoff(base=0.01, cap=0.01)
    assert await backoff.wait(5, stop=asyncio.Event()) is True
    assert await backoff.wait(5) is True


async def test_wait_is_cancellable() -> None:
    waiting = asyncio.ensure_future(Backoff(base=30.0, cap=30.0).wait(0, floor=30.0))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_waiting_for_an_event_ends_with_it_or_the_timeout() -> None:
    event = asyncio.Event()
    assert not await wait_until_set(event, 0.01)
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_until_set(event, 5)
    assert await wait_until_set(event, 0)  # already set: at once


async def test_a_cancellation_that_races_with_the_event_is_kept() -> None:
    """Guards the Python 3.11 `asyncio.wait_for` race: the event set in the same loop
    turn as the waiter is cancelled made `wait_for` return instead of raising, and the
    fan-out supervisor built on it ran on after its owner cancelled it (a shutdown that
    hung for ever)."""
    for _ in range(10):
        event = asyncio.Event()
        waiter = asyncio.create_task(wait_until_set(event, 10))
        await asyncio.sleep(0)  # the waiter now waits on the event
        event.set()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
