"""Prometheus instruments of the channel deliveries (docs/metrics.md).

`ChannelMetrics` is the dispatcher's `ChannelObserver` (actors/channel_stats.py): every
attempt counts by channel, provider and outcome, with its latency in a histogram, and
fallbacks count apart. At each scrape it reads the rest: queue depth and the age of the
oldest due delivery per channel (one `channel_queue_stats` query), each provider's
breaker state, the sends in flight and the outcomes not stored.

Every series of a configured channel and provider starts at 0 (all outcomes and
reasons, an empty latency histogram), so that a dashboard and an alert see them before
the first send.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import get_args

from aioprometheus.collectors import Counter, Gauge, Histogram, Registry
from aioprometheus.histogram import Histogram as HistogramValues

from actors.channel_dispatch import ChannelDispatcher
from actors.channel_stats import AttemptOutcome, NotAttemptedReason
from storage.areas.channel_deliveries import ChannelDeliveries
from storage.errors import StorageError
from storage.records import now_ms

log = logging.getLogger("pushd.ops.channel_metrics")

# Seconds: an SMTP transaction or a push POST takes milliseconds to a few seconds; the
# top buckets catch the timeouts (10 s by default).
SEND_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ChannelMetrics:
    """The channel instruments, registered in the app's registry."""

    def __init__(self, registry: Registry) -> None:
        self.attempts = Counter(
            "pushd_channel_attempts_total",
            "Sends to a provider, by channel, provider and outcome (sent, transient_error, "
            "permanent_error, address_gone).",
            registry=registry,
        )
        self.send_seconds = Histogram(
            "pushd_channel_send_seconds",
            "Duration of one send to a provider, by channel and provider.",
            registry=registry,
            buckets=SEND_SECONDS_BUCKETS,
        )
        self.fallbacks = Counter(
            "pushd_channel_fallbacks_total",
            "Sends that went to a provider other than the channel's first (its breaker was "
            "open), by channel and the provider used.",
            registry=registry,
        )
        self.unattempted = Counter(
            "pushd_channel_not_attempted_total",
            "Leased deliveries recorded without a send, by channel and reason (no_address: "
            "skipped; circuit_open: every provider's breaker open, queued again).",
            registry=registry,
        )
        self.queue_due = self._gauge(
            registry, "pushd_channel_queue_due", "Deliveries due and not sent yet, by channel."
        )
        self.queue_scheduled = self._gauge(
            registry, "pushd_channel_queue_scheduled", "Deliveries due later, by channel."
        )
        self.queue_sending = self._gauge(
            registry, "pushd_channel_queue_sending", "Deliveries leased for sending, by channel."
        )
        self.oldest_due_seconds = self._gauge(
            registry,
            "pushd_channel_oldest_due_seconds",
            "Age of the oldest delivery due and not sent yet, by channel (0: none waits).",
        )
        self.breaker_state = self._gauge(
            registry,
            "pushd_channel_breaker_state",
            "Circuit breaker of each provider: 0 closed, 1 half-open, 2 open.",
        )
        self.in_flight = self._gauge(
            registry, "pushd_channel_sends_in_flight", "Sends of this node running now."
        )
        self.yielding = self._gauge(
            registry,
            "pushd_channel_yielding_to_inapp",
            "1 while the dispatcher holds sends back because in-app delivery is behind "
            "(channels.yield_backlog), else 0.",
        )
        self.yields = Counter(
            "pushd_channel_yields_total",
            "Times the dispatcher started holding sends back for in-app delivery.",
            registry=registry,
        )
        self.outcomes_dropped = Counter(
            "pushd_channel_outcomes_dropped_total",
            "Send outcomes that could not be stored (their deliveries are sent again once "
            "their lease runs out).",
            registry=registry,
        )
        self._read: Callable[[], None] = lambda: None
        self._queues: ChannelDeliveries | None = None
        self._channels_seen: set[str] = set()
        for gauge in (self.in_flight, self.yielding):
            gauge.set({}, 0)
        for counter in (self.yields, self.outcomes_dropped):
            counter.set({}, 0)

    @staticmethod
    def _gauge(registry: Registry, name: str, doc: str) -> Gauge:
        return Gauge(name, doc, registry=registry)

    # ChannelObserver ----------------------------------------------------------------

    def attempted(
        self, channel: str, provider: str, outcome: AttemptOutcome, seconds: float, fallback: bool
    ) -> None:
        """Count one send (see `ChannelObserver.attempted`)."""
        labels = {"channel": channel, "provider": provider}
        self.attempts.inc({**labels, "outcome": outcome})
        self.send_seconds.observe(labels, seconds)
        if fallback:
            self.fallbacks.inc(labels)

    def not_attempted(self, channel: str, reason: NotAttemptedReason) -> None:
        """Count one delivery recorded without a send."""
        self.unattempted.inc({"channel": channel, "reason": reason})

    # At scrape ----------------------------------------------------------------------

    def read_dispatcher(self, dispatcher: ChannelDispatcher, queues: ChannelDeliveries) -> None:
        """Read the dispatcher's breakers and figures, and the queues in `queues`
        (storage), at each scrape."""
        self._queues = queues
        for health in dispatcher.providers.health():
            self._start_at_zero(health.channel, health.provider)

        def read() -> None:
            for health in dispatcher.providers.health():
                labels = {"channel": health.channel, "provider": health.provider}
                self.breaker_state.set(labels, int(health.state))
            self.in_flight.set({}, dispatcher.in_flight)
            self.outcomes_dropped.set({}, dispatcher.recorder.dropped)
            self.yielding.set({}, int(dispatcher.yielding))
            self.yields.set({}, dispatcher.yields)

        self._read = read

    def _start_at_zero(self, channel: str, provider: str) -> None:
        labels = {"channel": channel, "provider": provider}
        for outcome in get_args(AttemptOutcome):
            self.attempts.set({**labels, "outcome": outcome}, 0)
        self.send_seconds.set_value(labels, HistogramValues(*SEND_SECONDS_BUCKETS))
        self.fallbacks.set(labels, 0)
        for reason in get_args(NotAttemptedReason):
            self.unattempted.set({"channel": channel, "reason": reason}, 0)
        self._zero_queue(channel)
        self.breaker_state.set(labels, 0)

    def _zero_queue(self, channel: str) -> None:
        for gauge in (
            self.queue_due,
            self.queue_scheduled,
            self.queue_sending,
            self.oldest_due_seconds,
        ):
            gauge.set({"channel": channel}, 0)

    async def refresh(self) -> None:
        """Bring the read-at-scrape instruments up to date. A storage that does not
        answer leaves the queue gauges at their last values (and logs why)."""
        self._read()
        if self._queues is None:
            return
        now = now_ms()
        try:
            stats = await self._queues.channel_queue_stats(now=now)
        except StorageError as exc:
            log.warning("channel queue gauges not refreshed: %s", exc)
            return
        seen = set()
        for row in stats:
            labels = {"channel": row.channel}
            seen.add(row.channel)
            self.queue_due.set(labels, row.due)
            self.queue_scheduled.set(labels, row.scheduled)
            self.queue_sending.set(labels, row.sending)
            oldest = 0.0 if row.oldest_due_at is None else max(0, now - row.oldest_due_at) / 1000
            self.oldest_due_seconds.set(labels, oldest)
        for channel in self._channels_seen - seen:  # emptied since the last scrape
            self._zero_queue(channel)
        self._channels_seen |= seen
