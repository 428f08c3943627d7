"""What every `SharedState` backend does the same way: the argument checks the protocol
promises (a `StateError` before anything is counted), and how a signal handler's failure
is contained. Used by pushd/state/memory.py and pushd/state/redis.py."""

from __future__ import annotations

import logging

from pushd.state.protocol import SignalHandler, StateError

log = logging.getLogger("pushd.state")


def check_bucket_args(rate: float, burst: int) -> None:
    """Raise `StateError` unless a token bucket of `rate` and `burst` can exist."""
    if not (rate > 0 and burst > 0):
        raise StateError(f"a token bucket needs rate > 0 and burst > 0, not {rate}, {burst}")


def check_window_args(limit: int, window: float) -> None:
    """Raise `StateError` unless a window of `limit` hits per `window` seconds can exist."""
    if not (limit > 0 and window > 0):
        raise StateError(f"a window needs limit > 0 and window > 0, not {limit}, {window}")


async def call_signal_handler(handler: SignalHandler, channel: str, message: bytes) -> None:
    """Run one handler; its failure is logged, never raised into the listener."""
    try:
        await handler(message)
    except Exception:
        log.exception("handler %r for signal channel %r failed", handler, channel)
