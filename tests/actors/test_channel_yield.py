"""InappFirst: when the channel dispatcher yields to in-app delivery, from the in-app
backlog and the event loop's turn time (the dispatcher's side is in
test_channel_dispatch.py, with a loop really slowed)."""

from __future__ import annotations

from actors.channel_yield import InappFirst


def policy(*, yield_backlog: int = 64, yield_lag: float = 0.02) -> InappFirst:
    return InappFirst(lambda: 0, yield_backlog=yield_backlog, yield_lag=yield_lag)


def slow_turns(policy: InappFirst, seconds: float, count: int = 10) -> None:
    for _ in range(count):
        policy.note_turn(seconds)


def test_a_backlog_at_the_threshold_yields_until_under_half_of_it() -> None:
    first = policy()
    assert not first.decide(63)
    assert first.decide(64)
    assert first.decide(32)
    assert not first.decide(31)
    assert first.yields == 1


def test_a_slow_loop_yields_only_while_in_app_work_waits() -> None:
    first = policy()
    slow_turns(first, 0.03)
    assert not first.decide(0)  # only channel sends: they may use the whole loop
    assert first.decide(1)
    assert first.yields == 1


def test_a_yield_started_by_the_lag_ends_once_the_turn_is_under_half_of_it() -> None:
    first = policy()
    slow_turns(first, 0.03)
    assert first.decide(5)
    slow_turns(first, 0.012)  # under the threshold, above half of it: still yielding
    assert first.decide(5)
    assert first.decide(0)  # the sockets' backlog shows in the lag, not in the count
    slow_turns(first, 0.001)
    assert not first.decide(5)
    assert first.yields == 1


def test_one_slow_turn_does_not_start_a_yield() -> None:
    """A GC pass or one big commit makes one slow turn; the smoothed lag must not jump
    over the threshold for it."""
    first = policy()
    slow_turns(first, 0.001)
    first.note_turn(0.035)
    assert not first.decide(5)


def test_zero_turns_a_sign_off() -> None:
    by_backlog_only = policy(yield_lag=0)
    slow_turns(by_backlog_only, 1.0)
    assert not by_backlog_only.decide(63)
    by_lag_only = policy(yield_backlog=0)
    assert not by_lag_only.decide(10_000)
    slow_turns(by_lag_only, 0.05)
    assert by_lag_only.decide(1)


async def test_without_an_inapp_backlog_it_never_yields() -> None:
    first = InappFirst(None, yield_backlog=1, yield_lag=0.000_001)
    assert not await first.check()
    assert first.lag == 0  # nor does it measure the loop


async def test_check_measures_the_loop_turn() -> None:
    first = InappFirst(lambda: 1, yield_backlog=64, yield_lag=10.0)
    assert not await first.check()
    assert 0 < first.lag < 10.0
