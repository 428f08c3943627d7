"""Persistence for pushd: one `Storage` protocol, a SQLite and a PostgreSQL backend.

This package imports nothing from `pushd` or `actors`.
"""

from __future__ import annotations

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
    import importlib

    scheme = url.split(":", 1)[0].lower()
    target = _BACKENDS.get(scheme)
    if target is None:
        known = ", ".join(sorted(_BACKENDS))
        raise UnsupportedStorageUrlError(
            f"storage.url {url!r} has scheme {scheme!r}; supported schemes are: {known}"
        )
    module_name, class_name = target.split(":")
    backend = getattr(importlib.import_module(module_name), class_name)
    storage: Storage = await backend.open(url, pool_size=pool_size, cipher=cipher)
    return storage
