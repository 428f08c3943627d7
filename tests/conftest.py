"""Fixtures shared by every suite: real services, and a guard against blocking calls."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from tests import services
from tests.app_client import client, make_client  # noqa: F401  (fixtures for every folder)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test."""
    yield from services.fresh_postgres_database()


@pytest.fixture
def migrated_postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test, with pushd's schema already in it."""
    yield from services.fresh_postgres_database(migrated=True)


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """A fresh, empty RabbitMQ vhost for this test."""
    yield from services.fresh_rabbitmq_vhost()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix no other test uses on the shared Redis (`services.REDIS_URL`)."""
    yield from services.redis_prefix()


class _SlowCallbackRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.slow: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing") and " took " in message:
            self.slow.append(message)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Exempt what imports and collection built (about 375,000 objects, alive for the
    whole run) from garbage collection, as `pushd serve` does after start-up
    (pushd/process/interpreter.py). Otherwise every full collection walked them all, 0.2 s on a
    quiet machine and over the blocking guard's 0.5 s on a busy one, and the guard
    failed whichever test it landed in."""
    gc.collect()
    gc.freeze()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop the databases the fixtures handed out (they are dropped in the background as
    tests finish; this waits for the last ones). A drop that fails fails the run."""
    failures = services.drop_postgres_databases()
    if failures:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("could not drop the test databases:\n" + "\n".join(failures))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# A callback that holds the loop longer than this is a blocking call (a sync DB query,
# a sleep, a big computation). Generous, because the CI machine is shared and noisy.
BLOCKING_THRESHOLD_SECONDS = 0.5


@pytest.fixture(autouse=True)
async def fail_on_blocking_calls(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fail any test during which one event-loop step ran longer than the threshold.

    Uses asyncio's debug mode, which times every callback and logs the slow ones.
    """
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = BLOCKING_THRESHOLD_SECONDS
    recorder = _SlowCallbackRecorder()
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addHandler(recorder)
    try:
        yield
    finally:
        asyncio_logger.removeHandler(recorder)
    if recorder.slow and request.node.get_closest_marker("blocks_on_purpose") is None:
        pytest.fail("event loop was blocked:\n" + "\n".join(recorder.slow))
