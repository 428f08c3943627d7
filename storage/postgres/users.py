"""Users and devices on PostgreSQL: the device upsert, in one transaction."""

from __future__ import annotations

import asyncpg

from storage.errors import UnknownUserError
from storage.postgres.engine import PostgresEngine
from storage.records import DeviceRecord, NewDevice
from storage.sql.users import (
    INSERT_DEVICE,
    REPLACE_DEVICE_DETAILS,
    UsersAndDevicesSql,
    device_from_row,
    device_params,
    replace_details_params,
)


class PostgresUsersAndDevices(UsersAndDevicesSql, PostgresEngine):
    """`UsersAndDevices` on PostgreSQL."""

    async def upsert_device(self, device: NewDevice) -> tuple[DeviceRecord, bool]:
        """See `UsersAndDevices.upsert_device`."""
        async with self._transaction() as connection:
            while True:
                try:
                    row = await connection.fetchrow(INSERT_DEVICE, *device_params(device))
                except asyncpg.ForeignKeyViolationError as exc:
                    raise UnknownUserError(device.user_id) from exc
                if row is not None:
                    return device_from_row(row), True
                params = replace_details_params(device)
                row = await connection.fetchrow(REPLACE_DEVICE_DETAILS, *params)
                if row is not None:
                    return device_from_row(row), False
                # Deleted by another node between the two statements: insert it again.
