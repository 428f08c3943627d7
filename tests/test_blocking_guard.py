"""The blocking-call guard must itself work, or every other test's silence means nothing."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import BLOCKING_THRESHOLD_SECONDS, BlockingGuard


def block_the_loop() -> None:
    time.sleep(BLOCKING_THRESHOLD_SECONDS + 0.1)


@pytest.mark.blocks_on_purpose
async def test_guard_sees_a_blocking_call_and_names_it(
    fail_on_blocking_calls: BlockingGuard,
) -> None:
    asyncio.get_running_loop().call_soon(block_the_loop)
    await asyncio.sleep(BLOCKING_THRESHOLD_SECONDS + 0.3)
    assert len(fail_on_blocking_calls.blocked) == 1, "a blocking callback went unnoticed"
    report = fail_on_blocking_calls.blocked[0]
    assert "in block_the_loop" in report
    assert "time.sleep(BLOCKING_THRESHOLD_SECONDS + 0.1)" in report


async def test_guard_does_not_count_waiting() -> None:
    guard = BlockingGuard(asyncio.get_running_loop())
    guard.start()
    try:
        await asyncio.sleep(BLOCKING_THRESHOLD_SECONDS + 0.1)
        await asyncio.get_running_loop().run_in_executor(
            None, time.sleep, BLOCKING_THRESHOLD_SECONDS + 0.1
        )
    finally:
        guard.stop()
    assert guard.blocked == []


def collect_slowly() -> None:
    """A garbage collection as long as the threshold, as a big heap can take."""
    info = {"generation": 2, "collected": 0, "uncollectable": 0}
    for callback in list(gc.callbacks):
        callback("start", info)
    time.sleep(BLOCKING_THRESHOLD_SECONDS + 0.1)
    for callback in list(gc.callbacks):
        callback("stop", info)


async def test_guard_does_not_count_garbage_collection() -> None:
    """Guards against failing a test for the collector's pause: a full collection of the
    suite's heap once took 0.53 s inside an app's route registration in CI."""
    guard = BlockingGuard(asyncio.get_running_loop())
    guard.start()
    try:
        asyncio.get_running_loop().call_soon(collect_slowly)
        await asyncio.sleep(BLOCKING_THRESHOLD_SECONDS + 0.3)
    finally:
        guard.stop()
    assert guard.blocked == []


def test_guard_does_not_count_time_the_loop_is_stopped() -> None:
    loop = asyncio.new_event_loop()
    try:
        guard = BlockingGuard(loop)
        loop.call_soon(guard.start)
        loop.run_until_complete(asyncio.sleep(0.1))
        time.sleep(BLOCKING_THRESHOLD_SECONDS + 0.1)  # pytest's own synchronous work, say
        loop.run_until_complete(asyncio.sleep(0.2))
        loop.call_soon(guard.stop)
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
    assert guard.blocked == []


async def test_guard_is_enabled_for_every_test(fail_on_blocking_calls: BlockingGuard) -> None:
    assert fail_on_blocking_calls.running
    assert fail_on_blocking_calls.loop is asyncio.get_running_loop()
    assert fail_on_blocking_calls.threshold == pytest.approx(BLOCKING_THRESHOLD_SECONDS)


BLOCKING_TEST = """
import time
from pathlib import Path


async def test_blocks() -> None:
    time.sleep(0.6)
"""


@pytest.mark.slow
def test_guard_fails_a_test_that_blocks_and_shows_where(tmp_path: Path) -> None:
    (tmp_path / "test_blocks.py").write_text(BLOCKING_TEST)
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.conftest"),
            *("-c", str(root / "pyproject.toml"), "--rootdir", str(root), str(tmp_path)),
        ],
        check=False,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout + result.stderr
    assert "1 passed, 1 error" in result.stdout
    assert "event loop was blocked" in result.stdout
    assert "in test_blocks\n    time.sleep(0.6)" in result.stdout
