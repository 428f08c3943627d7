"""Channel opt-outs (`storage.areas.channel_optouts`): SQL and the methods, the same on
both backends."""

# S608 (SQL built from strings): every query here is assembled at import time from the
# constants of this module only; values always travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence

from storage.errors import UnknownUserError
from storage.records import ChannelOptOut
from storage.sql.common import Row
from storage.sql.engine import SqlEngine

OPTOUT_COLUMNS = "user_id, channel, category, created_at"
# The user is checked in the same statement: a missing user inserts nothing (and so does
# an existing opt-out), and a second read tells the two apart.
INSERT_OPTOUT = (
    f"INSERT INTO channel_optouts ({OPTOUT_COLUMNS}) "
    "SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM users WHERE id = $1) "
    "ON CONFLICT (user_id, category, channel) DO NOTHING RETURNING user_id"
)
USER_EXISTS = "SELECT 1 FROM users WHERE id = $1"
DELETE_OPTOUT = (
    "DELETE FROM channel_optouts WHERE user_id = $1 AND channel = $2 AND category = $3 "
    "RETURNING user_id"
)


def optouts_of_sql(in_list: str) -> str:
    """Every opt-out of the users in the list $1 (a backend's `IN list` form)."""
    return (
        f"SELECT {OPTOUT_COLUMNS} FROM channel_optouts WHERE user_id {in_list} "
        "ORDER BY user_id, channel, category"
    )


def optout_from_row(row: Row) -> ChannelOptOut:
    """A row of OPTOUT_COLUMNS."""
    return ChannelOptOut(user_id=row[0], channel=row[1], category=row[2], created_at=row[3])


class ChannelOptOutsSql(SqlEngine):
    """`ChannelOptOuts`, the same on both backends."""

    async def set_channel_optout(self, opt_out: ChannelOptOut) -> bool:
        """See `ChannelOptOuts.set_channel_optout`."""
        params = (opt_out.user_id, opt_out.channel, opt_out.category, opt_out.created_at)
        if await self._write_one(INSERT_OPTOUT, *params) is not None:
            return True
        if await self._fetch_one(USER_EXISTS, opt_out.user_id) is None:
            raise UnknownUserError(opt_out.user_id)
        return False

    async def delete_channel_optout(self, user_id: str, *, channel: str, category: str) -> bool:
        """See `ChannelOptOuts.delete_channel_optout`."""
        return await self._write_one(DELETE_OPTOUT, user_id, channel, category) is not None

    async def channel_optouts_of(self, user_ids: Sequence[str]) -> list[ChannelOptOut]:
        """See `ChannelOptOuts.channel_optouts_of`."""
        if not user_ids:
            return []
        rows = await self._fetch_all(optouts_of_sql(self._in_list(1)), self._list_param(user_ids))
        return [optout_from_row(row) for row in rows]
