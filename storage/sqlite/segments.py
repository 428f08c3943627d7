"""Segments on SQLite: the tag test over the JSON array of `users.tags`."""

from __future__ import annotations

from storage.sql.segments import SegmentsSql
from storage.sqlite.engine import SqliteEngine


class SqliteSegments(SegmentsSql, SqliteEngine):
    """`Segments` on SQLite."""

    def _json_array_holds(self, column: str, param: str) -> str:
        # S608: a column name of storage/sql/segments.py and a placeholder, no value.
        return f"EXISTS (SELECT 1 FROM json_each({column}) WHERE value = {param})"  # noqa: S608
