"""The outbox relay (`storage.areas.relay`): SQL and the methods."""

# S608 (SQL built from strings): every query here is assembled at import time from
# constants only; values always travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

from storage.records import NotificationRecord
from storage.sql.common import check_limit
from storage.sql.engine import SqlEngine
from storage.sql.notifications import (
    NOTIFICATION_COLUMNS,
    NOTIFICATIONS_FROM,
    notification_from_row,
)

UNPUBLISHED = (
    f"SELECT {NOTIFICATION_COLUMNS} FROM {NOTIFICATIONS_FROM} WHERE node_id = $1 AND gid > $2 "
    "ORDER BY gid LIMIT $3"
)
MAX_GID = "SELECT coalesce(max(gid), 0) FROM notifications WHERE node_id = $1"
GET_RELAY_MARK = "SELECT published_gid FROM relay_marks WHERE node_id = $1"
SET_RELAY_MARK = (
    "INSERT INTO relay_marks (node_id, published_gid) VALUES ($1, $2) "
    "ON CONFLICT (node_id) DO UPDATE SET published_gid = excluded.published_gid "
    "WHERE relay_marks.published_gid < excluded.published_gid"
)


class OutboxRelaySql(SqlEngine):
    """`OutboxRelay`, the same on both backends."""

    async def get_relay_mark(self, node_id: str) -> int | None:
        """See `OutboxRelay.get_relay_mark`."""
        row = await self._fetch_one(GET_RELAY_MARK, node_id)
        return None if row is None else int(row[0])

    async def set_relay_mark(self, node_id: str, published_gid: int) -> None:
        """See `OutboxRelay.set_relay_mark`."""
        await self._write_one(SET_RELAY_MARK, node_id, published_gid)

    async def unpublished_notifications(
        self, node_id: str, *, after_gid: int, limit: int
    ) -> list[NotificationRecord]:
        """See `OutboxRelay.unpublished_notifications`."""
        check_limit(limit)
        rows = await self._fetch_all(UNPUBLISHED, node_id, after_gid, limit)
        return [notification_from_row(row, self._cipher) for row in rows]

    async def max_gid(self, node_id: str) -> int:
        """See `OutboxRelay.max_gid`."""
        return int((await self._fetch_one(MAX_GID, node_id))[0])
