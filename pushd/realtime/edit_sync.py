"""Telling every socket of a user that one of its notifications was edited or retracted."""

from __future__ import annotations

import logging

from actors.connection import UNSEQUENCED
from pushd.bus import Bus, BusError, BusMessage
from pushd.realtime.frames import encode_edit_frame
from storage.records import NotificationRecord

log = logging.getLogger("pushd.edit_sync")


async def publish_edit(bus: Bus, record: NotificationRecord) -> None:
    """Send the `updated` (or, once retracted, `retracted`) frame of `record` to every
    socket of its user, on every node (through the bus), outside the seq stream.

    Best effort, like read sync: the new version is already stored and every later read
    (replay on resume, history) shows it, so a bus failure only delays what a connected
    client shows until it reconnects.
    """
    message = BusMessage(record.user_id, UNSEQUENCED, encode_edit_frame(record))
    try:
        await bus.publish([message])
    except BusError as exc:
        log.warning(
            "%s frame for notification %s not sent (bus unavailable): %s",
            "retracted" if record.retracted_at is not None else "updated",
            record.id,
            exc,
        )
