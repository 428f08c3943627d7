"""The storage seam. Every backend (SQLite, PostgreSQL) honours exactly this contract,
and tests/storage/test_contract.py checks it against each of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from storage.records import (
    ApiKeyRecord,
    DeviceRecord,
    NewDevice,
    NewNotification,
    NewUser,
    NotificationRecord,
    UserRecord,
)


class Storage(Protocol):
    """Durable state of pushd.

    All methods are coroutines and never block the event loop. Any failure to reach the
    database surfaces as `StorageUnavailableError`; nothing else from a driver leaks out.
    Calls after `close()` raise `StorageUnavailableError` too. A negative `limit` raises
    `ValueError`.
    """

    async def migrate(self) -> int:
        """Bring the schema up to the newest known version; return that version.

        Idempotent and safe to run from several processes at once (serialised by a lock).
        Raises `SchemaTooNewError` when the database is newer than this code, without
        changing anything.
        """
        ...

    async def schema_version(self) -> int:
        """The version the database is at (0 for an empty database)."""
        ...

    async def ping(self) -> None:
        """Return when the database answers a trivial query; raise `StorageUnavailableError`."""
        ...

    async def close(self) -> None:
        """Release connections. Idempotent. Pending operations finish first."""
        ...

    # users -------------------------------------------------------------------------

    async def create_user(self, user: NewUser) -> UserRecord:
        """Insert a user with `last_seq = ack_seq = 0`.

        Raises `ConflictError(field="external_id")` if another user has that external id,
        `ConflictError(field="id")` on a duplicate id.
        """
        ...

    async def get_user(self, user_id: str) -> UserRecord | None:
        """The user with this id, or None."""
        ...

    async def get_user_by_external_id(self, external_id: str) -> UserRecord | None:
        """The user with this external id, or None."""
        ...

    async def list_users(self, *, after_id: str | None, limit: int) -> list[UserRecord]:
        """Users ordered by id ascending, starting after `after_id` (exclusive), at most `limit`."""
        ...

    # devices -----------------------------------------------------------------------

    async def upsert_device(self, device: NewDevice) -> tuple[DeviceRecord, bool]:
        """Register a device; return it and whether it was created.

        A device with the same (user_id, kind, address) already registered is returned
        instead (its `details` replaced by the new ones), with `created=False`: clients
        re-register their push token on every start. Raises `UnknownUserError`, and
        `ConflictError(field="id")` if another device already has this id.
        """
        ...

    async def list_devices(self, user_id: str) -> list[DeviceRecord]:
        """The user's devices, oldest first (empty for an unknown user)."""
        ...

    async def delete_device(self, user_id: str, device_id: str) -> bool:
        """Remove the device if it belongs to the user; return whether it existed."""
        ...

    # notifications -----------------------------------------------------------------

    async def insert_notifications(
        self, batch: Sequence[NewNotification]
    ) -> list[NotificationRecord]:
        """Commit a batch of notifications in ONE transaction and return their records,
        in the order given.

        Each gets the next `seq` of its user: strictly increasing per user, gap-free, in
        batch order, and correct under concurrent writers from several processes (the
        user's `last_seq` is incremented under a row lock). Either every row is committed
        or none is. Raises `UnknownUserError` (nothing written) if a user does not exist,
        `ConflictError(field="id")` (nothing written) if a notification id is already taken.
        """
        ...

    async def get_notification(self, notification_id: str) -> NotificationRecord | None:
        """The notification with this id, or None."""
        ...

    async def list_notifications(
        self, user_id: str, *, before_seq: int | None, limit: int
    ) -> list[NotificationRecord]:
        """The user's notifications newest first (seq descending), only those with
        `seq < before_seq` when given, at most `limit`."""
        ...

    async def notifications_after(
        self, user_id: str, *, after_seq: int, limit: int
    ) -> list[NotificationRecord]:
        """The user's notifications with `seq > after_seq`, oldest first, at most `limit`
        (for replaying to a client that resumes)."""
        ...

    async def advance_ack_seqs(self, acks: Mapping[str, int]) -> None:
        """For each user, set `ack_seq = max(ack_seq, value)`: the cursor never moves
        back. One round trip for the whole mapping; unknown users are ignored."""
        ...

    # API keys ----------------------------------------------------------------------

    async def create_api_key(self, key: ApiKeyRecord) -> None:
        """Store a key record. Raises `ConflictError(field="key_hash")` on a duplicate hash,
        `ConflictError(field="id")` on a duplicate id."""
        ...

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The key with this hash (revoked or not), or None."""
        ...

    async def count_api_keys(self) -> int:
        """How many keys exist, revoked ones included (0 means: bootstrap needed)."""
        ...
