"""Fault tests: their figures go to the terminal summary, so that every run (CI
included) shows sent / accepted / delivered / duplicates / max delay without `-s`."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from _pytest.terminal import TerminalReporter

from tests.faults.harness import Report

FIGURES = pytest.StashKey[list[tuple[str, str]]]()


@pytest.fixture
def report_figures(request: pytest.FixtureRequest, record_property: Callable[..., None]) -> Report:
    """Record one line of figures for this test (terminal summary, JUnit property,
    captured stdout)."""

    def report(line: str) -> None:
        request.config.stash.setdefault(FIGURES, []).append((request.node.nodeid, line))
        record_property("figures", line)
        print(line)

    return report


def pytest_terminal_summary(terminalreporter: TerminalReporter, config: pytest.Config) -> None:
    lines = config.stash.get(FIGURES, [])
    if lines:
        terminalreporter.section("fault tests: figures")
        for nodeid, line in lines:
            terminalreporter.write_line(f"{nodeid}: {line}")
