"""The PostgreSQL engine: the asyncpg pool, error translation, the primitives of
`SqlEngine` and the lifecycle.

The area modules next to this one take a pooled connection with `_connection()` (or
`_transaction()`) for their own statements; errors raised inside are translated on the
way out like every other call's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, Self
from urllib.parse import urlsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from storage import migrations
from storage.crypto import Cipher
from storage.errors import StorageError, StorageUnavailableError, UnsupportedStorageUrlError
from storage.records import now_ms
from storage.sql.common import conflict
from storage.sql.engine import EngineUsage, SqlEngine, error_kind

_CONNECT_TIMEOUT_S = 5.0
_COMMAND_TIMEOUT_S = 30.0  # a server that stops answering must not hang requests forever
_ACQUIRE_TIMEOUT_S = 30.0
_CLOSE_TIMEOUT_S = 10.0
# Any fixed key works; this one is "pushd" in ASCII, to recognise it in pg_locks.
_MIGRATION_LOCK_KEY = 0x7075736864

# What each failure to reach the server most likely means, most specific first.
_UNAVAILABLE_CAUSES: tuple[tuple[type[BaseException], str], ...] = (
    (
        asyncpg.TooManyConnectionsError,
        "the server has no connection slot left: lower storage.pool_size on the nodes "
        "or raise max_connections",
    ),
    (
        asyncpg.CannotConnectNowError,
        "the server is starting up or shutting down: retry in a moment",
    ),
    (asyncpg.AdminShutdownError, "the server is shutting down: retry in a moment"),
    (asyncpg.CrashShutdownError, "the server is restarting after a crash: retry in a moment"),
    (
        asyncpg.InvalidCatalogNameError,
        "the database does not exist: create it, or fix its name in storage.url",
    ),
    (
        asyncpg.InvalidAuthorizationSpecificationError,
        "the server refused the credentials: check the user and password in storage.url "
        "and the server's pg_hba.conf",
    ),
    (
        asyncpg.PostgresConnectionError,
        "the connection was lost: retry, and check the server's log",
    ),
    (
        TimeoutError,
        "the server did not answer in time: check the network and the server's load",
    ),
    (
        OSError,
        "no server answers there: check that PostgreSQL is running and listening on that "
        "address, and that storage.url is right",
    ),
)
# PostgreSQL's default names for the UNIQUE and PRIMARY KEY constraints of 0001.
_UNIQUE_CONSTRAINT_FIELDS = {
    "users_pkey": "id",
    "users_external_id_key": "external_id",
    "devices_pkey": "id",
    "notifications_pkey": "id",
    "api_keys_pkey": "id",
    "api_keys_key_hash_key": "key_hash",
    "idempotency_keys_pkey": "idempotency_key",
    "channel_deliveries_pkey": "id",
    "webhook_endpoints_pkey": "id",
    "topics_pkey": "slug",
    "scheduled_notifications_pkey": "id",
}
_HAS_VERSION_TABLE = "SELECT to_regclass('schema_version') IS NOT NULL"


def _where(url: str) -> str:
    # host:port only: the URL may hold a password, which must not reach the logs.
    try:
        parts = urlsplit(url)
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
    except ValueError:
        return "the address in storage.url"


def _translate(exc: Exception, where: str) -> StorageError:
    if isinstance(exc, asyncpg.UniqueViolationError):
        constraint = exc.constraint_name or ""
        field = _UNIQUE_CONSTRAINT_FIELDS.get(constraint, constraint)
        return conflict(exc.table_name or "?", field)
    for kind, cause in _UNAVAILABLE_CAUSES:
        if isinstance(exc, kind):
            return StorageUnavailableError(
                f"cannot use PostgreSQL at {where}: {cause} ({type(exc).__name__}: {exc})"
            )
    if isinstance(exc, asyncpg.InternalClientError) or (
        isinstance(exc, asyncpg.InterfaceError) and "clos" in str(exc)
    ):
        # "connection is closed", "pool is closing", or the protocol state asyncpg is
        # left in when the server ends a session under it (pg_terminate_backend,
        # failover): the link is gone, not the query wrong.
        return StorageUnavailableError(
            f"cannot use PostgreSQL at {where}: the connection broke ({exc}); retry"
        )
    return StorageError(
        f"PostgreSQL at {where} rejected the operation: {type(exc).__name__}: {exc}"
    )


# What asyncpg (and the socket under it) raise; all of it is translated.
_DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """Skip asyncpg's reset query (RESET ALL, UNLISTEN *, …) on every pool release: it
    costs a round trip per query, and pushd sets no session state (its advisory locks
    are transaction-scoped)."""


class PostgresEngine(SqlEngine):
    """A pool of connections to one PostgreSQL database."""

    def __init__(self, pool: asyncpg.Pool, where: str, cipher: Cipher) -> None:
        self._cipher = cipher
        self._pool = pool
        self._where = where
        self._closed = False
        self._operations = 0  # inside `_connection`: waiting for one, or holding one
        self._errors = {"unavailable": 0, "conflict": 0, "rejected": 0}

    def usage(self) -> EngineUsage:
        """The pool's connections now and the errors so far."""
        in_use = self._pool.get_size() - self._pool.get_idle_size()
        return EngineUsage(
            connections=self._pool.get_size(),
            max_connections=self._pool.get_max_size(),
            in_use=in_use,
            waiting=max(0, self._operations - in_use),
            errors=dict(self._errors),
        )

    @classmethod
    async def open(cls, url: str, *, pool_size: int, cipher: Cipher) -> Self:
        """Connect a pool of up to `pool_size` connections (one at once, to fail fast)."""
        where = _where(url)
        try:
            # The outer bound covers what the connect timeout does not (several
            # addresses for one host name, the server-side startup).
            async with asyncio.timeout(2 * _CONNECT_TIMEOUT_S):
                pool = await asyncpg.create_pool(
                    url,
                    min_size=1,
                    max_size=pool_size,
                    timeout=_CONNECT_TIMEOUT_S,
                    command_timeout=_COMMAND_TIMEOUT_S,
                    server_settings={"application_name": "pushd"},
                    reset=_keep_session,
                )
        except ValueError as exc:
            # A malformed URL (bad port, unknown sslmode) or pool size: no server involved.
            raise UnsupportedStorageUrlError(
                f"storage.url or storage.pool_size is not usable for PostgreSQL: {exc}"
            ) from exc
        except _DRIVER_ERRORS as exc:
            raise _translate(exc, where) from exc
        return cls(pool, where, cipher)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[PoolConnectionProxy[asyncpg.Record]]:
        """A pooled connection for one call; driver errors leave as `StorageError`s."""
        if self._closed:
            raise StorageUnavailableError(f"the PostgreSQL storage at {self._where} is closed")
        self._operations += 1
        try:
            async with self._pool.acquire(timeout=_ACQUIRE_TIMEOUT_S) as connection:
                yield connection
        except _DRIVER_ERRORS as exc:
            error = _translate(exc, self._where)
            self._errors[error_kind(error)] += 1
            raise error from exc
        finally:
            self._operations -= 1

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[PoolConnectionProxy[asyncpg.Record]]:
        """`_connection()` inside one transaction."""
        async with self._connection() as connection, connection.transaction():
            yield connection

    async def _fetch_one(self, sql: str, *params: Any) -> Any:
        async with self._connection() as connection:
            return await connection.fetchrow(sql, *params)

    async def _fetch_all(self, sql: str, *params: Any) -> list[Any]:
        async with self._connection() as connection:
            return await connection.fetch(sql, *params)

    async def _write_one(self, sql: str, *params: Any) -> Any:
        # A single statement outside a transaction block commits on its own.
        return await self._fetch_one(sql, *params)

    async def _write_all(self, sql: str, *params: Any) -> list[Any]:
        # A single statement outside a transaction block commits on its own.
        return await self._fetch_all(sql, *params)

    async def _write_many(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        async with self._transaction() as connection:
            return [list(await connection.fetch(sql, *params)) for sql, params in statements]

    async def _read_many(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        # One pooled connection, no transaction block: BEGIN and COMMIT would add two
        # round trips to the reads' own (the rows may come from different snapshots).
        async with self._connection() as connection:
            return [list(await connection.fetch(sql, *params)) for sql, params in statements]

    def _in_list(self, param: int) -> str:
        return f"= ANY(${param}::text[])"

    def _list_param(self, values: Sequence[str]) -> Any:
        return list(values)

    async def migrate(self) -> int:
        """See `Storage.migrate`; a transaction-scoped advisory lock serialises nodes."""
        async with self._connection() as connection:
            while True:
                async with connection.transaction():
                    await connection.execute(
                        "SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_KEY
                    )
                    await connection.execute(migrations.CREATE_VERSION_TABLE)
                    current: int = await connection.fetchval(migrations.CURRENT_VERSION)
                    migration = migrations.next_migration(current)
                    if migration is None:
                        return current
                    if not migration.is_blank_for("postgresql"):
                        await connection.execute(migration.sql_for("postgresql"))
                    await connection.execute(migrations.RECORD_VERSION, migration.version, now_ms())

    async def schema_version(self) -> int:
        """See `Storage.schema_version`."""
        if not await self._fetch_value(_HAS_VERSION_TABLE):
            return 0
        version: int = await self._fetch_value(migrations.CURRENT_VERSION)
        return version

    async def _fetch_value(self, sql: str) -> Any:
        row = await self._fetch_one(sql)
        return row[0]

    async def close(self) -> None:
        """See `Storage.close`: waits for borrowed connections, then forces the rest."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wait_for(self._pool.close(), _CLOSE_TIMEOUT_S)
        except (TimeoutError, *_DRIVER_ERRORS):
            # A connection still busy (or a server gone) must not make shutdown hang.
            self._pool.terminate()
