"""The lifecycle part of the `Storage` contract (storage/protocol.py `Lifecycle`), on
every backend: migrations, ping and close.

Each test takes `storage` (migrated) or `storage_url` (empty database), both
parametrized over `BACKENDS` in conftest.py: a behaviour that differs between SQLite
and PostgreSQL fails here.
"""

from __future__ import annotations

import asyncio

import pytest

from storage import SchemaTooNewError, Storage, StorageUnavailableError, open_storage
from storage.migrations import (
    CREATE_VERSION_TABLE,
    RECORD_VERSION,
    Migration,
    all_migrations,
    newest_version,
)
from tests.storage.conftest import note, opened, raw_sql, table_names, user

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


# ping and close ------------------------------------------------------------------------


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
