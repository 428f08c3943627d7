"""The primitives a backend gives the area mixins of `storage/sql/`.

A backend supplies read one row, read all rows and run writes in one transaction, each
translating its driver's errors, and its way of passing a list. Each area's mixin
(`storage/sql/<area>.py`) writes its one-statement methods over these once for both
backends; what needs a backend's own SQL or transaction handling lives in
`storage/sqlite/<area>.py` and `storage/postgres/<area>.py`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from storage.crypto import Cipher
from storage.errors import ConflictError, StorageError, StorageUnavailableError


@dataclass(frozen=True)
class EngineUsage:
    """A backend's connections now and its errors so far (read by the metrics)."""

    connections: int
    max_connections: int
    in_use: int
    """Connections lent to an operation."""
    waiting: int
    """Operations waiting for a connection (SQLite: for the worker thread)."""
    errors: Mapping[str, int]
    """Failed operations by kind: unavailable, conflict, rejected."""


def error_kind(error: StorageError) -> str:
    """The `EngineUsage.errors` key `error` counts under."""
    if isinstance(error, StorageUnavailableError):
        return "unavailable"
    return "conflict" if isinstance(error, ConflictError) else "rejected"


class SqlEngine(ABC):
    """A backend's primitives, and `ping`, which needs nothing else."""

    _cipher: Cipher
    """Seals and opens the columns of `SEALED_COLUMNS` (set by the backend's constructor)."""

    @abstractmethod
    async def _fetch_one(self, sql: str, *params: Any) -> Any:
        """The first row of a read (`$1` placeholders), or None."""

    @abstractmethod
    async def _fetch_all(self, sql: str, *params: Any) -> list[Any]:
        """Every row of a read (`$1` placeholders)."""

    @abstractmethod
    async def _write_one(self, sql: str, *params: Any) -> Any:
        """Run one write in its own transaction; its first RETURNING row, or None.

        A uniqueness violation raises `ConflictError` naming the column.
        """

    @abstractmethod
    async def _write_all(self, sql: str, *params: Any) -> list[Any]:
        """Run one write in its own transaction; every RETURNING row."""

    @abstractmethod
    async def _write_many(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        """Run the statements in order in ONE transaction; each one's RETURNING rows."""

    @abstractmethod
    async def _read_many(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        """Run the reads in order as ONE call: one worker job (and one read transaction)
        on SQLite, one pooled connection on PostgreSQL; each one's rows."""

    @abstractmethod
    def _in_list(self, param: int) -> str:
        """The backend's `IN <list>` form for a list of texts passed as parameter `param`
        (made by `_list_param`)."""

    @abstractmethod
    def _list_param(self, values: Sequence[str]) -> Any:
        """A list of texts as a parameter for `_in_list`."""

    async def ping(self) -> None:
        """See `Storage.ping`."""
        await self._fetch_one("SELECT 1")
