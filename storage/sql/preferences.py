"""User preferences (`storage.areas.preferences`): SQL and the methods, the same on
both backends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from storage.areas.preferences import PlanContext
from storage.errors import UnknownUserError
from storage.records import DeviceRecord, PreferencesChange, PreferencesRecord
from storage.sql.common import Row, encode_json
from storage.sql.engine import SqlEngine
from storage.sql.users import (
    DEVICE_COLUMNS,
    GET_USER,
    LIST_DEVICES,
    USER_COLUMNS,
    device_from_row,
    user_from_row,
)

# One read (the plan asks it per notification): the user row decides "unknown user",
# and the settings row and the switches may be missing, hence the LEFT JOINs (a user
# with n switches gives n rows, repeating the settings).
SELECT_PREFERENCES = (
    "SELECT users.id, p.muted, p.quiet_hours, p.updated_at, c.category, c.channel, c.enabled "
    "FROM users LEFT JOIN user_preferences p ON p.user_id = users.id "
    "LEFT JOIN channel_preferences c ON c.user_id = users.id "
    "WHERE users.id = $1 ORDER BY c.category, c.channel"
)


def _preferences_of_users_sql(in_list: str) -> str:
    """SELECT_PREFERENCES for the users of `in_list`, each user's rows together."""
    return SELECT_PREFERENCES.replace(
        "WHERE users.id = $1 ORDER BY c.category",
        (f"WHERE users.id {in_list} ORDER BY users.id, c.category"),
    )


# Every statement of a change inserts only for an existing user (checked in the same
# statement), so a change for an unknown user changes nothing; the settings row always
# is written (its updated_at), and its RETURNING tells the two cases apart.
UPSERT_SETTINGS = (
    "INSERT INTO user_preferences (user_id, muted, quiet_hours, updated_at) "
    "SELECT $1, coalesce($2, FALSE), $3, CAST($4 AS BIGINT) "
    "WHERE EXISTS (SELECT 1 FROM users WHERE id = $1) "
    "ON CONFLICT (user_id) DO UPDATE SET "
    "muted = coalesce($2, user_preferences.muted), "
    "quiet_hours = CASE WHEN $5 THEN $3 ELSE user_preferences.quiet_hours END, "
    "updated_at = $4 RETURNING user_id"
)
DELETE_SWITCHES = "DELETE FROM channel_preferences WHERE user_id = $1"
DELETE_SWITCH = (
    "DELETE FROM channel_preferences WHERE user_id = $1 AND category = $2 AND channel = $3"
)
UPSERT_SWITCH = (
    "INSERT INTO channel_preferences (user_id, category, channel, enabled, updated_at) "
    "SELECT $1, $2, $3, CAST($4 AS BOOLEAN), CAST($5 AS BIGINT) "
    "WHERE EXISTS (SELECT 1 FROM users WHERE id = $1) "
    "ON CONFLICT (user_id, category, channel) DO UPDATE SET "
    "enabled = excluded.enabled, updated_at = excluded.updated_at"
)

_quiet_hours = msgspec.json.Decoder(dict[str, Any])


def _preferences_from_rows(user_id: str, rows: list[Row]) -> PreferencesRecord | None:
    """The preferences from the rows of SELECT_PREFERENCES (none: an unknown user)."""
    if not rows:
        return None
    channels: dict[str, dict[str, bool]] = {}
    for row in rows:
        if row[4] is not None:
            channels.setdefault(row[4], {})[row[5]] = bool(row[6])
    settings = rows[0]
    return PreferencesRecord(
        user_id=user_id,
        muted=bool(settings[1]),
        quiet_hours=None if settings[2] is None else _quiet_hours.decode(settings[2]),
        channels=channels,
        updated_at=settings[3],
    )


class UserPreferencesSql(SqlEngine):
    """`UserPreferences`, the same on both backends."""

    async def get_preferences(self, user_id: str) -> PreferencesRecord | None:
        """See `UserPreferences.get_preferences`."""
        return _preferences_from_rows(user_id, await self._fetch_all(SELECT_PREFERENCES, user_id))

    async def plan_context(self, user_id: str, *, devices: bool) -> PlanContext | None:
        """See `UserPreferences.plan_context`."""
        statements: list[tuple[str, tuple[Any, ...]]] = [
            (GET_USER, (user_id,)),
            (SELECT_PREFERENCES, (user_id,)),
        ]
        if devices:
            statements.append((LIST_DEVICES, (user_id,)))
        user_rows, preference_rows, *device_rows = await self._read_many(statements)
        preferences = _preferences_from_rows(user_id, preference_rows)
        if not user_rows or preferences is None:
            return None
        found = [device_from_row(row) for row in device_rows[0]] if device_rows else []
        return user_from_row(user_rows[0], self._cipher), found, preferences

    async def plan_contexts(
        self, user_ids: Sequence[str], *, devices: bool
    ) -> dict[str, PlanContext]:
        """See `UserPreferences.plan_contexts`."""
        unique = list(dict.fromkeys(user_ids))
        if not unique:
            return {}
        in_list, ids = self._in_list(1), self._list_param(unique)
        statements: list[tuple[str, tuple[Any, ...]]] = [
            (f"SELECT {USER_COLUMNS} FROM users WHERE id {in_list}", (ids,)),  # noqa: S608
            (_preferences_of_users_sql(in_list), (ids,)),
        ]
        if devices:
            statements.append(
                (
                    f"SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id {in_list} "  # noqa: S608
                    "ORDER BY user_id, created_at, id",
                    (ids,),
                )
            )
        user_rows, preference_rows, *device_rows = await self._read_many(statements)
        rows_of: dict[str, list[Row]] = {}
        for row in preference_rows:
            rows_of.setdefault(row[0], []).append(row)
        devices_of: dict[str, list[DeviceRecord]] = {}
        for row in device_rows[0] if device_rows else ():
            device = device_from_row(row)
            devices_of.setdefault(device.user_id, []).append(device)
        found: dict[str, PlanContext] = {}
        for row in user_rows:
            user = user_from_row(row, self._cipher)
            preferences = _preferences_from_rows(user.id, rows_of.get(user.id, []))
            if preferences is not None:
                found[user.id] = (user, devices_of.get(user.id, []), preferences)
        return found

    async def change_preferences(
        self, user_id: str, change: PreferencesChange, *, at: int
    ) -> PreferencesRecord:
        """See `UserPreferences.change_preferences`."""
        set_quiet = change.quiet_hours is not msgspec.UNSET
        quiet = None if not set_quiet or change.quiet_hours is None else change.quiet_hours
        muted = None if change.muted is msgspec.UNSET else change.muted
        statements: list[tuple[str, tuple[Any, ...]]] = [
            (
                UPSERT_SETTINGS,
                (user_id, muted, None if quiet is None else encode_json(quiet), at, set_quiet),
            )
        ]
        if change.replace_channels:
            statements.append((DELETE_SWITCHES, (user_id,)))
        for category, switches in sorted(change.channels.items()):
            for channel, enabled in sorted(switches.items()):
                if enabled is None:
                    statements.append((DELETE_SWITCH, (user_id, category, channel)))
                else:
                    statements.append((UPSERT_SWITCH, (user_id, category, channel, enabled, at)))
        [written, *_] = await self._write_many(statements)
        found = await self.get_preferences(user_id) if written else None
        if found is None:
            raise UnknownUserError(user_id)
        return found
