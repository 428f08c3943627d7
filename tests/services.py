"""Real services for the tests: a fresh PostgreSQL database and a fresh RabbitMQ vhost per
test that asks, named after this run so that concurrent runs never see each other's data.

When a service cannot be reached the fixture fails (it never skips): CI must notice.

PostgreSQL databases are made ahead of the tests and dropped behind them, on two threads
of this run's own (`_Databases`), so that a test waits for neither: made, migrated and
dropped in the test's own setup and teardown they cost about 0.4 s a test on the 2-core
CI machine, 30 s of the quick loop. Each database still serves exactly one test and is
never reused. One that a test wants migrated (the `storage` fixture's) is a copy of a
template database this run migrated once: CREATE DATABASE ... TEMPLATE costs about what
an empty one does, where running every migration took 0.1-0.3 s.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import queue
import secrets
import subprocess
import threading
from collections.abc import Coroutine, Iterator
from typing import Any
from urllib.parse import quote

import asyncpg

from storage import open_storage

RUN_ID = f"{os.getpid()}_{secrets.token_hex(3)}"
PG_HOST = os.environ.get("PUSHD_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PUSHD_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("PUSHD_TEST_PG_USER", "postgres")
AMQP_HOST = os.environ.get("PUSHD_TEST_AMQP_HOST", "127.0.0.1")
AMQP_PORT = int(os.environ.get("PUSHD_TEST_AMQP_PORT", "5672"))
REDIS_URL = os.environ.get("PUSHD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

_counter = itertools.count(1)


def pg_url(database: str) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


class _Admin:
    """A connection to the `postgres` database for one thread; made again after an error."""

    def __init__(self) -> None:
        self._runner = asyncio.Runner()
        self._connection: asyncpg.Connection | None = None

    def execute(self, sql: str) -> None:
        self._runner.run(self._execute(sql))

    def run(self, work: Coroutine[Any, Any, None]) -> None:
        self._runner.run(work)

    async def _execute(self, sql: str) -> None:
        if self._connection is None:
            self._connection = await asyncpg.connect(pg_url("postgres"), timeout=10)
        try:
            await self._connection.execute(sql, timeout=60)
        except BaseException:
            await self._disconnect()
            raise

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close(timeout=5)
            except Exception:
                connection.terminate()

    def close(self) -> None:
        try:
            self._runner.run(self._disconnect())
        finally:
            self._runner.close()


async def _migrate(url: str) -> None:
    store = await open_storage(url, pool_size=1)
    try:
        await store.migrate()
    finally:
        await store.close()


EMPTY = "empty"
MIGRATED = "migrated"
# Databases of each kind kept ready beyond the one a test is waiting for.
_AHEAD = 2
# How long a test waits for its database: a few makes queued before it, each bounded by
# the connect and statement timeouts of `_Admin`.
_TAKE_TIMEOUT_S = 100.0


class _Databases:
    """Makes databases of the kinds asked for ahead of the tests, drops the used ones behind.

    A maker thread answers orders in turn (the first order of a kind also orders
    `_AHEAD` more); a dropper thread drops what it is given. A make that fails hands its
    error to the test that takes it, which fails.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: dict[str, queue.Queue[str | BaseException]] = {}
        self._orders: queue.Queue[str | None] = queue.Queue()
        self._doomed: queue.Queue[str | None] = queue.Queue()
        self._template: str | None = None
        self._drop_failures: list[str] = []
        self._maker: threading.Thread | None = None
        self._dropper: threading.Thread | None = None

    def take(self, kind: str) -> str:
        """The name of a fresh database of `kind` ("empty" or "migrated") for one test."""
        with self._lock:
            ready = self._ready.get(kind)
            orders = 1
            if ready is None:
                ready = self._ready[kind] = queue.Queue()
                orders += _AHEAD
            if self._maker is None:
                self._maker = threading.Thread(
                    target=self._make_all, name="pushd-test-pg-maker", daemon=True
                )
                self._dropper = threading.Thread(
                    target=self._drop_all, name="pushd-test-pg-dropper", daemon=True
                )
                self._maker.start()
                self._dropper.start()
        for _ in range(orders):
            self._orders.put(kind)
        try:
            made = ready.get(timeout=_TAKE_TIMEOUT_S)
        except queue.Empty:
            raise TimeoutError(f"no {kind} PostgreSQL database within {_TAKE_TIMEOUT_S}s") from None
        if isinstance(made, BaseException):
            raise made
        return made

    def drop(self, name: str) -> None:
        """Drop `name` soon (after any test still using it has stopped using it)."""
        self._doomed.put(name)

    def finish(self) -> list[str]:
        """Drop every database this run made, then stop; the drops that failed."""
        if self._maker is None or self._dropper is None:
            return []
        self._orders.put(None)
        self._maker.join()
        for ready in self._ready.values():
            while not ready.empty():
                made = ready.get()
                if isinstance(made, str):
                    self._doomed.put(made)
        if self._template is not None:
            self._doomed.put(self._template)
        self._doomed.put(None)
        self._dropper.join()
        self._maker = self._dropper = None
        return self._drop_failures

    def _make_all(self) -> None:
        admin = _Admin()
        try:
            while (kind := self._orders.get()) is not None:
                name = f"pushd_t_{RUN_ID}_{next(_counter)}"
                try:
                    self._make(admin, kind, name)
                except Exception as exc:
                    self._ready[kind].put(exc)
                else:
                    self._ready[kind].put(name)
        finally:
            admin.close()

    def _make(self, admin: _Admin, kind: str, name: str) -> None:
        if kind == EMPTY:
            admin.execute(f'CREATE DATABASE "{name}"')
            return
        if self._template is None:
            template = f"pushd_t_{RUN_ID}_template"
            admin.execute(f'CREATE DATABASE "{template}"')
            try:
                admin.run(_migrate(pg_url(template)))
            except BaseException:
                admin.execute(f'DROP DATABASE "{template}" WITH (FORCE)')
                raise
            self._template = template
        # WAL_LOG, the default of PostgreSQL 15, copied the template in 0.04 s where
        # STRATEGY FILE_COPY (two checkpoints) took 0.18 s.
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"')

    def _drop_all(self) -> None:
        admin = _Admin()
        try:
            while (name := self._doomed.get()) is not None:
                try:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                except Exception as exc:
                    self._drop_failures.append(f"{name}: {exc!r}")
        finally:
            admin.close()


_databases = _Databases()


def fresh_postgres_database(*, migrated: bool = False) -> Iterator[str]:
    """A database no other test has used, empty or with pushd's schema; dropped afterwards."""
    name = _databases.take(MIGRATED if migrated else EMPTY)
    try:
        yield pg_url(name)
    finally:
        _databases.drop(name)


def drop_postgres_databases() -> list[str]:
    """Drop every database this run still has (at the end of the session): what failed."""
    return _databases.finish()


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def fresh_rabbitmq_vhost() -> Iterator[str]:
    """Create an empty vhost for one test, delete it (and everything in it) afterwards."""
    vhost = f"pushd-test-{RUN_ID}-{next(_counter)}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}/{quote(vhost, safe='')}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


def redis_prefix() -> Iterator[str]:
    """A key prefix of its own for one test on the shared Redis; its keys are deleted
    afterwards. Fails (never skips) when Redis cannot be reached."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        client.ping()
        prefix = f"pushd-test:{RUN_ID}:{next(_counter)}:"
        yield prefix
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
    finally:
        client.close()
