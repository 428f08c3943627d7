"""The providers of each channel, in fallback order, with a circuit breaker and a bound
on concurrent sends each (docs/channels.md, "Fallback").

A delivery goes to the first provider of its channel whose breaker allows it; the later
ones are fallbacks, used only while the ones before them are open (never because the
first is busy: a busy provider is waited for). The dispatcher leases no more deliveries
for a channel than `free_capacity` says can start at once, so that a leased delivery
does not sit waiting for a slot while its lease runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from actors.channel_sender import ChannelSender
from actors.circuit_breaker import BreakerSettings, BreakerState, CircuitBreaker

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One configured provider, as the edge builds it from config."""

    sender: ChannelSender
    concurrency: int = 20
    """Sends to this provider at once (its connection pool size is a good value)."""
    breaker: BreakerSettings = field(default_factory=BreakerSettings)


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    """A provider's state for the metrics gauges and the ops console."""

    channel: str
    provider: str
    state: BreakerState
    in_flight: int
    concurrency: int


class Provider:
    """One provider at run time: its sender, breaker and send slots."""

    def __init__(self, spec: ProviderSpec, rank: int, clock: Callable[[], float]) -> None:
        self.sender = spec.sender
        self.channel = spec.sender.channel
        self.name = spec.sender.provider
        self.rank = rank
        """0 for the channel's first provider; a send through a later one is a fallback."""
        self.concurrency = spec.concurrency
        self.breaker = CircuitBreaker(spec.breaker, clock=clock)
        self._slots = asyncio.Semaphore(spec.concurrency)
        self.assigned = 0
        """Deliveries chosen for this provider whose send has not ended (waiting for a
        slot or sending)."""
        self.in_flight = 0
        """Sends holding a slot now."""

    @property
    def is_fallback(self) -> bool:
        """Whether sends through this provider are recorded as fallbacks."""
        return self.rank > 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the provider's `concurrency` send slots (waits when all are taken)."""
        async with self._slots:
            self.in_flight += 1
            try:
                yield
            finally:
                self.in_flight -= 1

    def release(self) -> None:
        """The send of a delivery `ProviderPool.choose` assigned here has ended."""
        self.assigned -= 1

    def startable(self) -> int | None:
        """How many more sends could start here now, or None when this provider takes
        none and the next one of the channel would be chosen instead."""
        state = self.breaker.state
        if state is BreakerState.OPEN:
            return None
        if state is BreakerState.HALF_OPEN:
            # One probe, and only when nothing of this provider is still out (a send
            # still running may be the probe, which `allow` would refuse to double).
            return None if self.assigned else 1
        return max(0, self.concurrency - self.assigned)


class ProviderPool:
    """Every configured provider, grouped by channel in the configured order.

    Used from one event loop only (the breakers have no lock). The pool owns the
    senders: `aclose` closes them.
    """

    def __init__(
        self, specs: Sequence[ProviderSpec], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._by_channel: dict[str, list[Provider]] = {}
        for spec in specs:
            if spec.concurrency < 1:
                raise ValueError(
                    f"provider {spec.sender.provider!r} of channel {spec.sender.channel!r}: "
                    f"concurrency must be >= 1 (got {spec.concurrency})"
                )
            providers = self._by_channel.setdefault(spec.sender.channel, [])
            if any(p.name == spec.sender.provider for p in providers):
                raise ValueError(
                    f"two providers of channel {spec.sender.channel!r} are named "
                    f"{spec.sender.provider!r}: give each a unique name"
                )
            providers.append(Provider(spec, len(providers), clock))

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels with at least one provider (the only ones worth leasing for)."""
        return tuple(self._by_channel)

    def providers_of(self, channel: str) -> Sequence[Provider]:
        """The channel's providers in fallback order (empty for an unknown channel)."""
        return self._by_channel.get(channel, ())

    def free_capacity(self, channel: str) -> int:
        """How many deliveries of `channel` could start sending now: the free slots of
        the provider `choose` would pick, plus one probe per half-open provider before it."""
        capacity = 0
        for provider in self.providers_of(channel):
            startable = provider.startable()
            if startable is None:
                continue
            capacity += startable
            if provider.breaker.state is BreakerState.CLOSED:
                break
        return capacity

    def choose(self, channel: str) -> Provider | None:
        """The first provider of `channel` whose breaker allows a send, now assigned that
        send (call `release` when it ends, and report its outcome to the breaker); None
        when every breaker is open."""
        for provider in self.providers_of(channel):
            if provider.breaker.allow():
                provider.assigned += 1
                return provider
        return None

    def busy(self, channel: str) -> bool:
        """Whether sends of `channel` are under way (their end frees capacity)."""
        return any(provider.assigned for provider in self.providers_of(channel))

    def reopens_in(self, channel: str) -> float:
        """Seconds until a provider of `channel` may take a send again, when `choose`
        found none: until the soonest half-open time, or 0 when one is half-open with
        its probe out (the probe may close it at any moment)."""
        now = self._clock()
        times = [provider.breaker.half_opens_at for provider in self.providers_of(channel)]
        return max(0.0, min((now if at is None else at for at in times), default=now) - now)

    def health(self) -> list[ProviderHealth]:
        """Every provider's breaker state and load, channel by channel."""
        return [
            ProviderHealth(p.channel, p.name, p.breaker.state, p.in_flight, p.concurrency)
            for providers in self._by_channel.values()
            for p in providers
        ]

    async def aclose(self) -> None:
        """Close every sender; one that raises is logged and the others still closed."""
        for providers in self._by_channel.values():
            for provider in providers:
                try:
                    await provider.sender.aclose()
                except Exception:
                    log.exception(
                        "closing provider %r of channel %r failed", provider.name, provider.channel
                    )
