"""The webhook endpoints part of the `Storage` contract (storage/areas/webhook_endpoints.py),
on every backend: endpoints, secret rotation, addresses, and the sweep that turns
delivery status changes into webhook rows and disables failing endpoints."""

from __future__ import annotations

from typing import Any

import pytest

from storage import ConflictError, KeyRing, Storage
from storage.records import (
    DeliveryOutcome,
    DeliveryUpdate,
    NewWebhookEndpoint,
    PlannedDelivery,
    WebhookSecret,
    WebhookSweepRound,
)
from tests.storage.conftest import CREATED_AT, note, opened, raw_sql, user

T0 = CREATED_AT
NOTHING = WebhookSweepRound(announced=0, webhook_rows=0)
UPDATED = "delivery.updated"


def secret(secret_id: str, value: str, at: int = T0) -> WebhookSecret:
    return WebhookSecret(id=secret_id, secret=value, created_at=at)


def endpoint(
    endpoint_id: str = "whk_1",
    *,
    types: tuple[str, ...] = (UPDATED,),
    at: int = T0,
    value: str = "whsec_first",
) -> NewWebhookEndpoint:
    return NewWebhookEndpoint(
        id=endpoint_id,
        url=f"https://hooks.example.com/{endpoint_id}",
        event_types=types,
        description="CRM",
        secret=secret(f"whs_{endpoint_id}_1", value, at),
        created_at=at,
    )


# endpoints and secrets -----------------------------------------------------------------


async def test_create_get_list_delete(storage: Storage) -> None:
    created = await storage.create_webhook_endpoint(endpoint("whk_b"))
    await storage.create_webhook_endpoint(endpoint("whk_a", types=("notification.accepted",)))
    assert created.enabled
    assert created.consecutive_failures == 0
    assert created.disabled_reason is None
    assert [s.id for s in created.secrets] == ["whs_whk_b_1"]
    assert await storage.get_webhook_endpoint("whk_b", now=T0) == created
    first = await storage.list_webhook_endpoints(after_id=None, limit=1, now=T0)
    assert [e.id for e in first] == ["whk_a"]
    rest = await storage.list_webhook_endpoints(after_id="whk_a", limit=10, now=T0)
    assert rest == [created]
    assert await storage.delete_webhook_endpoint("whk_b") is True
    assert await storage.delete_webhook_endpoint("whk_b") is False
    assert await storage.get_webhook_endpoint("whk_b", now=T0) is None
    assert await storage.webhook_addresses(["whk_b"], now=T0) == {}


async def test_duplicate_id_is_a_conflict(storage: Storage) -> None:
    await storage.create_webhook_endpoint(endpoint())
    with pytest.raises(ConflictError) as taken:
        await storage.create_webhook_endpoint(endpoint())
    assert taken.value.field == "id"


async def test_rotation_signs_with_both_until_the_overlap_ends(storage: Storage) -> None:
    await storage.create_webhook_endpoint(endpoint())
    rotated = await storage.rotate_webhook_secret(
        "whk_1", secret("whs_2", "whsec_second", T0 + 10), previous_valid_until=T0 + 1000
    )
    assert rotated is not None
    assert [(s.id, s.expires_at) for s in rotated.secrets] == [
        ("whs_2", None),
        ("whs_whk_1_1", T0 + 1000),
    ]
    both = await storage.webhook_addresses(["whk_1"], now=T0 + 999)
    assert both == {
        "whk_1": {"url": "https://hooks.example.com/whk_1", "secret": "whsec_second,whsec_first"}
    }
    later = await storage.webhook_addresses(["whk_1"], now=T0 + 1000)
    assert later["whk_1"]["secret"] == "whsec_second"
    listed = await storage.get_webhook_endpoint("whk_1", now=T0 + 1000)
    assert listed is not None
    assert [s.id for s in listed.secrets] == ["whs_2"]


async def test_a_second_rotation_never_lengthens_an_older_secret(storage: Storage) -> None:
    await storage.create_webhook_endpoint(endpoint())
    await storage.rotate_webhook_secret(
        "whk_1", secret("whs_2", "whsec_2", T0 + 10), previous_valid_until=T0 + 100
    )
    await storage.rotate_webhook_secret(
        "whk_1", secret("whs_3", "whsec_3", T0 + 20), previous_valid_until=T0 + 500
    )
    found = await storage.get_webhook_endpoint("whk_1", now=T0 + 20)
    assert found is not None
    assert [(s.id, s.expires_at) for s in found.secrets] == [
        ("whs_3", None),
        ("whs_2", T0 + 500),
        ("whs_whk_1_1", T0 + 100),
    ]
    # Overlap 0: only the newest signs, and expired secrets are deleted on the next one.
    await storage.rotate_webhook_secret(
        "whk_1", secret("whs_4", "whsec_4", T0 + 600), previous_valid_until=T0 + 600
    )
    assert (await storage.webhook_addresses(["whk_1"], now=T0 + 600))["whk_1"]["secret"] == (
        "whsec_4"
    )


async def test_rotation_of_an_unknown_endpoint_changes_nothing(
    storage_url: str, storage: Storage
) -> None:
    rotated = await storage.rotate_webhook_secret(
        "nobody", secret("whs_x", "whsec_x"), previous_valid_until=T0
    )
    assert rotated is None
    assert await raw_sql(storage_url, "SELECT id FROM webhook_secrets") == []


async def test_secrets_are_sealed_at_rest(storage_url: str) -> None:
    async with opened(storage_url, KeyRing([("k1", bytes(range(32)))])) as store:
        await store.migrate()
        await store.create_webhook_endpoint(endpoint(value="whsec_TopSecretValue"))
        address = await store.webhook_addresses(["whk_1"], now=T0)
        assert address["whk_1"]["secret"] == "whsec_TopSecretValue"
    [(stored,)] = await raw_sql(storage_url, "SELECT secret FROM webhook_secrets")
    assert stored.startswith("enc:v1:k1:")
    assert "TopSecret" not in stored


async def test_subscribers_and_addresses_leave_out_disabled_endpoints(
    storage_url: str, storage: Storage
) -> None:
    await storage.create_webhook_endpoint(endpoint("whk_1"))
    await storage.create_webhook_endpoint(
        endpoint("whk_2", types=(UPDATED, "notification.accepted"))
    )
    await storage.create_webhook_endpoint(endpoint("whk_3", types=("notification.accepted",)))
    await raw_sql(storage_url, "UPDATE webhook_endpoints SET enabled = FALSE WHERE id = 'whk_2'")
    assert await storage.subscribed_webhook_endpoints(UPDATED) == ["whk_1"]
    assert await storage.subscribed_webhook_endpoints("notification.accepted") == ["whk_3"]
    assert set(await storage.webhook_addresses(["whk_1", "whk_2", "nobody"], now=T0)) == {"whk_1"}


# the sweep -----------------------------------------------------------------------------


def build(update: DeliveryUpdate, endpoint_id: str) -> tuple[str, dict[str, Any]]:
    event_id = f"evt_{update.delivery_id}_{update.status}"
    event = {"id": event_id, "type": UPDATED, "data": {"status": update.status}}
    return f"dlv_{event_id}_{endpoint_id}", event


async def sweep(
    store: Storage, *, at: int = T0 + 100, limit: int = 100, max_failures: int = 3
) -> WebhookSweepRound:
    return await store.announce_delivery_updates(
        limit=limit,
        build=build,
        event_type=UPDATED,
        max_consecutive_failures=max_failures,
        at=at,
    )


async def deliver(store: Storage, *rows: PlannedDelivery, user_id: str = "u1") -> None:
    if await store.get_user(user_id) is None:
        await store.create_user(user(user_id))
    await store.insert_notifications([note(f"n_{rows[0].id}", user_id, deliveries=rows)])


def email(delivery_id: str) -> PlannedDelivery:
    return PlannedDelivery(id=delivery_id, channel="email", due_at=T0, status="queued")


def webhook(delivery_id: str, endpoint_id: str = "whk_1") -> PlannedDelivery:
    return PlannedDelivery(
        id=delivery_id,
        channel="webhook",
        due_at=T0,
        status="queued",
        endpoint_id=endpoint_id,
        cancel_on_read=False,
        event={"id": f"evt_{delivery_id}", "type": "notification.accepted"},
    )


async def finish(store: Storage, delivery_id: str, status: str, code: str | None = None) -> None:
    """Lease everything due and record `status` for `delivery_id` (others back to queued)."""
    leased = await store.lease_due_deliveries(
        ["email", "webhook"], now=T0 + 50, limit=100, owner="test", lease_ms=60_000
    )
    outcomes = [
        DeliveryOutcome(
            delivery_id=row.id,
            at=T0 + 60,
            status=status if row.id == delivery_id else "queued",
            next_due_at=None if row.id == delivery_id else T0,
            provider="p1",
            provider_code=code if row.id == delivery_id else None,
            error=None if status == "sent" else "refused",
        )
        for row in leased
    ]
    await store.record_delivery_outcomes(outcomes)


async def webhook_rows(store: Storage, notification_id: str) -> list[Any]:
    return [d for d in await store.channel_deliveries_of(notification_id) if d.channel == "webhook"]


async def test_a_status_change_becomes_one_row_per_subscriber(storage: Storage) -> None:
    await storage.create_webhook_endpoint(endpoint("whk_1"))
    await storage.create_webhook_endpoint(endpoint("whk_2"))
    await storage.create_webhook_endpoint(endpoint("whk_3", types=("notification.accepted",)))
    await storage.create_webhook_endpoint(endpoint("whk_late", at=T0 + 70))
    await deliver(storage, email("d1"))
    assert await sweep(storage) == NOTHING  # queued: nothing to announce
    await finish(storage, "d1", "sent")
    assert await storage.pending_delivery_updates() == 1
    assert await sweep(storage) == WebhookSweepRound(announced=1, webhook_rows=2)
    assert await storage.pending_delivery_updates() == 0
    rows = await webhook_rows(storage, "n_d1")
    # Not whk_3 (other event type) nor whk_late (created after the change).
    assert sorted((r.endpoint_id, r.status, r.due_at) for r in rows) == [
        ("whk_1", "queued", T0 + 100),
        ("whk_2", "queued", T0 + 100),
    ]
    leased = await storage.lease_due_deliveries(
        ["webhook"], now=T0 + 200, limit=10, owner="w", lease_ms=1000
    )
    assert {row.event["id"] for row in leased if row.event} == {"evt_d1_sent"}
    assert {row.address["url"] for row in leased} == {
        "https://hooks.example.com/whk_1",
        "https://hooks.example.com/whk_2",
    }
    # Announced once: a second sweep makes nothing more.
    assert await sweep(storage) == NOTHING
    assert len(await webhook_rows(storage, "n_d1")) == 2


async def test_sweep_pages_by_limit(storage: Storage) -> None:
    await storage.create_webhook_endpoint(endpoint())
    await deliver(storage, email("d1"), email("d2"), email("d3"))
    for delivery_id in ("d1", "d2", "d3"):
        await finish(storage, delivery_id, "failed")
    assert (await sweep(storage, limit=2)).announced == 2
    assert await storage.pending_delivery_updates() == 1
    assert (await sweep(storage, limit=2)).announced == 1
    assert len(await webhook_rows(storage, "n_d1")) == 3


async def test_webhook_failures_disable_the_endpoint_after_the_limit(storage: Storage) -> None:
    await storage.create_webhook_endpoint(endpoint("whk_1", types=()))
    await deliver(storage, *(webhook(f"w{i}") for i in range(4)))
    await finish(storage, "w0", "failed")
    await finish(storage, "w1", "sent")  # a success resets the count
    await finish(storage, "w2", "failed")
    assert (await sweep(storage, max_failures=2)).disabled == ()
    found = await storage.get_webhook_endpoint("whk_1", now=T0)
    assert found is not None
    assert (found.enabled, found.consecutive_failures) == (True, 1)
    await finish(storage, "w3", "failed")
    [disabled] = (await sweep(storage, max_failures=2)).disabled
    assert disabled.endpoint_id == "whk_1"
    assert "2 events in a row failed" in disabled.reason
    found = await storage.get_webhook_endpoint("whk_1", now=T0)
    assert found is not None
    assert (found.enabled, found.disabled_reason, found.disabled_at) == (
        False,
        disabled.reason,
        T0 + 100,
    )
    assert await storage.webhook_addresses(["whk_1"], now=T0) == {}
    enabled = await storage.enable_webhook_endpoint("whk_1", at=T0 + 300)
    assert enabled is not None
    assert (enabled.enabled, enabled.disabled_reason, enabled.consecutive_failures) == (
        True,
        None,
        0,
    )
    assert await storage.enable_webhook_endpoint("nobody", at=T0) is None


async def test_410_disables_at_once(storage: Storage) -> None:
    await storage.create_webhook_endpoint(endpoint("whk_1", types=()))
    await deliver(storage, webhook("w0"))
    await finish(storage, "w0", "failed", code="410")
    [disabled] = (await sweep(storage, max_failures=50)).disabled
    assert "410 Gone" in disabled.reason


async def test_erasure_takes_the_users_webhook_rows_along(storage: Storage) -> None:
    await storage.create_webhook_endpoint(endpoint())
    await deliver(storage, email("d1"))
    await finish(storage, "d1", "sent")
    await sweep(storage)
    await storage.erase_user("u1", batch_size=10)
    assert await storage.channel_deliveries_of("n_d1") == []
    assert await storage.get_webhook_endpoint("whk_1", now=T0) is not None
