"""ChannelDispatcher against storage: sending, retries, fallback, bounds, nudges, shutdown.

The providers are `LocalProvider`s that fail on demand; the dispatcher's wall clock and
the breakers' clock are fakes that the tests move, so that retries and cool-downs are
exact and instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from actors.channel_dispatch import ChannelDispatcher, DispatchSettings
from actors.channel_outcomes import CIRCUIT_OPEN_ERROR, RetryPolicy
from actors.channel_providers import ProviderPool, ProviderSpec
from actors.channel_sender import (
    AddressGoneError,
    PermanentSendError,
    TransientSendError,
)
from actors.channel_stats import ChannelStats
from actors.circuit_breaker import BreakerSettings, BreakerState
from actors.retry import Backoff
from storage import Storage, open_storage
from storage.records import (
    ChannelDeliveryRecord,
    DeliveryAttemptRecord,
    NewDevice,
    NewNotification,
    NewUser,
    PlannedDelivery,
)
from tests.actors.channel_doubles import DeliveriesSpy, LocalProvider
from tests.actors.doubles import eventually

T0 = 1_700_000_000_000
V = TypeVar("V")
Store = Storage


class Clock:
    """A clock the test moves: epoch ms for the dispatcher, seconds for breakers."""

    def __init__(self, now: float) -> None:
        self.now = now

    def ms(self) -> int:
        return int(self.now)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A migrated SQLite storage with user u1 (an email address, no phone)."""
    db = await open_storage(f"sqlite:///{tmp_path / 'pushd.db'}")
    await db.migrate()
    await db.create_user(NewUser(id="u1", email="ada@example.com", created_at=T0))
    yield db
    await db.close()


@pytest.fixture
def wall() -> Clock:
    return Clock(T0)


@pytest.fixture
def spy(store: Store) -> DeliveriesSpy:
    return DeliveriesSpy(store)


class Harness:
    """Plans notifications and runs a dispatcher over them."""

    def __init__(self, store: Store, spy: DeliveriesSpy, wall: Clock) -> None:
        self.store = store
        self.spy = spy
        self.wall = wall
        self._count = 0

    def dispatcher(
        self,
        *specs: ProviderSpec,
        breaker_clock: Callable[[], float] | None = None,
        stats: ChannelStats | None = None,
        inapp_backlog: Callable[[], int] | None = None,
        **settings: Any,
    ) -> ChannelDispatcher:
        settings.setdefault("poll_interval", 0.02)
        settings.setdefault("flush_interval", 0.005)
        settings.setdefault("retry", RetryPolicy(backoff=Backoff(base=1.0, cap=1.0)))
        pool = (
            ProviderPool(specs)
            if breaker_clock is None
            else ProviderPool(specs, clock=breaker_clock)
        )
        return ChannelDispatcher(
            self.spy,
            pool,
            node_id="node-a",
            settings=DispatchSettings(**settings),
            observer=stats,
            clock=self.wall.ms,
            inapp_backlog=inapp_backlog,
        )

    async def notify(
        self,
        channel: str = "email",
        *,
        due_in: int = 0,
        device_id: str | None = None,
        **fields: Any,
    ) -> str:
        """Commit a notification with one step on `channel`; return the step's id."""
        self._count += 1
        n = self._count
        fields.setdefault("title", f"title {n}")
        fields.setdefault("body", f"body {n}")
        await self.store.insert_notifications(
            [
                NewNotification(
                    id=f"ntf_{n}",
                    user_id="u1",
                    created_at=self.wall.ms(),
                    deliveries=(
                        PlannedDelivery(
                            id=f"dlv_{n}",
                            channel=channel,
                            due_at=self.wall.ms() + due_in,
                            device_id=device_id,
                        ),
                    ),
                    **fields,
                )
            ]
        )
        return f"dlv_{n}"

    async def row(self, delivery_id: str) -> ChannelDeliveryRecord:
        notification_id = delivery_id.replace("dlv_", "ntf_")
        (row,) = await self.store.channel_deliveries_of(notification_id)
        return row

    async def history(self, delivery_id: str) -> list[DeliveryAttemptRecord]:
        return await self.store.delivery_history_of(delivery_id.replace("dlv_", "ntf_"))

    async def settled(
        self, delivery_id: str, status: str, *, within: float = 2.0
    ) -> ChannelDeliveryRecord:
        """The row once its status is `status` (fail after `within` seconds)."""
        return await until(lambda: self.row(delivery_id), lambda r: r.status == status, within)


async def until(
    read: Callable[[], Awaitable[V]], holds: Callable[[V], bool], within: float = 2.0
) -> V:
    """Poll `read()` until `holds(value)`; return the value, or fail after `within` s."""
    last: list[V] = []
    try:
        async with asyncio.timeout(within):
            while True:
                last[:] = [await read()]
                if holds(last[0]):
                    return last[0]
                # Polling keeps the code under test free of hooks that exist for tests.
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"still {last!r} after {within}s") from None


@pytest.fixture
def h(store: Store, spy: DeliveriesSpy, wall: Clock) -> Harness:
    return Harness(store, spy, wall)


def email(name: str = "relay-a", **spec: Any) -> tuple[LocalProvider, ProviderSpec]:
    provider = LocalProvider("email", name)
    return provider, ProviderSpec(provider, **spec)


# sending ----------------------------------------------------------------------------------


async def test_a_due_email_is_sent_and_its_attempt_recorded(h: Harness) -> None:
    relay, spec = email()
    delivery = await h.notify(
        channel_content={"email": {"subject": "Hi", "text": "plain"}}, data={"k": 1}
    )
    async with h.dispatcher(spec) as dispatcher:
        dispatcher.nudge()
        row = await h.settled(delivery, "sent")
    assert (row.provider, row.provider_message_id, row.fallback) == ("relay-a", "relay-a-1", False)
    assert row.attempts == 1
    (message,) = relay.accepted
    assert message.address == {"email": "ada@example.com"}
    assert message.content == {"subject": "Hi", "text": "plain"}
    assert (message.title, message.body, dict(message.data)) == ("title 1", "body 1", {"k": 1})
    assert (message.notification_id, message.delivery_id) == ("ntf_1", delivery)
    (attempt,) = await h.history(delivery)
    assert (attempt.status, attempt.detail) == ("sent", {"via": "relay-a"})


async def test_a_step_due_later_waits_for_its_time(h: Harness) -> None:
    relay, spec = email()
    delivery = await h.notify(due_in=60_000)
    async with h.dispatcher(spec):
        await asyncio.sleep(0.1)
        assert (await h.row(delivery)).status == "scheduled"
        h.wall.now += 60_000
        await h.settled(delivery, "sent")
    assert len(relay.accepted) == 1


async def test_the_time_to_live_is_what_is_left_before_expiry(h: Harness) -> None:
    relay, spec = email()
    delivery = await h.notify(expires_at=T0 + 90_500)
    async with h.dispatcher(spec):
        await h.settled(delivery, "sent")
    assert relay.accepted[0].ttl_seconds == 90


async def test_a_user_without_an_address_is_skipped_without_a_send(h: Harness) -> None:
    _relay, spec = email()
    sms = LocalProvider("sms", "twilio")
    delivery = await h.notify("sms")
    async with h.dispatcher(spec, ProviderSpec(sms)):
        row = await h.settled(delivery, "skipped")
    assert row.attempts == 0  # the lease's attempt given back: nothing was sent
    (record,) = await h.history(delivery)
    assert (record.status, record.error, record.provider) == ("skipped", "no_address", None)
    assert sms.messages == []


# errors and retries -------------------------------------------------------------------------


async def test_a_transient_error_is_retried_no_sooner_than_retry_after(h: Harness) -> None:
    relay, spec = email()
    relay.fail_with(TransientSendError("busy", provider_code="429", retry_after=30))
    delivery = await h.notify()
    async with h.dispatcher(spec):
        row = await h.settled(delivery, "queued")
        # Backoff for attempt 1 is at most 1 s here: Retry-After (30 s) is the floor.
        assert row.due_at == T0 + 30_000
        assert row.last_error == "busy"
        relay.succeed()
        h.wall.now += 29_999
        await asyncio.sleep(0.1)
        assert (await h.row(delivery)).status == "queued"
        h.wall.now += 1
        row = await h.settled(delivery, "sent")
    assert row.attempts == 2
    history = await h.history(delivery)
    assert [(a.status, a.provider_code) for a in history] == [("queued", "429"), ("sent", None)]


async def test_without_retry_after_the_delay_is_drawn_within_the_backoff_bound(
    h: Harness,
) -> None:
    relay, spec = email()
    relay.fail_with(TransientSendError("timeout"))
    delivery = await h.notify()
    retry = RetryPolicy(backoff=Backoff(base=8.0, cap=8.0))
    async with h.dispatcher(spec, retry=retry):
        row = await h.settled(delivery, "queued")
    assert T0 <= row.due_at <= T0 + 8_000


async def test_retries_stop_after_max_attempts(h: Harness) -> None:
    relay, spec = email()
    relay.fail_with(TransientSendError("503 from relay"))
    delivery = await h.notify()
    retry = RetryPolicy(backoff=Backoff(base=1.0, cap=1.0), max_attempts=2)
    async with h.dispatcher(spec, retry=retry):
        await h.settled(delivery, "queued")
        h.wall.now += 1_000
        row = await h.settled(delivery, "failed")
    assert row.attempts == 2
    assert row.last_error is not None
    assert "503 from relay" in row.last_error
    assert "max_attempts 2" in row.last_error
    assert len(relay.messages) == 2


async def test_retries_stop_once_the_delivery_is_older_than_max_age(h: Harness) -> None:
    relay, spec = email()
    relay.fail_with(TransientSendError("503"))
    delivery = await h.notify()
    h.wall.now += 3_601_000
    retry = RetryPolicy(max_age=3_600)
    async with h.dispatcher(spec, retry=retry):
        row = await h.settled(delivery, "failed")
    assert row.last_error is not None
    assert "max_age" in row.last_error
    assert row.attempts == 1


async def test_a_permanent_error_fails_at_once_and_leaves_the_provider_healthy(
    h: Harness,
) -> None:
    relay, spec = email(breaker=BreakerSettings(consecutive_failures=1))
    relay.fail_with(PermanentSendError("mailbox does not exist", provider_code="550"))
    first, second = await h.notify(), await h.notify()
    async with h.dispatcher(spec) as dispatcher:
        row = await h.settled(first, "failed")
        await h.settled(second, "failed")
        assert [p.state for p in dispatcher.providers.health()] == [BreakerState.CLOSED]
    assert (row.attempts, row.last_error) == (1, "mailbox does not exist")
    (attempt,) = await h.history(first)
    assert attempt.provider_code == "550"


async def test_an_address_gone_fails_the_delivery_and_removes_the_device(
    h: Harness, store: Store
) -> None:
    push = LocalProvider("fcm", "fcm")
    push.fail_with(AddressGoneError("UNREGISTERED", provider_code="UNREGISTERED"))
    await store.upsert_device(
        NewDevice(id="dev_1", user_id="u1", kind="fcm", address="tok-1", details={}, created_at=T0)
    )
    delivery = await h.notify("fcm", device_id="dev_1")
    async with h.dispatcher(ProviderSpec(push)):
        await h.settled(delivery, "failed")
    assert push.messages[0].address == {"token": "tok-1"}
    assert await store.list_devices("u1") == []


async def test_an_unexpected_exception_from_a_sender_is_a_logged_transient_failure(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Guards the loop: a sender bug must neither kill the dispatcher nor lose the row."""
    relay, spec = email()
    relay.fail_with(RuntimeError("bug in the sender"))
    delivery = await h.notify()
    with caplog.at_level(logging.INFO, logger="actors.channel_dispatch"):
        async with h.dispatcher(spec):
            row = await h.settled(delivery, "queued")
            relay.succeed()
            later = await h.notify()
            await h.settled(later, "sent")
    assert row.last_error == "bug in the sender"
    bug_reports = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(bug_reports) == 1
    assert "ntf_1" in bug_reports[0].getMessage()
    assert bug_reports[0].exc_info is not None
    attempts = [r.getMessage() for r in caplog.records if "channel delivery" in r.getMessage()]
    assert any(
        "notification=ntf_1 delivery=dlv_1" in line and "provider=relay-a" in line
        for line in attempts
    )


# providers: fallback and circuit breakers --------------------------------------------------


async def test_fallback_while_the_first_breaker_is_open_and_back_after_a_good_probe(
    h: Harness,
) -> None:
    breakers = Clock(100.0)
    first, first_spec = email(
        "relay-a", breaker=BreakerSettings(consecutive_failures=1, cool_down=30)
    )
    _second, second_spec = email("relay-b")
    first.fail_with(TransientSendError("connection refused", retry_after=600))
    stats = ChannelStats()
    async with h.dispatcher(first_spec, second_spec, breaker_clock=breakers, stats=stats) as d:
        opened = await h.notify()
        await h.settled(opened, "queued")
        assert [p.state for p in d.providers.health()] == [BreakerState.OPEN, BreakerState.CLOSED]

        during = await h.notify()
        row = await h.settled(during, "sent")
        assert (row.provider, row.fallback) == ("relay-b", True)

        first.succeed()
        breakers.now += 30  # cool-down over: the next send is relay-a's probe
        after = await h.notify()
        row = await h.settled(after, "sent")
        assert (row.provider, row.fallback) == ("relay-a", False)
        assert [p.state for p in d.providers.health()] == [BreakerState.CLOSED] * 2
    assert stats.fallbacks == {("email", "relay-b"): 1}
    assert stats.attempts[("email", "relay-a", "transient_error")] == 1


async def test_while_every_breaker_is_open_nothing_is_leased_until_a_probe_may_go(
    h: Harness,
) -> None:
    """Guards the attempt count: leasing a row no provider can take would spend one of
    its attempts for nothing."""
    breakers = Clock(100.0)
    relay, spec = email(breaker=BreakerSettings(consecutive_failures=1, cool_down=30))
    relay.fail_with(TransientSendError("down", retry_after=600))
    async with h.dispatcher(spec, breaker_clock=breakers):
        await h.settled(await h.notify(), "queued")
        waiting = await h.notify()
        await asyncio.sleep(0.1)
        row = await h.row(waiting)
        assert (row.status, row.attempts) == ("scheduled", 0)
        relay.succeed()
        breakers.now += 30
        row = await h.settled(waiting, "sent")
    assert row.attempts == 1


async def test_a_delivery_leased_as_the_last_breaker_opens_is_queued_for_its_half_open_time(
    h: Harness, spy: DeliveriesSpy
) -> None:
    breakers = Clock(100.0)
    relay, spec = email(breaker=BreakerSettings(consecutive_failures=1, cool_down=30))
    relay.hold()
    relay.fail_with(TransientSendError("down", retry_after=600))
    async with h.dispatcher(spec, breaker_clock=breakers) as dispatcher:
        failing = await h.notify()
        await eventually(lambda: relay.in_flight == 1)
        late = await h.notify()

        async def breaker_opens_meanwhile() -> None:
            relay.release()
            await h.settled(failing, "queued")
            breakers.now += 10  # 20 s of the cool-down are left

        spy.before_lease = breaker_opens_meanwhile
        dispatcher.nudge()
        row = await h.settled(late, "queued")
    assert row.due_at == T0 + 20_000
    assert row.last_error == CIRCUIT_OPEN_ERROR
    assert len(relay.messages) == 1


async def test_waiting_out_open_breakers_spends_none_of_the_retries(
    h: Harness, spy: DeliveriesSpy
) -> None:
    """Guards retries used up by waiting: a delivery leased as the last breaker opened
    is requeued without a send, and its lease's attempt is given back; with
    max_attempts 2, its first real send (the half-open probe) failing is retried, not
    the end of it."""
    breakers = Clock(100.0)
    relay, spec = email(breaker=BreakerSettings(consecutive_failures=1, cool_down=30))
    relay.hold()
    relay.fail_with(TransientSendError("down", retry_after=600))
    retry = RetryPolicy(backoff=Backoff(base=1.0, cap=1.0), max_attempts=2)
    async with h.dispatcher(spec, breaker_clock=breakers, retry=retry) as dispatcher:
        failing = await h.notify()
        await eventually(lambda: relay.in_flight == 1)
        waiting = await h.notify()

        async def breaker_opens_meanwhile() -> None:
            relay.release()
            await h.settled(failing, "queued")

        spy.before_lease = breaker_opens_meanwhile
        dispatcher.nudge()
        row = await h.settled(waiting, "queued")
        assert (row.attempts, row.last_error, row.due_at) == (0, CIRCUIT_OPEN_ERROR, T0 + 30_000)
        breakers.now += 30
        h.wall.now += 30_000
        row = await until(lambda: h.row(waiting), lambda r: r.provider is not None)
    assert (row.status, row.attempts, row.last_error) == ("queued", 1, "down")
    assert [m.delivery_id for m in relay.messages] == [failing, waiting]


# bounds -----------------------------------------------------------------------------------


async def test_concurrency_per_provider_is_bounded_and_nothing_more_is_leased(
    h: Harness,
) -> None:
    relay, spec = email(concurrency=3)
    relay.hold()
    deliveries = [await h.notify() for _ in range(10)]
    async with h.dispatcher(spec):
        await eventually(lambda: relay.in_flight == 3)
        await asyncio.sleep(0.1)
        statuses = [(await h.row(d)).status for d in deliveries]
        assert statuses.count("sending") == 3
        assert statuses.count("scheduled") == 7
        relay.release()
        for delivery in deliveries:
            await h.settled(delivery, "sent")
    assert relay.max_in_flight == 3
    assert len(relay.accepted) == 10


async def test_under_an_inapp_backlog_only_a_trickle_is_sent_and_the_rest_after_it(
    h: Harness,
) -> None:
    relay, spec = email(concurrency=10)
    relay.hold()
    deliveries = [await h.notify() for _ in range(12)]
    waiting = [100]  # in-app requests waiting for their commit: the server is overloaded
    dispatcher = h.dispatcher(
        spec, yield_backlog=64, yield_sends=2, inapp_backlog=lambda: waiting[0]
    )
    async with dispatcher:
        await eventually(lambda: relay.in_flight == 2)
        relay.release()
        await eventually(lambda: len(relay.accepted) >= 4)
        assert dispatcher.yielding
        assert relay.max_in_flight == 2  # never more than the trickle while yielding
        relay.hold()
        waiting[0] = 40  # under the threshold, but not under half of it: still yielding
        await asyncio.sleep(0.15)
        assert dispatcher.yielding
        assert relay.max_in_flight == 2
        waiting[0] = 10  # the burst is over: full concurrency again
        await eventually(lambda: relay.in_flight > 2)
        assert not dispatcher.yielding
        relay.release()
        for delivery in deliveries:
            await h.settled(delivery, "sent")
    assert len(relay.accepted) == 12  # every delivery went out, none twice
    assert dispatcher.yields == 1


async def test_without_an_inapp_backlog_the_dispatcher_never_yields(h: Harness) -> None:
    relay, spec = email(concurrency=5)
    relay.hold()
    deliveries = [await h.notify() for _ in range(5)]
    async with h.dispatcher(spec, inapp_backlog=lambda: 63) as dispatcher:
        await eventually(lambda: relay.in_flight == 5)
        assert not dispatcher.yielding
        relay.release()
        for delivery in deliveries:
            await h.settled(delivery, "sent")


@contextlib.asynccontextmanager
async def slow_loop(turn: float) -> AsyncIterator[asyncio.Event]:
    """The event loop of a server at max load: every turn, a callback holds it for
    `turn` seconds (CPU, as request parsing and frame writing do), in a task of its own,
    until the event yielded is set."""
    fast_again = asyncio.Event()

    async def hog() -> None:
        while not fast_again.is_set():
            busy_until = time.perf_counter() + turn
            while time.perf_counter() < busy_until:
                pass
            await asyncio.sleep(0)

    task = asyncio.create_task(hog())
    try:
        yield fast_again
    finally:
        fast_again.set()
        await task


async def test_a_slow_loop_with_inapp_work_waiting_makes_the_dispatcher_yield(
    h: Harness,
) -> None:
    """At max load the requests wait in their sockets for the loop, not in the in-app
    backlog, which stays far under `yield_backlog`: the loop's turn time must make the
    dispatcher yield (issue #12, the push-step ratio), and a fast loop end the yield."""
    relay, spec = email(concurrency=10)
    relay.hold()
    deliveries = [await h.notify() for _ in range(12)]
    dispatcher = h.dispatcher(
        spec, yield_backlog=64, yield_sends=2, yield_lag=0.02, inapp_backlog=lambda: 3
    )
    async with slow_loop(0.04) as fast_again, dispatcher:
        await eventually(lambda: relay.in_flight == 2)
        await asyncio.sleep(0.3)
        assert dispatcher.yielding
        assert relay.max_in_flight == 2
        fast_again.set()  # the burst is over: full concurrency
        await eventually(lambda: relay.in_flight > 2)
        assert not dispatcher.yielding
        relay.release()
        for delivery in deliveries:
            await h.settled(delivery, "sent")
    assert len(relay.accepted) == 12
    assert dispatcher.yields == 1


async def test_a_slow_loop_without_inapp_work_keeps_full_concurrency(h: Harness) -> None:
    """The dispatcher's own sends slow the loop too: with no in-app work waiting, a slow
    loop alone must not throttle a channel-only load to the trickle."""
    relay, spec = email(concurrency=5)
    relay.hold()
    deliveries = [await h.notify() for _ in range(5)]
    dispatcher = h.dispatcher(spec, yield_lag=0.02, inapp_backlog=lambda: 0)
    async with slow_loop(0.04), dispatcher:
        await eventually(lambda: relay.in_flight == 5)
        assert not dispatcher.yielding
        relay.release()
        for delivery in deliveries:
            await h.settled(delivery, "sent")


async def test_a_slow_provider_does_not_hold_back_another_channels_outcomes(
    h: Harness,
) -> None:
    _relay, spec = email()
    push = LocalProvider("fcm", "fcm")
    push.hold()
    await h.store.upsert_device(
        NewDevice(id="dev_1", user_id="u1", kind="fcm", address="tok", details={}, created_at=T0)
    )
    slow = await h.notify("fcm", device_id="dev_1")
    fast = await h.notify()
    async with h.dispatcher(spec, ProviderSpec(push)):
        await h.settled(fast, "sent")
        assert (await h.row(slow)).status == "sending"
        push.release()
        await h.settled(slow, "sent")


async def test_outcomes_are_written_in_batches(h: Harness, spy: DeliveriesSpy) -> None:
    _relay, spec = email(concurrency=50)
    deliveries = [await h.notify() for _ in range(40)]
    async with h.dispatcher(spec, flush_interval=0.05):
        for delivery in deliveries:
            await h.settled(delivery, "sent")
    assert sum(spy.writes) == 40
    assert len(spy.writes) <= 3


async def test_outcomes_storage_refused_are_written_once_it_accepts_again(
    h: Harness, spy: DeliveriesSpy
) -> None:
    relay, spec = email()
    spy.refuse_writes()
    delivery = await h.notify()
    async with h.dispatcher(spec):
        await eventually(lambda: spy.refused_writes >= 2)
        assert (await h.row(delivery)).status == "sending"
        spy.accept_writes()
        await h.settled(delivery, "sent", within=5)
    assert len(relay.messages) == 1


async def test_leasing_survives_storage_refusing(h: Harness, spy: DeliveriesSpy) -> None:
    _relay, spec = email()
    spy.refuse_leases()
    delivery = await h.notify()
    async with h.dispatcher(spec):
        await eventually(lambda: spy.refused_leases >= 2)
        spy.accept_leases()
        await h.settled(delivery, "sent", within=5)


# waking -----------------------------------------------------------------------------------


async def test_a_nudge_wakes_the_dispatcher_before_its_poll(h: Harness) -> None:
    _relay, spec = email()
    async with h.dispatcher(spec, poll_interval=30) as dispatcher:
        await asyncio.sleep(0.05)  # the first round found nothing; the next poll is in 30 s
        delivery = await h.notify()
        await asyncio.sleep(0.1)
        assert (await h.row(delivery)).status == "scheduled"
        dispatcher.nudge()
        await h.settled(delivery, "sent", within=1)


async def test_without_a_nudge_the_poll_finds_due_deliveries(h: Harness) -> None:
    _relay, spec = email()
    async with h.dispatcher(spec, poll_interval=0.05):
        await asyncio.sleep(0.05)
        await h.settled(await h.notify(), "sent", within=1)


# stopping ---------------------------------------------------------------------------------


async def test_stop_records_what_ends_in_time_and_cancels_the_stragglers(h: Harness) -> None:
    relay, spec = email()
    push = LocalProvider("fcm", "fcm")
    relay.hold()
    push.hold()
    await h.store.upsert_device(
        NewDevice(id="dev_1", user_id="u1", kind="fcm", address="tok", details={}, created_at=T0)
    )
    finishing = await h.notify()
    straggling = await h.notify("fcm", device_id="dev_1")
    dispatcher = h.dispatcher(spec, ProviderSpec(push), shutdown_timeout=0.3)
    dispatcher.start()
    await eventually(lambda: relay.in_flight + push.in_flight == 2)

    stopping = asyncio.create_task(dispatcher.stop())
    await asyncio.sleep(0.05)
    late = await h.notify()  # committed after stop began: left for the next start
    dispatcher.nudge()
    relay.release()
    await stopping

    assert (await h.row(finishing)).status == "sent"
    assert (await h.row(straggling)).status == "sending"  # its lease expires; sent again then
    assert (await h.row(late)).status == "scheduled"
    assert push.in_flight == 0
    assert dispatcher.in_flight == 0
    assert relay.closed
    assert push.closed


async def test_a_straggler_cancelled_at_stop_is_sent_again_after_its_lease(
    h: Harness, spy: DeliveriesSpy
) -> None:
    """The duplicate bound: what was in flight at stop is sent once more, nothing else."""
    relay, spec = email()
    relay.hold()
    delivery = await h.notify()
    dispatcher = h.dispatcher(spec, shutdown_timeout=0.05, lease=5)
    dispatcher.start()
    await eventually(lambda: relay.in_flight == 1)
    await dispatcher.stop()

    again = LocalProvider("email", "relay-a")
    h.wall.now += 5_001
    async with h.dispatcher(ProviderSpec(again)):
        row = await h.settled(delivery, "sent")
    assert row.attempts == 2
    assert len(relay.messages) + len(again.messages) == 2


async def test_stop_is_idempotent_and_works_without_start(h: Harness) -> None:
    relay, spec = email()
    dispatcher = h.dispatcher(spec)
    await dispatcher.stop()
    await dispatcher.stop()
    assert relay.closed


async def test_a_send_that_outlasts_most_of_its_lease_is_given_up_as_transient(
    h: Harness,
) -> None:
    """Guards the duplicate bound: a hung send must end, and its outcome be stored,
    before the lease lets another node send the row again."""
    relay, spec = email(breaker=BreakerSettings(consecutive_failures=1))
    relay.hold()
    delivery = await h.notify()
    async with h.dispatcher(spec, lease=1) as dispatcher:
        row = await h.settled(delivery, "queued", within=3)
        assert [p.state for p in dispatcher.providers.health()] == [BreakerState.OPEN]
    assert row.last_error == "no answer within 80% of the 1s lease"
    assert relay.in_flight == 0


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("batch_size", 0),
        ("poll_interval", 0),
        ("lease", 0.5),
        ("flush_size", 0),
        ("yield_backlog", -1),
        ("yield_sends", 0),
        ("yield_lag", -0.1),
    ],
)
def test_settings_that_cannot_work_are_refused_by_name(setting: str, value: float) -> None:
    given: dict[str, Any] = {setting: value}
    with pytest.raises(ValueError, match=f"{setting} must be"):
        DispatchSettings(**given)
