"""Retention (issue #4 point 6): the job purges what is older than its category's age,
batch by batch, and keeps the rest; on every storage backend."""

from __future__ import annotations

from pushd.config.settings import RetentionConfig
from pushd.ids import now_ms
from pushd.ops.retention import RetentionJob
from storage import Storage
from storage.records import IdempotencyClaim, NewAuditRecord
from tests.storage.conftest import note, user

DAY_MS = 86_400_000
DAY_S = 86_400.0


async def aged(storage: Storage, user_id: str) -> None:
    """Per category: one notification 40 days old, one 3 days old, one new."""
    now = now_ms()
    batch = []
    for category in ("chat", "billing", "legal", None):
        for age_days in (40, 3, 0):
            batch.append(
                note(
                    f"{user_id}-{category}-{age_days}",
                    user_id,
                    category=category,
                    created_at=now - age_days * DAY_MS,
                    idempotency=IdempotencyClaim(
                        scope="key_1", key=f"{user_id}-{category}-{age_days}", request_hash="h"
                    ),
                )
            )
    await storage.insert_notifications(batch)


async def left_of(storage: Storage, user_id: str) -> set[tuple[str | None, int]]:
    rows = await storage.notifications_after(user_id, after_seq=0, limit=100)
    return {(n.category, round((now_ms() - n.created_at) / DAY_MS)) for n in rows}


async def test_old_rows_go_and_new_ones_stay_per_category(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await aged(storage, "u1")
    config = RetentionConfig(
        notifications_max_age=30 * DAY_S,
        per_category={"chat": 2 * DAY_S, "legal": 0.0},  # legal: kept forever
        batch_size=2,  # several batches per rule
    )
    job = RetentionJob(storage, config, idempotency_window=DAY_S)
    counts = await job.run_once()
    assert counts.notifications == 2 + 1 + 1  # chat 40 and 3 days; billing and null 40 days
    assert await left_of(storage, "u1") == {
        ("chat", 0),
        ("billing", 3),
        ("billing", 0),
        ("legal", 40),
        ("legal", 3),
        ("legal", 0),
        (None, 3),
        (None, 0),
    }
    # Idempotency keys older than the window (1 day): the 40- and 3-day-old ones.
    assert counts.idempotency_keys == 8
    assert len(await storage.idempotency_keys_of("u1", after_seq=0, limit=100)) == 4
    again = await job.run_once()
    assert (again.notifications, again.idempotency_keys) == (0, 0)


async def test_max_age_zero_keeps_everything(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await aged(storage, "u1")
    job = RetentionJob(
        storage, RetentionConfig(notifications_max_age=0.0), idempotency_window=1000 * DAY_S
    )
    assert (await job.run_once()).notifications == 0
    assert len(await left_of(storage, "u1")) == 12


async def aged_audit(storage: Storage) -> None:
    """Audit records 500, 401, 399 and 0 days old."""
    now = now_ms()
    await storage.append_audit(
        [
            NewAuditRecord(at=now - days * DAY_MS, actor="anonymous", action="a", result="401")
            for days in (500, 401, 399, 0)
        ]
    )


async def test_audit_records_are_purged_after_their_own_age(storage: Storage) -> None:
    """Guards an audit trail that grew forever (issue #10 item 2): by default records
    are kept 400 days, then purged by the same job, batch by batch."""
    await aged_audit(storage)
    config = RetentionConfig(batch_size=1)
    assert config.audit_max_age == 400 * DAY_S
    counts = await RetentionJob(storage, config, idempotency_window=DAY_S).run_once()
    assert counts.audit_records == 2
    left = [round((now_ms() - r.at) / DAY_MS) for r in await storage.list_audit(limit=10)]
    assert left == [0, 399]


async def test_audit_max_age_zero_keeps_the_audit_trail_forever(storage: Storage) -> None:
    await aged_audit(storage)
    config = RetentionConfig(audit_max_age=0.0, notifications_max_age=0.0)
    counts = await RetentionJob(storage, config, idempotency_window=DAY_S).run_once()
    assert counts.audit_records == 0
    assert len(await storage.list_audit(limit=10)) == 4


async def test_a_categorys_own_retention_wins_over_per_category(storage: Storage) -> None:
    """A category defined with `retention` (pushd/routing/categories.py) overrides
    `retention.per_category`, and is read at each run (API changes while running)."""
    await storage.create_user(user("u1"))
    await aged(storage, "u1")
    config = RetentionConfig(notifications_max_age=0.0, per_category={"chat": 0.0})
    overrides = {"chat": 2 * DAY_S}
    job = RetentionJob(
        storage, config, idempotency_window=DAY_S, category_retention=lambda: overrides
    )
    assert (await job.run_once()).notifications == 2  # chat's 40- and 3-day-old ones
    overrides["billing"] = 10 * DAY_S
    assert (await job.run_once()).notifications == 1  # billing's 40-day-old one
    assert ("chat", 0) in await left_of(storage, "u1")
