"""Digests (issue #13, point 6; migration 0017): the SQL the backends share to lease a
whole digest at once.

A digest row is a channel delivery with reason 'digest'; its digest is (user_id,
channel, the notification's category). A digest is due when any of its rows is due
(unsent with due_at <= now) or was leased by a worker that died (sending, lease run
out). Leasing one takes EVERY unsent row of it, due or not: the window runs from its
oldest row until the lease, and a row committed after the lease opens the next window.

Each backend runs the steps in one write transaction: PostgreSQL serialises the leases
of one digest with a transaction-scoped advisory lock (a second node skips a digest
being leased rather than splitting it), SQLite with its single writer.
"""

# S608 (SQL built from strings): assembled from the constants here; values always travel
# as parameters.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from storage.crypto import Cipher
from storage.records import LeasedDelivery
from storage.sql.channel_deliveries import PENDING, leased_from_row
from storage.sql.common import Row

DIGEST_REASON = "digest"
"""`reason` of a row gathered into a digest (pushd/routing/digests.py plans it)."""

# The normal lease leaves digest rows alone: a digest goes out as one message.
NOT_DIGEST = "(reason IS NULL OR reason <> 'digest')"

# A digest row that makes its digest due: unsent and due, or its lease ran out. `$2` is now.
_DUE_ROW = (
    f"d.reason = 'digest' AND ((d.{PENDING} AND d.due_at <= $2) "
    "OR (d.status = 'sending' AND d.lease_until < $2))"
)
# A row a lease of its digest takes: unsent (due or not), or its lease ran out.
MEMBER_ROW = (
    f"d.reason = 'digest' AND (d.{PENDING} OR (d.status = 'sending' AND d.lease_until < $2))"
)


def due_digests_sql(channel_list: str) -> str:
    """(user_id, channel, category) of up to $3 due digests of the channels in $1 (the
    backend's list form), at $2. Two branches, each on its partial index: unsent due
    rows (channel_deliveries_digest_due, migration 0017), and rows whose lease ran out
    (channel_deliveries_leased)."""
    columns = "SELECT d.user_id, d.channel, n.category FROM channel_deliveries d "
    joined = "JOIN notifications n ON n.id = d.notification_id "
    return (
        "SELECT DISTINCT user_id, channel, category FROM ("
        f"{columns}{joined}WHERE d.channel {channel_list} "
        "AND d.status IN ('scheduled', 'queued') AND d.reason = 'digest' AND d.due_at <= $2 "
        f"UNION ALL {columns}{joined}WHERE d.channel {channel_list} "
        "AND d.status = 'sending' AND d.lease_until < $2 AND d.reason = 'digest'"
        ") AS due LIMIT $3"
    )


def digest_name(user_id: str, channel: str, category: str | None) -> str:
    """One text naming a digest (PostgreSQL hashes it into its advisory lock)."""
    return f"{user_id}\n{channel}\n{category or ''}"


# What a member row needs: its id, its digest, whether it is due and whether its
# notification has expired. Columns of MEMBER_COLUMNS, then `LEASED_COLUMNS` once leased.
MEMBER_COLUMNS = (
    "d.id, d.user_id, d.channel, n.category, "
    f"CASE WHEN {_DUE_ROW} THEN 1 ELSE 0 END, "
    "CASE WHEN n.expires_at IS NOT NULL AND n.expires_at <= $2 THEN 1 ELSE 0 END"
)


def pick_members(rows: Sequence[Row]) -> tuple[list[str], list[str]]:
    """(ids to lease, ids to cancel as expired) of the member rows found for some digests:
    a digest none of whose live rows is due any more (another node sent it just before
    this lease) is left for its own window."""
    live_due: set[tuple[str, str, str | None]] = set()
    for row in rows:
        if row[4] and not row[5]:
            live_due.add((row[1], row[2], row[3]))
    lease = [row[0] for row in rows if not row[5] and (row[1], row[2], row[3]) in live_due]
    expired = [row[0] for row in rows if row[5]]
    return lease, expired


def digests_from_rows(rows: Sequence[Row], cipher: Cipher) -> list[list[LeasedDelivery]]:
    """Leased rows (LEASED_COLUMNS) as digests, each oldest notification first."""
    groups: dict[tuple[str, str, str | None], list[LeasedDelivery]] = {}
    for row in rows:
        delivery = leased_from_row(row, cipher)
        groups.setdefault((delivery.user_id, delivery.channel, delivery.category), []).append(
            delivery
        )
    digests = [sorted(group, key=_age) for group in groups.values()]
    digests.sort(key=lambda digest: _age(digest[0]))
    return digests


def _age(delivery: LeasedDelivery) -> tuple[int, str]:
    return delivery.created_at, delivery.id


def key_columns(keys: Sequence[Any]) -> tuple[list[str], list[str], list[str | None]]:
    """Due digests (rows of `due_digests_sql`) as three parallel lists."""
    return [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]
