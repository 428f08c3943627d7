"""Users and their devices (push tokens, web push endpoints)."""

from __future__ import annotations

from typing import Protocol

from storage.records import DeviceRecord, NewDevice, NewUser, UserLabels, UserRecord


class UsersAndDevices(Protocol):
    """Who pushd delivers to, and the devices they registered for push."""

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

    async def update_user_labels(self, user_id: str, labels: UserLabels) -> UserRecord | None:
        """Replace the user's tags and/or attributes (those of `labels` that are not
        None) in one statement; return the user as updated, or None for an unknown user.
        """
        ...

    async def list_users(self, *, after_id: str | None, limit: int) -> list[UserRecord]:
        """Users ordered by id ascending, starting after `after_id` (exclusive), at most `limit`."""
        ...

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
