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
    """Guards a freeze that does nothing. tests/conftest.py froze the session's heap
    before any test ran, so the freeze count is already far above zero: only its growth
    by what this test built says that this call froze anything."""
    frozen_before = gc.get_freeze_count()
    built_at_startup: tuple[list[object], dict[str, list[str]]] = (
        [object() for _ in range(10)],
        {"routes": []},
    )
    interpreter.freeze_startup_objects()
    # The tuple, the list, the dict and its list are tracked by the collector.
    assert gc.get_freeze_count() >= frozen_before + 4
    assert not any(obj is built_at_startup for obj in gc.get_objects())
