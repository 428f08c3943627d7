"""Prometheus metrics at `GET /metrics` (API key of any role), via aioprometheus.

Every name is listed in docs/metrics.md (tests/ops/test_metrics.py and the real
Prometheus of tests/ops/test_prometheus.py hold the two together). Two kinds of figures:
instruments this module's callers increment or observe (`accepted`, `mailbox_handoffs`,
`connections`, the HTTP middleware of pushd/ops/http_metrics.py, the commit and
delivery histograms), and figures their owner keeps itself (the actor runtime and the
storage backends may not import this library; the audit writer, the limiters and the
cursor recorder count in their own loops), which are read into their instrument at each
scrape (`read_at_scrape`, `read_labelled_at_scrape`).

Label values always come from a closed set (route templates, close codes, gap reasons,
limit names, configured channels and providers), never from a request's path or a user.
Series whose label values are known up front start at 0, so that a dashboard sees them
before the first event.

`hot_path=False` (setting `metrics.hot_path`) leaves out the instruments paid per
request, per commit and per frame, to measure their cost (bench/deliver.py
`--no-hot-path-metrics`): the HTTP series never appear, the others stay at 0.
"""

from __future__ import annotations

import bisect
import functools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import msgspec
from aiohttp import web
from aioprometheus.collectors import Counter, Gauge, Histogram, Registry
from aioprometheus.histogram import Histogram as HistogramValues
from aioprometheus.renderer import render

from actors.runtime import ActorSystem
from actors.transport import CloseCode
from actors.user_mailbox import UserMailboxStats
from pushd.bus import Bus, BusError, BusMessage, MessageHandler
from pushd.ops.channel_metrics import ChannelMetrics
from storage.records import NotificationRecord

Labels = dict[str, str]
LabelledReading = Callable[[], Iterable[tuple[Labels, float]]]

# Seconds. In-app delivery and API answers take milliseconds; the top buckets catch a
# stalled node (a notification replayed after a reconnect is not observed, see
# `frame_sent`).
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
# Notifications per commit transaction: 1 when idle, up to ingest.max_batch (plus one
# bulk request's group) under load.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)

GAP_REASONS = ("not_retained", "expired")
STORAGE_ERROR_KINDS = ("unavailable", "conflict", "rejected")
RATE_LIMITS = ("api_key", "unauthenticated", "per_recipient", "sockets_per_user")
COMMITTERS = ("ingest", "scheduler")

# What every `notification` frame starts with (msgspec writes the tag first).
_NOTIFICATION_FRAME = b'{"type":"notification"'


class _Created(msgspec.Struct):
    created_at: datetime


_created_decoder = msgspec.json.Decoder(_Created)


@runtime_checkable
class ReportsUsage(Protocol):
    """A storage backend that reports its connections and errors
    (storage/sql/engine.py `SqlEngine.usage`)."""

    def usage(self) -> Any: ...


class FastCounter:
    """A label-less counter for the hot path: a plain int, copied into its registry
    counter at each scrape. aioprometheus's `inc` looks its labels up in a dict keyed by
    them, about 1.5 µs a call; several such calls per notification showed as several
    per cent of max throughput."""

    __slots__ = ("_counter", "value")

    def __init__(self, counter: Counter) -> None:
        self._counter = counter
        self.value = 0

    def inc(self, _labels: Labels) -> None:
        self.value += 1

    def add(self, _labels: Labels, amount: int) -> None:
        self.value += amount

    def fold(self) -> None:
        self._counter.set({}, self.value)


class FastHistogram:
    """One label set of a histogram for the hot path: a count per bucket found by
    bisection, folded into its registry histogram (cumulative, as exported) at each
    scrape, instead of aioprometheus's label lookup and walk over every bucket."""

    __slots__ = ("_bounds", "_counts", "_sum", "_values")

    def __init__(self, values: HistogramValues) -> None:
        self._values = values
        self._bounds = list(values.buckets)  # ends with +Inf
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, _labels: Labels, value: float) -> None:
        # aioprometheus's rule: a value counts in every bucket whose bound is >= it.
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def fold(self) -> None:
        running = 0
        for bound, count in zip(self._bounds, self._counts, strict=True):
            running += count
            self._values.buckets[bound] = running
        self._values.observations = running
        self._values.sum = self._sum


class Metrics:
    """This process's instruments, in a registry of their own (several apps can share a
    process in tests without colliding)."""

    def __init__(self, *, hot_path: bool = True) -> None:
        self.started_at = time.monotonic()
        self.hot_path = hot_path
        """Whether the per-request, per-commit and per-frame instruments are used."""
        self.registry = Registry()
        self._readings: list[Callable[[], None]] = []
        self.accepted = self._fast_counter(
            "pushd_notifications_accepted_total", "Notifications committed and answered 202."
        )
        self.mailbox_handoffs = self._fast_counter(
            "pushd_mailbox_handoffs_total",
            "Bus messages handed to a local user mailbox (one per user with a live "
            "mailbox here, whatever its number of sockets; not frames written to sockets).",
        )
        self.connections = self._gauge(
            "pushd_websocket_connections",
            "Open, authenticated WebSockets and Server-Sent Events streams.",
        )
        self.actors = self._gauge("pushd_mailbox_actors", "Live per-user mailbox actors.")
        self.queued_messages = self._gauge(
            "pushd_mailbox_queued_messages", "Messages waiting in the user mailboxes."
        )
        self.actors_started = self._counter(
            "pushd_mailbox_actors_started_total", "User mailbox actors started."
        )
        self.actors_passivated = self._counter(
            "pushd_mailbox_actors_passivated_total",
            "User mailbox actors stopped after idling (for good without sockets, parked "
            "with them).",
        )
        self.messages_processed = self._counter(
            "pushd_mailbox_messages_processed_total",
            "Messages user mailboxes handled (deliveries, sockets attached and detached).",
        )
        self.actor_restarts = self._counter(
            "pushd_mailbox_actor_restarts_total",
            "Times a user mailbox failed to handle a message and was restarted to retry it.",
        )
        self.dead_letters = self._counter(
            "pushd_mailbox_dead_letters_total",
            "Messages a user mailbox gave up on after its last attempt (the user's sockets "
            "are closed so that their clients resume).",
        )
        self.sockets_dropped = self._counter(
            "pushd_mailbox_sockets_dropped_total",
            "Sockets a user mailbox dropped because they refused a frame (send queue full: "
            "a slow consumer, or the socket was closing).",
        )
        self.audit_records_not_stored = self._counter(
            "pushd_audit_records_not_stored_total",
            "Audit records storage refused even after retries, written to the log instead.",
        )
        self.audit_queue_depth = self._gauge(
            "pushd_audit_queue_depth", "Audit records waiting to be written to storage."
        )
        self.cursor_flush_failures = self._counter(
            "pushd_cursor_flush_failures_total",
            "Cursor writes storage refused (the cursors are kept for the next flush).",
        )
        self._http_instruments()
        self._ingest_instruments()
        self._stream_instruments()
        self._bus_instruments()
        self._storage_instruments()
        self.rate_limited = self._counter(
            "pushd_rate_limited_total",
            "Requests, notifications and sockets refused by a limit, by limit (api_key, "
            "unauthenticated, per_recipient, sockets_per_user).",
            labelled=[{"limit": limit} for limit in RATE_LIMITS],
        )
        self.scheduler_released = self._counter(
            "pushd_scheduler_released_total", "Scheduled notifications this node released."
        )
        self.scheduler_poll_age = self._gauge(
            "pushd_scheduler_poll_age_seconds",
            "Seconds since the release loop of scheduled sends last polled storage "
            "successfully: a send due now leaves at most this plus scheduler.poll_interval "
            "late (stays near 0 while healthy, grows while storage fails).",
        )
        self.scheduler_release_lag = self._histogram(
            "pushd_scheduler_release_lag_seconds",
            "Time from a scheduled notification's due instant (send_at) to its release "
            "(commit to the user's stream).",
            LATENCY_BUCKETS,
        )
        self.channels = ChannelMetrics(self.registry)
        """Channel deliveries: the dispatcher's observer, and its gauges."""

    # Instrument groups --------------------------------------------------------------

    def _http_instruments(self) -> None:
        self._http_counts: dict[tuple[str, str, int], int] = {}
        self._http_latency: dict[tuple[str, str], FastHistogram] = {}
        self._readings.append(self._fold_http)
        self.http_requests = self._counter(
            "pushd_http_requests_total",
            "HTTP requests answered, by route template (`unmatched` for no route), method "
            "and status.",
            initial=False,  # one series per route called: none before the first request
        )
        self.http_seconds = self._histogram(
            "pushd_http_request_seconds",
            "Time to answer an HTTP request, by route template and method (WebSockets and "
            "event streams left out: they last as long as the client stays).",
            LATENCY_BUCKETS,
            initial=False,
        )

    def _ingest_instruments(self) -> None:
        self.commit_batch_size = self._fast_histogram(
            "pushd_ingest_commit_batch_size",
            "Notifications committed per transaction by the group commit.",
            BATCH_SIZE_BUCKETS,
        )
        self.commit_seconds = self._fast_histogram(
            "pushd_ingest_commit_seconds",
            "Duration of one group-commit transaction.",
            LATENCY_BUCKETS,
        )
        self.delivery_latency = self._fast_histogram(
            "pushd_delivery_latency_seconds",
            "Time from a notification's acceptance (its created_at) to its live frame "
            "handed to a socket or event stream of this node.",
            LATENCY_BUCKETS,
        )
        self.outbox_relaying = self._gauge(
            "pushd_outbox_relaying",
            "1 while a committer publishes from storage (the outbox relay) instead of "
            "from memory, by committer (ingest, scheduler).",
            labelled=[{"committer": c} for c in COMMITTERS],
        )
        self.outbox_relay_lag = self._gauge(
            "pushd_outbox_relay_lag_seconds",
            "Seconds the outbox relay of a committer has been catching up (0 once the "
            "in-memory hand-off resumed), by committer.",
            labelled=[{"committer": c} for c in COMMITTERS],
        )
        self.outbox_relayed = self._counter(
            "pushd_outbox_relayed_total",
            "Notifications the outbox relay published from storage, by committer.",
            labelled=[{"committer": c} for c in COMMITTERS],
        )

    def _stream_instruments(self) -> None:
        self.stream_closes = self._counter(
            "pushd_stream_closes_total",
            "WebSockets and event streams closed after authentication, by transport "
            "(websocket, sse) and close reason (slow_consumer, normal, token_expired, ...).",
            labelled=[
                {"transport": transport, "reason": "slow_consumer"}
                for transport in ("websocket", "sse")
            ],
        )
        self.replayed = self._counter(
            "pushd_replayed_notifications_total",
            "Notifications replayed from storage to a socket catching up (resume, "
            "reconnect, or a live frame skipped ahead).",
        )
        self.replay_gaps = self._counter(
            "pushd_replay_gaps_total",
            "Gap frames sent in replays, by reason (not_retained, expired).",
            labelled=[{"reason": reason} for reason in GAP_REASONS],
        )

    def _bus_instruments(self) -> None:
        self.bus_published = self._fast_counter(
            "pushd_bus_messages_published_total", "Messages the bus confirmed to this node."
        )
        self.bus_publish_failures = self._fast_counter(
            "pushd_bus_publish_failures_total", "Publishes the bus refused or did not confirm."
        )
        self.bus_consumed = self._fast_counter(
            "pushd_bus_messages_consumed_total", "Messages the bus handed to this node."
        )
        self.bus_reconnects = self._counter(
            "pushd_bus_reconnects_total",
            "Times the bus connected again after losing its broker (0 for memory://).",
        )

    def _storage_instruments(self) -> None:
        self.storage_errors = self._counter(
            "pushd_storage_errors_total",
            "Database operations that failed, by kind (unavailable: cannot reach it; "
            "conflict: a uniqueness rule; rejected: anything else).",
            labelled=[{"kind": kind} for kind in STORAGE_ERROR_KINDS],
        )
        self.storage_connections = self._gauge(
            "pushd_storage_pool_connections", "Database connections open (SQLite: 1)."
        )
        self.storage_connections_max = self._gauge(
            "pushd_storage_pool_max_connections",
            "Most database connections the pool may open (storage.pool_size; SQLite: 1).",
        )
        self.storage_in_use = self._gauge(
            "pushd_storage_pool_in_use", "Database connections lent to an operation now."
        )
        self.storage_waiting = self._gauge(
            "pushd_storage_pool_waiting",
            "Operations waiting for a database connection (SQLite: the writer thread's queue).",
        )

    # Constructors -------------------------------------------------------------------

    def _counter(
        self, name: str, doc: str, *, labelled: Sequence[Labels] = (), initial: bool = True
    ) -> Counter:
        counter = Counter(name, doc, registry=self.registry)
        for labels in (labelled or [{}]) if initial else ():
            counter.set(labels, 0)
        return counter

    def _fast_counter(self, name: str, doc: str) -> FastCounter:
        counter = FastCounter(self._counter(name, doc))
        self._readings.append(counter.fold)
        return counter

    def _fast_histogram(self, name: str, doc: str, buckets: Sequence[float]) -> FastHistogram:
        values = HistogramValues(*buckets)
        Histogram(name, doc, registry=self.registry, buckets=buckets).set_value({}, values)
        histogram = FastHistogram(values)
        self._readings.append(histogram.fold)
        return histogram

    def _gauge(self, name: str, doc: str, *, labelled: Sequence[Labels] = ()) -> Gauge:
        gauge = Gauge(name, doc, registry=self.registry)
        for labels in labelled or [{}]:
            gauge.set(labels, 0)
        return gauge

    def _histogram(
        self, name: str, doc: str, buckets: Sequence[float], *, initial: bool = True
    ) -> Histogram:
        histogram = Histogram(name, doc, registry=self.registry, buckets=buckets)
        if initial:  # exported with no observation yet: every bucket at 0
            histogram.set_value({}, HistogramValues(*buckets))
        return histogram

    # Read at scrape -----------------------------------------------------------------

    def read_at_scrape(self, instrument: Counter | Gauge, read: Callable[[], float]) -> None:
        """Set the label-less `instrument` to `read()` before each scrape, for a figure
        its owner keeps (a counter must only grow: `read` a monotonic one)."""
        self._readings.append(lambda: instrument.set({}, read()))

    def read_labelled_at_scrape(self, instrument: Counter | Gauge, read: LabelledReading) -> None:
        """Set each (labels, value) `read()` gives before each scrape."""

        def set_all() -> None:
            for labels, value in read():
                instrument.set(labels, value)

        self._readings.append(set_all)

    def read_mailboxes(self, mailboxes: ActorSystem[Any, Any], stats: UserMailboxStats) -> None:
        """Read the user mailboxes' own figures (`stats`: the one they all count into)
        at each scrape."""
        readings: list[tuple[Counter | Gauge, Callable[[], int]]] = [
            (self.actors, lambda: len(mailboxes)),
            (self.queued_messages, lambda: mailboxes.queued_messages),
            (self.actors_started, lambda: mailboxes.actors_started),
            (self.actors_passivated, lambda: mailboxes.actors_passivated),
            (self.messages_processed, lambda: mailboxes.messages_processed),
            (self.actor_restarts, lambda: mailboxes.restarts),
            (self.dead_letters, lambda: mailboxes.dead_letters),
            (self.sockets_dropped, lambda: stats.connections_dropped),
        ]
        for instrument, read in readings:
            self.read_at_scrape(instrument, read)

    def read_storage(self, storage: object) -> None:
        """Read the backend's connections and error counts at each scrape (nothing for
        a storage that does not report them, such as a test double)."""
        if not isinstance(storage, ReportsUsage):
            return

        def read() -> None:
            usage = storage.usage()
            self.storage_connections.set({}, usage.connections)
            self.storage_connections_max.set({}, usage.max_connections)
            self.storage_in_use.set({}, usage.in_use)
            self.storage_waiting.set({}, usage.waiting)
            for kind, count in usage.errors.items():
                self.storage_errors.set({"kind": kind}, count)

        self._readings.append(read)

    def read_rate_limits(self, rejected: Callable[[], Mapping[str, int]]) -> None:
        """Read the limiters' refusals (limit name -> count) at each scrape."""
        self.read_labelled_at_scrape(
            self.rate_limited,
            lambda: (({"limit": name}, count) for name, count in rejected().items()),
        )

    # Hot path -----------------------------------------------------------------------

    def http_request(self, route: str, method: str, status: int, seconds: float | None) -> None:
        """Count one answered request (`seconds` None: a WebSocket or event stream).
        Kept in plain dicts, folded into the instruments at each scrape (FastCounter
        says why); the keys are bounded as the labels are (route templates)."""
        key = (route, method, status)
        self._http_counts[key] = self._http_counts.get(key, 0) + 1
        if seconds is not None:
            latency = self._http_latency.get((route, method))
            if latency is None:
                values = HistogramValues(*LATENCY_BUCKETS)
                self.http_seconds.set_value({"route": route, "method": method}, values)
                latency = self._http_latency[(route, method)] = FastHistogram(values)
            latency.observe({}, seconds)

    def _fold_http(self) -> None:
        for (route, method, status), count in self._http_counts.items():
            self.http_requests.set({"route": route, "method": method, "status": str(status)}, count)
        for latency in self._http_latency.values():
            latency.fold()

    def committed(self, size: int, seconds: float) -> None:
        """One group-commit transaction of `size` notifications took `seconds`."""
        if self.hot_path:
            self.commit_batch_size.observe({}, size)
            self.commit_seconds.observe({}, seconds)

    def frame_sent(self, frame: bytes, *, connected_at: float) -> None:
        """A socket or stream connected at `connected_at` (epoch seconds) took `frame`:
        observe a notification's delivery latency. One accepted before the socket
        connected is left out: it is replayed, and its age is the client's absence, not
        pushd's speed."""
        if frame.startswith(_NOTIFICATION_FRAME):
            created = _created_decoder.decode(frame).created_at.timestamp()
            if created >= connected_at:
                self.delivery_latency.observe({}, max(0.0, time.time() - created))

    def delivery_observer(self) -> Callable[[bytes], None] | None:
        """The `on_sent` of a socket or stream connecting now (None when the hot-path
        instruments are off)."""
        if not self.hot_path:
            return None
        return functools.partial(self.frame_sent, connected_at=time.time())

    def stream_closed(self, transport: str, code: CloseCode | None) -> None:
        """An authenticated WebSocket or event stream ended with `code`."""
        reason = "normal" if code is None else code.name.lower()
        self.stream_closes.inc({"transport": transport, "reason": reason})

    def replay_page(self, notifications: int, gaps: Iterable[str]) -> None:
        """A replay page sent `notifications` notification frames and gap frames of
        the given reasons."""
        if notifications:
            self.replayed.add({}, notifications)
        for reason in gaps:
            self.replay_gaps.inc({"reason": reason})

    def released(self, records: Sequence[NotificationRecord], at: int) -> None:
        """Scheduled sends were released (committed) at `at` (epoch ms); a released
        record's `created_at` is its due instant."""
        self.scheduler_released.add({}, len(records))
        for record in records:
            self.scheduler_release_lag.observe({}, max(0, at - record.created_at) / 1000)

    # Exposition ---------------------------------------------------------------------

    @staticmethod
    def total(counter: Counter | FastCounter) -> int:
        """A label-less counter's value (0 before its first increment)."""
        if isinstance(counter, FastCounter):
            return counter.value
        try:
            value = counter.get({})
        except KeyError:
            return 0
        return int(value) if isinstance(value, int | float) else 0

    async def handle(self, request: web.Request) -> web.Response:
        """The Prometheus exposition of every instrument, in the format `Accept` asks."""
        for read in self._readings:
            read()
        await self.channels.refresh()
        body, headers = render(self.registry, request.headers.getall("Accept", []))
        return web.Response(body=body, headers=headers)


class CountedBus:
    """A `Bus` that counts what goes through it into `metrics` (publishes confirmed and
    refused, messages consumed); the backend's own reconnects are read at scrape."""

    def __init__(self, bus: Bus, metrics: Metrics) -> None:
        self._bus = bus
        self._metrics = metrics
        metrics.read_at_scrape(metrics.bus_reconnects, lambda: getattr(bus, "reconnects", 0))

    @property
    def backend(self) -> str:
        """The counted backend's name (what the healthcheck shows, not this wrapper's)."""
        return type(self._bus).__name__

    async def start(self, handler: MessageHandler) -> None:
        consumed = self._metrics.bus_consumed

        # A plain function handing back the handler's awaitable: no coroutine of its
        # own per message.
        def counted(message: BusMessage) -> Awaitable[None]:
            consumed.inc({})
            return handler(message)

        await self._bus.start(counted)

    async def publish(self, messages: Sequence[BusMessage]) -> None:
        try:
            await self._bus.publish(messages)
        except BusError:
            self._metrics.bus_publish_failures.inc({})
            raise
        self._metrics.bus_published.add({}, len(messages))

    async def watch_user(self, user_id: str) -> None:
        await self._bus.watch_user(user_id)

    async def unwatch_user(self, user_id: str) -> None:
        await self._bus.unwatch_user(user_id)

    async def healthy(self) -> bool:
        return await self._bus.healthy()

    async def close(self) -> None:
        await self._bus.close()
