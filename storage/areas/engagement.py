"""Engagement (issue #13, point 8): when and through which channel a user reads, from
the read times storage already holds, for delivery optimisation
(pushd/routing/engagement.py)."""

from __future__ import annotations

from typing import Protocol

import msgspec


class EngagementRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A user's recent reading, as `Engagement.engagement_of` reads it."""

    read_times: list[int]
    """Epoch ms of the user's most recent reads in the look-back, newest first; routing
    turns them into hours of the user's wall clock."""
    read_delays: dict[str, list[int]]
    """Delivery channel ("email", "webpush", ...) -> ms from a delivery of that channel
    being sent to its notification being read, for reads in the look-back, newest
    first."""


class Engagement(Protocol):
    """Reads over a user's read notifications and their sent channel deliveries."""

    async def engagement_of(self, user_id: str, *, since: int, limit: int) -> EngagementRecord:
        """The user's reads at or after `since` (epoch ms): at most `limit` read times
        (the most recent), and at most `limit` send-to-read delays in all (those of the
        most recent reads). A delivery counts once it was sent (its history has a `sent`
        row); a read before the send (read in-app first) is no delay of that channel and
        is left out. An unknown user reads as empty."""
        ...
