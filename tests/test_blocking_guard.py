"""The blocking-call guard must itself work, or every other test's silence means nothing."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from tests.conftest import BLOCKING_THRESHOLD_SECONDS, _SlowCallbackRecorder


@pytest.mark.blocks_on_purpose
async def test_guard_sees_a_blocking_call() -> None:
    loop = asyncio.get_running_loop()
    recorder = _SlowCallbackRecorder()
    logging.getLogger("asyncio").addHandler(recorder)
    try:

        def block() -> None:
            time.sleep(BLOCKING_THRESHOLD_SECONDS + 0.1)

        loop.call_soon(block)
        await asyncio.sleep(BLOCKING_THRESHOLD_SECONDS + 0.3)
    finally:
        logging.getLogger("asyncio").removeHandler(recorder)
    assert recorder.slow, "a blocking callback went unnoticed"


async def test_guard_is_enabled_for_every_test() -> None:
    loop = asyncio.get_running_loop()
    assert loop.get_debug()
    assert loop.slow_callback_duration == pytest.approx(BLOCKING_THRESHOLD_SECONDS)
