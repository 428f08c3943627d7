"""The `Storage` contract (storage/protocol.py), sentence by sentence, on every backend.

Each test takes `storage` (migrated) or `storage_url` (empty database), both
parametrized over `BACKENDS` in conftest.py: a behaviour that differs between SQLite
and PostgreSQL fails here.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from typing import Any

import pytest

from storage import (
    ConflictError,
    LastAdminKeyError,
    SchemaTooNewError,
    Storage,
    StorageUnavailableError,
    UnknownUserError,
    open_storage,
)
from storage.migrations import (
    CREATE_VERSION_TABLE,
    RECORD_VERSION,
    Migration,
    all_migrations,
    newest_version,
)
from storage.records import (
    ApiKeyRecord,
    AuditRecord,
    DeviceRecord,
    NewAuditRecord,
    NewDevice,
    NotificationRecord,
)
from tests.storage.conftest import CREATED_AT, note, opened, raw_sql, table_names, user

# migrations ----------------------------------------------------------------------------


async def test_empty_database_is_at_version_zero_until_migrated(storage_url: str) -> None:
    async with opened(storage_url) as store:
        assert await store.schema_version() == 0
        assert await store.migrate() == newest_version()
        assert await store.schema_version() == newest_version()
    assert {"users", "devices", "notifications", "api_keys", "audit_log"} <= await table_names(
        storage_url
    )


async def test_migrate_is_idempotent(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    assert await storage.migrate() == newest_version()
    assert await storage.migrate() == newest_version()
    assert await storage.get_user("u1") is not None


async def test_concurrent_migrations_apply_each_version_once(storage_url: str) -> None:
    """Guards the migration lock: two nodes starting together on an empty database
    would otherwise both create the tables, and one would crash on 'already exists'."""
    async with opened(storage_url) as first, opened(storage_url) as second:
        versions = await asyncio.gather(first.migrate(), second.migrate(), first.migrate())
    assert list(versions) == [newest_version()] * 3
    rows = await raw_sql(storage_url, "SELECT version FROM schema_version ORDER BY version")
    assert [row[0] for row in rows] == list(range(1, newest_version() + 1))


async def test_schema_too_new_is_refused_without_changing_anything(storage_url: str) -> None:
    """Guards an old pushd 'repairing' a database that a newer one migrated: it must
    refuse before applying any of its own versions."""
    too_new = newest_version() + 1
    await raw_sql(storage_url, CREATE_VERSION_TABLE)
    await raw_sql(storage_url, RECORD_VERSION, too_new, 0)
    async with opened(storage_url) as store:
        with pytest.raises(SchemaTooNewError) as refused:
            await store.migrate()
        assert (refused.value.found, refused.value.supported) == (too_new, newest_version())
        assert await store.schema_version() == too_new
    assert await table_names(storage_url) == {"schema_version"}
    rows = await raw_sql(storage_url, "SELECT version FROM schema_version")
    assert rows == [(too_new,)]


# lifecycle -----------------------------------------------------------------------------


async def test_ping_and_idempotent_close(storage_url: str) -> None:
    store = await open_storage(storage_url)
    await store.ping()
    await store.close()
    await store.close()
    with pytest.raises(StorageUnavailableError):
        await store.ping()


async def test_close_lets_pending_operations_finish(storage_url: str) -> None:
    """Guards shutdown losing the last group commit: close() must wait for it."""
    async with opened(storage_url) as store:
        await store.migrate()
        await store.create_user(user("u1"))
        batch = [note(f"n{i}", "u1") for i in range(100)]
        records, _ = await asyncio.gather(store.insert_notifications(batch), store.close())
    assert [record.seq for record in records] == list(range(1, 101))
    async with opened(storage_url) as reopened:
        stored = await reopened.notifications_after("u1", after_seq=0, limit=1000)
    assert stored == records


# users ---------------------------------------------------------------------------------


async def test_create_user_round_trips_every_field(storage: Storage) -> None:
    fields = {
        "external_id": "crm-42",
        "name": "Zoë Ünicode",
        "email": "zoe@example.org",
        "phone": "+33123456789",
        "locale": "fr-FR",
        "timezone": "Europe/Paris",
    }
    created = await storage.create_user(user("u1", **fields))
    assert created.id == "u1"
    assert (created.last_seq, created.ack_seq, created.created_at) == (0, 0, CREATED_AT)
    assert {name: getattr(created, name) for name in fields} == fields
    assert await storage.get_user("u1") == created
    assert await storage.get_user_by_external_id("crm-42") == created


async def test_unknown_users_are_none(storage: Storage) -> None:
    assert await storage.get_user("nobody") is None
    assert await storage.get_user_by_external_id("nobody") is None


async def test_duplicate_user_is_a_conflict_naming_the_field(storage: Storage) -> None:
    await storage.create_user(user("u1", external_id="crm-1"))
    with pytest.raises(ConflictError) as taken_external_id:
        await storage.create_user(user("u2", external_id="crm-1"))
    assert taken_external_id.value.field == "external_id"
    with pytest.raises(ConflictError) as taken_id:
        await storage.create_user(user("u1", external_id="crm-2"))
    assert taken_id.value.field == "id"
    assert await storage.get_user("u2") is None


async def test_users_without_external_id_do_not_conflict(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    assert len(await storage.list_users(after_id=None, limit=10)) == 2


async def test_list_users_pages_by_id_in_byte_order(storage: Storage) -> None:
    """Guards pagination that follows the server's locale: 'B' < 'a' < 'b' byte-wise,
    but 'a' < 'B' in en_US, so pages would differ between backends and could skip users."""
    ids = ["b", "B", "a", "user-10", "user-9", "Z"]
    for user_id in ids:
        await storage.create_user(user(user_id))
    pages: list[list[str]] = []
    after_id: str | None = None
    while page := await storage.list_users(after_id=after_id, limit=4):
        pages.append([found.id for found in page])
        after_id = page[-1].id
    assert pages == [["B", "Z", "a", "b"], ["user-10", "user-9"]]
    assert [u.id for u in await storage.list_users(after_id="Y", limit=2)] == ["Z", "a"]
    assert await storage.list_users(after_id=None, limit=0) == []


# devices -------------------------------------------------------------------------------

PUSH_KEYS = {"p256dh": "key", "auth": "secret"}


def device(
    device_id: str,
    user_id: str = "u1",
    *,
    address: str = "https://push.example/endpoint/1",
    details: dict[str, str] = PUSH_KEYS,
    created_at: int = CREATED_AT,
) -> NewDevice:
    return NewDevice(
        id=device_id,
        user_id=user_id,
        kind="webpush",
        address=address,
        details=details,
        created_at=created_at,
    )


def stored(new: NewDevice) -> DeviceRecord:
    return DeviceRecord(
        id=new.id,
        user_id=new.user_id,
        kind=new.kind,
        address=new.address,
        details=new.details,
        created_at=new.created_at,
    )


async def test_upsert_device_creates_then_replaces_details(storage: Storage) -> None:
    """Guards duplicate devices: clients re-register the same push token on every start,
    under a fresh id, and the first registration must be kept with the new keys."""
    await storage.create_user(user("u1"))
    first = device("d1")
    assert await storage.upsert_device(first) == (stored(first), True)
    new_keys = {"p256dh": "rotated", "auth": "rotated"}
    again = await storage.upsert_device(device("d2", details=new_keys, created_at=CREATED_AT + 5))
    expected = stored(device("d1", details=new_keys))
    assert again == (expected, False)
    assert await storage.list_devices("u1") == [expected]


async def test_upsert_device_with_a_taken_id_is_a_conflict(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.upsert_device(device("d1"))
    with pytest.raises(ConflictError) as taken:
        await storage.upsert_device(device("d1", address="https://push.example/other"))
    assert taken.value.field == "id"


async def test_upsert_device_of_unknown_user_raises(storage: Storage) -> None:
    with pytest.raises(UnknownUserError) as unknown:
        await storage.upsert_device(device("d1", user_id="ghost"))
    assert unknown.value.user_id == "ghost"
    assert await storage.list_devices("ghost") == []


async def test_list_devices_is_per_user_oldest_first(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    newer = device("d1", address="https://push.example/new", created_at=CREATED_AT + 10)
    older = device("d2", address="https://push.example/old", created_at=CREATED_AT)
    others = device("d3", user_id="u2")
    for new in (newer, older, others):
        await storage.upsert_device(new)
    assert await storage.list_devices("u1") == [stored(older), stored(newer)]
    assert await storage.list_devices("u2") == [stored(others)]


async def test_delete_device_only_for_its_owner(storage: Storage) -> None:
    """Guards one user unregistering another user's device by guessing its id."""
    await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    await storage.upsert_device(device("d1"))
    assert not await storage.delete_device("u2", "d1")
    assert len(await storage.list_devices("u1")) == 1
    assert await storage.delete_device("u1", "d1")
    assert await storage.list_devices("u1") == []
    assert not await storage.delete_device("u1", "d1")


# notifications -------------------------------------------------------------------------


async def test_insert_assigns_per_user_seqs_in_batch_order(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    batch = [note("n1", "u2"), note("n2", "u1"), note("n3", "u2"), note("n4", "u2")]
    records = await storage.insert_notifications(batch)
    assert [(r.id, r.user_id, r.seq) for r in records] == [
        ("n1", "u2", 1),
        ("n2", "u1", 1),
        ("n3", "u2", 2),
        ("n4", "u2", 3),
    ]
    for record in records:
        assert await storage.get_notification(record.id) == record
    u1, u2 = await storage.get_user("u1"), await storage.get_user("u2")
    assert u1 is not None
    assert u2 is not None
    assert (u1.last_seq, u2.last_seq) == (1, 3)


async def test_seqs_continue_across_batches_without_gaps(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    seqs = []
    for batch_number in range(3):
        batch = [note(f"n{batch_number}-{i}", "u1") for i in range(batch_number + 1)]
        seqs += [record.seq for record in await storage.insert_notifications(batch)]
    assert seqs == list(range(1, 7))


async def test_notification_round_trips_every_field(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    data = {"order": {"id": 7, "lines": [1.5, None, True]}, "emoji": "🔔"}
    [full, bare] = await storage.insert_notifications(
        [
            note(
                "n1",
                "u1",
                title="Café",
                body="Your order shipped",
                data=data,
                category="orders",
                priority="high",
            ),
            note("n2", "u1"),
        ]
    )
    assert await storage.get_notification("n1") == full
    assert (full.title, full.body, full.data, full.category, full.priority) == (
        "Café",
        "Your order shipped",
        data,
        "orders",
        "high",
    )
    assert await storage.get_notification("n2") == bare
    assert (bare.title, bare.data, bare.priority) == (None, None, "normal")
    assert await storage.get_notification("missing") is None


async def test_empty_batch_is_a_no_op(storage: Storage) -> None:
    assert await storage.insert_notifications([]) == []


async def test_batch_with_an_unknown_user_writes_nothing(storage: Storage) -> None:
    """Guards partial group commits: the valid rows before and after the unknown user
    must not be committed, nor their users' last_seq raised."""
    await storage.create_user(user("u1"))
    batch = [note("n1", "u1"), note("n2", "ghost"), note("n3", "u1")]
    with pytest.raises(UnknownUserError) as unknown:
        await storage.insert_notifications(batch)
    assert unknown.value.user_id == "ghost"
    await assert_untouched(storage, "u1", ["n1", "n2", "n3"])


async def test_batch_with_a_taken_id_writes_nothing(storage: Storage) -> None:
    """Guards the seq bump surviving a failed insert: last_seq would then run ahead of
    the stored rows and the next notification would leave a gap."""
    await storage.create_user(user("u1"))
    await storage.insert_notifications([note("n1", "u1")])
    with pytest.raises(ConflictError) as taken:
        await storage.insert_notifications([note("n2", "u1"), note("n1", "u1")])
    assert taken.value.field == "id"
    await assert_untouched(storage, "u1", ["n2"], last_seq=1)
    [retried] = await storage.insert_notifications([note("n2", "u1")])
    assert retried.seq == 2


async def assert_untouched(
    storage: Storage, user_id: str, notification_ids: list[str], *, last_seq: int = 0
) -> None:
    for notification_id in notification_ids:
        assert await storage.get_notification(notification_id) is None
    found = await storage.get_user(user_id)
    assert found is not None
    assert found.last_seq == last_seq
    stored = await storage.notifications_after(user_id, after_seq=0, limit=100)
    assert len(stored) == last_seq


async def test_concurrent_batches_from_two_instances_get_gap_free_seqs(storage_url: str) -> None:
    """Guards lost updates of last_seq (a read-modify-write without the row lock gives
    two notifications one seq) and deadlocks between nodes: every batch names the same
    users in a different order, from two separately opened instances at once."""
    users = [f"u{i}" for i in range(5)]
    async with opened(storage_url) as first, opened(storage_url) as second:
        await first.migrate()
        for user_id in users:
            await first.create_user(user(user_id))
        batches = [
            [note(f"n{b}-{i}", users[(b * 3 + i * (b % 4 + 1)) % 5]) for i in range(20)]
            for b in range(40)
        ]
        results = await asyncio.gather(
            *(
                store.insert_notifications(batch)
                for store, batch in zip(itertools.cycle([first, second]), batches, strict=False)
            )
        )
        returned: dict[str, dict[int, str]] = defaultdict(dict)
        for records in results:
            in_batch: dict[str, list[int]] = defaultdict(list)
            for record in records:
                in_batch[record.user_id].append(record.seq)
                returned[record.user_id][record.seq] = record.id
            for user_seqs in in_batch.values():
                # One transaction: a user's seqs in a batch are consecutive, in batch order.
                assert user_seqs == list(range(user_seqs[0], user_seqs[0] + len(user_seqs)))
        assert sum(len(by_seq) for by_seq in returned.values()) == 40 * 20
        for user_id in users:
            count = len(returned[user_id])
            assert sorted(returned[user_id]) == list(range(1, count + 1))
            found = await second.get_user(user_id)
            assert found is not None
            assert found.last_seq == count
            replay = await second.notifications_after(user_id, after_seq=0, limit=1000)
            assert {record.seq: record.id for record in replay} == returned[user_id]


async def test_list_notifications_newest_first_before_seq(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    await storage.insert_notifications(
        [note(f"n{i}", "u1") for i in range(1, 8)] + [note("other", "u2")]
    )

    def seqs_of(records: list[NotificationRecord]) -> list[int]:
        return [record.seq for record in records]

    latest = await storage.list_notifications("u1", before_seq=None, limit=3)
    assert seqs_of(latest) == [7, 6, 5]
    older = await storage.list_notifications("u1", before_seq=latest[-1].seq, limit=3)
    assert seqs_of(older) == [4, 3, 2]
    oldest = await storage.list_notifications("u1", before_seq=2, limit=3)
    assert seqs_of(oldest) == [1]
    assert await storage.list_notifications("u1", before_seq=1, limit=3) == []
    assert await storage.list_notifications("ghost", before_seq=None, limit=3) == []


async def test_notifications_after_oldest_first(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    await storage.insert_notifications(
        [note(f"n{i}", "u1") for i in range(1, 8)] + [note("other", "u2")]
    )
    first = await storage.notifications_after("u1", after_seq=0, limit=3)
    assert [record.seq for record in first] == [1, 2, 3]
    rest = await storage.notifications_after("u1", after_seq=3, limit=100)
    assert [record.seq for record in rest] == [4, 5, 6, 7]
    assert await storage.notifications_after("u1", after_seq=7, limit=100) == []
    assert await storage.notifications_after("ghost", after_seq=0, limit=100) == []


async def test_negative_limit_is_refused(storage: Storage) -> None:
    """SQLite reads LIMIT -1 as 'no limit' and PostgreSQL rejects it: refuse it the same."""
    with pytest.raises(ValueError, match="limit"):
        await storage.notifications_after("u1", after_seq=0, limit=-1)


# API keys ------------------------------------------------------------------------------


def api_key(key_id: str, key_hash: str, *, revoked_at: int | None = None) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=key_id,
        name=f"key {key_id}",
        role="publisher",
        key_hash=key_hash,
        created_at=CREATED_AT,
        revoked_at=revoked_at,
    )


async def test_api_keys(storage: Storage) -> None:
    assert await storage.count_api_keys() == 0
    active, revoked = api_key("k1", "a" * 64), api_key("k2", "b" * 64, revoked_at=CREATED_AT)
    await storage.create_api_key(active)
    await storage.create_api_key(revoked)
    assert await storage.find_api_key("a" * 64) == active
    assert await storage.find_api_key("b" * 64) == revoked
    assert await storage.find_api_key("c" * 64) is None
    assert await storage.count_api_keys() == 2
    with pytest.raises(ConflictError) as taken:
        await storage.create_api_key(api_key("k3", "a" * 64))
    assert taken.value.field == "key_hash"
    with pytest.raises(ConflictError) as taken_id:
        await storage.create_api_key(api_key("k1", "d" * 64))
    assert taken_id.value.field == "id"
    assert await storage.count_api_keys() == 2


# access control (issue #4) -------------------------------------------------------------


def test_comment_only_migration_is_blank_for_both_dialects() -> None:
    """Guards the placeholder that keeps a version number (0002 in this branch): asyncpg
    fails on a query without a statement, so the backends must skip it."""
    placeholder = Migration(9, "placeholder", "-- only a comment\n/* and another */\n")
    assert placeholder.is_blank_for("sqlite")
    assert placeholder.is_blank_for("postgresql")
    dialect_only = Migration(9, "x", "/*postgresql: SELECT 1*/ -- pg only\n")
    assert dialect_only.is_blank_for("sqlite")
    assert not dialect_only.is_blank_for("postgresql")
    assert not any(m.is_blank_for("sqlite") for m in all_migrations() if m.name == "access")


def admin_key(key_id: str, key_hash: str, **fields: Any) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=key_id,
        name=f"admin {key_id}",
        role="admin",
        key_hash=key_hash,
        created_at=CREATED_AT,
        **fields,
    )


async def test_api_key_categories_round_trip(storage: Storage) -> None:
    limited = ApiKeyRecord(
        id="k1",
        name="billing",
        role="publisher",
        key_hash="a" * 64,
        created_at=CREATED_AT,
        categories=("billing", "invoices"),
    )
    await storage.create_api_key(limited)
    await storage.create_api_key(api_key("k2", "b" * 64))
    assert await storage.find_api_key("a" * 64) == limited
    assert await storage.get_api_key("k1") == limited
    unlimited = await storage.get_api_key("k2")
    assert unlimited is not None
    assert unlimited.categories is None
    assert await storage.get_api_key("nope") is None


async def test_list_api_keys_oldest_first_revoked_included(storage: Storage) -> None:
    keys = [
        api_key("k-b", "b" * 64),
        ApiKeyRecord(
            id="k-a", name="older", role="reader", key_hash="a" * 64, created_at=CREATED_AT - 1
        ),
        api_key("k-c", "c" * 64, revoked_at=CREATED_AT + 5),
    ]
    for key in keys:
        await storage.create_api_key(key)
    assert [key.id for key in await storage.list_api_keys()] == ["k-a", "k-b", "k-c"]


async def test_revoke_api_key_is_idempotent_and_keeps_the_first_instant(storage: Storage) -> None:
    await storage.create_api_key(api_key("k1", "a" * 64))
    revoked = await storage.revoke_api_key("k1", at=CREATED_AT + 10)
    assert revoked is not None
    assert revoked.revoked_at == CREATED_AT + 10
    again = await storage.revoke_api_key("k1", at=CREATED_AT + 99)
    assert again == revoked
    assert await storage.find_api_key("a" * 64) == revoked
    assert await storage.revoke_api_key("ghost", at=CREATED_AT) is None


async def test_last_live_admin_key_cannot_be_revoked(storage: Storage) -> None:
    """Guards an administrator locking everyone out: with one live admin key left (a
    revoked one does not count), revoking it is refused and changes nothing."""
    await storage.create_api_key(admin_key("a1", "a" * 64))
    await storage.create_api_key(admin_key("a0", "0" * 64, revoked_at=CREATED_AT))
    await storage.create_api_key(api_key("p1", "b" * 64))
    with pytest.raises(LastAdminKeyError) as refused:
        await storage.revoke_api_key("a1", at=CREATED_AT + 1)
    assert refused.value.key_id == "a1"
    still = await storage.get_api_key("a1")
    assert still is not None
    assert still.revoked_at is None
    # Non-admin keys and already revoked admin keys are not concerned by the rule.
    assert await storage.revoke_api_key("p1", at=CREATED_AT + 1) is not None
    assert await storage.revoke_api_key("a0", at=CREATED_AT + 1) is not None
    await storage.create_api_key(admin_key("a2", "c" * 64))
    first = await storage.revoke_api_key("a1", at=CREATED_AT + 2)
    assert first is not None
    assert first.revoked_at == CREATED_AT + 2


async def test_concurrent_revocations_of_the_last_two_admin_keys_leave_one(
    storage_url: str,
) -> None:
    """Guards a check-then-act race: two processes each revoking one of the last two
    admin keys would each see the other key live, and both would revoke."""
    async with opened(storage_url) as first, opened(storage_url) as second:
        await first.migrate()
        for round_number in range(5):
            ids = [f"r{round_number}-x", f"r{round_number}-y"]
            for index, key_id in enumerate(ids):
                await first.create_api_key(admin_key(key_id, f"{round_number}{index}" * 32))
            if round_number:  # the survivor of the previous round must not count
                for key in await first.list_api_keys():
                    if key.revoked_at is None and key.id not in ids:
                        await first.revoke_api_key(key.id, at=CREATED_AT)
            results = await asyncio.gather(
                first.revoke_api_key(ids[0], at=CREATED_AT),
                second.revoke_api_key(ids[1], at=CREATED_AT),
                return_exceptions=True,
            )
            refused = [r for r in results if isinstance(r, LastAdminKeyError)]
            assert len(refused) == 1, results
            live = [k.id for k in await second.list_api_keys() if k.revoked_at is None]
            assert live == [refused[0].key_id]


async def test_user_token_cutoff_only_moves_forward(storage: Storage) -> None:
    created = await storage.create_user(user("u1"))
    await storage.create_user(user("u2"))
    assert await storage.get_user_and_token_cutoff("u1") == (created, 0)
    assert await storage.revoke_user_tokens("u1", before=CREATED_AT + 50)
    assert await storage.revoke_user_tokens("u1", before=CREATED_AT + 10)
    assert await storage.get_user_and_token_cutoff("u1") == (created, CREATED_AT + 50)
    other = await storage.get_user_and_token_cutoff("u2")
    assert other is not None
    assert other[1] == 0
    assert not await storage.revoke_user_tokens("ghost", before=CREATED_AT)
    assert await storage.get_user_and_token_cutoff("ghost") is None


def audit(action: str, *, at: int = CREATED_AT, **fields: Any) -> NewAuditRecord:
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
