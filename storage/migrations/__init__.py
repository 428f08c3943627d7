"""Numbered schema migrations, one SQL text per version for both backends.

`NNNN_name.sql` files in this package are versions 1, 2, 3, ... with no gap. A text
is portable SQL; where a dialect needs something the other must not see, it is written
inline as a comment, `/*postgresql: COLLATE "C"*/` or `/*sqlite: ...*/`, that
`Migration.sql_for` uncomments for that dialect and drops for the other. The file stays
valid SQL for both as it is, and the difference stays visible next to what it changes.

The backends apply versions one transaction each, under a lock that serialises
migrating processes, with `next_migration` deciding what comes next.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

from storage.errors import SchemaTooNewError

Dialect = Literal["sqlite", "postgresql"]

_FILE_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")
_DIALECT_ONLY = re.compile(r"/\*(sqlite|postgresql):(.*?)\*/", re.DOTALL)
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)

# Created by `migrate()` itself, before reading the version: it must exist before any
# numbered migration can be recorded. One row per applied version.
CREATE_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    "version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
)
CURRENT_VERSION = "SELECT coalesce(max(version), 0) FROM schema_version"
RECORD_VERSION = "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)"


@dataclass(frozen=True)
class Migration:
    """One numbered schema version."""

    version: int
    name: str
    sql: str

    def sql_for(self, dialect: Dialect) -> str:
        """The text to run on `dialect`: its inline parts kept, the other's dropped."""
        return _DIALECT_ONLY.sub(
            lambda match: match[2] if match[1] == dialect else "",
            self.sql,
        )

    def is_blank_for(self, dialect: Dialect) -> bool:
        """Whether the text for `dialect` holds only comments: a placeholder keeping a
        version number (asyncpg fails on a query with no statement, so it is skipped)."""
        return not _COMMENTS.sub("", self.sql_for(dialect)).strip()


@cache
def all_migrations() -> tuple[Migration, ...]:
    """Every migration shipped with this code, oldest first."""
    found = []
    for entry in resources.files(__name__).iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    # A gap or a duplicate would make databases disagree on what a version number means.
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"storage migrations must be numbered 1..N without gaps: {versions}")
    return tuple(found)


def newest_version() -> int:
    """The version `migrate()` brings a database to."""
    return len(all_migrations())


def next_migration(current: int) -> Migration | None:
    """The migration that follows `current`, or None when the database is up to date.

    Raises `SchemaTooNewError` when `current` is newer than this code knows.
    """
    newest = newest_version()
    if current > newest:
        raise SchemaTooNewError(current, newest)
    if current == newest:
        return None
    return all_migrations()[current]
