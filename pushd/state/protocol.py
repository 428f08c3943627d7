"""The shared-state seam: small pieces of state every node of a cluster must agree on
(rate-limit budgets, cross-node signals). In-process for the embedded shape, Redis for
the cluster shape; nothing above this seam knows which one it runs on."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import msgspec


class RateDecision(msgspec.Struct, frozen=True):
    """The answer of a rate limiter for one attempt."""

    allowed: bool
    retry_after: float
    """Seconds until the next attempt would be allowed; 0 when this one was allowed."""
    remaining: int
    """Attempts still allowed right now after this one (never negative)."""


SignalHandler = Callable[[bytes], Awaitable[None]]


class StateError(Exception):
    """Base of the shared state's errors; on its own: a misuse (e.g. a bad argument)."""


class StateUnavailableError(StateError):
    """The backend (Redis) cannot be reached, or the state is not started or closed.

    Nothing was counted or published; the caller decides whether to fail open."""


class SharedState(Protocol):
    """Rate limiters and a broadcast channel shared by every node using the same backend.

    Guarantees every backend gives (tests/state/test_contract.py):
    - `take_token` and `hit_window` are atomic per key: concurrent calls from any number
      of nodes never grant more than the budget allows.
    - Keys and channels of one state never see those of a state with another `prefix`.
    - Every call raises `StateUnavailableError` when the backend cannot be reached, before
      `start` and after `close`; nothing is half-counted then.
    - Idle keys cost nothing forever: a bucket that refilled and a window that passed are
      forgotten (Redis: key expiry; in-process: swept as the table grows).
    """

    async def start(self) -> None:
        """Connect and start the listener that feeds `subscribe` handlers.

        A backend that cannot be reached does not make this fail: the listener keeps
        reconnecting in the background and `ping` says when it is back.
        """
        ...

    async def take_token(self, key: str, *, rate: float, burst: int) -> RateDecision:
        """Token bucket named `key`: holds at most `burst` tokens (full when first used),
        refilled at `rate` tokens per second; takes one token if there is one.

        Denied: `retry_after` is the time until one token is back, and nothing is taken.
        `rate` and `burst` must be positive (`StateError` otherwise); a caller that
        wants no limit does not call.
        """
        ...

    async def hit_window(self, key: str, *, limit: int, window: float) -> RateDecision:
        """Count one hit on `key` if fewer than `limit` hits fall in the last `window`
        seconds; a denied hit is not counted.

        The window slides by weighting: the hits of the previous fixed window (windows
        start at multiples of `window` on the backend's clock) count in proportion to how
        much of it the sliding window still covers. It never allows more than `limit` hits
        in one fixed window, so never more than 2 x `limit` in any span of `window`
        seconds; for hits spread over time it is within a few percent of a true sliding
        window, at the cost of two counters per key instead of one timestamp per hit.
        """
        ...

    async def publish(self, channel: str, message: bytes) -> None:
        """Hand `message` to every handler subscribed to `channel` on every node using
        this backend and prefix, this node included.

        At most once: a node that is disconnected when it is published never gets it.
        Messages published one after another (each awaited) by one node reach each
        handler in that order. Returns once the backend accepted the message, not once
        handlers ran.
        """
        ...

    def subscribe(self, channel: str, handler: SignalHandler) -> None:
        """Call `handler(message)` for every message published on `channel` from now on.

        May be called before `start` (effective when `start` returns) or at any time
        after it (effective within about a second: the listener picks it up). Handlers
        of one state run one at a time, in message order, on the listener task: keep them
        short. An exception from a handler is logged and never stops the listener.
        """
        ...

    async def ping(self) -> None:
        """Return if the backend answers and the listener is subscribed; else raise
        `StateUnavailableError` saying what is wrong."""
        ...

    async def close(self) -> None:
        """Stop the listener (a handler call in progress is cancelled) and disconnect.

        Idempotent. Counters kept in Redis stay for the other nodes; in-process ones are
        gone.
        """
        ...
