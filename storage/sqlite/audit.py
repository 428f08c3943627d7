"""The audit trail on SQLite: a batch appended by one statement, and pseudonymisation
followed by a checkpoint."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from storage.records import NewAuditRecord
from storage.sql.audit import PSEUDONYMISE_AUDIT, AuditTrailSql, audit_params
from storage.sql.common import encode_json
from storage.sqlite.engine import SqliteEngine, checkpoint, fetch_all, write_transaction

# Like _INSERT_NOTIFICATIONS (storage/sqlite/notifications.py): the whole batch as one
# JSON array, one statement; json_each yields the elements in array order, so ids follow
# the order given.
_APPEND_AUDIT = (
    "INSERT INTO audit_log (at, actor, action, target, source, result, detail) "
    "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, "
    "value ->> 6 FROM json_each(?1) ORDER BY key"
)


def _append_audit(connection: sqlite3.Connection, rows: str) -> None:
    with write_transaction(connection):
        connection.execute(_APPEND_AUDIT, (rows,))


def _pseudonymise_audit(connection: sqlite3.Connection, subject: str, replacement: str) -> int:
    with write_transaction(connection):
        changed = len(fetch_all(connection, PSEUDONYMISE_AUDIT, (subject, replacement)))
    checkpoint(connection)
    return changed


class SqliteAuditTrail(AuditTrailSql, SqliteEngine):
    """`AuditTrail` on SQLite."""

    async def append_audit(self, records: Sequence[NewAuditRecord]) -> None:
        """See `AuditTrail.append_audit`."""
        if records:
            rows = encode_json([audit_params(record) for record in records])
            await self._run(lambda connection: _append_audit(connection, rows))

    async def pseudonymise_audit(self, subject: str, replacement: str) -> int:
        """See `AuditTrail.pseudonymise_audit`; checkpoints like `erase_user`."""
        return await self._run(
            lambda connection: _pseudonymise_audit(connection, subject, replacement)
        )
