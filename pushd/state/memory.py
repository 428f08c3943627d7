"""In-process shared state (`memory://`): the embedded shape has one node, so "shared"
means this process. Same algorithms as the Redis scripts, in Python."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import TypeVar

from pushd.state.backend_common import call_signal_handler, check_bucket_args, check_window_args
from pushd.state.protocol import (
    RateDecision,
    SignalHandler,
    StateError,
    StateUnavailableError,
)

log = logging.getLogger("pushd.state")

# Bounded; overflow policy: the message is dropped and logged. Publishing never waits for
# handlers (as with Redis), and a handler that publishes cannot deadlock on a full queue;
# dropping is within the at-most-once contract.
SIGNAL_QUEUE_SIZE = 10_000
# The tables are swept of idle keys when they have doubled since the last sweep (and are
# at least this big): amortised O(1) per call, memory proportional to active keys.
MIN_SWEEP_SIZE = 4096

_Entry = TypeVar("_Entry")


def take_from_bucket(
    state: tuple[float, float] | None, now: float, rate: float, burst: int
) -> tuple[RateDecision, tuple[float, float]]:
    """Token bucket step: `state` is (tokens, updated_at); None is a full bucket."""
    tokens, updated_at = state if state is not None else (float(burst), now)
    tokens = min(float(burst), tokens + max(0.0, now - updated_at) * rate)
    if tokens >= 1:
        tokens -= 1
        return RateDecision(True, 0.0, math.floor(tokens)), (tokens, now)
    return RateDecision(False, (1 - tokens) / rate, 0), (tokens, now)


def hit_weighted_window(
    state: tuple[int, int, int] | None, now: float, limit: int, window: float
) -> tuple[RateDecision, tuple[int, int, int]]:
    """Weighted window step: `state` is (window index, hits in it, hits in the one before)."""
    index = math.floor(now / window)
    current = previous = 0
    if state is not None:
        if state[0] == index:
            current, previous = state[1], state[2]
        elif state[0] == index - 1:
            previous = state[1]
    elapsed = now / window - index  # fraction of the current window gone by
    estimate = previous * (1 - elapsed) + current
    if estimate + 1 <= limit:
        remaining = math.floor(limit - estimate - 1)
        return RateDecision(True, 0.0, max(0, remaining)), (index, current + 1, previous)
    if current + 1 > limit:
        # Only the next window can help, once enough of this one's hits slid out.
        wait = (index + 1 - now / window) + max(0.0, 1 - (limit - 1) / current)
    else:
        # previous > 0 here: the weight of the previous window's hits must shrink.
        wait = max(0.0, (1 - (limit - 1 - current) / previous) - elapsed)
    return RateDecision(False, wait * window, 0), (index, current, previous)


def _sweep(table: dict[str, _Entry], idle: Callable[[_Entry], bool]) -> None:
    for key in [key for key, entry in table.items() if idle(entry)]:
        del table[key]


class MemoryState:
    """`SharedState` in this process: dicts for the limiters, a bounded queue and one
    listener task for the signals."""

    def __init__(self, url: str = "memory://", *, prefix: str = "pushd:") -> None:
        del url, prefix  # nothing else shares this process's dicts
        # key -> (tokens, updated_at, full_at): once full again it is the same as no entry.
        self._buckets: dict[str, tuple[float, float, float]] = {}
        # key -> (window index, hits in it, hits in the one before, window length)
        self._windows: dict[str, tuple[int, int, int, float]] = {}
        self._sweep_buckets_at = MIN_SWEEP_SIZE
        self._sweep_windows_at = MIN_SWEEP_SIZE
        self._handlers: dict[str, list[SignalHandler]] = {}
        self._signals: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(SIGNAL_QUEUE_SIZE)
        self._listener: asyncio.Task[None] | None = None
        self._closed = False
        self.dropped_signals = 0

    async def start(self) -> None:
        """Start the listener task."""
        if self._listener is not None or self._closed:
            raise StateError("a shared state starts once; create a new one")
        self._listener = asyncio.create_task(self._listen(), name="state-signals")

    def _check_running(self) -> None:
        if self._listener is None or self._closed:
            raise StateUnavailableError("the in-process state is not started, or closed")

    async def take_token(self, key: str, *, rate: float, burst: int) -> RateDecision:
        check_bucket_args(rate, burst)
        self._check_running()
        now = time.monotonic()
        entry = self._buckets.get(key)
        decision, (tokens, updated_at) = take_from_bucket(
            entry[:2] if entry is not None else None, now, rate, burst
        )
        self._buckets[key] = (tokens, updated_at, now + (burst - tokens) / rate)
        if len(self._buckets) >= self._sweep_buckets_at:
            _sweep(self._buckets, lambda entry: entry[2] <= now)
            self._sweep_buckets_at = max(MIN_SWEEP_SIZE, 2 * len(self._buckets))
        return decision

    async def hit_window(self, key: str, *, limit: int, window: float) -> RateDecision:
        check_window_args(limit, window)
        self._check_running()
        now = time.monotonic()
        entry = self._windows.get(key)
        decision, (index, current, previous) = hit_weighted_window(
            entry[:3] if entry is not None else None, now, limit, window
        )
        self._windows[key] = (index, current, previous, window)
        if len(self._windows) >= self._sweep_windows_at:
            # Once the window after its newest one is over, an entry counts nothing.
            _sweep(self._windows, lambda entry: (entry[0] + 2) * entry[3] <= now)
            self._sweep_windows_at = max(MIN_SWEEP_SIZE, 2 * len(self._windows))
        return decision

    async def publish(self, channel: str, message: bytes) -> None:
        self._check_running()
        try:
            self._signals.put_nowait((channel, message))
        except asyncio.QueueFull:
            self.dropped_signals += 1
            log.warning(
                "signal queue full (%d): dropped a message on %r", SIGNAL_QUEUE_SIZE, channel
            )

    def subscribe(self, channel: str, handler: SignalHandler) -> None:
        self._handlers.setdefault(channel, []).append(handler)

    async def _listen(self) -> None:
        while True:
            channel, message = await self._signals.get()
            for handler in list(self._handlers.get(channel, ())):
                await call_signal_handler(handler, channel, message)

    async def ping(self) -> None:
        self._check_running()

    async def close(self) -> None:
        self._closed = True
        if self._listener is not None:
            self._listener.cancel()
            # wait(), not await: our own cancellation still propagates.
            await asyncio.wait([self._listener])
