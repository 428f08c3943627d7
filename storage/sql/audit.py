"""The audit trail (`storage.areas.audit`): SQL, the bounds of a stored record, row
mapping, one-statement methods. `append_audit` and `pseudonymise_audit` are each
backend's own (a whole batch in one statement; SQLite checkpoints after)."""

# S608 (SQL built from strings): every query here is assembled from the constants of
# this module; values always travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

from typing import Any

import msgspec

from storage.records import AuditRecord, NewAuditRecord
from storage.sql.common import Row, check_limit, encode_json, encode_json_bytes
from storage.sql.engine import SqlEngine

_detail_decoder = msgspec.json.Decoder(dict[str, Any])

AUDIT_COLUMNS = "id, at, actor, action, target, source, result, detail"
PSEUDONYMISE_AUDIT = (
    "UPDATE audit_log SET "
    "actor = CASE WHEN actor = $1 THEN $2 ELSE actor END, "
    "target = CASE WHEN target = $1 THEN $2 ELSE target END "
    "WHERE actor = $1 OR target = $1 RETURNING id"
)
# No order: every record older than the instant is due, and without one the scan stops
# after `limit` matches whatever the indexes.
PURGE_AUDIT = (
    "DELETE FROM audit_log WHERE id IN ("
    "SELECT id FROM audit_log WHERE at < $1 LIMIT $2) RETURNING id"
)

# Bounds of a stored audit record (AuditTrail.append_audit): a caller's input (a path's
# made-up id) must not decide how much a record costs. 200 is also the longest value
# `GET /api/audit` takes as a filter, so a truncated value can still be asked for.
AUDIT_TEXT_MAX_CHARS = 200
AUDIT_DETAIL_MAX_BYTES = 1024
TRUNCATED = "…[truncated]"
# Escaping in JSON at most doubles text that is already JSON (`"` and `\` get a `\`),
# so a prefix of this many bytes always fits, with the key names, in the bound.
_DETAIL_PREFIX_BYTES = (AUDIT_DETAIL_MAX_BYTES - 64) // 2


def _bounded_text(value: str | None) -> str | None:
    if value is None or len(value) <= AUDIT_TEXT_MAX_CHARS:
        return value
    return value[: AUDIT_TEXT_MAX_CHARS - len(TRUNCATED)] + TRUNCATED


def _bounded_detail(detail: dict[str, Any] | None) -> str | None:
    if detail is None:
        return None
    encoded = encode_json_bytes(detail)
    if len(encoded) <= AUDIT_DETAIL_MAX_BYTES:
        return encoded.decode()
    prefix = encoded[:_DETAIL_PREFIX_BYTES].decode(errors="ignore")  # no half character
    return encode_json({"truncated": True, "prefix": prefix})


def audit_params(record: NewAuditRecord) -> tuple[Any, ...]:
    """One new audit record as values in AUDIT_COLUMNS order, without `id`, each field
    within its bound (longer texts cut, with `TRUNCATED` at the end)."""
    return (
        record.at,
        _bounded_text(record.actor),
        _bounded_text(record.action),
        _bounded_text(record.target),
        _bounded_text(record.source),
        _bounded_text(record.result),
        _bounded_detail(record.detail),
    )


def audit_from_row(row: Row) -> AuditRecord:
    """A row of AUDIT_COLUMNS."""
    detail = row[7]
    return AuditRecord(
        id=row[0],
        at=row[1],
        actor=row[2],
        action=row[3],
        target=row[4],
        source=row[5],
        result=row[6],
        detail=None if detail is None else _detail_decoder.decode(detail),
    )


def list_audit_query(
    *,
    actor: str | None,
    action: str | None,
    target: str | None,
    since: int | None,
    until: int | None,
    before_id: int | None,
    limit: int,
) -> tuple[str, list[Any]]:
    """The SELECT of `AuditTrail.list_audit` and its parameters: one condition per filter
    given (column names and operators are constants; values travel as parameters)."""
    conditions = (
        ("actor =", actor),
        ("action =", action),
        ("target =", target),
        ("at >=", since),
        ("at <", until),
        ("id <", before_id),
    )
    clauses: list[str] = []
    params: list[Any] = []
    for condition, value in conditions:
        if value is not None:
            params.append(value)
            clauses.append(f"{condition} ${len(params)}")
    params.append(limit)
    where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
    sql = f"SELECT {AUDIT_COLUMNS} FROM audit_log {where}ORDER BY id DESC LIMIT ${len(params)}"
    return sql, params


class AuditTrailSql(SqlEngine):
    """`AuditTrail` but `append_audit` and `pseudonymise_audit`, which each backend
    writes itself."""

    async def list_audit(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: int | None = None,
        until: int | None = None,
        before_id: int | None = None,
        limit: int,
    ) -> list[AuditRecord]:
        """See `AuditTrail.list_audit`."""
        check_limit(limit)
        sql, params = list_audit_query(
            actor=actor,
            action=action,
            target=target,
            since=since,
            until=until,
            before_id=before_id,
            limit=limit,
        )
        return [audit_from_row(row) for row in await self._fetch_all(sql, *params)]

    async def purge_audit(self, *, before: int, limit: int) -> int:
        """See `AuditTrail.purge_audit`."""
        check_limit(limit)
        return len(await self._write_all(PURGE_AUDIT, before, limit))
