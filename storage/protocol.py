"""The storage seam: `Storage`, the one object the app receives, is every area protocol
of `storage/areas/` plus the lifecycle. Every backend (SQLite, PostgreSQL) honours
exactly this contract; tests/storage/test_<area>_contract.py check it area by area
against each of them."""

from __future__ import annotations

from typing import Protocol

from storage.areas.access import ApiKeysAndRevocations
from storage.areas.audit import AuditTrail
from storage.areas.categories import Categories
from storage.areas.channel_deliveries import ChannelDeliveries
from storage.areas.cursors import DeliveryCursors
from storage.areas.data_protection import DataProtection
from storage.areas.engagement import Engagement
from storage.areas.idempotency import IdempotencyKeys
from storage.areas.notifications import Notifications
from storage.areas.preferences import UserPreferences
from storage.areas.relay import OutboxRelay
from storage.areas.scheduled import ScheduledSends
from storage.areas.segments import Segments
from storage.areas.sends import Sends
from storage.areas.templates import Templates
from storage.areas.topics import Topics
from storage.areas.users import UsersAndDevices
from storage.areas.webhook_endpoints import WebhookEndpoints


class Lifecycle(Protocol):
    """Opening is `open_storage`; the schema, liveness and closing are here."""

    async def migrate(self) -> int:
        """Bring the schema up to the newest known version; return that version.

        Idempotent and safe to run from several processes at once (serialised by a lock).
        Raises `SchemaTooNewError` when the database is newer than this code, without
        changing anything.
        """
        ...

    async def schema_version(self) -> int:
        """The version the database is at (0 for an empty database)."""
        ...

    async def ping(self) -> None:
        """Return when the database answers a trivial query; raise `StorageUnavailableError`."""
        ...

    async def close(self) -> None:
        """Release connections. Idempotent. Pending operations finish first."""
        ...


class Storage(
    Lifecycle,
    UsersAndDevices,
    Notifications,
    DeliveryCursors,
    IdempotencyKeys,
    OutboxRelay,
    ApiKeysAndRevocations,
    AuditTrail,
    DataProtection,
    ChannelDeliveries,
    UserPreferences,
    WebhookEndpoints,
    Topics,
    Templates,
    Sends,
    Segments,
    ScheduledSends,
    Categories,
    Engagement,
    Protocol,
):
    """Durable state of pushd, area by area.

    All methods are coroutines and never block the event loop. Any failure to reach the
    database surfaces as `StorageUnavailableError`; nothing else from a driver leaks out.
    Calls after `close()` raise `StorageUnavailableError` too. A negative `limit` raises
    `ValueError`.
    """
