"""WebSocket protocol v1 frames (docs/protocol.md): JSON text frames, one object each,
tagged by `type`. Decoders and encoders are built once and reused."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

# client -> server ---------------------------------------------------------------------


class AuthFrame(msgspec.Struct, tag="auth", tag_field="type", forbid_unknown_fields=True):
    """Must be the first frame: authenticates the socket as one user."""

    token: str


class PingFrame(msgspec.Struct, tag="ping", tag_field="type", forbid_unknown_fields=True):
    pass


class AckFrame(msgspec.Struct, tag="ack", tag_field="type", forbid_unknown_fields=True):
    """Cumulative: the client has every notification up to and including `seq`."""

    seq: int


ClientFrame = AuthFrame | PingFrame | AckFrame

# server -> client ---------------------------------------------------------------------


class WelcomeFrame(msgspec.Struct, tag="welcome", tag_field="type", kw_only=True):
    user_id: str
    connection_id: str
    last_seq: int
    """Seq of the newest notification stored for the user when the socket was accepted."""
    ack_seq: int
    """The user's stored ack cursor."""


class NotificationFrame(msgspec.Struct, tag="notification", tag_field="type", kw_only=True):
    seq: int
    id: str
    title: str | None
    body: str | None
    data: dict[str, Any] | None
    category: str | None
    priority: str
    created_at: datetime


class PongFrame(msgspec.Struct, tag="pong", tag_field="type"):
    pass


class ErrorFrame(msgspec.Struct, tag="error", tag_field="type"):
    code: str
    message: str


client_frame_decoder = msgspec.json.Decoder(ClientFrame)
frame_encoder = msgspec.json.Encoder()
