"""The SQLite backend: the embedded default, one file and no server.

Every call runs on ONE dedicated worker thread that owns the only connection: the
event loop never waits on SQLite, and the single thread serialises this process's
access without a lock. Each storage call is one job on that thread and a write job is
a whole `BEGIN IMMEDIATE ... COMMIT`, so a caller cancelled mid-call can never leave a
transaction open. Other processes on the same file are kept out by SQLite's own write
lock, waited for up to `busy_timeout`.

`engine.py` holds the thread, the connection and the lifecycle; each area's SQLite
part is the module of its name, and `SqliteStorage` composes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from storage.sql.categories import CategoriesSql
from storage.sql.engagement import EngagementSql
from storage.sql.idempotency import IdempotencyKeysSql
from storage.sql.preferences import UserPreferencesSql
from storage.sql.relay import OutboxRelaySql
from storage.sql.sends import SendsSql
from storage.sql.templates import TemplatesSql
from storage.sql.topics import TopicsSql
from storage.sqlite.access import SqliteApiKeysAndRevocations
from storage.sqlite.audit import SqliteAuditTrail
from storage.sqlite.channel_deliveries import SqliteChannelDeliveries
from storage.sqlite.cursors import SqliteDeliveryCursors
from storage.sqlite.data_protection import SqliteDataProtection
from storage.sqlite.digests import SqliteDigests
from storage.sqlite.engine import SqliteEngine
from storage.sqlite.notifications import SqliteNotifications
from storage.sqlite.scheduled import SqliteScheduledSends
from storage.sqlite.segments import SqliteSegments
from storage.sqlite.users import SqliteUsersAndDevices
from storage.sqlite.webhook_endpoints import SqliteWebhookEndpoints

if TYPE_CHECKING:
    from storage.protocol import Storage

__all__ = ["SqliteStorage"]


class SqliteStorage(
    SqliteUsersAndDevices,
    SqliteNotifications,
    SqliteDeliveryCursors,
    IdempotencyKeysSql,
    OutboxRelaySql,
    SqliteApiKeysAndRevocations,
    SqliteAuditTrail,
    SqliteDataProtection,
    SqliteChannelDeliveries,
    SqliteDigests,
    UserPreferencesSql,
    SqliteWebhookEndpoints,
    TopicsSql,
    TemplatesSql,
    SendsSql,
    SqliteSegments,
    SqliteScheduledSends,
    CategoriesSql,
    EngagementSql,
    SqliteEngine,
):
    """`Storage` on a SQLite file, for a single node (the embedded shape)."""


if TYPE_CHECKING:
    # mypy proves here that the areas composed above make a whole `Storage`.
    _COMPLETE: type[Storage] = SqliteStorage
