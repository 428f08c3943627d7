"""The provider circuit breaker (actors/circuit_breaker.py)."""

from __future__ import annotations

from actors.circuit_breaker import BreakerSettings, BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def state_of(b: CircuitBreaker) -> BreakerState:
    """Read through a call: mypy would otherwise narrow `b.state` across assertions."""
    return b.state


def breaker(clock: Clock, **settings: float) -> CircuitBreaker:
    return CircuitBreaker(BreakerSettings(**settings), clock=clock)  # type: ignore[arg-type]


def test_opens_after_consecutive_transient_failures() -> None:
    b = breaker(Clock(), consecutive_failures=3, cool_down=10.0)
    for _ in range(2):
        b.failed()
        assert b.allow()
    b.failed()
    assert state_of(b) is BreakerState.OPEN
    assert not b.allow()


def test_a_success_resets_the_consecutive_count() -> None:
    b = breaker(Clock(), consecutive_failures=3, window=100)
    for _ in range(10):
        b.failed()
        b.failed()
        b.succeeded()
    assert state_of(b) is BreakerState.CLOSED


def test_opens_on_the_failure_rate_once_the_window_is_full() -> None:
    b = breaker(Clock(), consecutive_failures=100, failure_rate=0.5, window=10)
    for _ in range(4):
        b.succeeded()
        b.failed()
    assert state_of(b) is BreakerState.CLOSED  # 4 of 8: the window is not full yet
    b.succeeded()
    b.failed()
    assert state_of(b) is BreakerState.OPEN  # 5 of 10


def test_half_opens_after_the_cool_down_and_lets_one_probe_through() -> None:
    clock = Clock()
    b = breaker(clock, consecutive_failures=1, cool_down=30.0)
    b.failed()
    clock.now += 29.9
    assert not b.allow()
    clock.now += 0.2
    assert state_of(b) is BreakerState.HALF_OPEN
    assert b.allow()
    assert not b.allow()  # one probe at a time


def test_a_good_probe_closes_a_bad_one_reopens() -> None:
    clock = Clock()
    b = breaker(clock, consecutive_failures=1, cool_down=5.0)
    b.failed()
    clock.now += 5
    assert b.allow()
    b.failed()
    assert state_of(b) is BreakerState.OPEN
    assert not b.allow()  # the cool-down starts again
    clock.now += 5
    assert b.allow()
    b.succeeded()
    assert state_of(b) is BreakerState.CLOSED
    assert b.allow()
    assert b.allow()


def test_half_opens_at_tells_when_the_next_probe_may_go() -> None:
    clock = Clock()
    b = breaker(clock, consecutive_failures=1, cool_down=10.0)
    assert b.half_opens_at is None
    b.failed()
    assert b.half_opens_at == 1010.0
    clock.now = 1010.0
    assert b.allow()
    assert b.half_opens_at is None  # the probe is out: no time to tell until it reports
    b.failed()
    assert b.half_opens_at == 1020.0
