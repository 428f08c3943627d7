"""The SQLite engine: the file, the one worker thread and its connection, the write
transaction, error translation, the primitives of `SqlEngine` and the lifecycle.

The area modules next to this one run their own jobs on the worker with `_run`, using
the helpers here (`write_transaction`, `fetch_all`, `fetch_one`, `integrity_error`,
`checkpoint`) on the connection the job is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self, TypeVar

from storage import migrations
from storage.crypto import Cipher
from storage.errors import (
    ConflictError,
    StorageError,
    StorageUnavailableError,
    UnsupportedStorageUrlError,
)
from storage.records import now_ms
from storage.sql.common import conflict, encode_json, sqlite_placeholders
from storage.sql.engine import EngineUsage, SqlEngine, error_kind

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
_OLDEST_SQLITE = (3, 38, 0)
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
def write_transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """One `BEGIN IMMEDIATE ... COMMIT`, rolled back on any error."""
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


def fetch_all(connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    """Every row of one statement (`$1` placeholders)."""
    # fetchall() even for one row: a half-read statement would keep the transaction
    # busy and make its COMMIT fail.
    return connection.execute(sqlite_placeholders(sql), params).fetchall()


def fetch_one(connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Any:
    """The first row of one statement (`$1` placeholders), or None."""
    rows = fetch_all(connection, sql, params)
    return rows[0] if rows else None


def integrity_error(exc: sqlite3.IntegrityError) -> StorageError:
    """`ConflictError` naming the column for a uniqueness violation, else `StorageError`."""
    if exc.sqlite_errorname not in ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"):
        return StorageError(f"SQLite refused a row: {exc}")
    # The message names the columns: "UNIQUE constraint failed: users.external_id".
    columns = str(exc).partition(": ")[2]
    table, _, field = columns.split(",")[0].strip().partition(".")
    return conflict(table, field)


def checkpoint(connection: sqlite3.Connection) -> None:
    """Copy the WAL into the file and empty it, after an erasure."""
    # A reader of another process (a backup, `pushd keys`) still on an older snapshot
    # makes it partial, waiting at most busy_timeout: then the next erasure's
    # checkpoint, or the last connection's close, finishes the job.
    connection.execute(_CHECKPOINT).fetchall()


def _migrate(connection: sqlite3.Connection) -> int:
    while True:
        with write_transaction(connection):
            connection.execute(migrations.CREATE_VERSION_TABLE)
            current: int = fetch_one(connection, migrations.CURRENT_VERSION, ())[0]
            migration = migrations.next_migration(current)
            if migration is None:
                return current
            if not migration.is_blank_for("sqlite"):
                for statement in _split_statements(migration.sql_for("sqlite")):
                    connection.execute(statement)
            fetch_all(connection, migrations.RECORD_VERSION, (migration.version, now_ms()))


def _schema_version(connection: sqlite3.Connection) -> int:
    if not fetch_one(connection, _HAS_VERSION_TABLE, ())[0]:
        return 0
    version: int = fetch_one(connection, migrations.CURRENT_VERSION, ())[0]
    return version


def _write_one(connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Any:
    with write_transaction(connection):
        try:
            return fetch_one(connection, sql, params)
        except sqlite3.IntegrityError as exc:
            raise integrity_error(exc) from exc


def _write_all(connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    with write_transaction(connection):
        try:
            return fetch_all(connection, sql, params)
        except sqlite3.IntegrityError as exc:
            raise integrity_error(exc) from exc


def _write_many(
    connection: sqlite3.Connection, statements: Sequence[tuple[str, Sequence[Any]]]
) -> list[list[Any]]:
    with write_transaction(connection):
        try:
            return [fetch_all(connection, sql, params) for sql, params in statements]
        except sqlite3.IntegrityError as exc:
            raise integrity_error(exc) from exc


def _read_many(
    connection: sqlite3.Connection, statements: Sequence[tuple[str, Sequence[Any]]]
) -> list[list[Any]]:
    # One deferred (read) transaction: every read sees the same snapshot.
    connection.execute("BEGIN")
    try:
        return [fetch_all(connection, sql, params) for sql, params in statements]
    finally:
        if connection.in_transaction:
            connection.execute("COMMIT")


class SqliteEngine(SqlEngine):
    """One SQLite file served by one worker thread that owns the only connection."""

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
        self._jobs = 0  # submitted to the worker and not finished: running or queued
        self._errors = {"unavailable": 0, "conflict": 0, "rejected": 0}

    def usage(self) -> EngineUsage:
        """The one connection, the jobs queued for it and the errors so far."""
        return EngineUsage(
            connections=1,
            max_connections=1,
            in_use=min(1, self._jobs),
            waiting=max(0, self._jobs - 1),
            errors=dict(self._errors),
        )

    @classmethod
    async def open(cls, url: str, *, pool_size: int, cipher: Cipher) -> Self:
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
        """Run `job` on the worker thread with the connection; translate its errors."""
        connection = self._connection
        if connection is None:
            raise StorageUnavailableError(f"the SQLite storage {self._path!r} is closed")
        self._jobs += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._worker, job, connection)
        except sqlite3.Error as exc:
            error = self._translate(exc)
            self._errors[error_kind(error)] += 1
            raise error from exc
        except ConflictError:  # an IntegrityError the job translated itself
            self._errors["conflict"] += 1
            raise
        finally:
            self._jobs -= 1

    def _translate(self, exc: sqlite3.Error) -> StorageError:
        # Extended codes (SQLITE_IOERR_WRITE, SQLITE_BUSY_SNAPSHOT) share their primary's cause.
        code = getattr(exc, "sqlite_errorname", "")
        for primary, cause in _UNAVAILABLE_ERRORS.items():
            if code == primary or code.startswith(primary + "_"):
                return StorageUnavailableError(f"SQLite database {self._path!r}: {cause} ({exc})")
        return StorageError(f"SQLite database {self._path!r} rejected a statement: {exc}")

    async def _fetch_one(self, sql: str, *params: Any) -> Any:
        return await self._run(lambda connection: fetch_one(connection, sql, params))

    async def _fetch_all(self, sql: str, *params: Any) -> list[Any]:
        return await self._run(lambda connection: fetch_all(connection, sql, params))

    async def _write_one(self, sql: str, *params: Any) -> Any:
        return await self._run(lambda connection: _write_one(connection, sql, params))

    async def _write_all(self, sql: str, *params: Any) -> list[Any]:
        return await self._run(lambda connection: _write_all(connection, sql, params))

    async def _write_many(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        return await self._run(lambda connection: _write_many(connection, statements))

    async def _read_many(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        return await self._run(lambda connection: _read_many(connection, statements))

    def _in_list(self, param: int) -> str:
        return f"IN (SELECT value FROM json_each(${param}))"  # noqa: S608 - a placeholder number

    def _list_param(self, values: Sequence[str]) -> Any:
        return encode_json(list(values))

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
