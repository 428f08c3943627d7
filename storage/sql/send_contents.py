"""A fan-out's content stored once per send (migration 0019, docs/audiences.md "How a
fan-out is stored"): the renderings of a batch, their numbers and sealed rows, and the
join that reads them back.

A notification committed with a `send_id` does not carry its title, body, data and
channel content in its own row: they are in the `send_contents` row of its rendering,
shared by every recipient of the send who got the same one, and the notification holds
that row's number within the send (`content_no`). Both backends' inserts use
`Renderings` in the batch's transaction; every read joins the content back
(storage/sql/notifications.py, channel_deliveries.py), so a caller reads the same record
as before. The reference counts are kept by the triggers of migration 0019.
"""

# S608 (SQL built from strings): the statements below are assembled from constants and
# a backend's list form; values always travel as parameters.

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from storage.crypto import Cipher
from storage.records import NewNotification
from storage.sql.common import encode_json, seal

# A rendering's digest is a keyed hash whose key lives only as long as this process: a
# plain hash of the content, stored in clear, would let whoever reads the database
# confirm a guess of a sealed title ("your code is 1234"). The price: after a restart,
# or on another node taking a send over, a rendering already stored gets one more row
# (as correct as the first); within a run each is stored once.
_DIGEST_KEY = secrets.token_bytes(32)

# The renderings of a send already stored, by digest ($2, a backend's list form): their
# numbers. PostgreSQL locks them (FOR UPDATE) until the batch commits, so that a
# deletion taking their last reader away waits, then finds the count raised.
LOOKUP_RENDERINGS = "SELECT digest, number FROM send_contents WHERE send_id = $1 AND digest {}"
LAST_NUMBER = "SELECT coalesce(max(number), 0) FROM send_contents WHERE send_id = $1"
INSERT_SEND_CONTENT = (
    "INSERT INTO send_contents (id, send_id, number, digest, refs, title, body, data, "
    "channel_content, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
)
ADD_READERS = "UPDATE send_contents SET refs = refs + $2 WHERE id = $1"

# The columns of the shared content a read of notifications appends to its own, and the
# join that brings them (aliased, so that `id`, `title`, ... stay the notification's).
SHARED_COLUMNS = "shared_id, shared_title, shared_body, shared_data"
SHARED_JOIN = (
    "LEFT JOIN (SELECT id AS shared_id, send_id AS shared_send, number AS shared_number, "
    "title AS shared_title, body AS shared_body, data AS shared_data FROM send_contents) "
    "AS shared ON shared.shared_send = notifications.send_id "
    "AND shared.shared_number = notifications.content_no"
)
# What an edit reads before copying a notification's shared channel content into its row.
SHARED_CHANNEL_CONTENT = (
    "SELECT c.id, c.channel_content FROM notifications n "
    "JOIN send_contents c ON c.send_id = n.send_id AND c.number = n.content_no WHERE n.id = $1"
)


def content_id(send_id: str, number: int) -> str:
    """The `send_contents.id` of a send's rendering number `number`."""
    return f"{send_id}:{number}"


class _Rendering:
    """One distinct content of a send in a batch: how many of the batch read it, and
    the first notification that has it (its values are the content)."""

    __slots__ = ("channel_content", "data", "notification", "readers")

    def __init__(
        self, notification: NewNotification, data: str | None, channel_content: str | None
    ) -> None:
        self.notification = notification
        self.data = data
        self.channel_content = channel_content
        self.readers = 0


class Renderings:
    """The shared contents of a batch of notifications, in three steps inside its
    transaction: `digests_of(send)` to look up what is stored, `rows_for(send, ...)` to
    number the new ones and count the readers, then `numbers` for the rows."""

    def __init__(self, batch: Sequence[NewNotification]) -> None:
        self._keys: list[tuple[str, str] | None] = []
        self._by_send: dict[str, dict[str, _Rendering]] = {}
        self._numbers: dict[tuple[str, str], int] = {}
        for notification in batch:
            send_id = notification.send_id
            if send_id is None:
                self._keys.append(None)
                continue
            data = None if notification.data is None else encode_json(notification.data)
            channel = notification.channel_content
            channel_json = None if channel is None else encode_json(channel)
            rendering = encode_json([notification.title, notification.body, data, channel_json])
            digest = hmac.new(_DIGEST_KEY, rendering.encode(), hashlib.sha256).hexdigest()
            found = self._by_send.setdefault(send_id, {})
            if digest not in found:
                found[digest] = _Rendering(notification, data, channel_json)
            found[digest].readers += 1
            self._keys.append((send_id, digest))

    @property
    def sends(self) -> list[str]:
        """The sends of the batch (none: nothing to share)."""
        return list(self._by_send)

    def digests_of(self, send_id: str) -> list[str]:
        return list(self._by_send[send_id])

    def rows_for(
        self, send_id: str, stored: Mapping[str, int], last_number: int, cipher: Cipher
    ) -> tuple[list[tuple[Any, ...]], list[tuple[str, int]]]:
        """Given the send's renderings already `stored` (digest -> number) and its
        highest number: INSERT_SEND_CONTENT rows (sealed, numbered after it) for the new
        ones, and ADD_READERS rows for the stored ones."""
        inserts: list[tuple[Any, ...]] = []
        additions: list[tuple[str, int]] = []
        for digest, rendering in self._by_send[send_id].items():
            number = stored.get(digest)
            if number is not None:
                additions.append((content_id(send_id, number), rendering.readers))
            else:
                last_number += 1
                number = last_number
                inserts.append(self._row(send_id, number, digest, rendering, cipher))
            self._numbers[send_id, digest] = number
        return inserts, additions

    @staticmethod
    def _row(
        send_id: str, number: int, digest: str, rendering: _Rendering, cipher: Cipher
    ) -> tuple[Any, ...]:
        row_id = content_id(send_id, number)
        notification = rendering.notification
        return (
            row_id,
            send_id,
            number,
            digest,
            rendering.readers,
            seal(cipher, notification.title, "send_contents.title", row_id),
            seal(cipher, notification.body, "send_contents.body", row_id),
            seal(cipher, rendering.data, "send_contents.data", row_id),
            seal(cipher, rendering.channel_content, "send_contents.channel_content", row_id),
            notification.created_at,
        )

    @property
    def numbers(self) -> list[int | None]:
        """Each notification's `content_no`, in batch order (None: its content is its own)."""
        return [None if key is None else self._numbers[key] for key in self._keys]
