"""A circuit breaker per provider: stop sending to a provider that keeps failing, so that
its deliveries go to the next provider of the channel (docs/channels.md, "Fallback").

closed --(N consecutive transient failures, or a failure rate over a window)--> open
open --(cool-down elapsed)--> half-open: one probe send is let through
half-open --(probe succeeds)--> closed; --(probe fails)--> open again, cool-down anew

Only transient failures count: a permanent one (a bad address) says nothing about the
provider's health. The breaker is owned by one channel worker and used from its event
loop only, so it needs no lock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum


class BreakerState(IntEnum):
    """Exported as the gauge value (0 closed, 1 half-open, 2 open)."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    consecutive_failures: int = 5
    """Open after this many transient failures in a row."""
    failure_rate: float = 0.5
    """...or when at least this share of the last `window` outcomes failed..."""
    window: int = 20
    """...once the window is full (a rate over three sends means nothing)."""
    cool_down: float = 30.0
    """Seconds an open breaker waits before letting one probe through."""


class CircuitBreaker:
    """Whether a provider may be sent to now, from the outcomes of its recent sends."""

    def __init__(
        self, settings: BreakerSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._recent: deque[bool] = deque(maxlen=settings.window)  # True = failed
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker whose cool-down has passed reads half-open)."""
        if self._state is BreakerState.OPEN and self._cooled_down():
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def half_opens_at(self) -> float | None:
        """Clock time at which an open breaker lets its next probe through; None when it
        is not open (closed, or half-open with its probe already out)."""
        if self._state is BreakerState.OPEN:
            return self._opened_at + self._settings.cool_down
        return None

    def allow(self) -> bool:
        """May one send go to this provider now? In half-open, only one probe at a time
        is allowed; its outcome must be reported."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probing:
            self._state = BreakerState.HALF_OPEN
            self._probing = True
            return True
        return False

    def succeeded(self) -> None:
        """The provider accepted a message (or refused it permanently: it is healthy)."""
        self._consecutive = 0
        self._recent.append(False)
        if self._state is not BreakerState.CLOSED:
            self._close()

    def failed(self) -> None:
        """A transient failure: a timeout, a 5xx, a refused connection, a 429."""
        self._consecutive += 1
        self._recent.append(True)
        if self._state is BreakerState.HALF_OPEN or self._should_open():
            self._open()

    def _should_open(self) -> bool:
        settings = self._settings
        if self._consecutive >= settings.consecutive_failures:
            return True
        full = len(self._recent) == settings.window
        return full and sum(self._recent) / settings.window >= settings.failure_rate

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._probing = False

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._probing = False
        self._recent.clear()

    def _cooled_down(self) -> bool:
        return self._clock() - self._opened_at >= self._settings.cool_down
