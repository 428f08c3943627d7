"""Delivery cursors: how far each user's sockets were sent and acknowledged, and when."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from storage.records import CursorHistoryRecord, CursorTimes


class DeliveryCursors(Protocol):
    """Each user's `sent_seq` and `ack_seq`, and the history of their moves."""

    async def advance_cursors(
        self,
        *,
        sent: Mapping[str, int],
        acked: Mapping[str, int],
        at: int,
        within: Sequence[str] | None = None,
    ) -> None:
        """Move users' `sent_seq` and `ack_seq` forward, in one transaction.

        For each user, a cursor becomes `max(cursor, min(value, last_seq))`: it never
        moves back, nor past the newest notification. Each cursor that moved gets a
        `cursor_history` row (seq, at), so `cursor_times` can tell when a seq was reached.
        Unknown users are ignored.

        `within` (the categories of a limited socket, which saw only those): a cursor
        also stops just below the first notification above it whose category is not one
        of them (or is null), since such a socket cannot vouch for that notification.
        """
        ...

    async def cursor_times(self, user_id: str, seqs: Sequence[int]) -> dict[int, CursorTimes]:
        """For each seq, when the user's sent and ack cursors first reached it."""
        ...

    async def cursor_history_of(
        self, user_id: str, *, after: tuple[str, int] | None, limit: int
    ) -> list[CursorHistoryRecord]:
        """The user's cursor history ordered by (cursor, seq), after `after` (exclusive),
        at most `limit` (a page of a user's export)."""
        ...
