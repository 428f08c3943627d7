"""Segments (`storage.areas.segments`): saved filters, and `UserFilter` compiled to a
parameterised WHERE clause, the same on both backends but for the tag test.

The clause is built from this module's constants and placeholder numbers only: every
value of a filter (a tag, a locale, an instant) is appended to the parameter list and
named by `$n`, never written into the SQL text, so no value can change the statement.
"""

# S608 (SQL built from strings): see above; values always travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import msgspec

from storage.records import (
    AllOf,
    AnyOf,
    AttributeIs,
    CreatedBetween,
    HasTag,
    LocaleIs,
    NewSegment,
    NoneOf,
    SegmentRecord,
    TimezoneIs,
    UserFilter,
    UserRecord,
)
from storage.sql.common import Row, check_limit, encode_json
from storage.sql.engine import SqlEngine
from storage.sql.users import USER_COLUMNS, user_from_row

SEGMENT_COLUMNS = "id, name, filter, created_at"
INSERT_SEGMENT = (
    f"INSERT INTO segments ({SEGMENT_COLUMNS}) VALUES ($1, $2, $3, $4) RETURNING {SEGMENT_COLUMNS}"
)
GET_SEGMENT = f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE id = $1"
LIST_SEGMENTS_FIRST = f"SELECT {SEGMENT_COLUMNS} FROM segments ORDER BY id LIMIT $1"
LIST_SEGMENTS_AFTER = f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE id > $1 ORDER BY id LIMIT $2"
DELETE_SEGMENT = "DELETE FROM segments WHERE id = $1 RETURNING id"

_filter_decoder = msgspec.json.Decoder(dict[str, Any])


def segment_from_row(row: Row) -> SegmentRecord:
    """A row of SEGMENT_COLUMNS."""
    return SegmentRecord(
        id=row[0], name=row[1], filter=_filter_decoder.decode(row[2]), created_at=row[3]
    )


class FilterCompiler:
    """Turns a `UserFilter` into SQL over `users`, appending its values to `params`.

    `superset=True` gives a clause true for every user the filter holds (an attribute
    test, unreadable in SQL, counts as true); under a `not` the inner part is compiled
    the other way (an attribute test counts as false), so the negation of it stays a
    superset too. A filter without attributes compiles to exactly itself either way.
    Every test is wrapped in coalesce(..., FALSE): a NULL locale is "not de", so that
    `not locale de` keeps the users without a locale.
    """

    def __init__(self, params: list[Any], has_tag: Any) -> None:
        self._params = params
        self._has_tag = has_tag

    def _param(self, value: Any) -> str:
        self._params.append(value)
        return f"${len(self._params)}"

    def clause(self, where: UserFilter, *, superset: bool = True) -> str:
        """The condition; see the class for `superset`."""
        match where:
            case AllOf(parts=parts):
                return "(" + " AND ".join(self.clause(p, superset=superset) for p in parts) + ")"
            case AnyOf(parts=parts):
                return "(" + " OR ".join(self.clause(p, superset=superset) for p in parts) + ")"
            case NoneOf(part=part):
                return f"(NOT {self.clause(part, superset=not superset)})"
            case AttributeIs():
                return "TRUE" if superset else "FALSE"
        return self._leaf(where)

    def _leaf(self, where: UserFilter) -> str:
        match where:
            case HasTag(tag=tag):
                return f"coalesce({self._has_tag(self._param(tag))}, FALSE)"
            case LocaleIs(locale=locale):
                exact, prefix_length, prefix = (
                    self._param(locale),
                    self._param(len(locale) + 1),
                    self._param(locale + "-"),
                )
                return (
                    f"coalesce(users.locale = {exact} "
                    f"OR substr(users.locale, 1, {prefix_length}) = {prefix}, FALSE)"
                )
            case TimezoneIs(timezone=timezone):
                return f"coalesce(users.timezone = {self._param(timezone)}, FALSE)"
            case CreatedBetween(after=after, before=before):
                terms = ["TRUE"]
                if after is not None:
                    terms.append(f"users.created_at >= {self._param(after)}")
                if before is not None:
                    terms.append(f"users.created_at < {self._param(before)}")
                return "(" + " AND ".join(terms) + ")"
        raise TypeError(f"not a UserFilter: {where!r}")


class SegmentsSql(SqlEngine):
    """`Segments`; a backend gives `_json_array_holds` (tags are a JSON array)."""

    @abstractmethod
    def _json_array_holds(self, column: str, param: str) -> str:
        """A condition: the JSON array of texts in `column` holds the text `param`."""

    def _audience_where(self, where: UserFilter | None, params: list[Any]) -> str:
        if where is None:
            return "TRUE"
        compiler = FilterCompiler(params, lambda p: self._json_array_holds("users.tags", p))
        return compiler.clause(where)

    async def create_segment(self, segment: NewSegment) -> SegmentRecord:
        """See `Segments.create_segment`."""
        row = await self._write_one(
            INSERT_SEGMENT,
            segment.id,
            segment.name,
            encode_json(segment.filter),
            segment.created_at,
        )
        return segment_from_row(row)

    async def get_segment(self, segment_id: str) -> SegmentRecord | None:
        """See `Segments.get_segment`."""
        row = await self._fetch_one(GET_SEGMENT, segment_id)
        return None if row is None else segment_from_row(row)

    async def list_segments(self, *, after_id: str | None, limit: int) -> list[SegmentRecord]:
        """See `Segments.list_segments`."""
        check_limit(limit)
        if after_id is None:
            rows = await self._fetch_all(LIST_SEGMENTS_FIRST, limit)
        else:
            rows = await self._fetch_all(LIST_SEGMENTS_AFTER, after_id, limit)
        return [segment_from_row(row) for row in rows]

    async def delete_segment(self, segment_id: str) -> bool:
        """See `Segments.delete_segment`."""
        return await self._write_one(DELETE_SEGMENT, segment_id) is not None

    def _page_of_users(
        self, columns: str, where: UserFilter | None, after_id: str | None, limit: int
    ) -> tuple[str, list[Any]]:
        check_limit(limit)
        params: list[Any] = []
        clauses = [self._audience_where(where, params)]
        if after_id is not None:
            params.append(after_id)
            clauses.append(f"users.id > ${len(params)}")
        params.append(limit)
        sql = (
            f"SELECT {columns} FROM users WHERE {' AND '.join(clauses)} "
            f"ORDER BY users.id LIMIT ${len(params)}"
        )
        return sql, params

    async def users_matching(
        self, where: UserFilter | None, *, after_id: str | None, limit: int
    ) -> list[UserRecord]:
        """See `Segments.users_matching`."""
        sql, params = self._page_of_users(USER_COLUMNS, where, after_id, limit)
        rows = await self._fetch_all(sql, *params)
        return [user_from_row(row, self._cipher) for row in rows]

    async def user_ids_matching(
        self, where: UserFilter | None, *, after_id: str | None, limit: int
    ) -> list[str]:
        """See `Segments.user_ids_matching`."""
        sql, params = self._page_of_users("users.id", where, after_id, limit)
        return [row[0] for row in await self._fetch_all(sql, *params)]

    async def count_matching(self, where: UserFilter | None, *, at_most: int) -> int:
        """See `Segments.count_matching`."""
        check_limit(at_most)
        params: list[Any] = []
        clause = self._audience_where(where, params)
        params.append(at_most)
        sql = (
            f"SELECT count(*) FROM (SELECT 1 FROM users WHERE {clause} "
            f"LIMIT ${len(params)}) AS capped"
        )
        return int((await self._fetch_one(sql, *params))[0])
