"""Telling every socket of a user that notifications were marked read."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from actors.connection import UNSEQUENCED
from pushd.bus import Bus, BusError, BusMessage
from pushd.realtime.frames import ReadSyncFrame, frame_encoder

log = logging.getLogger("pushd.readsync")


async def publish_read(
    bus: Bus, user_id: str, ids: Sequence[str], through_seq: int | None = None
) -> None:
    """Send a `read` frame to every socket of the user, on every node (through the bus).

    Best effort: the read state itself is already stored, and replayed notifications
    carry it, so a bus failure only delays what the other devices show.
    """
    frame = frame_encoder.encode(ReadSyncFrame(ids=list(ids), through_seq=through_seq))
    try:
        await bus.publish([BusMessage(user_id, UNSEQUENCED, frame)])
    except BusError as exc:
        log.warning("read sync for user %s not sent (bus unavailable): %s", user_id, exc)
