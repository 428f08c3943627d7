"""WebSocket protocol v1 frames (docs/protocol.md): JSON text frames, one object each,
tagged by `type`. Decoders and encoders are built once and reused."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from pushd.ids import from_ms, opt_from_ms
from storage.jsondepth import within_depth
from storage.records import NotificationRecord

# client -> server ---------------------------------------------------------------------


Seq = Annotated[int, msgspec.Meta(ge=0)]


class AuthFrame(msgspec.Struct, tag="auth", tag_field="type", forbid_unknown_fields=True):
    """Must be the first frame: authenticates the socket as one user; the stream starts
    after `since` (default: the user's ack cursor)."""

    token: str
    since: Seq | None = None
    protocol: Annotated[str, msgspec.Meta(max_length=16)] | None = None
    """The protocol version the client speaks (since 1.3; absent: 1.2 or older). A
    client announcing 1.3 or later is sent `updated` and `retracted` frames."""


class PingFrame(msgspec.Struct, tag="ping", tag_field="type", forbid_unknown_fields=True):
    pass


class AckFrame(msgspec.Struct, tag="ack", tag_field="type", forbid_unknown_fields=True):
    """Cumulative: the client has every notification up to and including `seq`."""

    seq: Seq


class ResumeFrame(msgspec.Struct, tag="resume", tag_field="type", forbid_unknown_fields=True):
    """Restart this socket's stream after `since`."""

    since: Seq


MAX_READ_IDS = 100


class ReadFrame(msgspec.Struct, tag="read", tag_field="type", forbid_unknown_fields=True):
    """Mark these notifications of the user read."""

    ids: Annotated[list[str], msgspec.Meta(max_length=MAX_READ_IDS)]


class RefreshFrame(msgspec.Struct, tag="refresh", tag_field="type", forbid_unknown_fields=True):
    """A fresh token of the socket's user, so that the socket outlives its first token."""

    token: str


ClientFrame = AuthFrame | PingFrame | AckFrame | ResumeFrame | ReadFrame | RefreshFrame

# server -> client ---------------------------------------------------------------------


PROTOCOL_VERSION = "1.3"
"""Announced in `welcome`; docs/protocol.md describes what each version added."""


class WelcomeFrame(msgspec.Struct, tag="welcome", tag_field="type", kw_only=True):
    user_id: str
    connection_id: str
    last_seq: int
    """Seq of the newest notification stored for the user when the socket was accepted."""
    ack_seq: int
    """The user's stored ack cursor."""
    since: int
    """The stream of this socket starts after this seq."""
    token_expires_at: datetime
    """The socket is closed then (4002) unless a `refresh` brings a newer token."""
    protocol: str = PROTOCOL_VERSION


class NotificationFrame(msgspec.Struct, tag="notification", tag_field="type", kw_only=True):
    seq: int
    id: str
    title: str | None
    body: str | None
    data: dict[str, Any] | None
    category: str | None
    priority: str
    created_at: datetime
    expires_at: datetime | None = None
    read: bool = False
    version: int | msgspec.UnsetType = msgspec.UNSET
    """Absent for an unedited notification (version 1), so live frames do not grow."""
    retracted: bool | msgspec.UnsetType = msgspec.UNSET
    """true (content null) for a notification retracted before it was replayed."""


class UpdatedFrame(msgspec.Struct, tag="updated", tag_field="type", kw_only=True):
    """A notification the user holds was edited: its current content (since 1.3)."""

    seq: int
    id: str
    version: int
    title: str | None
    body: str | None
    data: dict[str, Any] | None
    category: str | None
    updated_at: datetime


class RetractedFrame(msgspec.Struct, tag="retracted", tag_field="type", kw_only=True):
    """A notification the user holds was retracted: remove it (since 1.3)."""

    seq: int
    id: str
    version: int
    category: str | None
    retracted_at: datetime


EDIT_FRAME_TYPES = frozenset({"updated", "retracted"})
"""Frames sent only to clients that announced protocol 1.3 or later in `auth`."""


class GapFrame(msgspec.Struct, tag="gap", tag_field="type", kw_only=True):
    """Seqs `from_seq..to_seq` exist but will not be delivered."""

    from_seq: int
    to_seq: int
    reason: Literal["expired", "not_retained"]


class ResumedFrame(msgspec.Struct, tag="resumed", tag_field="type"):
    """Answer to `resume`: the stream continues after `since`."""

    since: int


class ReadSyncFrame(msgspec.Struct, tag="read", tag_field="type", kw_only=True):
    """Notifications were marked read (by ids, or every one up to `through_seq`)."""

    ids: list[str]
    through_seq: int | None = None
    category: str | msgspec.UnsetType | None = msgspec.UNSET
    """Absent: any category (only with `through_seq`). Present (null: uncategorised):
    every id, and `through_seq`, concern notifications of this category only, so that a
    socket limited to categories is told only of its own (pushd/realtime/categories.py)."""


class TokenExpiringFrame(msgspec.Struct, tag="token_expiring", tag_field="type"):
    """The socket's token expires at `expires_at`: send a `refresh` before then."""

    expires_at: datetime


class RefreshedFrame(msgspec.Struct, tag="refreshed", tag_field="type"):
    """Answer to a good `refresh`: the socket now lives until `expires_at`."""

    expires_at: datetime


class PongFrame(msgspec.Struct, tag="pong", tag_field="type"):
    pass


class ErrorFrame(msgspec.Struct, tag="error", tag_field="type"):
    code: str
    message: str


client_frame_decoder = msgspec.json.Decoder(ClientFrame)
frame_encoder = msgspec.json.Encoder()


class FrameTooDeepError(msgspec.DecodeError):
    """A client frame nests deeper than `limits.json_max_depth`: never decoded, the
    socket is closed with 4500 (docs/protocol.md)."""


def decode_client_frame(data: str | bytes, max_depth: int) -> ClientFrame:
    """The client frame in a text message, its nesting measured before msgspec decodes
    it (recursively: about 1,000 levels raise RecursionError). Raises `FrameTooDeepError`,
    or `msgspec.DecodeError` for any other frame the server cannot use."""
    if not within_depth(data, max_depth):
        raise FrameTooDeepError(
            f"frame nests deeper than {max_depth} levels (limits.json_max_depth)"
        )
    frame: ClientFrame = client_frame_decoder.decode(data)
    return frame


def encode_notification_frame(record: NotificationRecord) -> bytes:
    """The `notification` frame for this record, as sent to every socket of the user."""
    return frame_encoder.encode(
        NotificationFrame(
            seq=record.seq,
            id=record.id,
            title=record.title,
            body=record.body,
            data=record.data,
            category=record.category,
            priority=record.priority,
            created_at=from_ms(record.created_at),
            expires_at=opt_from_ms(record.expires_at),
            read=record.read_at is not None,
            version=msgspec.UNSET if record.version == 1 else record.version,
            retracted=msgspec.UNSET if record.retracted_at is None else True,
        )
    )


def encode_edit_frame(record: NotificationRecord) -> bytes:
    """The `updated` or `retracted` frame telling the user's sockets of this record's
    current version (after `update_notification` or `retract_notification`)."""
    if record.retracted_at is not None:
        return frame_encoder.encode(
            RetractedFrame(
                seq=record.seq,
                id=record.id,
                version=record.version,
                category=record.category,
                retracted_at=from_ms(record.retracted_at),
            )
        )
    return frame_encoder.encode(
        UpdatedFrame(
            seq=record.seq,
            id=record.id,
            version=record.version,
            title=record.title,
            body=record.body,
            data=record.data,
            category=record.category,
            updated_at=from_ms(record.updated_at or record.created_at),
        )
    )
