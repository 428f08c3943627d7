"""Delivery cursors (`storage.areas.cursors`): SQL, row mapping, one-statement methods.

`advance_cursors` and `cursor_times` are each backend's own (a whole mapping or list of
users and seqs in one statement); their shared pieces are here.
"""

# S608 (SQL built from strings): every query here is assembled from the constants of
# this module and a backend's list form; values always travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from storage.records import CursorHistoryRecord, CursorTimes
from storage.sql.common import Row, check_limit
from storage.sql.engine import SqlEngine

# CAST, not `::`: the same text runs on SQLite.
CURSOR_HISTORY_OF_USER = (
    "SELECT cursor, seq, at FROM cursor_history WHERE user_id = $1 "
    "AND (cursor, seq) > (CAST($2 AS TEXT), CAST($3 AS BIGINT)) ORDER BY cursor, seq LIMIT $4"
)


def first_seq_outside_sql(category_list: str) -> str:
    """The seq of the user $1's first notification above $2 whose category is not in
    the list $3 (`category_list`, the backend's form for $3), or NULL: a cursor of a
    socket limited to those categories stops below it (`advance_cursors`)."""
    return (
        "SELECT min(seq) FROM notifications WHERE user_id = $1 AND seq > $2 "
        f"AND (category IS NULL OR NOT (category {category_list}))"
    )


def cursor_times_sql(seq_source: str, seq_column: str) -> str:
    """CURSOR_TIMES for a backend's list of seqs as $2 (a table `s` with `seq_column`).

    The cursors only move forward, so the first history row at or above a seq carries
    the time the cursor reached it.
    """
    first_at = (
        "(SELECT h.at FROM cursor_history h WHERE h.user_id = $1 AND h.cursor = '{0}' "
        f"AND h.seq >= s.{seq_column} ORDER BY h.seq LIMIT 1)"
    )
    return (
        f"SELECT s.{seq_column}, {first_at.format('sent')}, {first_at.format('acked')} "
        f"FROM {seq_source}"
    )


def cursor_times_from_rows(rows: list[Any]) -> dict[int, CursorTimes]:
    """Rows of cursor_times_sql by seq."""
    return {row[0]: CursorTimes(sent_at=row[1], acked_at=row[2]) for row in rows}


def merge_cursors(sent: Mapping[str, int], acked: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """{user: (sent, acked)} with 0 (moves nothing) where one of the two is not given."""
    return {user: (sent.get(user, 0), acked.get(user, 0)) for user in {*sent, *acked}}


def cursor_history_from_row(row: Row) -> CursorHistoryRecord:
    """A row of CURSOR_HISTORY_OF_USER."""
    return CursorHistoryRecord(cursor=row[0], seq=row[1], at=row[2])


class DeliveryCursorsSql(SqlEngine):
    """`DeliveryCursors` but `advance_cursors` and `cursor_times`, which each backend
    writes itself."""

    async def cursor_history_of(
        self, user_id: str, *, after: tuple[str, int] | None, limit: int
    ) -> list[CursorHistoryRecord]:
        """See `DeliveryCursors.cursor_history_of`."""
        check_limit(limit)
        cursor, seq = after if after is not None else ("", -1)
        rows = await self._fetch_all(CURSOR_HISTORY_OF_USER, user_id, cursor, seq, limit)
        return [cursor_history_from_row(row) for row in rows]
