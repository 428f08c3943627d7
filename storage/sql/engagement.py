"""Engagement (`storage.areas.engagement`): SQL and the method, the same on both
backends."""

from __future__ import annotations

from storage.areas.engagement import EngagementRecord
from storage.sql.common import check_limit
from storage.sql.engine import SqlEngine

# The user's most recent reads (index notifications_read_by_user of migration 0018).
RECENT_READS = (
    "SELECT read_at FROM notifications "
    "WHERE user_id = $1 AND read_at IS NOT NULL AND read_at >= $2 "
    "ORDER BY read_at DESC LIMIT $3"
)
# Per sent delivery of those reads: its channel and how long after its send the read
# came. A retried row has several `sent`-less attempts but one `sent` history row.
READ_DELAYS = (
    "SELECT d.channel, n.read_at - h.at FROM notifications n "
    "JOIN channel_deliveries d ON d.notification_id = n.id "
    "JOIN channel_delivery_history h ON h.delivery_id = d.id AND h.status = 'sent' "
    "WHERE n.user_id = $1 AND n.read_at IS NOT NULL AND n.read_at >= $2 "
    "AND n.read_at >= h.at "
    "ORDER BY n.read_at DESC, d.id LIMIT $3"
)


class EngagementSql(SqlEngine):
    """`Engagement`."""

    async def engagement_of(self, user_id: str, *, since: int, limit: int) -> EngagementRecord:
        """See `Engagement.engagement_of`."""
        check_limit(limit)
        params = (user_id, since, limit)
        reads, sent = await self._read_many([(RECENT_READS, params), (READ_DELAYS, params)])
        delays: dict[str, list[int]] = {}
        for channel, delay in sent:
            delays.setdefault(channel, []).append(int(delay))
        return EngagementRecord(read_times=[int(row[0]) for row in reads], read_delays=delays)
