"""The events pushd POSTs to webhook endpoints (docs/channels.md, "Webhook events"), and
how each becomes durable: an event to an endpoint is a channel delivery of channel
"webhook" whose `event` is the JSON posted, sent and retried like any other.

- `notification.accepted`: rows planned WITH the notification (`accepted_webhooks`),
  committed in its transaction, one per enabled endpoint subscribed to it.
- `delivery.updated`: a delivery's status column is the durable record of its change
  (sent, delivered, failed); `WebhookEventSweep` takes the rows whose status was not
  announced yet and, in one transaction, adds a webhook row per subscribed endpoint and
  marks them announced (storage `announce_delivery_updates`). A crash in between loses
  nothing (the transaction rolls back, the next round takes the rows again), and the
  worker's hot path (`record_delivery_outcomes`) pays nothing for it. The same rounds
  count each endpoint's failures and disable the ones that keep failing.

Event ids of `delivery.updated` are derived from the delivery and its status, so a
receiver that deduplicates on `Pushd-Event-Id` sees each status of a delivery once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Sequence
from typing import Any, Final

import msgspec

from pushd.channels.webhooks import WebhookConfig
from pushd.ids import from_ms, new_id, now_ms
from storage import Storage, StorageError
from storage.areas.webhook_endpoints import WebhookEndpoints
from storage.records import DeliveryUpdate, NewNotification, PlannedDelivery

log = logging.getLogger("pushd.channels.webhook_events")

NOTIFICATION_ACCEPTED: Final = "notification.accepted"
DELIVERY_UPDATED: Final = "delivery.updated"
EVENT_TYPES: Final = (NOTIFICATION_ACCEPTED, DELIVERY_UPDATED)

SUBSCRIBERS_TTL: Final = 2.0
"""Seconds a node reuses the list of subscribed endpoints when planning. The node that
changes an endpoint forgets its list at once; other nodes follow within this time."""


def _iso(millis: int) -> str:
    return from_ms(millis).isoformat().replace("+00:00", "Z")


def _derived_id(prefix: str, *parts: str) -> str:
    """An id of the usual shape (prefix, then 26 characters of the id alphabet) that is
    the same for the same parts: hex is a subset of that alphabet."""
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
    return f"{prefix}_{digest[:26]}"


# notification.accepted -----------------------------------------------------------------


def accepted_event(
    notification: NewNotification, planned: Sequence[PlannedDelivery]
) -> dict[str, Any]:
    """The `notification.accepted` event: the notification (never its content, which the
    application sent and knows) and the channel deliveries planned for it."""
    return {
        "id": new_id("evt"),
        "type": NOTIFICATION_ACCEPTED,
        "created_at": _iso(notification.created_at),
        "data": {
            "notification_id": notification.id,
            "user_id": notification.user_id,
            "category": notification.category,
            "priority": notification.priority,
            "expires_at": None
            if notification.expires_at is None
            else _iso(notification.expires_at),
            "deliveries": [
                {
                    "delivery_id": row.id,
                    "channel": row.channel,
                    "status": row.status,
                    "reason": row.reason,
                    "due_at": _iso(row.due_at),
                }
                for row in planned
                if row.channel != "webhook"
            ],
        },
    }


def accepted_webhooks(
    endpoint_ids: Sequence[str],
    notification: NewNotification,
    planned: Sequence[PlannedDelivery],
) -> tuple[PlannedDelivery, ...]:
    """The webhook rows to commit with `notification`: one per endpoint subscribed to
    `notification.accepted` (`WebhookSubscribers`), all carrying the same event, due at
    once and never cancelled by a read. `planned` is the notification's channel plan."""
    if not endpoint_ids:
        return ()
    event = accepted_event(notification, planned)
    return tuple(
        PlannedDelivery(
            id=new_id("dlv"),
            channel="webhook",
            due_at=notification.created_at,
            endpoint_id=endpoint_id,
            cancel_on_read=False,
            status="queued",
            event=event,
        )
        for endpoint_id in endpoint_ids
    )


async def with_accepted_webhooks(
    subscribers: WebhookSubscribers, notification: NewNotification
) -> NewNotification:
    """`notification` with its `notification.accepted` webhook rows added to its
    deliveries (committed with it); the same notification when no endpoint subscribes."""
    endpoint_ids = await subscribers.endpoints_for(NOTIFICATION_ACCEPTED)
    rows = accepted_webhooks(endpoint_ids, notification, notification.deliveries)
    if not rows:
        return notification
    return msgspec.structs.replace(notification, deliveries=(*notification.deliveries, *rows))


class WebhookSubscribers:
    """The endpoints subscribed to an event type, read from storage at most every
    `SUBSCRIBERS_TTL` seconds: planning a notification must not cost a read each."""

    def __init__(self, storage: WebhookEndpoints, *, ttl: float = SUBSCRIBERS_TTL) -> None:
        self._storage = storage
        self._ttl = ttl
        self._cached: dict[str, tuple[float, tuple[str, ...]]] = {}

    async def endpoints_for(self, event_type: str) -> tuple[str, ...]:
        """Ids of the enabled endpoints that receive `event_type`."""
        now = time.monotonic()
        cached = self._cached.get(event_type)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        found = tuple(await self._storage.subscribed_webhook_endpoints(event_type))
        self._cached[event_type] = (now, found)
        return found

    def forget(self) -> None:
        """An endpoint changed on this node: read the lists again next time."""
        self._cached.clear()


# delivery.updated ----------------------------------------------------------------------


def delivery_updated(update: DeliveryUpdate, endpoint_id: str) -> tuple[str, dict[str, Any]]:
    """The webhook row id and the `delivery.updated` event for one endpoint (storage's
    `EventBuilder`). Both derive from the delivery, its status and the endpoint: a sweep
    that runs twice makes the same row, which the database keeps once."""
    event_id = _derived_id("evt", update.delivery_id, update.status)
    event = {
        "id": event_id,
        "type": DELIVERY_UPDATED,
        "created_at": _iso(update.updated_at),
        "data": {
            "delivery_id": update.delivery_id,
            "notification_id": update.notification_id,
            "user_id": update.user_id,
            "channel": update.channel,
            "device_id": update.device_id,
            "status": update.status,
            "attempts": update.attempts,
            "provider": update.provider,
            "fallback": update.fallback,
            "provider_message_id": update.provider_message_id,
            "error": update.error,
        },
    }
    return _derived_id("dlv", event_id, endpoint_id), event


class WebhookEventSweep:
    """Turns delivery status changes into `delivery.updated` webhook rows and disables
    failing endpoints, every `sweep_interval` seconds, round after round while a round
    comes back full. One owned task (`start`/`close`); every node runs one, and the
    storage keeps two rounds from taking the same rows."""

    def __init__(self, storage: Storage, config: WebhookConfig) -> None:
        self._storage = storage
        self._config = config
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.rounds = 0
        """Completed rounds (tests, metrics)."""

    async def start(self) -> None:
        """Start the task (owned here, cancelled and awaited by `close`)."""
        self._task = asyncio.create_task(self._loop(), name="pushd-webhook-sweep")

    async def close(self) -> None:
        """Stop the task; a round in flight is cancelled (its transaction rolls back and
        the next start takes its rows again). Idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def wake(self) -> None:
        """Run a round now rather than at the next interval."""
        self._wake.set()

    async def run_once(self) -> int:
        """Sweep until nothing is left; return how many deliveries were announced."""
        total = 0
        while True:
            result = await self._storage.announce_delivery_updates(
                limit=self._config.sweep_batch,
                build=delivery_updated,
                event_type=DELIVERY_UPDATED,
                max_consecutive_failures=self._config.disable_after,
                at=now_ms(),
            )
            self.rounds += 1
            total += result.announced
            for disabled in result.disabled:
                log.warning(
                    "webhook endpoint %s disabled: %s", disabled.endpoint_id, disabled.reason
                )
            if result.announced < self._config.sweep_batch:
                return total

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except StorageError as exc:
                log.warning("webhook sweep failed, retrying next round: %s", exc)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._config.sweep_interval):
                    await self._wake.wait()
