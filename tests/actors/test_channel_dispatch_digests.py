"""ChannelDispatcher and digests (pushd/routing/digests.py): one send per digest, its
outcome recorded on every row of it, retried together."""

from __future__ import annotations

from actors.channel_dispatch import ChannelDispatcher, DispatchSettings
from actors.channel_outcomes import RetryPolicy
from actors.channel_providers import ProviderPool, ProviderSpec
from actors.channel_sender import PermanentSendError, TransientSendError
from actors.retry import Backoff
from pushd.routing.digests import DigestComposer
from storage.records import NewNotification, PlannedDelivery
from tests.actors.channel_doubles import DeliveriesSpy, LocalProvider
from tests.actors.doubles import eventually
from tests.actors.test_channel_dispatch import Clock, Store, spy, store, until, wall

__all__ = ["spy", "store", "wall"]  # fixtures used by name

WINDOW = 60_000


def dispatcher(
    spy: DeliveriesSpy, wall: Clock, relay: LocalProvider, *, digests: bool = True
) -> ChannelDispatcher:
    return ChannelDispatcher(
        spy,
        ProviderPool([ProviderSpec(relay)]),
        node_id="node-a",
        settings=DispatchSettings(
            poll_interval=0.02,
            flush_interval=0.005,
            retry=RetryPolicy(backoff=Backoff(base=1.0, cap=1.0)),
        ),
        clock=wall.ms,
        digests=DigestComposer({"news": "Team news"}.get) if digests else None,
    )


async def digest_rows(store: Store, count: int, wall: Clock) -> list[str]:
    await store.insert_notifications(
        [
            NewNotification(
                id=f"ntf_{i}",
                user_id="u1",
                title=f"title {i}",
                category="news",
                created_at=wall.ms() + i,
                deliveries=(
                    PlannedDelivery(
                        id=f"dlv_{i}",
                        channel="email",
                        due_at=wall.ms() + i + WINDOW,
                        status="scheduled",
                        reason="digest",
                    ),
                ),
            )
            for i in range(count)
        ]
    )
    return [f"ntf_{i}" for i in range(count)]


async def statuses(store: Store, ids: list[str]) -> list[tuple[str, str | None, int]]:
    rows = [(await store.channel_deliveries_of(n))[0] for n in ids]
    return [(r.status, r.provider_message_id, r.attempts) for r in rows]


async def test_a_digest_is_one_send_and_a_retry_is_shared(
    store: Store, spy: DeliveriesSpy, wall: Clock
) -> None:
    relay = LocalProvider("email", "relay-a")
    relay.fail_with(TransientSendError("try later"))
    ids = await digest_rows(store, 3, wall)
    async with dispatcher(spy, wall, relay) as running:
        running.nudge()
        wall.now += WINDOW  # the oldest row is due: the whole digest goes
        queued = await until(
            lambda: statuses(store, ids), lambda s: {x[0] for x in s} == {"queued"}
        )
        assert queued == [("queued", None, 1)] * 3
        assert len(relay.messages) == 1
        (message,) = relay.messages
        assert message.content["subject"] == "3 new notifications in Team news"
        assert message.data == {"digest": ids}
        relay.succeed()
        wall.now += 1_000  # the retry is due, for the three rows together
        sent = await until(lambda: statuses(store, ids), lambda s: {x[0] for x in s} == {"sent"})
    assert sent == [("sent", "relay-a-1", 2)] * 3
    assert len(relay.messages) == 2
    assert len(relay.accepted) == 1
    history = await store.delivery_history_of("ntf_2")
    assert [h.status for h in history] == ["queued", "sent"]


async def test_a_permanent_refusal_fails_every_row(
    store: Store, spy: DeliveriesSpy, wall: Clock
) -> None:
    relay = LocalProvider("email", "relay-a")
    relay.fail_with(PermanentSendError("mailbox unknown"))
    ids = await digest_rows(store, 2, wall)
    wall.now += WINDOW
    async with dispatcher(spy, wall, relay):
        failed = await until(
            lambda: statuses(store, ids), lambda s: {x[0] for x in s} == {"failed"}
        )
    assert failed == [("failed", None, 1)] * 2
    assert len(relay.messages) == 1


async def test_without_a_composer_digest_rows_are_never_sent_one_by_one(
    store: Store, spy: DeliveriesSpy, wall: Clock
) -> None:
    relay = LocalProvider("email", "relay-a")
    ids = await digest_rows(store, 2, wall)
    wall.now += WINDOW * 2
    async with dispatcher(spy, wall, relay, digests=False) as running:
        running.nudge()
        await eventually(lambda: len(spy.leases) >= 3)
    assert relay.messages == []
    assert spy.digest_leases == []
    assert await statuses(store, ids) == [("scheduled", None, 0)] * 2
