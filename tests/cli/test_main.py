"""`pushd migrate` on a real database file, as an operator runs it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from storage.migrations import newest_version

# Every test here runs `python -m pushd` in a process of its own.
pytestmark = pytest.mark.slow


def pushd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pushd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_migrate_upgrades_then_reports_up_to_date(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pushd.db'}"
    first = pushd("migrate", "--storage-url", url)
    assert first.returncode == 0, first.stdout + first.stderr
    newest = newest_version()
    assert f"schema version 0 -> {newest}" in first.stdout
    again = pushd("migrate", "--storage-url", url)
    assert again.returncode == 0
    assert f"schema already at version {newest}" in again.stdout


def test_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pushd.db"
    assert pushd("migrate", "--storage-url", f"sqlite:///{path}").returncode == 0
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO schema_version (version, applied_at) VALUES (99, 0)")
    refused = pushd("migrate", "--storage-url", f"sqlite:///{path}")
    assert refused.returncode == 1
    assert "migrated by a newer pushd" in refused.stdout
    serve = pushd(
        "serve", "--port", "0", "--data-dir", str(tmp_path), "--storage-url", f"sqlite:///{path}"
    )
    assert serve.returncode == 1
    assert "newer pushd" in serve.stdout


def test_unknown_config_key_stops_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[bus]\nurll = 'memory://'\n")
    result = pushd("serve", "--config", str(config), "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "unknown setting `bus.urll`" in result.stdout
