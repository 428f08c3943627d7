"""Rate limits and socket quotas: per API key, per source of requests without a valid
key, per recipient and channel, per user's sockets. Budgets live in the shared state
(`pushd/state`), so with Redis they hold across every node; the socket quota is counted
per node.

While the shared state is unavailable, limits are not enforced: requests go through and
a warning is logged (at most every `WARN_EVERY_SECONDS`). Refusing every request because
the limiter's store is down would turn a Redis outage into an API outage; the health
check reports the outage instead.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from pushd.config.settings import LimitsConfig, parse_rate
from pushd.state import RateDecision, SharedState, StateUnavailableError

log = logging.getLogger("pushd.access.rate_limits")

WARN_EVERY_SECONDS = 30.0


class RateLimitedError(Exception):
    """A budget is spent; `retry_after` seconds (whole, rounded up) until it allows again."""

    def __init__(self, message: str, *, retry_after: float, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = max(1, math.ceil(retry_after))
        self.field = field


class _FailOpen:
    """Decides what a limiter does when the shared state cannot be reached: let the
    attempt through, and say so in the log now and then (not once per request)."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._warned_at = -math.inf

    def unavailable(self, error: StateUnavailableError) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = now
            log.warning("%s not enforced: shared state unavailable: %s", self._what, error)


def client_network(remote: str | None) -> str:
    """Who a request without a valid key is counted as: its IPv4 address, or the /64
    network of its IPv6 address (a host usually holds a whole /64, so per address it
    would get a fresh budget for every address it makes up); "unknown" without one."""
    if remote is None:
        return "unknown"
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote  # not an IP peer (a Unix socket): one source
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class _TokenBuckets:
    """A token bucket per name in the shared state: `rate` per second, `burst` at once;
    0 for either turns it off."""

    def __init__(self, state: SharedState, *, rate: float, burst: int, what: str) -> None:
        self._state = state
        self.rate = rate
        self.burst = burst
        self._fail_open = _FailOpen(what)

    @property
    def enabled(self) -> bool:
        return self.rate > 0 and self.burst > 0

    async def take(self, name: str) -> RateDecision | None:
        """Spend one token of `name`'s bucket. None: no limit, or not enforced (the
        shared state is unavailable)."""
        if not self.enabled:
            return None
        try:
            return await self._state.take_token(name, rate=self.rate, burst=self.burst)
        except StateUnavailableError as exc:
            self._fail_open.unavailable(exc)
            return None


class ApiKeyLimiter:
    """A token bucket per API key: `rate` requests per second, `burst` at once."""

    def __init__(self, state: SharedState, *, rate: float, burst: int) -> None:
        self._buckets = _TokenBuckets(state, rate=rate, burst=burst, what="API key rate limit")
        self.rejected = 0
        """Requests refused (metrics)."""

    @property
    def enabled(self) -> bool:
        return self._buckets.enabled

    async def check(self, key_id: str) -> None:
        """Spend one request of this key's budget; raise `RateLimitedError` if spent."""
        decision = await self._buckets.take(f"key:{key_id}")
        if decision is not None and not decision.allowed:
            self.rejected += 1
            raise RateLimitedError(
                f"API key {key_id} is over its rate limit of {self._buckets.rate:g} "
                f"requests/s (bursts of {self._buckets.burst}); slow down and retry after "
                "Retry-After seconds",
                retry_after=decision.retry_after,
            )


class UnauthenticatedLimiter:
    """A token bucket per source (`client_network`) for requests that fail
    authentication: it is spent before such a request is answered or audited, so that
    requests without a valid key (none, a wrong one, a revoked one) cannot load the
    server or grow the audit trail at will. Requests with a valid key never spend it."""

    def __init__(self, state: SharedState, *, rate: float, burst: int) -> None:
        self._buckets = _TokenBuckets(
            state, rate=rate, burst=burst, what="rate limit of requests without a valid API key"
        )
        self.rejected = 0
        """Requests refused (metrics)."""

    async def check(self, source: str) -> None:
        """Spend one failed request of `source`; raise `RateLimitedError` if spent."""
        decision = await self._buckets.take(f"unauth:{source}")
        if decision is not None and not decision.allowed:
            self.rejected += 1
            raise RateLimitedError(
                "too many requests without a valid API key from this address (at most "
                f"{self._buckets.rate:g}/s, bursts of {self._buckets.burst}): send a valid "
                "key as `Authorization: Bearer <key>`, and retry after Retry-After seconds",
                retry_after=decision.retry_after,
            )


@dataclass(frozen=True)
class RecipientRate:
    """At most `limit` notifications per `window` seconds to one user on one channel."""

    limit: int
    window: float
    text: str
    """As configured, e.g. "600/hour", for messages."""


class RecipientLimiter:
    """At most N notifications per user per channel per window (e.g. "600/hour" in-app,
    "10/hour" SMS). Any channel's sender calls `check` before sending; a channel without
    a configured rate has no limit."""

    def __init__(self, state: SharedState, per_channel: Mapping[str, str]) -> None:
        self._state = state
        self._rates = {
            channel: RecipientRate(*parse_rate(text), text) for channel, text in per_channel.items()
        }
        self._fail_open = _FailOpen("per-recipient rate limit")
        self.rejected = 0
        """Notifications refused (metrics)."""

    def rate(self, channel: str) -> RecipientRate | None:
        """The configured rate of `channel`, or None when it has no limit."""
        return self._rates.get(channel)

    async def check(self, user_id: str, channel: str) -> RateDecision | None:
        """Count one notification to `user_id` on `channel`; raise `RateLimitedError`
        (naming the user) when its budget is spent. None: the channel has no limit, or
        the shared state is unavailable (not enforced)."""
        rate = self._rates.get(channel)
        if rate is None:
            return None
        try:
            decision = await self._state.hit_window(
                f"rcpt:{channel}:{user_id}", limit=rate.limit, window=rate.window
            )
        except StateUnavailableError as exc:
            self._fail_open.unavailable(exc)
            return None
        if not decision.allowed:
            self.rejected += 1
            raise RateLimitedError(
                f"user {user_id} already got the most {channel} notifications allowed "
                f"({rate.text}); retry after Retry-After seconds",
                retry_after=decision.retry_after,
                field="user_id",
            )
        return decision


class SocketQuota:
    """Open WebSockets per user on this node, at most `per_user` (0: no limit).

    Per node, not cluster-wide: a count in Redis would stay high forever for the users of
    a node that crashed, locking them out; per node, a client bug still cannot take more
    than `per_user` sockets of any one node.
    """

    def __init__(self, per_user: int) -> None:
        self._per_user = per_user
        self._open: dict[str, int] = {}
        self.rejected = 0
        """Sockets and streams refused for being over the quota (metrics)."""

    @property
    def per_user(self) -> int:
        return self._per_user

    def acquire(self, user_id: str) -> bool:
        """Count one more socket for the user; False (and nothing counted) if at quota."""
        count = self._open.get(user_id, 0)
        if self._per_user and count >= self._per_user:
            self.rejected += 1
            return False
        self._open[user_id] = count + 1
        return True

    def release(self, user_id: str) -> None:
        """Forget one socket counted by `acquire`."""
        count = self._open.get(user_id, 0) - 1
        if count > 0:
            self._open[user_id] = count
        else:
            self._open.pop(user_id, None)


@dataclass(frozen=True)
class Limits:
    """Every limiter of one app (`app[LIMITS]`)."""

    api_keys: ApiKeyLimiter
    unauthenticated: UnauthenticatedLimiter
    recipients: RecipientLimiter
    sockets: SocketQuota
    config: LimitsConfig

    def rejections(self) -> dict[str, int]:
        """Refusals so far, by limit name (the `limit` label of the metrics)."""
        return {
            "api_key": self.api_keys.rejected,
            "unauthenticated": self.unauthenticated.rejected,
            "per_recipient": self.recipients.rejected,
            "sockets_per_user": self.sockets.rejected,
        }

    @classmethod
    def build(cls, state: SharedState, config: LimitsConfig) -> Limits:
        return cls(
            api_keys=ApiKeyLimiter(state, rate=config.api_key_rate, burst=config.api_key_burst),
            unauthenticated=UnauthenticatedLimiter(
                state, rate=config.unauthenticated_rate, burst=config.unauthenticated_burst
            ),
            recipients=RecipientLimiter(state, config.per_recipient),
            sockets=SocketQuota(config.max_sockets_per_user),
            config=config,
        )
