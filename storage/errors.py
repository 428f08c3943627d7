"""The storage exception tree. Backends translate driver errors into these."""

from __future__ import annotations


class StorageError(Exception):
    """Base of every error the storage layer raises on purpose."""


class StorageUnavailableError(StorageError):
    """The database cannot be reached or stopped answering; the operation may be retried later."""


class ConflictError(StorageError):
    """A uniqueness rule was violated; `field` names the column the caller sent."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class UnknownUserError(StorageError):
    """A write referred to a user that does not exist (or was deleted meanwhile)."""

    def __init__(self, user_id: str) -> None:
        super().__init__(f"user {user_id!r} does not exist")
        self.user_id = user_id


class IdempotencyConflictError(StorageError):
    """An `Idempotency-Key` was already stored (by a concurrent request, maybe on another
    node) when a notification claiming it was committed."""

    def __init__(self, scope: str, key: str) -> None:
        super().__init__(f"idempotency key {key!r} is already stored")
        self.scope = scope
        self.key = key


class SchemaTooNewError(StorageError):
    """The database was migrated by a newer pushd than this one; refusing to touch it."""

    def __init__(self, found: int, supported: int) -> None:
        super().__init__(
            f"the database schema is at version {found}, but this pushd only knows versions "
            f"up to {supported}: it was migrated by a newer pushd. Run that newer version, "
            "or restore a backup taken before the upgrade."
        )
        self.found = found
        self.supported = supported


class UnsupportedStorageUrlError(StorageError):
    """The storage URL's scheme names no backend."""


class LastAdminKeyError(StorageError):
    """Revoking this key would leave no live admin key: nobody could manage keys any more."""

    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"API key {key_id!r} is the last live admin key; revoking it would lock every "
            "administrator out. Create another admin key first, then revoke this one."
        )
        self.key_id = key_id


class EncryptionError(StorageError):
    """A stored value could not be opened: its key is not in the key ring, or it was
    altered or moved from another row (see storage/crypto.py)."""
