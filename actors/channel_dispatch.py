"""The channel dispatcher: sends the due channel deliveries of storage through the
providers of their channel, and records every attempt (DESIGN.md §4a, issue #12).

Storage is the truth: the dispatcher leases due rows (polling every `poll_interval`;
`nudge()` after a commit or a bus wake-up makes it look at once), sends each through
`ProviderPool`, and hands each outcome to `OutcomeRecorder`, which writes them in
small batches. One dispatcher per process, owned by the app: `start()` / `stop()`, or
`async with`.

Duplicates. A delivery is leased to this node (`node_id`) for `lease`; a send not ended
within `SEND_SHARE_OF_LEASE` of it is given up (recorded as a transient failure), so that
its outcome is stored before the lease lets another node take the row. Nothing is lost:
a row is either given its outcome or left `sending` until its lease expires, and then
another node (or this one after a restart) sends it again. That second send is a
duplicate when the first had reached the provider, which can happen only to the rows
whose send had started and whose outcome was not stored yet when the process died
(`kill -9`) or `stop` gave up on them: the sends in flight (at most the sum of the
providers' `concurrency`) plus the outcomes waiting for their write (at most
`flush_interval` and one write's worth). A cancelled send may or may not have reached
its provider; rows leased but still waiting for a send slot are not duplicated.

Digests (pushd/routing/digests.py): a due digest is leased whole
(`lease_due_digests`), sent as ONE message, and that message's outcome is recorded on
every row of it; a digest whose send dies is leased whole again when its lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

import msgspec

from actors.channel_outcomes import (
    Attempt,
    RetryPolicy,
    channel_message,
    not_sent,
    requeued_for_open_circuits,
    sent,
    skipped_for_no_address,
)
from actors.channel_providers import Provider, ProviderPool
from actors.channel_recorder import OutcomeRecorder
from actors.channel_sender import PermanentSendError, SendError, SendReceipt, TransientSendError
from actors.channel_stats import AttemptOutcome, ChannelObserver, ChannelStats, NotAttemptedReason
from actors.channel_yield import InappFirst
from actors.retry import Backoff
from storage.areas.channel_deliveries import ChannelDeliveries
from storage.errors import StorageError
from storage.records import DeliveryOutcome, LeasedDelivery, now_ms

log = logging.getLogger(__name__)

# Between lease attempts while storage refuses.
LEASE_BACKOFF = Backoff(base=0.1, cap=5.0)

# A send must end within this share of the lease, leaving the rest to store its outcome.
SEND_SHARE_OF_LEASE = 0.8

# With a backlog, ended sends wake the dispatcher to lease again; rounds are at least
# this far apart so that each lease query takes several freed slots, not one.
MIN_ROUND_GAP = 0.005

# While yielding to in-app delivery, how often the dispatcher looks whether the
# in-app backlog has cleared (it cannot count on a nudge: nudges come from new sends).
YIELD_RECHECK = 0.05


class DigestComposer(Protocol):
    """Makes the one message of a digest (pushd/routing/digests.py)."""

    @property
    def channels(self) -> Sequence[str]:
        """The channels digests go out on."""
        ...

    def compose(self, members: Sequence[LeasedDelivery]) -> LeasedDelivery:
        """The message standing for the digest's rows (oldest first), under the id of one
        of them."""
        ...


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    """How the dispatcher leases, waits and stops."""

    batch_size: int = 100
    """Deliveries leased per round at most."""
    poll_interval: float = 1.0
    """Seconds between looks at storage when nothing nudges."""
    lease: float = 60.0
    """Seconds a leased delivery stays this node's; a send gets 80% of it."""
    shutdown_timeout: float = 10.0
    """Seconds `stop` gives sends in flight to end, and then their outcomes to be stored."""
    flush_interval: float = 0.05
    """Seconds an outcome waits for others to share its write."""
    flush_size: int = 100
    """Outcomes per write at most (a full batch is written at once)."""
    yield_backlog: int = 64
    """In-app work waiting (`inapp_backlog()`) from which the dispatcher yields the
    process to in-app delivery: it then runs at most `yield_sends` sends at a time, until
    the backlog is under half of this (actors/channel_yield.py). 0: the backlog alone
    never makes it yield."""
    yield_lag: float = 0.02
    """Seconds one turn of the event loop takes from which, with in-app work waiting,
    the dispatcher yields as well, until the (smoothed) turn is under half of this:
    at max load requests wait for the loop, not in the backlog. 0: the lag never
    makes it yield."""
    yield_sends: int = 2
    """Sends at a time while yielding: channel deliveries still progress under overload."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be {rule} (got {value})"
            for name, value, ok, rule in (
                ("batch_size", self.batch_size, self.batch_size >= 1, ">= 1"),
                ("poll_interval", self.poll_interval, self.poll_interval > 0, "> 0"),
                ("lease", self.lease, self.lease >= 1, ">= 1 second"),
                ("shutdown_timeout", self.shutdown_timeout, self.shutdown_timeout >= 0, ">= 0"),
                ("flush_interval", self.flush_interval, self.flush_interval > 0, "> 0"),
                ("flush_size", self.flush_size, self.flush_size >= 1, ">= 1"),
                ("yield_backlog", self.yield_backlog, self.yield_backlog >= 0, ">= 0"),
                ("yield_sends", self.yield_sends, self.yield_sends >= 1, ">= 1"),
                ("yield_lag", self.yield_lag, self.yield_lag >= 0, ">= 0"),
            )
            if not ok
        ]
        if problems:
            raise ValueError("channel dispatch settings: " + "; ".join(problems))


class ChannelDispatcher:
    """Leases due channel deliveries, sends them, records their outcomes.

    `deliveries` is the storage (its `ChannelDeliveries` area); `providers` is owned
    from here on: `stop` closes its senders. `observer` gets every attempt for metrics
    (default: a `ChannelStats`, readable as `observer`). `clock` gives epoch
    milliseconds, the unit of storage's times.

    `digests` makes the message of a digest; without it, no digest is leased.

    `inapp_backlog` tells how much in-app work waits in this process (the ingest queue).
    Both share one event loop and one core: a channel send costs several in-app
    notifications' worth of CPU (a web push: key agreement, encryption, TLS), so under
    overload the dispatcher yields (`yield_backlog`, `yield_lag`: actors/channel_yield.py):
    the real-time path keeps its rate, and the deliveries, safe in storage, go out once
    the burst is over, with a trickle of `yield_sends` meanwhile. The cost is channel
    latency during the overload, shown by the queue-age gauge.
    """

    def __init__(
        self,
        deliveries: ChannelDeliveries,
        providers: ProviderPool,
        *,
        node_id: str,
        settings: DispatchSettings | None = None,
        observer: ChannelObserver | None = None,
        clock: Callable[[], int] = now_ms,
        inapp_backlog: Callable[[], int] | None = None,
        digests: DigestComposer | None = None,
    ) -> None:
        self._deliveries = deliveries
        self._composer = digests
        # A digest's message (by its delivery id) -> the rows it stands for, until its
        # outcome is recorded on each of them (`_record`).
        self._digests: dict[str, Sequence[LeasedDelivery]] = {}
        self.providers = providers
        self._node_id = node_id
        self._settings = settings = DispatchSettings() if settings is None else settings
        self._inapp_first = InappFirst(
            inapp_backlog, yield_backlog=settings.yield_backlog, yield_lag=settings.yield_lag
        )
        self.observer: ChannelObserver = ChannelStats() if observer is None else observer
        self._clock = clock
        self._recorder = OutcomeRecorder(
            deliveries,
            flush_interval=settings.flush_interval,
            flush_size=settings.flush_size,
            on_written=self._room_freed,
        )
        # Leased and not yet stored (sending, or waiting for the recorder): leasing stops
        # at this many, which bounds the recorder's buffer while storage refuses writes.
        self._max_unrecorded = settings.batch_size + sum(
            p.concurrency for c in providers.channels for p in providers.providers_of(c)
        )
        self._sends: set[asyncio.Task[None]] = set()
        self._leasing: asyncio.Task[None] | None = None
        self._recording: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._backlog = False
        self._stopped = False

    @property
    def yielding(self) -> bool:
        """Whether sends are held back for in-app delivery now (a gauge)."""
        return self._inapp_first.yielding

    @property
    def yields(self) -> int:
        """Times the dispatcher started yielding to in-app delivery (a counter)."""
        return self._inapp_first.yields

    @property
    def in_flight(self) -> int:
        """Deliveries being sent now (a gauge)."""
        return len(self._sends)

    @property
    def recorder(self) -> OutcomeRecorder:
        """The outcome writer (its `written` and `dropped` counts are metrics)."""
        return self._recorder

    def nudge(self) -> None:
        """Look for due deliveries now rather than at the next poll (after a commit
        that planned deliveries due now, or a bus wake-up). Cheap; call it freely."""
        self._wake.set()

    def start(self) -> None:
        """Start leasing and recording, in tasks owned by this dispatcher."""
        if self._leasing is not None:
            raise RuntimeError("ChannelDispatcher.start() was already called")
        self._recording = asyncio.create_task(self._recorder.run(), name="channel-outcomes")
        self._leasing = asyncio.create_task(self._lease_until_stopped(), name="channel-dispatch")

    async def stop(self) -> None:
        """Stop leasing; give the sends in flight `shutdown_timeout` to end and store
        their outcomes; cancel the rest (their leases expire and they are sent again,
        see the module's docstring); close the senders. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        self._wake.set()
        timeout = self._settings.shutdown_timeout
        try:
            await self._finish(self._leasing, timeout, "leasing")
            await self._let_sends_end(timeout)
            self._recorder.close()
            await self._finish(self._recording, timeout, "storing outcomes")
            if self._recorder.unwritten:
                log.warning(
                    "channel dispatcher stopped with %d outcome(s) not stored; their "
                    "deliveries are sent again when their leases expire",
                    self._recorder.unwritten,
                )
        finally:
            # Also reached when stop() itself is cancelled: no task outlives it.
            leftovers = [t for t in (self._leasing, self._recording, *self._sends) if t]
            for task in leftovers:
                task.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)
            await self.providers.aclose()

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # leasing --------------------------------------------------------------------------

    async def _lease_until_stopped(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            started = loop.time()
            try:
                self._backlog = await self._lease_round()
            except Exception as exc:
                # StorageError: the database is away. Anything else is a bug, logged with
                # its traceback; either way the loop lives on and tries again.
                log.warning(
                    "channel dispatcher: leasing failed (%r); retrying within %.2fs",
                    exc,
                    LEASE_BACKOFF.bound(failures),
                    exc_info=not isinstance(exc, StorageError),
                )
                await LEASE_BACKOFF.wait(failures, stop=self._stopping)
                failures += 1
                continue
            failures = 0
            await self._wait_for_work(started)

    async def _wait_for_work(self, round_started: float) -> None:
        """Until a nudge, a freed slot (with a backlog), the poll interval, or stop."""
        # While yielding, nudges (one per new send) would each cost a lease query: look
        # at a fixed pace instead, until the in-app backlog clears.
        wait_for, timeout = (
            (self._stopping, min(self._settings.poll_interval, YIELD_RECHECK))
            if self._inapp_first.yielding
            else (self._wake, self._settings.poll_interval)
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await wait_for.wait()
        self._wake.clear()
        gap = round_started + MIN_ROUND_GAP - asyncio.get_running_loop().time()
        if gap > 0 and not self._stopping.is_set():
            await asyncio.sleep(gap)

    async def _lease_round(self) -> bool:
        """Lease what can start sending now and start it; True when more may be due
        than was leased (a backlog: ended sends should wake the next round)."""
        # First, as it lets the loop turn (it measures the turn): the counts below are
        # read after it.
        yielding = await self._inapp_first.check()
        budget = min(self._settings.batch_size, self._max_unrecorded - self._unrecorded())
        if yielding:
            # No lease query either while the trickle is full: it would take the storage
            # worker from the in-app commits this is yielding to.
            budget = min(budget, self._settings.yield_sends - len(self._sends))
            if budget <= 0:
                return False
        capacity = {c: self.providers.free_capacity(c) for c in self.providers.channels}
        # Sends under way on a full channel will free slots for what waits in storage.
        backlog = budget <= 0 or any(
            free == 0 and self.providers.busy(channel) for channel, free in capacity.items()
        )
        # Digests first: each is one send however many rows it holds.
        digest_channels = [
            c for c in (self._composer.channels if self._composer else ()) if capacity.get(c, 0)
        ]
        if budget > 0 and digest_channels:
            limit = min(budget, *(capacity[c] for c in digest_channels))
            digests = await self._lease_digests(digest_channels, limit)
            backlog = backlog or len(digests) == limit
            budget -= len(digests)
            for members in digests:
                capacity[members[0].channel] -= 1
        for channels, limit in _lease_calls(capacity, budget):
            leased = await self._lease(channels, limit)
            backlog = backlog or len(leased) == limit
            budget -= len(leased)
            if budget <= 0:
                return True
        return backlog

    async def _lease(self, channels: Sequence[str], limit: int) -> list[LeasedDelivery]:
        lease = self._settings.lease
        deadline = asyncio.get_running_loop().time() + lease * SEND_SHARE_OF_LEASE
        leased = await self._deliveries.lease_due_deliveries(
            channels,
            now=self._clock(),
            limit=limit,
            owner=self._node_id,
            lease_ms=int(lease * 1000),
        )
        for delivery in leased:
            self._dispatch(delivery, deadline)
        return leased

    async def _lease_digests(
        self, channels: Sequence[str], limit: int
    ) -> list[list[LeasedDelivery]]:
        """Lease due digests whole and start one send for each (pushd/routing/digests.py)."""
        lease = self._settings.lease
        deadline = asyncio.get_running_loop().time() + lease * SEND_SHARE_OF_LEASE
        digests = await self._deliveries.lease_due_digests(
            channels,
            now=self._clock(),
            limit=limit,
            owner=self._node_id,
            lease_ms=int(lease * 1000),
        )
        assert self._composer is not None  # no digest channels without one
        for members in digests:
            message = self._composer.compose(members)
            self._digests[message.id] = members
            self._dispatch(message, deadline)
        return digests

    def _record(self, delivery: LeasedDelivery, outcome: DeliveryOutcome) -> None:
        """Hand the outcome to the recorder: for a digest's message, once per row of the
        digest (same status, provider and message id), each under its own lease."""
        members = self._digests.pop(delivery.id, None)
        if members is None:
            self._recorder.add(outcome)
            return
        for member in members:
            self._recorder.add(
                msgspec.structs.replace(outcome, delivery_id=member.id, attempt=member.attempts)
            )

    def _unrecorded(self) -> int:
        return len(self._sends) + self._recorder.unwritten

    def _room_freed(self) -> None:
        if self._backlog:
            self._wake.set()

    # sending ---------------------------------------------------------------------------

    def _dispatch(self, delivery: LeasedDelivery, deadline: float) -> None:
        """Record at once what needs no provider; start the send of the rest."""
        if not delivery.address:
            self._record_unattempted(
                delivery, skipped_for_no_address(delivery, self._clock()), "no_address"
            )
            return
        provider = self.providers.choose(delivery.channel)
        if provider is None:
            now = self._clock()
            due_at = now + round(self.providers.reopens_in(delivery.channel) * 1000)
            outcome = requeued_for_open_circuits(delivery, now, due_at)
            self._record_unattempted(delivery, outcome, "circuit_open")
            return
        task = asyncio.create_task(
            self._send(delivery, provider, deadline), name=f"channel-send {delivery.id}"
        )
        self._sends.add(task)
        # A callback, not a `finally` in `_send`: a task cancelled before its first step
        # never runs its body, and the provider's slot must be given back all the same.
        task.add_done_callback(lambda done: self._send_ended(done, provider))

    def _send_ended(self, task: asyncio.Task[None], provider: Provider) -> None:
        self._sends.discard(task)
        provider.release()
        self._room_freed()
        if not task.cancelled() and (exc := task.exception()) is not None:
            # `_send` turns what senders raise into outcomes, so this is a bug here; the
            # row stays leased and is sent again when its lease expires.
            log.error("channel dispatcher: %s crashed", task.get_name(), exc_info=exc)

    async def _send(self, delivery: LeasedDelivery, provider: Provider, deadline: float) -> None:
        message = channel_message(delivery, self._clock())
        result: SendReceipt | Exception
        label: AttemptOutcome
        started = time.monotonic()
        try:
            async with asyncio.timeout_at(deadline) as send_time:
                async with provider.slot():
                    started = time.monotonic()  # the latency is the provider's, not the wait
                    result = await provider.sender.send(message)
        except Exception as exc:
            result = self._classify_unexpected(exc, delivery, provider, send_time.expired())
        seconds = time.monotonic() - started
        attempt = Attempt(
            delivery, provider.name, provider.is_fallback, self._clock(), round(seconds * 1000)
        )
        if isinstance(result, SendReceipt):
            provider.breaker.succeeded()
            outcome, label = sent(attempt, result), "sent"
        else:
            # A permanent refusal is about the message; the provider answered fine.
            if isinstance(result, PermanentSendError):
                provider.breaker.succeeded()
            else:
                provider.breaker.failed()
            outcome, label = not_sent(attempt, result, self._settings.retry)
        self._observe(
            lambda: self.observer.attempted(
                delivery.channel, provider.name, label, seconds, provider.is_fallback
            )
        )
        self._log_attempt(delivery, outcome, provider.name, label)
        self._record(delivery, outcome)

    def _classify_unexpected(
        self, exc: Exception, delivery: LeasedDelivery, provider: Provider, out_of_time: bool
    ) -> Exception:
        """A `SendError` as raised; the lease deadline, and anything else (a bug in the
        sender, logged with the notification id), as a transient failure."""
        if isinstance(exc, SendError):
            return exc
        if out_of_time:
            return TransientSendError(
                f"no answer within {SEND_SHARE_OF_LEASE:.0%} of the {self._settings.lease:g}s lease"
            )
        log.error(
            "provider %r of channel %r raised an unexpected error sending delivery %s of "
            "notification %s (a bug in the sender; treated as transient)",
            provider.name,
            delivery.channel,
            delivery.id,
            delivery.notification_id,
            exc_info=exc,
            extra={"notification_id": delivery.notification_id},
        )
        return exc

    def _record_unattempted(
        self, delivery: LeasedDelivery, outcome: DeliveryOutcome, reason: NotAttemptedReason
    ) -> None:
        self._observe(lambda: self.observer.not_attempted(delivery.channel, reason))
        self._log_attempt(delivery, outcome, "-", reason)
        self._record(delivery, outcome)

    def _observe(self, report: Callable[[], None]) -> None:
        try:
            report()
        except Exception:
            log.exception("channel observer raised; the figure is lost, not the delivery")

    def _log_attempt(
        self,
        delivery: LeasedDelivery,
        outcome: DeliveryOutcome,
        provider: str,
        label: AttemptOutcome | NotAttemptedReason,
    ) -> None:
        log.info(
            "channel delivery notification=%s delivery=%s channel=%s provider=%s "
            "attempt=%d outcome=%s status=%s%s%s",
            delivery.notification_id,
            delivery.id,
            delivery.channel,
            provider,
            delivery.attempts,
            label,
            outcome.status,
            " fallback=true" if outcome.fallback else "",
            "" if outcome.error is None else f" error={outcome.error!r}",
            extra={"notification_id": delivery.notification_id},
        )

    # stopping --------------------------------------------------------------------------

    async def _let_sends_end(self, timeout: float) -> None:  # noqa: ASYNC109
        if not self._sends:
            return
        _, running = await asyncio.wait(set(self._sends), timeout=timeout)
        if running:
            log.warning(
                "channel dispatcher: %d send(s) still running after %.1fs; cancelled (sent "
                "again when their leases expire; each may have reached its provider): %s",
                len(running),
                timeout,
                ", ".join(sorted(task.get_name() for task in running)[:10]),
            )
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    @staticmethod
    async def _finish(task: asyncio.Task[None] | None, timeout: float, what: str) -> None:  # noqa: ASYNC109
        if task is None or task.done():
            return
        _, running = await asyncio.wait({task}, timeout=timeout)
        if running:
            log.warning("channel dispatcher: %s did not end within %.1fs; cancelled", what, timeout)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _lease_calls(capacity: dict[str, int], budget: int) -> list[tuple[list[str], int]]:
    """The lease queries of one round: one for every channel that can take the whole
    budget (the usual case: one query), one per channel that can take less, with its
    own capacity as the limit, so that no channel is leased more than can start now."""
    if budget <= 0:
        return []
    roomy = [channel for channel, free in capacity.items() if free >= budget]
    calls: list[tuple[list[str], int]] = [(roomy, budget)] if roomy else []
    calls += [([c], free) for c, free in capacity.items() if 0 < free < budget]
    return calls
