"""Real services for the tests: a fresh PostgreSQL database and a fresh RabbitMQ vhost per
test that asks, named after this run so that concurrent runs never see each other's data.

When a service cannot be reached the fixture fails (it never skips): CI must notice.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import subprocess
from collections.abc import Iterator
from urllib.parse import quote

import asyncpg

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


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(pg_url("postgres"), timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def fresh_postgres_database() -> Iterator[str]:
    """Create an empty database for one test (or one process group), drop it afterwards."""
    name = f"pushd_t_{RUN_ID}_{next(_counter)}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield pg_url(name)
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


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
