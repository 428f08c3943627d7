"""Fixtures shared by every suite: real services, and a guard against blocking calls."""

from __future__ import annotations

import asyncio
import gc
import os
import selectors
import sys
import threading
import time
import traceback
import types
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put every slow test in one pytest-xdist group. scripts/test.sh runs the suite on
    several workers with `--dist loadgroup`: the quick tests spread over all of them, and
    the slow ones (real processes, cluster and fault tests with their own timing) run one
    after another on a single worker, as they did before, never two at once.

    The fault tests (tests/faults: load against real pushd processes, with latency
    bars) go last: the slow group takes longer than the quick tests, so by then the
    other workers are done and the fault tests measure a machine that is not also
    running a thousand quick tests (with four workers, one missed its latency bar)."""
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.xdist_group("slow"))
    items.sort(key=lambda item: item.nodeid.startswith("tests/faults/"))  # stable


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


# A loop step that holds the loop longer than this is a blocking call (a sync DB query,
# a sleep, a big computation). Generous, because the CI machine is shared and noisy.
BLOCKING_THRESHOLD_SECONDS = 0.5

# How often the heartbeat runs on the loop and the watchdog thread looks at it. A step is
# flagged when the heartbeat has not run for the threshold, so a step that started up to one
# interval after the last beat may be flagged at (threshold - interval) of its own.
HEARTBEAT_INTERVAL_SECONDS = 0.05


class BlockingGuard:
    """Watches one event loop for steps that run longer than `threshold`.

    A heartbeat callback on the loop notes the time every `interval`; a watchdog thread
    checks it. While the loop waits in select/epoll the heartbeat's own timer wakes it, so
    a heartbeat late by more than the threshold means a step was running all that time:
    the watchdog then takes the loop thread's stack (sys._current_frames), which names the
    blocking code. Time the loop is not running at all (pytest's synchronous code between
    setup, call and teardown) is not counted, nor a late heartbeat while the loop's thread
    is still in the selector (a loaded machine has not yet given it a CPU back). Costs one
    timer callback per interval on the loop and one wake-up per interval in the thread,
    unlike asyncio's debug mode, which about doubled the CPU time of the suite. Works with
    any loop that has call_later and is_running (the tests run the standard loop; under
    uvloop, whose selector is compiled, a starved but idle loop would not be told apart).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        threshold: float = BLOCKING_THRESHOLD_SECONDS,
        interval: float = HEARTBEAT_INTERVAL_SECONDS,
    ) -> None:
        self.loop = loop
        self.threshold = threshold
        self.interval = interval
        self.blocked: list[str] = []
        self._loop_thread_id = threading.get_ident()
        self._last_beat = time.monotonic()
        self._heartbeat: asyncio.TimerHandle | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="blocking-guard", daemon=True)
        # The garbage collector's pauses are not blocking calls of the code under test:
        # a full collection of the suite's heap took 0.53 s once in a clean-clone run, in
        # the middle of an app's route registration. Time in the collector is not counted.
        self._in_gc = False
        self._gc_ended_at = 0.0

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and self._heartbeat is not None

    def start(self) -> None:
        """Start the heartbeat and the watchdog; call from the loop's thread."""
        self._loop_thread_id = threading.get_ident()
        self._last_beat = time.monotonic()
        self._heartbeat = self.loop.call_later(self.interval, self._beat)
        gc.callbacks.append(self._on_gc)
        self._thread.start()

    def stop(self) -> None:
        """Stop and join the watchdog, cancel the heartbeat; call from the loop's thread."""
        self._stopping.set()
        self._thread.join()
        gc.callbacks.remove(self._on_gc)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None

    def _on_gc(self, phase: str, _info: dict[str, int]) -> None:
        self._in_gc = phase == "start"
        if not self._in_gc:
            self._gc_ended_at = time.monotonic()

    def _beat(self) -> None:
        self._last_beat = time.monotonic()
        self._heartbeat = self.loop.call_later(self.interval, self._beat)

    def _watch(self) -> None:
        reported_beat: float | None = None
        last_seen_idle = 0.0  # loop seen not running, or waiting for events
        while not self._stopping.wait(self.interval):
            now = time.monotonic()
            if not self.loop.is_running() or self._in_gc:
                last_seen_idle = now
                continue
            last_beat = self._last_beat
            started = max(last_beat, last_seen_idle, self._gc_ended_at)
            if now - started <= self.threshold or reported_beat == last_beat:
                continue
            frame = sys._current_frames().get(self._loop_thread_id)
            if frame is not None and frame.f_code.co_filename == selectors.__file__:
                # Waiting in select/epoll, or woken from it but not yet given a CPU by a
                # busy machine: either way no step of the loop is running.
                del frame
                last_seen_idle = now
                continue
            stack = _format_loop_stack(frame) if frame is not None else "(no frame)\n"
            del frame
            reported_beat = last_beat
            self.blocked.append(
                f"the event loop has been busy for over {now - started:.2f} s "
                f"(threshold {self.threshold} s); its thread was running:\n{stack}"
            )


def _format_loop_stack(frame: types.FrameType) -> str:
    """The loop thread's stack from the event loop's step down (pytest and the loop's own
    frames above it say nothing), or its last 20 frames if no loop frame is on it."""
    frames: list[traceback.FrameSummary] = list(traceback.extract_stack(frame))
    loop_frames = [
        i
        for i, f in enumerate(frames)
        if f.name in _LOOP_STEP_FUNCTIONS and f.filename.startswith(_ASYNCIO_DIR)
    ]
    frames = frames[loop_frames[-1] + 1 :] if loop_frames else frames[-20:]
    return "".join(traceback.format_list(frames))


# Where the standard loop runs one callback; uvloop's equivalents are compiled, not frames.
_LOOP_STEP_FUNCTIONS = frozenset({"_run_once", "_run"})
_ASYNCIO_DIR = os.path.dirname(asyncio.__file__)


@pytest.fixture(autouse=True)
async def fail_on_blocking_calls(request: pytest.FixtureRequest) -> AsyncIterator[BlockingGuard]:
    """Fail any test during which one event-loop step ran longer than the threshold,
    showing where the loop's thread was (see `BlockingGuard`)."""
    guard = BlockingGuard(asyncio.get_running_loop())
    guard.start()
    try:
        yield guard
    finally:
        guard.stop()
    exempt = ("blocks_on_purpose", "load_harness")
    if guard.blocked and not any(request.node.get_closest_marker(name) for name in exempt):
        pytest.fail("event loop was blocked:\n" + "\n".join(guard.blocked), pytrace=False)
