"""Failed authentications, tallied for the audit trail: one record per actor, source and
result per window instead of one per request, so that calls without a valid key cannot
grow the database at will (docs/security.md, "Audit trail").

A pure data structure: the audit writer (pushd/access/audit_writer.py) adds to it and drains it once
per window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from storage.records import NewAuditRecord

ANONYMOUS_ACTOR = "anonymous"
"""The actor of a failed authentication without a known key (none, or an unknown one)."""
FAILED_AUTH_ACTION = "auth.fail"

MAX_SOURCES = 10_000
"""Tallies kept per window. Overflow policy: failures of further sources are added to
one tally without a source (per result), so that neither memory nor the records of a
window grow with the number of addresses a caller has."""

_Key = tuple[str, str | None, str]
"""(actor, source, result)"""


@dataclass
class _Tally:
    first_at: int
    last_at: int
    count: int = 0
    actions: dict[str, int] = field(default_factory=dict)


class FailedAuthTally:
    """Counts failed authentications per (actor, source, result) until drained."""

    def __init__(self, *, max_sources: int = MAX_SOURCES) -> None:
        self._max_sources = max_sources
        self._tallies: dict[_Key, _Tally] = {}

    def __len__(self) -> int:
        return len(self._tallies)

    def add(self, *, key_id: str | None, source: str, action: str, result: str, at: int) -> None:
        """Count one failure: `key_id` is the revoked key it presented (None: no key, or
        an unknown one), `source` who sent it (`pushd.access.rate_limits.client_network`), `action`
        the route's audit action, `result` the status answered, `at` epoch ms."""
        actor = ANONYMOUS_ACTOR if key_id is None else f"key:{key_id}"
        key: _Key = (actor, source, result)
        if key not in self._tallies and len(self._tallies) >= self._max_sources:
            key = (ANONYMOUS_ACTOR, None, result)
        tally = self._tallies.get(key)
        if tally is None:
            tally = self._tallies[key] = _Tally(first_at=at, last_at=at)
        tally.count += 1
        tally.last_at = max(tally.last_at, at)
        tally.actions[action] = tally.actions.get(action, 0) + 1

    def drain(self) -> list[NewAuditRecord]:
        """One record per tally (at: its first failure), and start counting afresh."""
        tallies, self._tallies = self._tallies, {}
        return [_record_of(key, tally) for key, tally in tallies.items()]


def _record_of(key: _Key, tally: _Tally) -> NewAuditRecord:
    actor, source, result = key
    detail: dict[str, Any] = {
        "count": tally.count,
        "last_at": tally.last_at,
        "actions": tally.actions,
    }
    if actor != ANONYMOUS_ACTOR:
        detail["key_revoked"] = True
    return NewAuditRecord(
        at=tally.first_at,
        actor=actor,
        action=FAILED_AUTH_ACTION,
        target=None,  # nothing a caller without a valid key names is trusted
        source=source,
        result=result,
        detail=detail,
    )
