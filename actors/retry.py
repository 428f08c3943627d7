"""One backoff for every retry loop in pushd: exponential, with full jitter, capped.

Full jitter (a uniform draw between 0 and the exponential bound) spreads the retries of
many clients that failed together, so that a broker or database that comes back is not
hit by all of them in the same instant (AWS Architecture Blog, "Exponential Backoff And
Jitter"). A provider's or server's own `Retry-After` is a floor, never shortened.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass


async def wait_until_set(event: asyncio.Event, timeout: float) -> bool:  # noqa: ASYNC109
    """Wait until `event` is set (True) or `timeout` seconds passed (False).

    Not `asyncio.wait_for(event.wait(), timeout)`: on Python 3.11, when the event is set
    in the same loop turn as the waiting task is cancelled, `wait_for` returns the
    result and the cancellation is lost, so a loop built on it goes on running after
    its owner cancelled it, and the owner's shutdown waits for ever (seen in the fan-out
    supervisor when a finishing send set its wake-up as the app closed).
    `asyncio.timeout` keeps the cancellation."""
    if event.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, timeout)):
            await event.wait()
    return event.is_set()


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays for attempt 0, 1, 2, ...: uniform in [0, min(cap, base * factor**attempt)]."""

    base: float = 0.1
    """Upper bound of the first delay, in seconds."""
    cap: float = 30.0
    """No delay is longer than this, whatever the attempt."""
    factor: float = 2.0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base or self.factor < 1:
            raise ValueError(
                f"Backoff needs 0 < base <= cap and factor >= 1 (got base={self.base}, "
                f"cap={self.cap}, factor={self.factor})"
            )

    def bound(self, attempt: int) -> float:
        """The largest delay `attempt` (0 for the first retry) can draw."""
        # Exponent clamped so that a loop that has retried for days does not overflow.
        return min(self.cap, self.base * self.factor ** min(max(attempt, 0), 64))

    def delay(
        self, attempt: int, *, floor: float = 0.0, draw: Callable[[], float] = random.random
    ) -> float:
        """Seconds to wait before retry number `attempt`; at least `floor` (Retry-After)."""
        return max(floor, self.bound(attempt) * draw())

    async def wait(
        self, attempt: int, *, stop: asyncio.Event | None = None, floor: float = 0.0
    ) -> bool:
        """Sleep before retry number `attempt`. Returns False at once when `stop` is (or
        becomes) set, so that a shutdown never waits out a backoff; True after the delay.
        Cancellation propagates like any sleep."""
        pause = self.delay(attempt, floor=floor)
        if stop is None:
            await asyncio.sleep(pause)
            return True
        return not await wait_until_set(stop, pause)
