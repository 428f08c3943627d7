"""Users and devices on SQLite: the device upsert, one write job."""

from __future__ import annotations

import sqlite3
from typing import Any

from storage.errors import UnknownUserError
from storage.records import DeviceRecord, NewDevice
from storage.sql.users import (
    INSERT_DEVICE,
    REPLACE_DEVICE_DETAILS,
    UsersAndDevicesSql,
    device_from_row,
    device_params,
    replace_details_params,
)
from storage.sqlite.engine import SqliteEngine, fetch_one, integrity_error, write_transaction


def _upsert_device(connection: sqlite3.Connection, device: NewDevice) -> tuple[Any, bool]:
    with write_transaction(connection):
        try:
            row = fetch_one(connection, INSERT_DEVICE, device_params(device))
        except sqlite3.IntegrityError as exc:
            if exc.sqlite_errorname == "SQLITE_CONSTRAINT_FOREIGNKEY":
                raise UnknownUserError(device.user_id) from exc
            raise integrity_error(exc) from exc
        if row is not None:
            return row, True
        # The write lock is held, so the conflicting row is still there.
        return fetch_one(connection, REPLACE_DEVICE_DETAILS, replace_details_params(device)), False


class SqliteUsersAndDevices(UsersAndDevicesSql, SqliteEngine):
    """`UsersAndDevices` on SQLite."""

    async def upsert_device(self, device: NewDevice) -> tuple[DeviceRecord, bool]:
        """See `UsersAndDevices.upsert_device`."""
        row, created = await self._run(lambda connection: _upsert_device(connection, device))
        return device_from_row(row), created
