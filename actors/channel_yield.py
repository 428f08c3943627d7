"""When the channel dispatcher yields the process to in-app delivery (docs/channels.md,
"In-app first under overload").

Channel sends run on the event loop that serves the sockets, and one costs several
in-app notifications' worth of CPU (a web push: key agreement, encryption, TLS). Under
overload the dispatcher runs only a trickle of sends, and the rest, safe in storage, go
out once the burst is over. Two signs tell it that the process is overloaded:

- the in-app backlog: requests waiting for their plan read or their commit
  (`inapp_backlog()`), from `yield_backlog` of them;
- the event loop's turn: at max load most requests wait in their sockets for the loop,
  not in a queue the backlog counts, so the backlog alone seldom reaches its threshold
  (docs/benchmarks.md, "In-app delivery with a push step"). Before each lease round the
  dispatcher measures how long the loop takes to come back to it; from `yield_lag`
  seconds (smoothed over rounds), with in-app work waiting, it yields too.

The dispatcher's own sends slow the loop as well: without in-app work waiting, the lag
never starts a yield, so a channel-only load keeps its full concurrency.

Hysteresis, so that a burst does not flip the dispatcher at every round: a yield that
started goes on while the backlog is at least half its threshold or the smoothed lag at
least half of `yield_lag`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

# Weight of the newest turn in the smoothed lag: one slow turn (a GC pass, a big
# commit) does not start a yield, a few in a row do.
LAG_WEIGHT = 0.5


class InappFirst:
    """Decides, before each lease round, whether the dispatcher yields (`check`).

    `inapp_backlog`: in-app work waiting in this process (None: never yield).
    `yield_backlog`: backlog from which to yield (0: the backlog alone never does).
    `yield_lag`: seconds of loop turn from which to yield while in-app work waits (0:
    the lag never does)."""

    def __init__(
        self,
        inapp_backlog: Callable[[], int] | None,
        *,
        yield_backlog: int,
        yield_lag: float,
    ) -> None:
        self._inapp_backlog = inapp_backlog
        self._yield_backlog = yield_backlog
        self._yield_lag = yield_lag
        self._lag = 0.0
        self.yielding = False
        """Whether sends are held back for in-app delivery now (a gauge)."""
        self.yields = 0
        """Times a yield started (a counter)."""

    @property
    def lag(self) -> float:
        """The smoothed loop turn, in seconds (0 until measured)."""
        return self._lag

    async def check(self) -> bool:
        """Measure the loop's turn (when the lag counts), then `decide`."""
        if self._inapp_backlog is None:
            return False
        if self._yield_lag > 0:
            self.note_turn(await _loop_turn())
        return self.decide(self._inapp_backlog())

    def note_turn(self, seconds: float) -> None:
        """Fold one measured loop turn into the smoothed lag."""
        self._lag += LAG_WEIGHT * (seconds - self._lag)

    def decide(self, waiting: int) -> bool:
        """Whether to yield, with `waiting` in-app requests and the lag noted so far."""
        by_backlog, by_lag = self._yield_backlog > 0, self._yield_lag > 0
        if self.yielding:
            self.yielding = (by_backlog and waiting * 2 >= self._yield_backlog) or (
                by_lag and self._lag * 2 >= self._yield_lag
            )
        elif (by_backlog and waiting >= self._yield_backlog) or (
            by_lag and waiting > 0 and self._lag >= self._yield_lag
        ):
            self.yielding = True
            self.yields += 1
        return self.yielding


async def _loop_turn() -> float:
    """Seconds one whole turn of the loop takes now: what runs between two turns of a
    task that lets the loop go twice (the first time only puts it at the head of a
    turn), i.e. how long any ready callback, a socket's data included, waits."""
    await asyncio.sleep(0)
    # Not loop.time(): uvloop's advances in whole milliseconds, once per turn.
    started = time.perf_counter()
    await asyncio.sleep(0)
    return time.perf_counter() - started
