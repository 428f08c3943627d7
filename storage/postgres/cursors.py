"""Delivery cursors on PostgreSQL: every given user's cursors moved by one statement, which
also cancels the channel deliveries the ack cursors passed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from storage.postgres.channel_deliveries import ACKED_CANCEL_CTES
from storage.postgres.engine import PostgresEngine
from storage.records import CursorTimes
from storage.sql.cursors import (
    DeliveryCursorsSql,
    cursor_times_from_rows,
    cursor_times_sql,
    merge_cursors,
)

# Both cursors of every given user in one statement, rows locked in id order
# (storage/postgres/__init__.py), a history row for each cursor that moved, and the
# unsent channel deliveries of the seqs an ack cursor passed cancelled ({cancel}).
# {sent_limit} and {ack_limit} are empty, or (`within`) a further bound LEAST takes:
# just below the first notification above the cursor of a category not in $5 (NULL,
# ignored, if none).
_ADVANCE_CURSORS_TEMPLATE = """
WITH given AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS g(id, sent, acked)
),
locked AS (
    SELECT users.id, users.sent_seq AS old_sent, users.ack_seq AS old_ack, given.sent,
           given.acked
    FROM users JOIN given ON users.id = given.id ORDER BY users.id FOR UPDATE OF users
),
moved AS (
    UPDATE users
    SET sent_seq = GREATEST(users.sent_seq, LEAST(locked.sent, users.last_seq{sent_limit})),
        ack_seq = GREATEST(users.ack_seq, LEAST(locked.acked, users.last_seq{ack_limit}))
    FROM locked WHERE users.id = locked.id
    RETURNING users.id, users.sent_seq, users.ack_seq, locked.old_sent, locked.old_ack
),{cancel}
INSERT INTO cursor_history (user_id, cursor, seq, at)
SELECT id, 'sent', sent_seq, $4::bigint FROM moved WHERE sent_seq > old_sent
UNION ALL
SELECT id, 'acked', ack_seq, $4::bigint FROM moved WHERE ack_seq > old_ack
ON CONFLICT DO NOTHING
"""
_ADVANCE_CURSORS = _ADVANCE_CURSORS_TEMPLATE.format(
    sent_limit="", ack_limit="", cancel=ACKED_CANCEL_CTES
)
_CURSOR_LIMIT = (
    ", (SELECT min(n.seq) - 1 FROM notifications n WHERE n.user_id = users.id "
    "AND n.seq > users.{0} AND (n.category IS NULL OR NOT (n.category = ANY($5::text[]))))"
)
_ADVANCE_CURSORS_WITHIN = _ADVANCE_CURSORS_TEMPLATE.format(
    sent_limit=_CURSOR_LIMIT.format("sent_seq"),
    ack_limit=_CURSOR_LIMIT.format("ack_seq"),
    cancel=ACKED_CANCEL_CTES,
)
_CURSOR_TIMES = cursor_times_sql("unnest($2::bigint[]) AS s(seq)", "seq")


class PostgresDeliveryCursors(DeliveryCursorsSql, PostgresEngine):
    """`DeliveryCursors` on PostgreSQL."""

    async def advance_cursors(
        self,
        *,
        sent: Mapping[str, int],
        acked: Mapping[str, int],
        at: int,
        within: Sequence[str] | None = None,
    ) -> None:
        """See `DeliveryCursors.advance_cursors`."""
        wanted = merge_cursors(sent, acked)
        if wanted:
            values = list(wanted.values())
            sql = _ADVANCE_CURSORS
            params: list[Any] = [list(wanted), [v[0] for v in values], [v[1] for v in values], at]
            if within is not None:
                sql = _ADVANCE_CURSORS_WITHIN
                params.append(list(within))
            async with self._connection() as connection:
                await connection.execute(sql, *params)

    async def cursor_times(self, user_id: str, seqs: Sequence[int]) -> dict[int, CursorTimes]:
        """See `DeliveryCursors.cursor_times`."""
        if not seqs:
            return {}
        return cursor_times_from_rows(await self._fetch_all(_CURSOR_TIMES, user_id, list(seqs)))
