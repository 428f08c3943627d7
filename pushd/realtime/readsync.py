"""Telling every socket of a user that notifications were marked read."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from actors.connection import UNSEQUENCED
from pushd.bus import Bus, BusError, BusMessage
from pushd.realtime.frames import ReadSyncFrame, frame_encoder
from storage.records import MarkedRead

log = logging.getLogger("pushd.readsync")


async def publish_read(bus: Bus, user_id: str, marked: Sequence[MarkedRead]) -> None:
    """Send `read` frames naming `marked` to every socket of the user, on every node
    (through the bus): one frame per category, which it names, so that a socket limited
    to categories is told only of its own (pushd/realtime/categories.py).

    Best effort: the read state itself is already stored, and replayed notifications
    carry it, so a bus failure only delays what the other devices show.
    """
    by_category: dict[str | None, list[str]] = {}
    for mark in marked:
        by_category.setdefault(mark.category, []).append(mark.id)
    frames = [ReadSyncFrame(ids=ids, category=category) for category, ids in by_category.items()]
    await _publish(bus, user_id, frames)


async def publish_read_all(
    bus: Bus, user_id: str, through_seq: int, categories: Sequence[str] | None
) -> None:
    """Send the `read` frame of a read-all up to `through_seq` to every socket of the
    user: one naming no category (every one), or, for a read-all limited to
    `categories`, one per category. Best effort, like `publish_read`."""
    if categories is None:
        frames = [ReadSyncFrame(ids=[], through_seq=through_seq)]
    else:
        frames = [
            ReadSyncFrame(ids=[], through_seq=through_seq, category=category)
            for category in categories
        ]
    await _publish(bus, user_id, frames)


async def _publish(bus: Bus, user_id: str, frames: Sequence[ReadSyncFrame]) -> None:
    messages = [BusMessage(user_id, UNSEQUENCED, frame_encoder.encode(f)) for f in frames]
    try:
        await bus.publish(messages)
    except BusError as exc:
        log.warning("read sync for user %s not sent (bus unavailable): %s", user_id, exc)
