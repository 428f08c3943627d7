"""The SQLite backend: the embedded default, one file and no server.

Every call runs on ONE dedicated worker thread that owns the only connection: the
event loop never waits on SQLite, and the single thread serialises this process's
access without a lock. Each storage call is one job on that thread and a write job is
a whole `BEGIN IMMEDIATE ... COMMIT`, so a caller cancelled mid-call can never leave a
transaction open. Other processes on the same file are kept out by SQLite's own write
lock, waited for up to `busy_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import msgspec

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

T = TypeVar("T")

_URL_PREFIX = "sqlite:///"
# Long enough to queue behind another process's group commit, short enough that a
# stuck writer shows up as StorageUnavailableError instead of a hung request.
_BUSY_TIMEOUT_MS = 5_000
_PRAGMAS = (
    "PRAGMA journal_mode = WAL",  # readers never wait for the writer
    # FULL: a commit is fsynced before it returns, so a 202 survives a power cut, not
    # only a process crash (NORMAL's guarantee). The server group-commits many
    # notifications per transaction, so the fsync is paid per batch, not per request.
    "PRAGMA synchronous = FULL",
    "PRAGMA foreign_keys = ON",  # off by default in SQLite, per connection
    f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}",
    # Deleted rows are overwritten with zeros, not only unlinked, so that an erased
    # user's bytes do not stay in the file's free pages (the build's default varies).
    "PRAGMA secure_delete = ON",
)
# TRUNCATE: every WAL frame is copied into the database file and the WAL emptied. The
# WAL keeps the pages as they were before a delete until then.
_CHECKPOINT = "PRAGMA wal_checkpoint(TRUNCATE)"
# The database holds personal data: owner-only, like data_dir/secrets.json. SQLite would
# create it 0644 (less the umask), and it gives -wal and -shm the database file's mode.
_PRIVATE_FILE_MODE = 0o600
_PRIVATE_FOLDER_MODE = 0o700
_DATABASE_FILES = ("", "-wal", "-shm")
# Errors that say the database cannot be used right now rather than that a statement is
# wrong: retrying later (or fixing the disk) can make them go away.
_UNAVAILABLE_ERRORS = {
    "SQLITE_BUSY": "another connection held the write lock longer than busy_timeout",
    "SQLITE_LOCKED": "the database is locked",
    "SQLITE_CANTOPEN": "the file cannot be opened: check the path and its permissions",
    "SQLITE_READONLY": "the file is read-only: check its permissions",
    "SQLITE_PERM": "access was denied: check the file's permissions",
    "SQLITE_FULL": "the disk is full: free some space",
    "SQLITE_IOERR": "the disk reported an I/O error",
    "SQLITE_CORRUPT": "the file is corrupt: restore a backup",
    "SQLITE_NOTADB": "the file is not a SQLite database: check the path",
}

# The json_each() forms of PostgreSQL's unnest(): one statement for a whole mapping.
# BEGIN IMMEDIATE already serialises writers, so no lock order is needed here.
_BUMP_LAST_SEQS = (
    "UPDATE users SET last_seq = last_seq + given.value FROM json_each(?1) AS given "
    "WHERE users.id = given.key"
)
# The gid counter raised by the batch size, and the users' raised last_seqs as ONE JSON
# object, in one row of one statement. The sqlite3 module releases the GIL at every step
# of a statement and every row it reads, and under load each time this thread waits to
# take it back from the busy event loop: `RETURNING` a row per user made each commit
# wait about as many times as the batch had users.
_BUMP_GID_AND_READ_SEQS = (
    "UPDATE counters SET value = value + ?1 WHERE name = 'notification_gid' "
    "RETURNING value, (SELECT json_group_object(id, last_seq) FROM users "
    "WHERE id IN (SELECT key FROM json_each(?2)))"
)
# Every user's cursors as ONE row (a JSON array of [id, sent, ack, last]): a row per user
# would be a GIL hand-off per user on the worker thread (see _BUMP_GID_AND_READ_SEQS),
# a thousand per flush with a thousand users online.
_CURSORS_OF = (
    "SELECT json_group_array(json_array(id, sent_seq, ack_seq, last_seq)) FROM users "
    "WHERE id IN (SELECT value FROM json_each(?1))"
)
_SET_CURSORS = (
    "UPDATE users SET sent_seq = given.value ->> 0, ack_seq = given.value ->> 1 "
    "FROM json_each(?1) AS given WHERE users.id = given.key"
)
_INSERT_HISTORY = (
    "INSERT INTO cursor_history (user_id, cursor, seq, at) "
    "SELECT value ->> 0, value ->> 1, value ->> 2, ?2 FROM json_each(?1) WHERE true "
    "ON CONFLICT DO NOTHING"
)
_MARK_READ = _sql.mark_read_sql("IN (SELECT value FROM json_each($2))")
_MARK_READ_WITHIN = _sql.mark_read_sql(
    "IN (SELECT value FROM json_each($2))", "IN (SELECT value FROM json_each($4))"
)
_FIRST_SEQ_OUTSIDE = _sql.first_seq_outside_sql("IN (SELECT value FROM json_each($3))")
_CURSOR_TIMES = _sql.cursor_times_sql("json_each($2) AS s", "value")
# The whole batch as ONE JSON array of rows, inserted by ONE statement: executemany
# would step once per row, and every step releases and re-takes the GIL, which under
# load queued this thread behind the event loop once per row.
_INSERT_NOTIFICATIONS = (
    f"INSERT INTO notifications ({_sql.NOTIFICATION_INSERT_COLUMNS}, gid) "  # noqa: S608
    "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, "
    "value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, value ->> 11 "
    "FROM json_each(?1)"
)
_OLDEST_SQLITE = (3, 38, 0)
_seqs_decoder = msgspec.json.Decoder(dict[str, int])
_cursors_decoder = msgspec.json.Decoder(list[tuple[str, int, int, int]])
_HAS_VERSION_TABLE = "SELECT count(*) FROM sqlite_master WHERE name = 'schema_version'"


def _path_from_url(url: str) -> str:
    # "sqlite:///" then the path as written: sqlite:///pushd.db is relative to the
    # working directory, sqlite:////var/lib/pushd/pushd.db is absolute.
    if not url.lower().startswith(_URL_PREFIX) or len(url) == len(_URL_PREFIX):
        raise UnsupportedStorageUrlError(
            f"storage.url {url!r} is not a SQLite URL: write sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    return url[len(_URL_PREFIX) :]


def _create_private(path: str) -> None:
    """Create the database file (and its folder) owner-only before SQLite opens it, and
    tighten the files an older pushd created readable by every local user."""
    Path(path).parent.mkdir(parents=True, exist_ok=True, mode=_PRIVATE_FOLDER_MODE)
    with contextlib.suppress(FileExistsError):
        # An empty file is an empty database to SQLite.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _PRIVATE_FILE_MODE))
    for suffix in _DATABASE_FILES:
        with contextlib.suppress(FileNotFoundError):
            file = Path(path + suffix)
            if file.stat().st_mode & 0o077:
                file.chmod(_PRIVATE_FILE_MODE)


def _connect(path: str) -> sqlite3.Connection:
    if path != ":memory:":
        _create_private(path)
    # isolation_level=None: the sqlite3 module opens no transaction behind our back;
    # each write job says BEGIN IMMEDIATE itself.
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in _PRAGMAS:
            connection.execute(pragma)
    except BaseException:
        connection.close()
        raise
    return connection


@contextmanager
def _write_transaction(connection: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front: a deferred transaction that reads and
    # then writes can fail with SQLITE_BUSY without waiting when another process wrote
    # in between, which would break seq assignment under concurrent writers.
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        # SQLite rolls back by itself after some errors (a full disk); a failed COMMIT
        # leaves the transaction open, and the next BEGIN would fail on it.
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def _split_statements(script: str) -> list[str]:
    # sqlite3 runs one statement per execute(), and executescript() would COMMIT the
    # migration's transaction first; SQLite's own tokenizer finds the boundaries.
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending)
            pending = ""
    if pending.strip():
        statements.append(pending)
    return statements


def _fetch_all(connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    # fetchall() even for one row: a half-read statement would keep the transaction
    # busy and make its COMMIT fail.
    return connection.execute(_sql.sqlite_placeholders(sql), params).fetchall()


def _fetch_one(connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Any:
    rows = _fetch_all(connection, sql, params)
    return rows[0] if rows else None


def _integrity_error(exc: sqlite3.IntegrityError) -> StorageError:
    if exc.sqlite_errorname not in ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"):
        return StorageError(f"SQLite refused a row: {exc}")
    # The message names the columns: "UNIQUE constraint failed: users.external_id".
    columns = str(exc).partition(": ")[2]
    table, _, field = columns.split(",")[0].strip().partition(".")
    return _sql.conflict(table, field)


def _migrate(connection: sqlite3.Connection) -> int:
    while True:
        with _write_transaction(connection):
            connection.execute(migrations.CREATE_VERSION_TABLE)
            current: int = _fetch_one(connection, migrations.CURRENT_VERSION, ())[0]
            migration = migrations.next_migration(current)
            if migration is None:
                return current
            if not migration.is_blank_for("sqlite"):
                for statement in _split_statements(migration.sql_for("sqlite")):
                    connection.execute(statement)
            _fetch_all(connection, migrations.RECORD_VERSION, (migration.version, _sql.now_ms()))


def _schema_version(connection: sqlite3.Connection) -> int:
    if not _fetch_one(connection, _HAS_VERSION_TABLE, ())[0]:
        return 0
    version: int = _fetch_one(connection, migrations.CURRENT_VERSION, ())[0]
    return version


def _write_one(connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Any:
    with _write_transaction(connection):
        try:
            return _fetch_one(connection, sql, params)
        except sqlite3.IntegrityError as exc:
            raise _integrity_error(exc) from exc


def _write_all(connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    with _write_transaction(connection):
        try:
            return _fetch_all(connection, sql, params)
        except sqlite3.IntegrityError as exc:
            raise _integrity_error(exc) from exc


def _write_many(
    connection: sqlite3.Connection, statements: Sequence[tuple[str, Sequence[Any]]]
) -> list[list[Any]]:
    with _write_transaction(connection):
        try:
            return [_fetch_all(connection, sql, params) for sql, params in statements]
        except sqlite3.IntegrityError as exc:
            raise _integrity_error(exc) from exc


def _upsert_device(connection: sqlite3.Connection, device: NewDevice) -> tuple[Any, bool]:
    with _write_transaction(connection):
        try:
            row = _fetch_one(connection, _sql.INSERT_DEVICE, _sql.device_params(device))
        except sqlite3.IntegrityError as exc:
            if exc.sqlite_errorname == "SQLITE_CONSTRAINT_FOREIGNKEY":
                raise UnknownUserError(device.user_id) from exc
            raise _integrity_error(exc) from exc
        if row is not None:
            return row, True
        # The write lock is held, so the conflicting row is still there.
        params = _sql.replace_details_params(device)
        return _fetch_one(connection, _sql.REPLACE_DEVICE_DETAILS, params), False


# Seqs are numbered in Python here (PostgreSQL numbers them in SQL): the bump runs
# under BEGIN IMMEDIATE, which already serialises every writer of the file.


def _count_per_user(batch: Sequence[NewNotification]) -> dict[str, int]:
    """How many notifications each user of the batch gets."""
    return dict(Counter(notification.user_id for notification in batch))


def _assign_seqs(
    batch: Sequence[NewNotification],
    counts: Mapping[str, int],
    last_seqs: Mapping[str, int],
    first_gid: int,
) -> list[NotificationRecord]:
    """The batch's records, in batch order, with their seqs and gids.

    `last_seqs` holds each user's `last_seq` after it was raised by `counts[user]`
    under the row lock, so the user's seqs are the `counts[user]` values ending there.
    A user missing from `last_seqs` does not exist: `UnknownUserError`, and the caller's
    transaction rolls back.
    """
    for notification in batch:
        if notification.user_id not in last_seqs:
            raise UnknownUserError(notification.user_id)
    seq = {user_id: last_seqs[user_id] - count for user_id, count in counts.items()}
    records = []
    for offset, notification in enumerate(batch):
        seq[notification.user_id] += 1
        records.append(_sql.with_seq(notification, seq[notification.user_id], first_gid + offset))
    return records


def _insert_notifications(
    connection: sqlite3.Connection,
    batch: Sequence[NewNotification],
    node_id: str,
    cipher: Cipher,
) -> list[NotificationRecord]:
    counts = _count_per_user(batch)
    with _write_transaction(connection):
        counts_json = _sql.encode_json(counts)
        connection.execute(_BUMP_LAST_SEQS, (counts_json,))
        # A counter, not max(gid) + 1: a gid must never be handed out twice, even after
        # the newest rows were deleted, or the relay would take a new row for a published one.
        last_gid, last_seqs = connection.execute(
            _BUMP_GID_AND_READ_SEQS, (len(batch), counts_json)
        ).fetchone()
        records = _assign_seqs(
            batch, counts, _seqs_decoder.decode(last_seqs), last_gid - len(batch) + 1
        )
        try:
            # Sealed here, on the worker thread: the event loop never pays for it.
            rows = _sql.encode_json(
                [(*_sql.notification_params(r, node_id, cipher), r.gid) for r in records]
            )
            connection.execute(_INSERT_NOTIFICATIONS, (rows,))
        except sqlite3.IntegrityError as exc:
            raise _integrity_error(exc) from exc
        for notification, record in zip(batch, records, strict=True):
            if notification.idempotency is not None:
                _claim_idempotency(connection, notification, record)
    return records


def _claim_idempotency(
    connection: sqlite3.Connection, notification: NewNotification, record: NotificationRecord
) -> None:
    claim = notification.idempotency
    assert claim is not None
    params = (claim.scope, claim.key, claim.request_hash, record.id)
    try:
        _fetch_all(
            connection,
            _sql.INSERT_IDEMPOTENCY,
            (*params, record.user_id, record.seq, record.created_at),
        )
    except sqlite3.IntegrityError as exc:
        raise IdempotencyConflictError(claim.scope, claim.key) from exc


def _cursor_limit(
    connection: sqlite3.Connection, user_id: str, cursor: int, within: str | None
) -> int:
    """How far a cursor at `cursor` may move for a socket limited to the categories of
    `within` (a JSON list): just below the first notification of another category."""
    if within is None:
        return _sql.NO_SEQ
    (first_outside,) = _fetch_one(connection, _FIRST_SEQ_OUTSIDE, (user_id, cursor, within))
    return _sql.NO_SEQ if first_outside is None else first_outside - 1


def _advance_cursors(
    connection: sqlite3.Connection,
    wanted: Mapping[str, tuple[int, int]],
    at: int,
    within: str | None,
) -> None:
    with _write_transaction(connection):
        (found,) = connection.execute(_CURSORS_OF, (_sql.encode_json(list(wanted)),)).fetchone()
        current = _cursors_decoder.decode(found)
        moved: dict[str, tuple[int, int]] = {}
        history: list[tuple[str, str, int]] = []
        for user_id, sent_seq, ack_seq, last_seq in current:
            sent, acked = wanted[user_id]
            sent = min(sent, _cursor_limit(connection, user_id, sent_seq, within))
            acked = min(acked, _cursor_limit(connection, user_id, ack_seq, within))
            new_sent = max(sent_seq, min(sent, last_seq))
            new_ack = max(ack_seq, min(acked, last_seq))
            if new_sent > sent_seq:
                history.append((user_id, "sent", new_sent))
            if new_ack > ack_seq:
                history.append((user_id, "acked", new_ack))
            if (new_sent, new_ack) != (sent_seq, ack_seq):
                moved[user_id] = (new_sent, new_ack)
        if moved:
            connection.execute(_SET_CURSORS, (_sql.encode_json(moved),))
            connection.execute(_INSERT_HISTORY, (_sql.encode_json(history), at))


# access control (issue #4) ---------------------------------------------------------------

# Like _INSERT_NOTIFICATIONS: the whole batch as one JSON array, one statement; json_each
# yields the elements in array order, so ids follow the order given.
_APPEND_AUDIT = (
    "INSERT INTO audit_log (at, actor, action, target, source, result, detail) "
    "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, "
    "value ->> 6 FROM json_each(?1) ORDER BY key"
)


def _revoke_api_key(connection: sqlite3.Connection, key_id: str, at: int) -> Any:
    # BEGIN IMMEDIATE serialises writers of the file: the check and the revocation are
    # one step (PostgreSQL needs row locks for the same).
    with _write_transaction(connection):
        row = _fetch_one(connection, _sql.GET_API_KEY, (key_id,))
        if row is None:
            return None
        key = _sql.api_key_from_row(row)
        if key.role == "admin" and key.revoked_at is None:
            live = {found[0] for found in _fetch_all(connection, _sql.LIVE_ADMIN_KEYS, ())}
            if not live - {key_id}:
                raise LastAdminKeyError(key_id)
        return _fetch_one(connection, _sql.REVOKE_API_KEY, (key_id, at))


def _append_audit(connection: sqlite3.Connection, rows: str) -> None:
    with _write_transaction(connection):
        connection.execute(_APPEND_AUDIT, (rows,))


def _pseudonymise_audit(connection: sqlite3.Connection, subject: str, replacement: str) -> int:
    with _write_transaction(connection):
        changed = len(_fetch_all(connection, _sql.PSEUDONYMISE_AUDIT, (subject, replacement)))
    _checkpoint(connection)
    return changed


def _checkpoint(connection: sqlite3.Connection) -> None:
    # After an erasure. A reader of another process (a backup, `pushd keys`) still on an
    # older snapshot makes it partial, waiting at most busy_timeout: then the next
    # erasure's checkpoint, or the last connection's close, finishes the job.
    connection.execute(_CHECKPOINT).fetchall()


class SqliteStorage(SqlStorageBase):
    """`Storage` on a SQLite file, for a single node (the embedded shape)."""

    def __init__(
        self,
        path: str,
        worker: ThreadPoolExecutor,
        connection: sqlite3.Connection,
        cipher: Cipher,
    ) -> None:
        self._path = path
        self._cipher = cipher
        self._worker = worker
        # Only ever used on the worker thread (sqlite3 checks it); None once closed.
        self._connection: sqlite3.Connection | None = connection

    @classmethod
    async def open(cls, url: str, *, pool_size: int, cipher: Cipher) -> SqliteStorage:
        """Open (creating it and its folder if needed) the file named by the URL.

        `pool_size` is ignored: one connection on one thread serves every call.
        """
        path = _path_from_url(url)
        if sqlite3.sqlite_version_info < _OLDEST_SQLITE:
            raise UnsupportedStorageUrlError(
                f"this Python links SQLite {sqlite3.sqlite_version}; pushd needs "
                f"{'.'.join(map(str, _OLDEST_SQLITE))} or newer (JSON ->> and RETURNING). "
                "Use a newer Python build, or PostgreSQL."
            )
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pushd-sqlite")
        try:
            connection = await asyncio.get_running_loop().run_in_executor(worker, _connect, path)
        except (sqlite3.Error, OSError) as exc:
            worker.shutdown(wait=False)
            raise StorageUnavailableError(
                f"cannot open the SQLite database {path!r}: {exc}. Check that its folder "
                "is writable by pushd and that storage.url names the right file."
            ) from exc
        except BaseException:
            worker.shutdown(wait=False)
            raise
        return cls(path, worker, connection, cipher)

    async def _run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        connection = self._connection
        if connection is None:
            raise StorageUnavailableError(f"the SQLite storage {self._path!r} is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._worker, job, connection)
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: sqlite3.Error) -> StorageError:
        # Extended codes (SQLITE_IOERR_WRITE, SQLITE_BUSY_SNAPSHOT) share their primary's cause.
        code = getattr(exc, "sqlite_errorname", "")
        for primary, cause in _UNAVAILABLE_ERRORS.items():
            if code == primary or code.startswith(primary + "_"):
                return StorageUnavailableError(f"SQLite database {self._path!r}: {cause} ({exc})")
        return StorageError(f"SQLite database {self._path!r} rejected a statement: {exc}")

    async def _fetch_one(self, sql: str, *params: Any) -> Any:
        return await self._run(lambda connection: _fetch_one(connection, sql, params))

    async def _fetch_all(self, sql: str, *params: Any) -> list[Any]:
        return await self._run(lambda connection: _fetch_all(connection, sql, params))

    async def _write_one(self, sql: str, *params: Any) -> Any:
        return await self._run(lambda connection: _write_one(connection, sql, params))

    async def _write_all(self, sql: str, *params: Any) -> list[Any]:
        return await self._run(lambda connection: _write_all(connection, sql, params))

    async def _write_many(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        return await self._run(lambda connection: _write_many(connection, statements))

    def _in_list(self, param: int) -> str:
        return f"IN (SELECT value FROM json_each(${param}))"  # noqa: S608 - a placeholder number

    def _list_param(self, values: Sequence[str]) -> Any:
        return _sql.encode_json(list(values))

    async def migrate(self) -> int:
        """See `Storage.migrate`; BEGIN IMMEDIATE serialises migrating processes."""
        return await self._run(_migrate)

    async def schema_version(self) -> int:
        """See `Storage.schema_version`."""
        return await self._run(_schema_version)

    async def close(self) -> None:
        """See `Storage.close`. Jobs queued before it still run: the worker is FIFO."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(self._worker, connection.close)
        finally:
            # The thread is idle now (or finishing a job): let it exit without joining.
            self._worker.shutdown(wait=False)

    async def upsert_device(self, device: NewDevice) -> tuple[DeviceRecord, bool]:
        """See `Storage.upsert_device`."""
        row, created = await self._run(lambda connection: _upsert_device(connection, device))
        return _sql.device_from_row(row), created

    async def insert_notifications(
        self, batch: Sequence[NewNotification], *, node_id: str = ""
    ) -> list[NotificationRecord]:
        """See `Storage.insert_notifications`; BEGIN IMMEDIATE is the row lock here."""
        if not batch:
            return []
        rows = tuple(batch)  # the caller may reuse its list while the worker reads this
        cipher = self._cipher
        return await self._run(
            lambda connection: _insert_notifications(connection, rows, node_id, cipher)
        )

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
        listed = None if within is None else self._list_param(within)
        if wanted:
            await self._run(lambda connection: _advance_cursors(connection, wanted, at, listed))

    async def cursor_times(self, user_id: str, seqs: Sequence[int]) -> dict[int, CursorTimes]:
        """See `Storage.cursor_times`."""
        if not seqs:
            return {}
        rows = await self._fetch_all(_CURSOR_TIMES, user_id, _sql.encode_json(list(seqs)))
        return _sql.cursor_times_from_rows(rows)

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
        listed = _sql.encode_json(list(ids))
        if categories is None:
            rows = await self._write_all(_MARK_READ, user_id, listed, at)
        else:
            within = self._list_param(categories)
            rows = await self._write_all(_MARK_READ_WITHIN, user_id, listed, at, within)
        return _sql.marked_read(ids, rows)

    # access control (issue #4) ----------------------------------------------------------

    async def revoke_api_key(self, key_id: str, *, at: int) -> ApiKeyRecord | None:
        """See `Storage.revoke_api_key`."""
        row = await self._run(lambda connection: _revoke_api_key(connection, key_id, at))
        return None if row is None else _sql.api_key_from_row(row)

    async def append_audit(self, records: Sequence[NewAuditRecord]) -> None:
        """See `Storage.append_audit`."""
        if records:
            rows = _sql.encode_json([_sql.audit_params(record) for record in records])
            await self._run(lambda connection: _append_audit(connection, rows))

    async def erase_user(self, user_id: str, *, batch_size: int) -> bool:
        """See `Storage.erase_user`. Then the WAL is checkpointed and emptied: its older
        page images still held the erased rows (secure_delete zeroes them in the file)."""
        existed = await super().erase_user(user_id, batch_size=batch_size)
        await self._run(_checkpoint)
        return existed

    async def pseudonymise_audit(self, subject: str, replacement: str) -> int:
        """See `Storage.pseudonymise_audit`; checkpoints like `erase_user`."""
        return await self._run(
            lambda connection: _pseudonymise_audit(connection, subject, replacement)
        )
