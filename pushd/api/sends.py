"""Broadcast, segment and topic sends: accepting them (`POST /api/notifications` with
`broadcast` or `segment`; a topic send is accepted by pushd/api/topic_send.py) and
`GET /api/sends/{sendId}`, their progress.

Accepting writes the send (content sealed, audience, category) and answers 202 with its
id; the fan-out (pushd/audiences/fanout.py) carries it out in the background. Who may:
admin keys, and publisher keys created with `broadcast: true` (403 naming the field
otherwise). A category-limited key may only send its categories (as any send) and sees
only the sends of its categories.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from aiohttp import web

from pushd.access.api_keys import API_KEY
from pushd.access.audit_fields import AUDIT_DETAIL, AUDIT_TARGET
from pushd.access.roles import ADMIN
from pushd.api.errors import ApiError, ErrorCode, validation_error
from pushd.api.route import Reply, Route
from pushd.api.schemas import SendNotification
from pushd.api.segments import load_segment, parse_filter
from pushd.api.templates import pin_template_version
from pushd.appkeys import AUDIENCES, STORAGE
from pushd.ids import from_ms, new_id, opt_from_ms
from storage.records import NewSend, SendRecord

Meta = msgspec.Meta
AudienceKind = Literal["broadcast", "segment", "topic"]
SendStatus = Literal["pending", "running", "done", "failed"]
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Fields of a single send that the fan-out does not carry out (yet): refused with a 422
# rather than silently dropped. Read with getattr: they belong to other features.
_NOT_WITH_AUDIENCE = ("send_at", "delay", "deliver_at_local")

_body_encoder = msgspec.json.Encoder()


class SendAccepted(msgspec.Struct, kw_only=True):
    """The send is stored and will be carried out; follow it at `Location`."""

    send_id: Annotated[str, Meta(description="`GET /api/sends/{send_id}` shows its progress.")]
    audience: AudienceKind
    status: SendStatus
    created_at: datetime
    topic: Annotated[str | None, Meta(description="The topic's slug, for a topic send.")] = None


class SendRecipients(msgspec.Struct, kw_only=True):
    resolved: Annotated[int, Meta(description="Users of the audience read so far.")]
    committed: Annotated[
        int, Meta(description="Notifications committed (each in its user's mailbox).")
    ]
    skipped: Annotated[
        int,
        Meta(
            description="Users left out: over their rate limit, erased during the send, or "
            "(with a template) a user it cannot be rendered for, e.g. a variable missing "
            "from their profile; the reason is logged once per send."
        ),
    ]
    acked: Annotated[
        int, Meta(description="Notifications the user's clients have acknowledged (in-app).")
    ]


class SendChannelCount(msgspec.Struct, kw_only=True):
    channel: str
    status: str
    count: int


class SendProgress(msgspec.Struct, kw_only=True):
    id: str
    audience: AudienceKind
    segment_id: str | None
    topic: Annotated[str | None, Meta(description="The topic's slug, for a topic send.")] = None
    category: str | None
    status: SendStatus
    error: str | None
    recipients: SendRecipients
    channels: Annotated[
        list[SendChannelCount],
        Meta(description="The send's channel deliveries per channel and status."),
    ]
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


def _may_send_to_audiences(request: web.Request, field: str) -> None:
    key = request[API_KEY]
    if key.role == ADMIN or key.may_broadcast:
        return
    raise ApiError(
        ErrorCode.FORBIDDEN,
        "this API key may not send to every user or a segment: use an admin key, or a "
        "publisher key created with broadcast: true",
        field=field,
    )


def _check_alone(request: web.Request, body: SendNotification, field: str) -> None:
    others = [
        name
        for name in ("user_id", "external_id", "topic", "broadcast", "segment")
        if name != field and getattr(body, name) is not None
    ]
    if others:
        raise validation_error(
            f"give one of user_id, external_id, topic, broadcast and segment, not {field} "
            f"and {others[0]}",
            field,
        )
    for name in _NOT_WITH_AUDIENCE:
        if getattr(body, name, None) is not None:
            raise validation_error(f"{name} is not supported with {field} yet", name)
    if IDEMPOTENCY_HEADER in request.headers:
        raise validation_error(
            f"Idempotency-Key is not supported with {field}: the send id names the send",
            IDEMPOTENCY_HEADER,
        )


async def _audience(request: web.Request, body: SendNotification) -> dict[str, object]:
    if body.broadcast is not None:
        return {"kind": "broadcast"}
    if isinstance(body.segment, str):
        segment = await load_segment(request.app[STORAGE], body.segment, field="segment")
        return {"kind": "segment", "segment_id": segment.id, "filter": segment.filter}
    parse_filter(body.segment, "segment")
    return {"kind": "segment", "filter": body.segment}


async def accept_audience_send(request: web.Request, body: SendNotification, *, now: int) -> Reply:
    """Store a broadcast or segment send (checked by the caller like a single send:
    content, size, category, channel plan) and answer 202 with its id."""
    field = "broadcast" if body.broadcast is not None else "segment"
    _may_send_to_audiences(request, field)
    _check_alone(request, body, field)
    audience = await _audience(request, body)
    return await store_send(request, body, audience, now=now)


async def store_send(
    request: web.Request, body: SendNotification, audience: dict[str, object], *, now: int
) -> Reply:
    """Write the send (`body` sealed, `audience` as the fan-out reads it), wake the
    fan-out and answer 202 with the send's id: the answer of every fanned-out send. A
    template is stored at the version it has now (404 if there is none): the fan-out
    renders that version for every recipient, whatever is saved meanwhile."""
    body = await pin_template_version(request, body)
    send = NewSend(
        id=new_id("snd"),
        audience=audience,
        content=_body_encoder.encode(body).decode(),
        category=body.category,
        api_key_id=request[API_KEY].id,
        created_at=now,
    )
    record = await request.app[STORAGE].create_send(send)
    request.app[AUDIENCES].wake()
    request[AUDIT_TARGET] = f"send:{record.id}"
    named = audience.get("segment_id") or audience.get("topic") or audience["kind"]
    request[AUDIT_DETAIL] = {"audience": named}
    accepted = SendAccepted(
        send_id=record.id,
        audience=_kind(record),
        status="pending",
        created_at=from_ms(now),
        topic=_topic(record),
    )
    return Reply(202, accepted, {"Location": f"/api/sends/{record.id}"})


def _kind(send: SendRecord) -> AudienceKind:
    kind = send.audience.get("kind")
    if kind == "broadcast":
        return "broadcast"
    return "topic" if kind == "topic" else "segment"


def _topic(send: SendRecord) -> str | None:
    topic = send.audience.get("topic")
    return topic if isinstance(topic, str) else None


def _status(send: SendRecord) -> SendStatus:
    status = send.status
    assert status in ("pending", "running", "done", "failed")
    return status  # type: ignore[return-value]  # checked above


async def get_send(request: web.Request, _body: None, _query: None) -> Reply:
    send_id = request.match_info["sendId"]
    storage = request.app[STORAGE]
    send = await storage.get_send(send_id)
    allowed = request[API_KEY].categories
    # Outside a limited key's categories it is "not found": a 403 would confirm it exists.
    if send is None or (allowed is not None and send.category not in allowed):
        raise ApiError(ErrorCode.NOT_FOUND, f"no send with id {send_id!r}", field="sendId")
    counts = await storage.send_delivery_counts(send.id)
    segment_id = send.audience.get("segment_id")
    progress = SendProgress(
        id=send.id,
        audience=_kind(send),
        segment_id=segment_id if isinstance(segment_id, str) else None,
        topic=_topic(send),
        category=send.category,
        status=_status(send),
        error=send.error,
        recipients=SendRecipients(
            resolved=send.resolved,
            committed=send.committed,
            skipped=send.skipped,
            acked=await storage.send_acked(send.id),
        ),
        channels=[
            SendChannelCount(channel=c.channel, status=c.status, count=c.count) for c in counts
        ],
        created_at=from_ms(send.created_at),
        updated_at=from_ms(send.updated_at),
        finished_at=opt_from_ms(send.finished_at),
    )
    return Reply(200, progress)


ROUTES = [
    Route(
        "GET",
        "/api/sends/{sendId}",
        get_send,
        "The progress of a broadcast, segment or topic send: users resolved, notifications "
        "committed and skipped, acknowledged, and channel deliveries per channel and status",
        {200: SendProgress},
        tag="audiences",
    ),
]
