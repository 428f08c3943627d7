"""Webhook endpoints (issue #12): where applications want pushd's events, with their
signing secrets, and the sweep that turns delivery status changes into webhook rows.

An event to an endpoint is a channel delivery of channel "webhook" (its `endpoint_id`
set, its `event` the JSON posted), leased, sent, retried and recorded like any other
(storage/areas/channel_deliveries.py): `notification.accepted` rows are planned with
the notification; `delivery.updated` rows are made by `announce_delivery_updates` from
the status column of the deliveries, which is the durable record of the change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from storage.records import (
    DeliveryUpdate,
    NewWebhookEndpoint,
    WebhookEndpointRecord,
    WebhookSecret,
    WebhookSweepRound,
)

EventBuilder = Callable[[DeliveryUpdate, str], tuple[str, dict[str, Any]]]
"""(a delivery's announced change, the endpoint id) -> (the webhook row's id, the event
to POST). Both must be the same whenever called with the same arguments (so that a
sweep that runs twice, on two nodes, makes each row once)."""


class WebhookEndpoints(Protocol):
    """Registered endpoints, their secrets, and their health."""

    async def create_webhook_endpoint(self, endpoint: NewWebhookEndpoint) -> WebhookEndpointRecord:
        """Insert the endpoint, enabled, with its first secret. Raises
        `ConflictError(field="id")` on a duplicate id."""
        ...

    async def get_webhook_endpoint(
        self, endpoint_id: str, *, now: int
    ) -> WebhookEndpointRecord | None:
        """The endpoint with the secrets that sign at `now` (never their values), or None."""
        ...

    async def list_webhook_endpoints(
        self, *, after_id: str | None, limit: int, now: int
    ) -> list[WebhookEndpointRecord]:
        """Endpoints by id ascending, after `after_id` (exclusive), at most `limit`."""
        ...

    async def delete_webhook_endpoint(self, endpoint_id: str) -> bool:
        """Remove the endpoint and its secrets; return whether it existed. Its events not
        sent yet find no address when leased, and are skipped."""
        ...

    async def rotate_webhook_secret(
        self, endpoint_id: str, secret: WebhookSecret, *, previous_valid_until: int
    ) -> WebhookEndpointRecord | None:
        """In ONE transaction: add `secret` as the newest, let every older secret sign
        until `previous_valid_until` at the latest (one expiring sooner keeps its own
        expiry), and delete the secrets expired by `secret.created_at`. None (nothing
        changed) for an unknown endpoint."""
        ...

    async def enable_webhook_endpoint(
        self, endpoint_id: str, *, at: int
    ) -> WebhookEndpointRecord | None:
        """Enable the endpoint again: no disabled reason, failure count 0. Events made
        while it was disabled are not sent again. None for an unknown endpoint."""
        ...

    async def subscribed_webhook_endpoints(self, event_type: str) -> list[str]:
        """Ids of the enabled endpoints that receive `event_type`, ascending."""
        ...

    async def webhook_addresses(
        self, endpoint_ids: Sequence[str], *, now: int
    ) -> dict[str, dict[str, str]]:
        """Where each of these endpoints' events go, as a channel sender takes it:
        {"url", "secret"}, `secret` being the secrets that sign at `now`, newest first,
        separated by commas (pushd/channels/webhooks.py). Disabled and unknown endpoints
        are left out: their events have no address (skipped)."""
        ...

    async def announce_delivery_updates(
        self,
        *,
        limit: int,
        build: EventBuilder,
        event_type: str,
        max_consecutive_failures: int,
        at: int,
    ) -> WebhookSweepRound:
        """One round of the webhook sweep, in ONE transaction, over up to `limit`
        deliveries whose status (sent, delivered or failed) is not announced yet,
        oldest change first; each is then marked announced. Two nodes never take the
        same row at once (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: the single writer).

        - A delivery of another channel becomes one webhook row (queued, due `at`, not
          cancelled by a read) per enabled endpoint subscribed to `event_type` that
          existed when the status changed, made by `build` (called inside the
          transaction, on SQLite's worker thread: it must be pure and quick).
        - A webhook row that was sent resets its endpoint's failure count; one that
          failed adds one, and disables the endpoint when the count reaches
          `max_consecutive_failures`, or at once when the endpoint answered 410 Gone.

        Returns how many deliveries it announced, how many rows it made, and the
        endpoints it disabled.
        """
        ...

    async def pending_delivery_updates(self) -> int:
        """How many deliveries wait for the sweep (a gauge; 0 when it keeps up)."""
        ...
