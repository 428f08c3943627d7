"""The audit-trail part of the `Storage` contract (storage/areas/audit.py), on every
backend: records come back in order and filtered, stored fields are bounded whatever a
caller puts in them (issue #10 item 2), an erased person is no longer named, and old
records are purged in batches."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from storage import Storage
from storage.records import AuditRecord, NewAuditRecord
from tests.storage.conftest import CREATED_AT

# As storage/areas/audit.py `AuditTrail.append_audit` states them.
TEXT_MAX_CHARS = 200
DETAIL_MAX_BYTES = 1024
MARKER = "…[truncated]"


def audit(action: str = "user.create", *, at: int = CREATED_AT, **fields: Any) -> NewAuditRecord:
    values: dict[str, Any] = {"actor": "key:k1", "result": "201", **fields}
    return NewAuditRecord(at=at, action=action, **values)


def without_id(record: AuditRecord) -> NewAuditRecord:
    return NewAuditRecord(
        at=record.at,
        actor=record.actor,
        action=record.action,
        target=record.target,
        source=record.source,
        result=record.result,
        detail=record.detail,
    )


async def test_append_audit_round_trips_in_order(storage: Storage) -> None:
    first = [
        audit(
            "user.create",
            target="user:u1",
            source="10.0.0.7",
            detail={"name": "Zoë", "nested": {"n": [1, None]}},
        ),
        audit("key.revoke", actor="cli", result="ok"),
    ]
    await storage.append_audit(first)
    await storage.append_audit([])
    await storage.append_audit([audit("notification.send", result="202")])
    listed = await storage.list_audit(limit=10)
    assert [without_id(r) for r in reversed(listed)] == [
        *first,
        audit("notification.send", result="202"),
    ]
    ids = [record.id for record in listed]
    assert ids == sorted(ids, reverse=True)
    assert len(set(ids)) == 3
    assert listed[-1].target == "user:u1"
    assert listed[-2].target is None
    assert listed[-2].detail is None


async def test_list_audit_filters_and_pages(storage: Storage) -> None:
    await storage.append_audit(
        [
            audit(
                "user.create" if i % 2 else "notification.send",
                at=CREATED_AT + i,
                actor=f"key:k{i % 3}",
                target=f"user:u{i % 4}",
            )
            for i in range(24)
        ]
    )
    everything = await storage.list_audit(limit=100)
    assert len(everything) == 24

    def ats(records: list[AuditRecord]) -> list[int]:
        return [record.at - CREATED_AT for record in records]

    created = await storage.list_audit(action="user.create", limit=100)
    assert ats(created) == list(range(23, 0, -2))
    by_actor_and_target = await storage.list_audit(actor="key:k0", target="user:u0", limit=100)
    assert ats(by_actor_and_target) == [12, 0]
    between = await storage.list_audit(since=CREATED_AT + 5, until=CREATED_AT + 8, limit=100)
    assert ats(between) == [7, 6, 5]
    assert await storage.list_audit(actor="key:nobody", limit=100) == []
    pages: list[list[int]] = []
    before_id: int | None = None
    while page := await storage.list_audit(
        action="notification.send", before_id=before_id, limit=5
    ):
        pages.append(ats(page))
        before_id = page[-1].id
    assert pages == [[22, 20, 18, 16, 14], [12, 10, 8, 6, 4], [2, 0]]
    with pytest.raises(ValueError, match="limit"):
        await storage.list_audit(limit=-1)


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


async def test_pseudonymise_audit_replaces_actor_and_target_only(storage: Storage) -> None:
    await storage.append_audit(
        [
            audit("user.create", target="user:u1"),
            audit("ws.auth", actor="user:u1", target="user:u1"),
            audit("user.create", target="user:u10"),
            audit("user.create", target="user:u2"),
        ]
    )
    assert await storage.pseudonymise_audit("user:u1", "user:erased-7f3a") == 2
    targets = [(r.actor, r.target) for r in reversed(await storage.list_audit(limit=10))]
    assert targets == [
        ("key:k1", "user:erased-7f3a"),
        ("user:erased-7f3a", "user:erased-7f3a"),
        ("key:k1", "user:u10"),
        ("key:k1", "user:u2"),
    ]
    assert await storage.list_audit(target="user:u1", limit=10) == []
    assert await storage.pseudonymise_audit("user:u1", "user:erased-7f3a") == 0


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
