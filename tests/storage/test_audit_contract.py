"""The audit trail's storage contract (issue #10 item 2), on every backend: stored fields
are bounded whatever a caller puts in them, and old records are purged in batches."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from storage import Storage
from storage.records import NewAuditRecord
from tests.storage.conftest import CREATED_AT

# As storage/protocol.py `append_audit` states them.
TEXT_MAX_CHARS = 200
DETAIL_MAX_BYTES = 1024
MARKER = "…[truncated]"


def audit(*, at: int = CREATED_AT, **fields: Any) -> NewAuditRecord:
    values: dict[str, Any] = {"actor": "key:k1", "action": "user.create", "result": "201"}
    return NewAuditRecord(at=at, **{**values, **fields})


async def test_append_audit_truncates_long_texts_with_a_marker(storage: Storage) -> None:
    """Guards an anonymous caller growing the database by 8 KB per request: the path's
    made-up user id used to be stored whole as the target."""
    made_up = "user:" + "x" * 8000
    await storage.append_audit(
        [
            audit(
                actor="key:" + "a" * 500,
                action="b" * 500,
                target=made_up,
                source="c" * 500,
                result="d" * 500,
            ),
            audit(target="user:" + "y" * (TEXT_MAX_CHARS - 5)),  # exactly at the bound
        ]
    )
    at_bound, long = await storage.list_audit(limit=10)
    for stored in (long.actor, long.action, long.target, long.source, long.result):
        assert stored is not None
        assert len(stored) == TEXT_MAX_CHARS
        assert stored.endswith(MARKER)
    assert long.target == made_up[: TEXT_MAX_CHARS - len(MARKER)] + MARKER
    assert at_bound.target == "user:" + "y" * (TEXT_MAX_CHARS - 5)
    # A stored (truncated) target can be asked for as it is.
    assert await storage.list_audit(target=long.target, limit=10) == [long]


async def test_append_audit_replaces_a_large_detail_by_a_bounded_prefix(storage: Storage) -> None:
    small = {"notification_id": "ntf_1", "seq": 7}
    large = {"note": "z" * 5000, "quotes": '"' * 3000}
    await storage.append_audit([audit(detail=small), audit(detail=large)])
    truncated, kept = await storage.list_audit(limit=10)
    assert kept.detail == small
    assert truncated.detail is not None
    assert truncated.detail["truncated"] is True
    assert len(msgspec.json.encode(truncated.detail)) <= DETAIL_MAX_BYTES
    # What is kept is the start of the detail's JSON text.
    assert msgspec.json.encode(large).decode().startswith(truncated.detail["prefix"])
    assert len(truncated.detail["prefix"]) > 100


async def test_purge_audit_deletes_records_older_than_the_instant_in_batches(
    storage: Storage,
) -> None:
    await storage.append_audit([audit(at=CREATED_AT + i, target=f"user:u{i}") for i in range(7)])
    assert await storage.purge_audit(before=CREATED_AT + 5, limit=2) == 2
    assert await storage.purge_audit(before=CREATED_AT + 5, limit=2) == 2
    assert await storage.purge_audit(before=CREATED_AT + 5, limit=2) == 1
    assert await storage.purge_audit(before=CREATED_AT + 5, limit=2) == 0
    left = [record.at - CREATED_AT for record in await storage.list_audit(limit=10)]
    assert left == [6, 5]
    with pytest.raises(ValueError, match="limit"):
        await storage.purge_audit(before=CREATED_AT, limit=-1)
