"""Who may read the SQLite files (issue #10 point 8): the folder pushd creates for the
database is owner-only (0700), and the database and the `-wal` and `-shm` files SQLite
writes next to it are 0600, whatever the umask, including files an older pushd created
readable by every local user."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

from tests.storage.conftest import opened

FILES = ("pushd.db", "pushd.db-wal", "pushd.db-shm")


def modes(folder: Path) -> dict[str, int]:
    return {name: stat.S_IMODE((folder / name).stat().st_mode) for name in FILES}


async def test_a_new_database_is_owner_only(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    url = f"sqlite:///{folder / 'pushd.db'}"
    async with opened(url) as store:
        await store.migrate()
        assert modes(folder) == dict.fromkeys(FILES, 0o600)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    # Closing the last connection removed -wal and -shm: SQLite creates them again on
    # the next open, with the database file's mode.
    assert not (folder / "pushd.db-wal").exists()
    async with opened(url) as store:
        await store.migrate()
        assert modes(folder) == dict.fromkeys(FILES, 0o600)


def _database_readable_by_all(path: Path) -> None:
    """A database as pushd left it before 0600: the files 0644, -wal and -shm kept."""
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("CREATE TABLE t (x)")
    keeper = sqlite3.connect(path)  # holds -wal and -shm open past the first close
    keeper.execute("SELECT * FROM t").fetchall()
    connection.close()
    for name in FILES:
        (path.parent / name).chmod(0o644)
    keeper.close()  # last connection: SQLite removes -wal and -shm again...
    for name in FILES[1:]:
        (path.parent / name).touch(mode=0o644)  # ...as after a crash, they stay


async def test_files_an_older_version_left_readable_are_made_owner_only(tmp_path: Path) -> None:
    _database_readable_by_all(tmp_path / "pushd.db")
    assert set(modes(tmp_path).values()) == {0o644}
    async with opened(f"sqlite:///{tmp_path / 'pushd.db'}") as store:
        await store.migrate()
        assert modes(tmp_path) == dict.fromkeys(FILES, 0o600)
