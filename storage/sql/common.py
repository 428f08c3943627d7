"""What every area's SQL uses: row access, JSON text, placeholders, sealed columns,
limits and the uniqueness error."""

from __future__ import annotations

import re
from functools import cache
from typing import Any, Protocol

import msgspec

from storage.crypto import Cipher
from storage.errors import ConflictError


class Row(Protocol):
    """A result row of either driver (sqlite3 tuple, asyncpg Record), read by position."""

    def __getitem__(self, index: int, /) -> Any: ...


# Built once: msgspec encoders/decoders are cheap to reuse and costly to rebuild per row.
_json_encoder = msgspec.json.Encoder()

# No seq above this is ever stored (a BIGINT holds 2^63 - 1).
NO_SEQ = 2**62


def encode_json(value: object) -> str:
    """JSON text for a TEXT column."""
    return _json_encoder.encode(value).decode()


def encode_json_bytes(value: object) -> bytes:
    """JSON of `value` as bytes, for measuring it before it becomes text."""
    return _json_encoder.encode(value)


@cache
def sqlite_placeholders(sql: str) -> str:
    """`$1` -> `?1`: SQLite would read `$1` as a *named* parameter."""
    return re.sub(r"\$(\d+)", r"?\1", sql)


def seal(cipher: Cipher, value: str | None, column: str, row_id: str) -> str | None:
    """`value` as stored in `column` (`table.column`) of the row `row_id`."""
    return None if value is None else cipher.seal(value, f"{column}:{row_id}")


def unseal(cipher: Cipher, stored: str | None, column: str, row_id: str) -> str | None:
    """The value behind what `seal` stored."""
    return None if stored is None else cipher.open(stored, f"{column}:{row_id}")


def check_limit(limit: int) -> None:
    """Refuse a negative limit: SQLite reads it as 'no limit', PostgreSQL as an error."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")


def conflict(table: str, field: str) -> ConflictError:
    """The error for a uniqueness violation on `table.field`."""
    return ConflictError(
        f"{table}.{field} must be unique and another row already has this value",
        field=field,
    )
