"""What the channel dispatcher reports for metrics, without knowing the metrics library.

The edge (pushd/ops/metrics.py) implements `ChannelObserver` with its Prometheus
instruments (a counter by channel, provider and outcome; a latency histogram; a fallback
counter), or reads the counts of `ChannelStats`, the default. Breaker states are read
at scrape from `ProviderPool.health()`; queue depth and age from storage
(`channel_queue_stats`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, Protocol

AttemptOutcome = Literal["sent", "transient_error", "permanent_error", "address_gone"]
"""How one call to a provider ended (the `outcome` label). A transient error that used
up the retries is still `transient_error`: the delivery's status says it failed."""

NotAttemptedReason = Literal["no_address", "circuit_open"]
"""Why a leased delivery was not handed to any provider: it has no address (recorded
skipped), or every provider of its channel has its breaker open (queued again)."""


class ChannelObserver(Protocol):
    """Told about every leased delivery, from the dispatcher's event loop. Its methods
    must return quickly and must not raise (an exception would be logged and the
    figure lost, never the delivery)."""

    def attempted(
        self, channel: str, provider: str, outcome: AttemptOutcome, seconds: float, fallback: bool
    ) -> None:
        """One send through `provider` ended after `seconds`; `fallback`: that provider
        is not the first of its channel (the first's breaker was open)."""
        ...

    def not_attempted(self, channel: str, reason: NotAttemptedReason) -> None:
        """A leased delivery was recorded without calling a provider."""
        ...


@dataclass(slots=True)
class SendLatency:
    """Count, sum and maximum of send durations, in seconds (a summary, not a histogram:
    an observer that needs buckets implements `ChannelObserver` itself)."""

    count: int = 0
    total: float = 0.0
    longest: float = 0.0

    def observe(self, seconds: float) -> None:
        """Add one send's duration."""
        self.count += 1
        self.total += seconds
        self.longest = max(self.longest, seconds)


@dataclass(slots=True)
class ChannelStats:
    """The default observer: monotonic counts since the dispatcher was made."""

    attempts: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(channel, provider, outcome) -> sends."""
    fallbacks: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(channel, provider) -> sends that went to a provider other than the channel's first."""
    not_attempted_counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(channel, reason) -> leased deliveries recorded without a send."""
    latency: dict[tuple[str, str], SendLatency] = field(default_factory=dict)
    """(channel, provider) -> send durations."""

    def attempted(
        self, channel: str, provider: str, outcome: AttemptOutcome, seconds: float, fallback: bool
    ) -> None:
        """Count one send (see `ChannelObserver.attempted`)."""
        self.attempts[channel, provider, outcome] += 1
        if fallback:
            self.fallbacks[channel, provider] += 1
        self.latency.setdefault((channel, provider), SendLatency()).observe(seconds)

    def not_attempted(self, channel: str, reason: NotAttemptedReason) -> None:
        """Count one delivery recorded without a send."""
        self.not_attempted_counts[channel, reason] += 1
