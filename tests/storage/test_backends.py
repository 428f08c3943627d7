"""What only one backend can show: URLs, the files and servers behind them, and how
their failures surface. The shared behaviour is in the test_<area>_contract.py files."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from storage import (
    StorageUnavailableError,
    UnsupportedStorageUrlError,
    open_storage,
)
from tests import services
from tests.storage.conftest import opened, raw_sql, user

# SQLite --------------------------------------------------------------------------------


async def test_sqlite_relative_url_creates_missing_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with opened("sqlite:///state/db/pushd.db") as store:
        await store.migrate()
    assert (tmp_path / "state" / "db" / "pushd.db").is_file()


async def test_sqlite_file_is_in_wal_mode(tmp_path: Path) -> None:
    """Guards the pragmas: without WAL every reader waits for the group commit."""
    url = f"sqlite:///{tmp_path / 'pushd.db'}"
    async with opened(url) as store:
        await store.migrate()
    assert await raw_sql(url, "PRAGMA journal_mode") == [("wal",)]


@pytest.mark.parametrize("url", ["sqlite://pushd.db", "sqlite:///", "sqlite:pushd.db"])
async def test_malformed_sqlite_url_is_refused(url: str) -> None:
    with pytest.raises(UnsupportedStorageUrlError, match="sqlite:///"):
        await open_storage(url)


async def test_sqlite_file_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(StorageUnavailableError, match="taken"):
        await open_storage(f"sqlite:///{tmp_path / 'taken'}")


async def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(UnsupportedStorageUrlError, match="mysql"):
        await open_storage("mysql://localhost/pushd")


# PostgreSQL ----------------------------------------------------------------------------


async def test_unreachable_postgres_is_unavailable_quickly() -> None:
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError, match=r"127\.0\.0\.1:1\b") as unavailable:
        await open_storage("postgresql://postgres:secret@127.0.0.1:1/pushd")
    assert time.monotonic() - started < 10
    assert "secret" not in str(unavailable.value)
    assert "running" in str(unavailable.value)


async def test_silent_postgres_server_is_unavailable_within_ten_seconds() -> None:
    """Guards open() hanging on a server that accepts connections but never answers
    (a half-dead host, a stuck proxy): the connect timeout must fire."""

    async def accept_and_stay_silent(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(accept_and_stay_silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        started = time.monotonic()
        with pytest.raises(StorageUnavailableError, match="did not answer in time"):
            await open_storage(f"postgresql://postgres@127.0.0.1:{port}/pushd")
        assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    "url", ["postgresql://127.0.0.1:notaport/pushd", "postgresql://127.0.0.1/pushd?sslmode=bogus"]
)
async def test_malformed_postgres_url_is_refused(url: str) -> None:
    with pytest.raises(UnsupportedStorageUrlError, match=r"storage\.url"):
        await open_storage(url)


async def test_missing_postgres_database_is_unavailable_with_the_fix() -> None:
    url = services.pg_url(f"pushd_missing_{secrets.token_hex(4)}")
    with pytest.raises(StorageUnavailableError, match="does not exist: create it"):
        await open_storage(url)


async def test_lost_postgres_connection_is_unavailable_then_recovers(postgres_url: str) -> None:
    """Guards asyncpg errors leaking out when the server drops a connection under a
    query (failover, restart): the caller sees StorageUnavailableError, and the pool
    heals. The query is held on a table lock until the server ends its session: a
    connection dropped while idle is replaced by the pool unseen, so the caller would
    never meet the error this test is about."""
    async with opened(postgres_url) as store:
        await store.migrate()
        blocker = await asyncpg.connect(postgres_url, timeout=10)
        try:
            async with blocker.transaction():
                await blocker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
                insert = asyncio.create_task(store.create_user(user("u1")))
                await _until_pushd_waits_on_a_lock(blocker)
                await blocker.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = 'pushd'"
                )
                with pytest.raises(StorageUnavailableError, match="connection was lost"):
                    await insert
        finally:
            await blocker.close()
        await store.ping()
        await store.create_user(user("u1"))


async def _until_pushd_waits_on_a_lock(connection: asyncpg.Connection) -> None:
    async with asyncio.timeout(10):
        while not await connection.fetchval(  # noqa: ASYNC110 - polls the server
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'pushd' AND wait_event_type = 'Lock'"
        ):
            await asyncio.sleep(0.01)


@pytest.fixture
async def en_us_postgres_url() -> AsyncIterator[str]:
    """A database whose default collation sorts text like a dictionary (a < B < b)."""
    name = f"pushd_t_en_us_{secrets.token_hex(4)}"
    admin = services.pg_url("postgres")
    await raw_sql(
        admin,
        f"CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu "
        "ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'",
    )
    try:
        yield services.pg_url(name)
    finally:
        await raw_sql(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def test_postgres_ids_sort_byte_wise_whatever_the_locale(en_us_postgres_url: str) -> None:
    """Guards list_users pages differing from SQLite's on a server whose locale is not
    C: ids are declared COLLATE "C" there, so 'B' < 'a' on both backends."""
    async with opened(en_us_postgres_url) as store:
        await store.migrate()
        for user_id in ("a", "B", "b"):
            await store.create_user(user(user_id))
        listed = await store.list_users(after_id=None, limit=10)
        assert [found.id for found in listed] == ["B", "a", "b"]
        after_b = await store.list_users(after_id="B", limit=10)
        assert [found.id for found in after_b] == ["a", "b"]
