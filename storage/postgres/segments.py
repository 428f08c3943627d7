"""Segments on PostgreSQL: the tag test over the JSON array of `users.tags`."""

from __future__ import annotations

from storage.postgres.engine import PostgresEngine
from storage.sql.segments import SegmentsSql


class PostgresSegments(SegmentsSql, PostgresEngine):
    """`Segments` on PostgreSQL."""

    def _json_array_holds(self, column: str, param: str) -> str:
        # jsonb's `?`: does the array hold this text as an element.
        return f"(({column})::jsonb ? ({param})::text)"
