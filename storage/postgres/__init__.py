"""The PostgreSQL backend (cluster shape), on an asyncpg connection pool.

Every driver error is translated on its way out: failures to reach or keep the server
become `StorageUnavailableError` naming host:port and the likely fix, uniqueness
violations `ConflictError`, anything else a plain `StorageError`.

Statements that update several users lock them first in id order (in a sub-select: its
row locks are taken above its sort): an UPDATE locks rows in whatever order its join
yields them, so two nodes whose batches share users could otherwise deadlock.

`engine.py` holds the pool, error translation and the lifecycle; each area's
PostgreSQL part is the module of its name, and `PostgresStorage` composes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from storage.postgres.access import PostgresApiKeysAndRevocations
from storage.postgres.audit import PostgresAuditTrail
from storage.postgres.channel_deliveries import PostgresChannelDeliveries
from storage.postgres.cursors import PostgresDeliveryCursors
from storage.postgres.digests import PostgresDigests
from storage.postgres.engine import PostgresEngine
from storage.postgres.notifications import PostgresNotifications
from storage.postgres.scheduled import PostgresScheduledSends
from storage.postgres.segments import PostgresSegments
from storage.postgres.users import PostgresUsersAndDevices
from storage.postgres.webhook_endpoints import PostgresWebhookEndpoints
from storage.sql.categories import CategoriesSql
from storage.sql.data_protection import DataProtectionSql
from storage.sql.engagement import EngagementSql
from storage.sql.idempotency import IdempotencyKeysSql
from storage.sql.preferences import UserPreferencesSql
from storage.sql.relay import OutboxRelaySql
from storage.sql.sends import SendsSql
from storage.sql.templates import TemplatesSql
from storage.sql.topics import TopicsSql

if TYPE_CHECKING:
    from storage.protocol import Storage

__all__ = ["PostgresStorage"]


class PostgresStorage(
    PostgresUsersAndDevices,
    PostgresNotifications,
    PostgresDeliveryCursors,
    IdempotencyKeysSql,
    OutboxRelaySql,
    PostgresApiKeysAndRevocations,
    PostgresAuditTrail,
    DataProtectionSql,
    PostgresChannelDeliveries,
    PostgresDigests,
    UserPreferencesSql,
    PostgresWebhookEndpoints,
    TopicsSql,
    TemplatesSql,
    SendsSql,
    PostgresSegments,
    PostgresScheduledSends,
    CategoriesSql,
    EngagementSql,
    PostgresEngine,
):
    """`Storage` on PostgreSQL, shared by every node of a cluster."""


if TYPE_CHECKING:
    # mypy proves here that the areas composed above make a whole `Storage`.
    _COMPLETE: type[Storage] = PostgresStorage
