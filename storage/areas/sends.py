"""Broadcast and segment sends: the durable job behind `POST /api/notifications` with
`broadcast` or `segment` (pushd/audiences/fanout.py carries it out)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from storage.records import NewSend, SendChunk, SendDeliveryCount, SendRecord


class Sends(Protocol):
    """A send is written before the API answers 202, then fanned out chunk by chunk by
    the node holding its lease; its counters and cursor move with each chunk, so that a
    node taking it over (a restart, another node once the lease ran out) resumes after
    the last chunk recorded. A notification committed for a send carries its id
    (`NewNotification.send_id`), at most one per (send, user): storage refuses a second.
    """

    async def create_send(self, send: NewSend) -> SendRecord:
        """Insert the send, `pending`, with no lease, counters at 0.
        Raises `ConflictError(field="id")` on a duplicate id."""
        ...

    async def get_send(self, send_id: str) -> SendRecord | None:
        """The send with this id, or None."""
        ...

    async def unfinished_sends(self, *, node_id: str, now: int, limit: int) -> list[str]:
        """Ids of the sends not finished (`pending` or `running`) that `node_id` may
        lease at `now` (no lease, its own, or one that ran out), oldest first, at most
        `limit`: what a node looks for to carry out or take over. Sends other nodes are
        carrying out are not listed, so they never crowd out the ones waiting."""
        ...

    async def lease_send(
        self, send_id: str, *, node_id: str, now: int, until: int
    ) -> SendRecord | None:
        """Take (or renew) the send's lease for `node_id` until `until`, in one statement,
        if the send is unfinished and its lease is free, ran out before `now`, or is
        already `node_id`'s; return the send as leased, or None (finished, unknown, or
        held by another node)."""
        ...

    async def record_send_chunk(
        self, send_id: str, chunk: SendChunk, *, node_id: str, now: int, until: int
    ) -> bool:
        """Add the chunk's counters, move the cursor to its `cursor_user_id`, mark the send
        `running` and extend the lease to `until`, in one statement, if `node_id` still
        holds the lease; return whether it did (False: another node took it over, stop)."""
        ...

    async def finish_send(
        self, send_id: str, *, node_id: str, status: str, error: str | None, now: int
    ) -> bool:
        """Mark the send `done` or `failed` (with `error`) and release its lease, if
        `node_id` holds it; return whether it did."""
        ...

    async def users_sent(self, send_id: str, user_ids: Sequence[str]) -> set[str]:
        """Those of `user_ids` that already have a notification of this send."""
        ...

    async def send_delivery_counts(self, send_id: str) -> list[SendDeliveryCount]:
        """The send's channel deliveries counted per (channel, status), ordered by both."""
        ...

    async def send_acked(self, send_id: str) -> int:
        """How many of the send's notifications their user's clients have acknowledged
        (seq at or below the user's ack cursor)."""
        ...
