"""Users and devices (`storage.areas.users`): SQL, row mapping, one-statement methods."""

# S608 (SQL built from strings): every query here is assembled at import time from the
# constants of this module only; values always travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

from typing import Any

import msgspec

from storage.crypto import Cipher
from storage.records import (
    AttributeValue,
    DeviceRecord,
    NewDevice,
    NewUser,
    UserLabels,
    UserRecord,
)
from storage.sql.common import Row, check_limit, encode_json, seal, unseal
from storage.sql.engine import SqlEngine

# users ---------------------------------------------------------------------------------

USER_COLUMNS = (
    "id, external_id, name, email, phone, locale, timezone, created_at, last_seq, ack_seq, "
    "sent_seq, tags, attributes"
)
INSERT_USER = (
    "INSERT INTO users "
    "(id, external_id, name, email, phone, locale, timezone, created_at, tags, attributes) "
    f"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {USER_COLUMNS}"
)
# Each of tags and attributes is replaced when given: $2 / $4 say whether it is.
UPDATE_USER_LABELS = (
    "UPDATE users SET "
    "tags = CASE WHEN $2 THEN $3 ELSE tags END, "
    "attributes = CASE WHEN $4 THEN $5 ELSE attributes END "
    f"WHERE id = $1 RETURNING {USER_COLUMNS}"
)
GET_USER = f"SELECT {USER_COLUMNS} FROM users WHERE id = $1"
GET_USER_BY_EXTERNAL_ID = f"SELECT {USER_COLUMNS} FROM users WHERE external_id = $1"
LIST_USERS_FIRST = f"SELECT {USER_COLUMNS} FROM users ORDER BY id LIMIT $1"
LIST_USERS_AFTER = f"SELECT {USER_COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2"


def user_params(user: NewUser, cipher: Cipher) -> tuple[Any, ...]:
    """Parameters of INSERT_USER, contact fields sealed (external_id stays plaintext: it
    is looked up by equality and must stay unique)."""
    return (
        user.id,
        user.external_id,
        seal(cipher, user.name, "users.name", user.id),
        seal(cipher, user.email, "users.email", user.id),
        seal(cipher, user.phone, "users.phone", user.id),
        user.locale,
        user.timezone,
        user.created_at,
        encode_json(user.tags),
        seal_attributes(cipher, user.attributes, user.id),
    )


def seal_attributes(
    cipher: Cipher, attributes: dict[str, AttributeValue], user_id: str
) -> str | None:
    """`users.attributes` as stored: sealed JSON, NULL for none."""
    if not attributes:
        return None
    return seal(cipher, encode_json(attributes), "users.attributes", user_id)


def user_from_row(row: Row, cipher: Cipher) -> UserRecord:
    """A row of USER_COLUMNS."""
    user_id = row[0]
    return UserRecord(
        id=user_id,
        external_id=row[1],
        name=unseal(cipher, row[2], "users.name", user_id),
        email=unseal(cipher, row[3], "users.email", user_id),
        phone=unseal(cipher, row[4], "users.phone", user_id),
        locale=row[5],
        timezone=row[6],
        created_at=row[7],
        last_seq=row[8],
        ack_seq=row[9],
        sent_seq=row[10],
        tags=tuple(_tags_decoder.decode(row[11])),
        attributes=_open_attributes(cipher, row[12], user_id),
    )


_tags_decoder = msgspec.json.Decoder(list[str])
_attributes_decoder = msgspec.json.Decoder(dict[str, AttributeValue])


def _open_attributes(cipher: Cipher, stored: str | None, user_id: str) -> dict[str, AttributeValue]:
    text = unseal(cipher, stored, "users.attributes", user_id)
    return {} if text is None else _attributes_decoder.decode(text)


# devices -------------------------------------------------------------------------------

DEVICE_COLUMNS = "id, user_id, kind, address, details, created_at"
# upsert_device runs these two in one transaction: the insert tells by returning a row
# whether it created one, which a single INSERT ... ON CONFLICT DO UPDATE cannot tell
# portably.
INSERT_DEVICE = (
    f"INSERT INTO devices ({DEVICE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) "
    f"ON CONFLICT (user_id, kind, address) DO NOTHING RETURNING {DEVICE_COLUMNS}"
)
REPLACE_DEVICE_DETAILS = (
    "UPDATE devices SET details = $4 WHERE user_id = $1 AND kind = $2 AND address = $3 "
    f"RETURNING {DEVICE_COLUMNS}"
)
LIST_DEVICES = f"SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = $1 ORDER BY created_at, id"
DELETE_DEVICE = "DELETE FROM devices WHERE id = $1 AND user_id = $2 RETURNING id"

_details_decoder = msgspec.json.Decoder(dict[str, str])


def device_params(device: NewDevice) -> tuple[Any, ...]:
    """Parameters of INSERT_DEVICE."""
    return (
        device.id,
        device.user_id,
        device.kind,
        device.address,
        encode_json(device.details),
        device.created_at,
    )


def replace_details_params(device: NewDevice) -> tuple[Any, ...]:
    """Parameters of REPLACE_DEVICE_DETAILS."""
    return (device.user_id, device.kind, device.address, encode_json(device.details))


def device_from_row(row: Row) -> DeviceRecord:
    """A row of DEVICE_COLUMNS."""
    return DeviceRecord(
        id=row[0],
        user_id=row[1],
        kind=row[2],
        address=row[3],
        details=_details_decoder.decode(row[4]),
        created_at=row[5],
    )


class UsersAndDevicesSql(SqlEngine):
    """`UsersAndDevices` but `upsert_device`, which each backend writes itself."""

    async def create_user(self, user: NewUser) -> UserRecord:
        """See `UsersAndDevices.create_user`."""
        row = await self._write_one(INSERT_USER, *user_params(user, self._cipher))
        return user_from_row(row, self._cipher)

    async def get_user(self, user_id: str) -> UserRecord | None:
        """See `UsersAndDevices.get_user`."""
        row = await self._fetch_one(GET_USER, user_id)
        return None if row is None else user_from_row(row, self._cipher)

    async def get_user_by_external_id(self, external_id: str) -> UserRecord | None:
        """See `UsersAndDevices.get_user_by_external_id`."""
        row = await self._fetch_one(GET_USER_BY_EXTERNAL_ID, external_id)
        return None if row is None else user_from_row(row, self._cipher)

    async def list_users(self, *, after_id: str | None, limit: int) -> list[UserRecord]:
        """See `UsersAndDevices.list_users`."""
        check_limit(limit)
        if after_id is None:
            rows = await self._fetch_all(LIST_USERS_FIRST, limit)
        else:
            rows = await self._fetch_all(LIST_USERS_AFTER, after_id, limit)
        return [user_from_row(row, self._cipher) for row in rows]

    async def update_user_labels(self, user_id: str, labels: UserLabels) -> UserRecord | None:
        """See `UsersAndDevices.update_user_labels`."""
        row = await self._write_one(
            UPDATE_USER_LABELS,
            user_id,
            labels.tags is not None,
            encode_json(labels.tags or ()),
            labels.attributes is not None,
            seal_attributes(self._cipher, labels.attributes or {}, user_id),
        )
        return None if row is None else user_from_row(row, self._cipher)

    async def list_devices(self, user_id: str) -> list[DeviceRecord]:
        """See `UsersAndDevices.list_devices`."""
        rows = await self._fetch_all(LIST_DEVICES, user_id)
        return [device_from_row(row) for row in rows]

    async def delete_device(self, user_id: str, device_id: str) -> bool:
        """See `UsersAndDevices.delete_device`."""
        return await self._write_one(DELETE_DEVICE, device_id, user_id) is not None
