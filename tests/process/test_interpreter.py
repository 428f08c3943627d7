"""`pushd serve` runs with the collector and switch-interval settings the benchmark chose."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest

from pushd.process import interpreter


@pytest.fixture
def restored_interpreter() -> Iterator[None]:
    thresholds, interval = gc.get_threshold(), sys.getswitchinterval()
    yield
    gc.set_threshold(*thresholds)
    sys.setswitchinterval(interval)
    # Not unfrozen: tests/conftest.py froze the session's own objects the same way.


def test_tune_for_serving(restored_interpreter: None) -> None:
    interpreter.tune_for_serving()
    assert gc.get_threshold() == interpreter.GC_THRESHOLDS
    assert sys.getswitchinterval() == pytest.approx(interpreter.SWITCH_INTERVAL_SECONDS)


def test_startup_objects_leave_later_collections(restored_interpreter: None) -> None:
    built_at_startup: tuple[list[object], dict[str, list[str]]] = (
        [object() for _ in range(10)],
        {"routes": []},
    )
    interpreter.freeze_startup_objects()
    assert gc.get_freeze_count() > 0
    assert not any(obj is built_at_startup for obj in gc.get_objects())
