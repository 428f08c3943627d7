"""The audit trail: who did what, when, from where, with what result."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from storage.records import AuditRecord, NewAuditRecord


class AuditTrail(Protocol):
    """Append-only records, numbered by an increasing id; rewritten only to stop naming
    an erased person, deleted only by age."""

    async def append_audit(self, records: Sequence[NewAuditRecord]) -> None:
        """Append the records in ONE transaction (all or none), numbering them with ids
        above every existing one, in the order given. An empty sequence is a no-op.

        Each record is stored within bounds, whatever its fields hold: `actor`, `action`,
        `target`, `source` and `result` keep at most 200 characters (a longer one keeps
        its start and ends with `…[truncated]`, 200 in all), and a `detail` over 1024
        bytes of JSON is stored as `{"truncated": true, "prefix": <start of its JSON>}`,
        within 1024 bytes too."""
        ...

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
        """Audit records newest first (id descending), at most `limit`. Each filter that
        is given must hold: `actor`, `action` and `target` equal, `since <= at < until`,
        `id < before_id` (the cursor of the next page)."""
        ...

    async def pseudonymise_audit(self, subject: str, replacement: str) -> int:
        """Replace `subject` (e.g. `user:<id>`) by `replacement` wherever it is the actor
        or the target of an audit record; return how many records changed. Erasing a user
        must call this: the records stay, the person is no longer named."""
        ...

    async def purge_audit(self, *, before: int, limit: int) -> int:
        """Delete up to `limit` audit records with `at < before` (any of them, not
        necessarily the oldest) in ONE transaction; return how many. Raises `ValueError`
        for a negative `limit`."""
        ...
