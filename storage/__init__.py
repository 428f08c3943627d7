"""Persistence for pushd: one `Storage` protocol, a SQLite and a PostgreSQL backend.

`Storage` (protocol.py) is composed of small area protocols. A new area `xs` adds: its
Protocol in `areas/xs.py` (guarantees in docstrings), listed in `Storage`'s bases; its SQL,
row mapping and one-statement methods in `sql/xs.py` (an `XsSql` mixin); only where a
backend needs its own SQL or locking (a lease, a batch), `sqlite/xs.py` and `postgres/xs.py`;
its mixins listed in `SqliteStorage` and `PostgresStorage`; its records in `records.py`; a
migration; and `tests/storage/test_xs_contract.py`, which runs on both backends.

This package imports nothing from `pushd` or `actors`.
"""

from __future__ import annotations

from storage.backend_urls import backend_class
from storage.crypto import PLAINTEXT, Cipher, KeyRing
from storage.errors import (
    ConflictError,
    EncryptionError,
    IdempotencyConflictError,
    LastAdminKeyError,
    SchemaTooNewError,
    StorageError,
    StorageUnavailableError,
    UnknownUserError,
    UnsupportedStorageUrlError,
)
from storage.protocol import Storage

__all__ = [
    "PLAINTEXT",
    "Cipher",
    "ConflictError",
    "EncryptionError",
    "IdempotencyConflictError",
    "KeyRing",
    "LastAdminKeyError",
    "SchemaTooNewError",
    "Storage",
    "StorageError",
    "StorageUnavailableError",
    "UnknownUserError",
    "UnsupportedStorageUrlError",
    "open_storage",
]

# URL scheme -> backend. Drivers are imported only when their scheme is used.
_BACKENDS = {
    "sqlite": "storage.sqlite:SqliteStorage",
    "postgresql": "storage.postgres:PostgresStorage",
    "postgres": "storage.postgres:PostgresStorage",
}


async def open_storage(url: str, *, pool_size: int = 10, cipher: Cipher = PLAINTEXT) -> Storage:
    """Open (connect) the backend named by the URL's scheme.

    `sqlite:///relative/or/absolute/path.db`, `postgresql://user@host:port/db`.
    The schema is not migrated here: call `migrate()`. `cipher` seals the columns that
    hold personal data (storage/crypto.py); the default stores them as given.
    """
    backend = backend_class(url, _BACKENDS, setting="storage.url", error=UnsupportedStorageUrlError)
    storage: Storage = await backend.open(url, pool_size=pool_size, cipher=cipher)
    return storage
