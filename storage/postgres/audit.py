"""The audit trail on PostgreSQL: a batch appended by one statement."""

from __future__ import annotations

from collections.abc import Sequence

from storage.postgres.engine import PostgresEngine
from storage.records import NewAuditRecord
from storage.sql.audit import PSEUDONYMISE_AUDIT, AuditTrailSql, audit_params

# The whole batch in one statement, ids in the order given.
_APPEND_AUDIT = """
INSERT INTO audit_log (at, actor, action, target, source, result, detail)
SELECT at, actor, action, target, source, result, detail FROM unnest(
    $1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]
) WITH ORDINALITY AS r(at, actor, action, target, source, result, detail, ord)
ORDER BY ord
"""


class PostgresAuditTrail(AuditTrailSql, PostgresEngine):
    """`AuditTrail` on PostgreSQL."""

    async def append_audit(self, records: Sequence[NewAuditRecord]) -> None:
        """See `AuditTrail.append_audit`: one statement whatever the batch size."""
        if not records:
            return
        rows = [audit_params(record) for record in records]
        columns = [list(column) for column in zip(*rows, strict=True)]
        async with self._connection() as connection:
            await connection.execute(_APPEND_AUDIT, *columns)

    async def pseudonymise_audit(self, subject: str, replacement: str) -> int:
        """See `AuditTrail.pseudonymise_audit`."""
        async with self._connection() as connection:
            return len(await connection.fetch(PSEUDONYMISE_AUDIT, subject, replacement))
