"""The PostgreSQL backend (cluster shape), on an asyncpg connection pool.

Every driver error is translated on its way out: failures to reach or keep the server
become `StorageUnavailableError` naming host:port and the likely fix, uniqueness
violations `ConflictError`, anything else a plain `StorageError`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from storage import _sql, migrations
from storage._base import SqlStorageBase
from storage.crypto import Cipher
from storage.errors import (
    IdempotencyConflictError,
    LastAdminKeyError,
    StorageError,
    StorageUnavailableError,
    UnknownUserError,
    UnsupportedStorageUrlError,
)
from storage.records import (
    ApiKeyRecord,
    CursorTimes,
    DeviceRecord,
    MarkedRead,
    NewAuditRecord,
    NewDevice,
    NewNotification,
    NotificationRecord,
)

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
}


# Statements that update several users lock them first in id order (in a sub-select:
# its row locks are taken above its sort): an UPDATE locks rows in whatever order its
# join yields them, so two nodes whose batches share users could otherwise deadlock.
# The whole batch in ONE statement, so ONE round trip (it runs as its own implicit
# transaction): lock the batch's users in id order, bump their last_seq, insert the
# notifications with seqs numbered in batch order per user, and store the idempotency
# claims. The guard divides by zero, aborting the statement (nothing is bumped or
# inserted), if a user of the batch does not exist or a claim's key is already stored
# (when no user exists at all, no row reaches the guard, and nothing is written either).
# Round trips, not CPU, bounded the cluster shape's throughput.
_INSERT_BATCH = """
WITH batch AS (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::bigint[], $9::bigint[], $10::text[], $11::text[], $12::text[]
    ) WITH ORDINALITY AS b(id, user_id, title, body, data, category, priority, created_at,
                           expires_at, claim_scope, claim_key, claim_hash, ord)
),
wanted AS (SELECT user_id, count(*) AS n FROM batch GROUP BY user_id),
locked AS (
    SELECT users.id FROM users JOIN wanted ON wanted.user_id = users.id
    ORDER BY users.id FOR UPDATE
),
bumped AS (
    UPDATE users SET last_seq = users.last_seq + wanted.n
    FROM wanted JOIN locked ON locked.id = wanted.user_id
    WHERE users.id = wanted.user_id
    RETURNING users.id, users.last_seq - wanted.n AS base
),
numbered AS (
    SELECT batch.*,
           bumped.base + row_number() OVER (PARTITION BY batch.user_id ORDER BY batch.ord) AS seq
    FROM batch JOIN bumped ON bumped.id = batch.user_id
),
saved AS (
    INSERT INTO notifications (id, user_id, seq, title, body, data, category, priority,
                               created_at, expires_at, node_id)
    SELECT id, user_id, seq, title, body, data, category, priority, created_at, expires_at, $13
    FROM numbered ORDER BY ord
    RETURNING id, seq, gid
),
claimed AS (
    INSERT INTO idempotency_keys (scope, key, request_hash, notification_id, user_id, seq,
                                  created_at)
    SELECT claim_scope, claim_key, claim_hash, id, user_id, seq, created_at
    FROM numbered WHERE claim_key IS NOT NULL
    ON CONFLICT DO NOTHING RETURNING 1
)
SELECT id, seq + 0 * (1 / (
           (SELECT count(*) FROM bumped) = (SELECT count(*) FROM wanted)
           AND (SELECT count(*) FROM claimed)
               = (SELECT count(*) FROM batch WHERE claim_key IS NOT NULL)
       )::int), gid
FROM saved
"""
_EXISTING_USERS = "SELECT id FROM users WHERE id = ANY($1::text[])"
_EXISTING_CLAIMS = (
    "SELECT scope, key FROM idempotency_keys "
    "WHERE (scope, key) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
)
# Both cursors of every given user in one statement, rows locked in id order (see
# _update_users_in_id_order), and a history row for each cursor that moved. {sent_limit}
# and {ack_limit} are empty, or (`within`) a further bound LEAST takes: just below the
# first notification above the cursor of a category not in $5 (NULL, ignored, if none).
_ADVANCE_CURSORS_TEMPLATE = """
WITH given AS (
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS g(id, sent, acked)
),
locked AS (
    SELECT users.id, users.sent_seq AS old_sent, users.ack_seq AS old_ack, given.sent,
           given.acked
    FROM users JOIN given ON users.id = given.id ORDER BY users.id FOR UPDATE OF users
),
moved AS (
    UPDATE users
    SET sent_seq = GREATEST(users.sent_seq, LEAST(locked.sent, users.last_seq{sent_limit})),
        ack_seq = GREATEST(users.ack_seq, LEAST(locked.acked, users.last_seq{ack_limit}))
    FROM locked WHERE users.id = locked.id
    RETURNING users.id, users.sent_seq, users.ack_seq, locked.old_sent, locked.old_ack
)
INSERT INTO cursor_history (user_id, cursor, seq, at)
SELECT id, 'sent', sent_seq, $4::bigint FROM moved WHERE sent_seq > old_sent
UNION ALL
SELECT id, 'acked', ack_seq, $4::bigint FROM moved WHERE ack_seq > old_ack
ON CONFLICT DO NOTHING
"""
_ADVANCE_CURSORS = _ADVANCE_CURSORS_TEMPLATE.format(sent_limit="", ack_limit="")
_CURSOR_LIMIT = (
    ", (SELECT min(n.seq) - 1 FROM notifications n WHERE n.user_id = users.id "
    "AND n.seq > users.{0} AND (n.category IS NULL OR NOT (n.category = ANY($5::text[]))))"
)
_ADVANCE_CURSORS_WITHIN = _ADVANCE_CURSORS_TEMPLATE.format(
    sent_limit=_CURSOR_LIMIT.format("sent_seq"), ack_limit=_CURSOR_LIMIT.format("ack_seq")
)
_MARK_READ = _sql.mark_read_sql("= ANY($2::text[])")
_MARK_READ_WITHIN = _sql.mark_read_sql("= ANY($2::text[])", "= ANY($4::text[])")
_CURSOR_TIMES = _sql.cursor_times_sql("unnest($2::bigint[]) AS s(seq)", "seq")
_HAS_VERSION_TABLE = "SELECT to_regclass('schema_version') IS NOT NULL"


# access control (issue #4): the whole batch in one statement, ids in the order given.
_APPEND_AUDIT = """
INSERT INTO audit_log (at, actor, action, target, source, result, detail)
SELECT at, actor, action, target, source, result, detail FROM unnest(
    $1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]
) WITH ORDINALITY AS r(at, actor, action, target, source, result, detail, ord)
ORDER BY ord
"""


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
        return _sql.conflict(exc.table_name or "?", field)
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


class PostgresStorage(SqlStorageBase):
    """`Storage` on PostgreSQL, shared by every node of a cluster."""

    def __init__(self, pool: asyncpg.Pool, where: str, cipher: Cipher) -> None:
        self._cipher = cipher
        self._pool = pool
        self._where = where
        self._closed = False

    @classmethod
    async def open(cls, url: str, *, pool_size: int, cipher: Cipher) -> PostgresStorage:
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
        if self._closed:
            raise StorageUnavailableError(f"the PostgreSQL storage at {self._where} is closed")
        try:
            async with self._pool.acquire(timeout=_ACQUIRE_TIMEOUT_S) as connection:
                yield connection
        except _DRIVER_ERRORS as exc:
            raise _translate(exc, self._where) from exc

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[PoolConnectionProxy[asyncpg.Record]]:
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
                    await connection.execute(
                        migrations.RECORD_VERSION, migration.version, _sql.now_ms()
                    )

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

    async def upsert_device(self, device: NewDevice) -> tuple[DeviceRecord, bool]:
        """See `Storage.upsert_device`."""
        async with self._transaction() as connection:
            while True:
                try:
                    row = await connection.fetchrow(_sql.INSERT_DEVICE, *_sql.device_params(device))
                except asyncpg.ForeignKeyViolationError as exc:
                    raise UnknownUserError(device.user_id) from exc
                if row is not None:
                    return _sql.device_from_row(row), True
                params = _sql.replace_details_params(device)
                row = await connection.fetchrow(_sql.REPLACE_DEVICE_DETAILS, *params)
                if row is not None:
                    return _sql.device_from_row(row), False
                # Deleted by another node between the two statements: insert it again.

    async def _write_all(self, sql: str, *params: Any) -> list[Any]:
        # A single statement outside a transaction block commits on its own.
        return await self._fetch_all(sql, *params)

    async def _write_many(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        async with self._transaction() as connection:
            return [list(await connection.fetch(sql, *params)) for sql, params in statements]

    def _in_list(self, param: int) -> str:
        return f"= ANY(${param}::text[])"

    def _list_param(self, values: Sequence[str]) -> Any:
        return list(values)

    async def insert_notifications(
        self, batch: Sequence[NewNotification], *, node_id: str = ""
    ) -> list[NotificationRecord]:
        """See `Storage.insert_notifications`: one statement whatever the batch size."""
        if not batch:
            return []
        claims = [n.idempotency for n in batch]
        seal, cipher = _sql.seal, self._cipher
        # Sealed on the event loop: about 10 µs per notification (docs/architecture.md),
        # less than a thread hand-off would cost for a typical batch.
        columns = [
            [n.id for n in batch],
            [n.user_id for n in batch],
            [seal(cipher, n.title, "notifications.title", n.id) for n in batch],
            [seal(cipher, n.body, "notifications.body", n.id) for n in batch],
            [
                None
                if n.data is None
                else seal(cipher, _sql.encode_json(n.data), "notifications.data", n.id)
                for n in batch
            ],
            [n.category for n in batch],
            [n.priority for n in batch],
            [n.created_at for n in batch],
            [n.expires_at for n in batch],
            [None if c is None else c.scope for c in claims],
            [None if c is None else c.key for c in claims],
            [None if c is None else c.request_hash for c in claims],
        ]
        async with self._connection() as connection:
            try:
                rows = await connection.fetch(_INSERT_BATCH, *columns, node_id)
            except asyncpg.DivisionByZeroError:
                rows = []  # the guard: nothing was written
            if len(rows) != len(batch):
                await self._explain_refused_batch(connection, batch)
        saved = {row[0]: (row[1], row[2]) for row in rows}
        return [_sql.with_seq(n, *saved[n.id]) for n in batch]

    @staticmethod
    async def _explain_refused_batch(
        connection: PoolConnectionProxy[asyncpg.Record], batch: Sequence[NewNotification]
    ) -> None:
        """Raise what made the batch statement write nothing: a missing user, else a
        claim whose key is already stored."""
        user_ids = [n.user_id for n in batch]
        existing = {row[0] for row in await connection.fetch(_EXISTING_USERS, user_ids)}
        for notification in batch:
            if notification.user_id not in existing:
                raise UnknownUserError(notification.user_id)
        claims = [n.idempotency for n in batch if n.idempotency is not None]
        taken = await connection.fetch(
            _EXISTING_CLAIMS, [c.scope for c in claims], [c.key for c in claims]
        )
        if taken:
            raise IdempotencyConflictError(taken[0][0], taken[0][1])
        # Two claims of the same batch with one key: the second one conflicts.
        seen: set[tuple[str, str]] = set()
        for claim in claims:
            if (claim.scope, claim.key) in seen:
                raise IdempotencyConflictError(claim.scope, claim.key)
            seen.add((claim.scope, claim.key))
        raise StorageError("PostgreSQL refused a notification batch for no known reason")

    async def advance_cursors(
        self,
        *,
        sent: Mapping[str, int],
        acked: Mapping[str, int],
        at: int,
        within: Sequence[str] | None = None,
    ) -> None:
        """See `Storage.advance_cursors`."""
        wanted = _sql.merge_cursors(sent, acked)
        if wanted:
            values = list(wanted.values())
            sql = _ADVANCE_CURSORS
            params: list[Any] = [list(wanted), [v[0] for v in values], [v[1] for v in values], at]
            if within is not None:
                sql = _ADVANCE_CURSORS_WITHIN
                params.append(list(within))
            async with self._connection() as connection:
                await connection.execute(sql, *params)

    async def cursor_times(self, user_id: str, seqs: Sequence[int]) -> dict[int, CursorTimes]:
        """See `Storage.cursor_times`."""
        if not seqs:
            return {}
        return _sql.cursor_times_from_rows(
            await self._fetch_all(_CURSOR_TIMES, user_id, list(seqs))
        )

    async def mark_read(
        self,
        user_id: str,
        ids: Sequence[str],
        at: int,
        *,
        categories: Sequence[str] | None = None,
    ) -> list[MarkedRead]:
        """See `Storage.mark_read`."""
        if not ids:
            return []
        if categories is None:
            rows = await self._fetch_all(_MARK_READ, user_id, list(ids), at)
        else:
            rows = await self._fetch_all(
                _MARK_READ_WITHIN, user_id, list(ids), at, list(categories)
            )
        return _sql.marked_read(ids, rows)

    # access control (issue #4) ----------------------------------------------------------

    async def revoke_api_key(self, key_id: str, *, at: int) -> ApiKeyRecord | None:
        """See `Storage.revoke_api_key`."""
        async with self._transaction() as connection:
            row = await connection.fetchrow(_sql.GET_API_KEY, key_id)
            if row is None:
                return None
            # A key's role never changes, so only admin keys need the lock: every live
            # admin key, locked before the check, so that two concurrent revocations see
            # each other's result instead of each counting the other as still live.
            if row[2] == "admin":
                live = {found[0] for found in await connection.fetch(_sql.LOCK_LIVE_ADMIN_KEYS)}
                if key_id in live and not live - {key_id}:
                    raise LastAdminKeyError(key_id)
            revoked = await connection.fetchrow(_sql.REVOKE_API_KEY, key_id, at)
        assert revoked is not None  # keys are never deleted, and it existed above
        return _sql.api_key_from_row(revoked)

    async def append_audit(self, records: Sequence[NewAuditRecord]) -> None:
        """See `Storage.append_audit`: one statement whatever the batch size."""
        if not records:
            return
        rows = [_sql.audit_params(record) for record in records]
        columns = [list(column) for column in zip(*rows, strict=True)]
        async with self._connection() as connection:
            await connection.execute(_APPEND_AUDIT, *columns)

    async def pseudonymise_audit(self, subject: str, replacement: str) -> int:
        """See `Storage.pseudonymise_audit`."""
        async with self._connection() as connection:
            return len(await connection.fetch(_sql.PSEUDONYMISE_AUDIT, subject, replacement))
