"""Migration 0011 (issue #13): the opt-outs that email unsubscribe links stored in
`channel_optouts` become preference switches turned off, and the old table goes: one
source of truth, and no user loses an unsubscription on upgrade."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

import asyncpg

from storage.migrations import RECORD_VERSION, Dialect, all_migrations
from storage.records import PreferencesRecord
from tests.storage.conftest import CREATED_AT, opened, raw_sql

BEFORE = 10


async def at_version(url: str, version: int) -> None:
    """The schema as pushd left it at `version`, without its migrate()."""
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


async def test_0011_turns_opt_outs_into_preferences(storage_url: str) -> None:
    await at_version(storage_url, BEFORE)
    for user_id in ("u1", "u2"):
        await raw_sql(
            storage_url, "INSERT INTO users (id, created_at) VALUES ($1, $2)", user_id, CREATED_AT
        )
    for category in ("news", ""):
        await raw_sql(
            storage_url,
            "INSERT INTO channel_optouts (user_id, category, channel, created_at) "
            "VALUES ('u1', $1, 'email', $2)",
            category,
            CREATED_AT,
        )
    async with opened(storage_url) as store:
        await store.migrate()
        found = await store.get_preferences("u1")
        assert found is not None
        assert found.channels == {"": {"email": False}, "news": {"email": False}}
        assert await store.get_preferences("u2") == PreferencesRecord(user_id="u2")
    tables = await raw_sql(
        storage_url,
        "SELECT count(*) FROM channel_preferences WHERE updated_at = $1",
        CREATED_AT,
    )
    assert tables == [(2,)]
