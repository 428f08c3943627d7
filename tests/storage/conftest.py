"""The storage backend matrix and helpers that reach under the `Storage` seam.

`BACKENDS` is data: the `storage_url` fixture is parametrized by it, so every test that
takes `storage_url` or `storage` runs once per backend (the alisaifee/limits way).
Adding a backend means adding a param here, and the whole contract suite runs on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from storage import PLAINTEXT, Cipher, Storage, open_storage
from storage.migrations import RECORD_VERSION, Dialect, all_migrations
from storage.records import NewNotification, NewUser
from storage.sql.common import sqlite_placeholders

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql"),
]

CREATED_AT = 1_700_000_000_000


@pytest.fixture(params=BACKENDS)
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend in turn; for a test that takes `storage` too,
    a PostgreSQL one comes with the schema (copied from a database migrated once per run),
    as `storage` would have migrated it anyway."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pushd.db'}"
    # Asked for here only, so that the SQLite runs need no PostgreSQL server; when
    # the server is down this fixture fails the test (it never skips).
    wanted = "migrated_postgres_url" if "storage" in request.fixturenames else "postgres_url"
    url: str = request.getfixturevalue(wanted)
    return url


@contextlib.asynccontextmanager
async def opened(url: str, cipher: Cipher = PLAINTEXT) -> AsyncIterator[Storage]:
    """A storage instance on `url`, closed afterwards (not migrated)."""
    store = await open_storage(url, pool_size=4, cipher=cipher)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def storage(storage_url: str) -> AsyncIterator[Storage]:
    """A migrated storage instance of each backend in turn (`migrate()` still runs: on
    PostgreSQL it finds the schema in place and must leave it)."""
    async with opened(storage_url) as store:
        await store.migrate()
        yield store


async def raw_sql(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement (`$1` placeholders) on the database behind `url`, bypassing
    the storage layer."""
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:///")

        def run() -> list[tuple[Any, ...]]:
            with contextlib.closing(sqlite3.connect(path)) as connection, connection:
                return connection.execute(sqlite_placeholders(sql), params).fetchall()

        # Off the loop like the backend itself: the blocking guard watches tests too.
        return await asyncio.to_thread(run)
    connection = await asyncpg.connect(url, timeout=10)
    try:
        return [tuple(row) for row in await connection.fetch(sql, *params)]
    finally:
        await connection.close()


async def table_names(url: str) -> set[str]:
    """The tables that exist in the database behind `url`."""
    if url.startswith("sqlite:"):
        rows = await raw_sql(url, "SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = await raw_sql(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {row[0] for row in rows}


def user(user_id: str, **fields: Any) -> NewUser:
    """A new user with only the required fields set, unless given."""
    return NewUser(id=user_id, created_at=CREATED_AT, **fields)


def note(notification_id: str, user_id: str, **fields: Any) -> NewNotification:
    """A new notification with only the required fields set, unless given."""
    fields.setdefault("created_at", CREATED_AT)
    return NewNotification(id=notification_id, user_id=user_id, **fields)


async def schema_at_version(url: str, version: int) -> None:
    """The schema as pushd left it at `version`, written without migrate(): the starting
    point of a migration test."""
    dialect: Dialect = "sqlite" if url.startswith("sqlite:") else "postgresql"
    texts = [
        migration.sql_for(dialect)
        for migration in all_migrations()[:version]
        if not migration.is_blank_for(dialect)
    ]
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:///")

        def run() -> None:
            with contextlib.closing(sqlite3.connect(path)) as connection:
                for text in texts:
                    connection.executescript(text)

        await asyncio.to_thread(run)
    else:
        connection = await asyncpg.connect(url, timeout=10)
        try:
            for text in texts:
                await connection.execute(text)
        finally:
            await connection.close()
    await raw_sql(
        url,
        "CREATE TABLE IF NOT EXISTS schema_version "
        "(version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    for number in range(1, version + 1):
        await raw_sql(url, RECORD_VERSION, number, 0)
