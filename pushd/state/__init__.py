"""Shared state: rate-limit budgets and cross-node signals.

`memory://` keeps them in this process (embedded shape); `redis://` (or `rediss://`) in
Redis, so that they hold across every node of a cluster.
"""

from __future__ import annotations

from pushd.state.protocol import (
    RateDecision,
    SharedState,
    SignalHandler,
    StateError,
    StateUnavailableError,
)
from storage.backend_urls import backend_class

__all__ = [
    "RateDecision",
    "SharedState",
    "SignalHandler",
    "StateError",
    "StateUnavailableError",
    "open_state",
]

# URL scheme -> backend. Drivers are imported only when their scheme is used.
_BACKENDS = {
    "memory": "pushd.state.memory:MemoryState",
    "redis": "pushd.state.redis:RedisState",
    "rediss": "pushd.state.redis:RedisState",
    "unix": "pushd.state.redis:RedisState",
}


def open_state(url: str, *, prefix: str = "pushd:") -> SharedState:
    """Build the backend named by the URL's scheme (not yet connected: call `start`).

    Every key and channel is put under `prefix`, so several deployments (or test runs)
    can share one Redis without seeing each other.
    """
    backend = backend_class(url, _BACKENDS, setting="state.url", error=StateError)
    state: SharedState = backend(url, prefix=prefix)
    return state
