"""Request and response bodies of the HTTP API. The OpenAPI document is generated from
these types, and requests are decoded with them, so the two cannot disagree."""

from __future__ import annotations

import functools
import zoneinfo
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from pushd.ids import from_ms
from pushd.routing.plan import ChannelContent, PlanStep, Priority
from pushd.routing.templates import TEMPLATE_ID_PATTERN
from storage.records import DeviceRecord, UserRecord

Meta = msgspec.Meta

ExternalId = Annotated[
    str, Meta(min_length=1, max_length=255, description="The application's own id for the user.")
]
Name = Annotated[str, Meta(min_length=1, max_length=200)]
Email = Annotated[
    str,
    Meta(
        max_length=320,
        # Explicit classes, not \s: Python's and JSON Schema's (ECMA) \s differ.
        pattern=r"^[^@\x00-\x20]+@[^@\x00-\x20]+\.[^@\x00-\x20]+$",
        description="An e-mail address (local@domain.tld).",
    ),
]
Phone = Annotated[
    str,
    Meta(pattern=r"^\+[1-9][0-9]{1,14}$", description="E.164: + then up to 15 digits."),
]
Locale = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$",
        max_length=35,
        description="BCP 47 language tag, e.g. `en` or `pt-BR`.",
    ),
]
TimeZone = Annotated[
    str, Meta(min_length=1, max_length=64, description="IANA time zone, e.g. `Europe/Paris`.")
]
Category = Annotated[
    str,
    Meta(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$", description="Lower-case slug, 1-64 chars."),
]
MAX_TAGS = 64
Tag = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$",
        description="1-64 characters: letters, digits, `_ . : -` (not first).",
    ),
]
Tags = Annotated[
    list[Tag],
    Meta(
        max_length=MAX_TAGS,
        description=f"A set of up to {MAX_TAGS} tags (repeats are dropped), stored in "
        "plaintext: not for personal data.",
    ),
]
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTES_BYTES = 4096
AttributeKey = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")]
Attributes = Annotated[
    dict[AttributeKey, Annotated[str, Meta(max_length=1024)] | int | float | bool],
    Meta(
        max_length=MAX_ATTRIBUTES,
        description=f"A flat object of up to {MAX_ATTRIBUTES} strings, numbers and booleans, "
        f"at most {MAX_ATTRIBUTES_BYTES} bytes as JSON; encrypted at rest.",
    ),
]
Base64Url = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]+={0,2}$", min_length=16, max_length=200)]


@functools.cache
def _timezone_set() -> frozenset[str]:
    # Walks the tz database on disk: the app calls it once at start-up, off the loop.
    return frozenset(zoneinfo.available_timezones())


def known_timezones() -> list[str]:
    """The IANA zones this machine's tz database knows, sorted."""
    return sorted(_timezone_set())


def is_known_timezone(name: str) -> bool:
    """Whether `name` is an IANA zone this machine's tz database knows."""
    return name in _timezone_set()


# users -------------------------------------------------------------------------------


class CreateUser(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A new user. Every field is optional; `external_id` must be unique when given."""

    external_id: ExternalId | None = None
    name: Name | None = None
    email: Email | None = None
    phone: Phone | None = None
    locale: Locale | None = None
    timezone: TimeZone | None = None
    tags: Tags | None = None
    attributes: Attributes | None = None


class UpdateUser(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Replace the user's tags, attributes, or both (a field left out is kept)."""

    tags: Tags | None = None
    attributes: Attributes | None = None


class User(msgspec.Struct, kw_only=True):
    id: str
    external_id: str | None
    name: str | None
    email: str | None
    phone: str | None
    locale: str | None
    timezone: str | None
    created_at: datetime
    last_seq: Annotated[int, Meta(description="Seq of the user's newest notification.")]
    tags: list[str]
    attributes: dict[str, str | int | float | bool]

    @classmethod
    def of(cls, record: UserRecord) -> User:
        return cls(
            id=record.id,
            external_id=record.external_id,
            name=record.name,
            email=record.email,
            phone=record.phone,
            locale=record.locale,
            timezone=record.timezone,
            created_at=from_ms(record.created_at),
            last_seq=record.last_seq,
            tags=list(record.tags),
            attributes=record.attributes,
        )


class UserPage(msgspec.Struct):
    items: list[User]
    next_cursor: Annotated[
        str | None, Meta(description="Pass as `cursor` for the next page; null at the end.")
    ]


# devices -----------------------------------------------------------------------------


class WebPushKeys(msgspec.Struct, forbid_unknown_fields=True):
    p256dh: Base64Url
    auth: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]+={0,2}$", min_length=16, max_length=64)]


class WebPushDevice(msgspec.Struct, tag="webpush", tag_field="kind", forbid_unknown_fields=True):
    """A browser's push subscription (`PushSubscription.toJSON()`)."""

    # An explicit class, not \S: Python's and JSON Schema's (ECMA) \s differ.
    endpoint: Annotated[str, Meta(pattern=r"^https://[^\x00-\x20\x7f]+$", max_length=2048)]
    keys: WebPushKeys


class FcmDevice(msgspec.Struct, tag="fcm", tag_field="kind", forbid_unknown_fields=True):
    """An Android/iOS app registered with Firebase Cloud Messaging."""

    token: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_:\-.]+$", min_length=16, max_length=4096)]


class ApnsDevice(msgspec.Struct, tag="apns", tag_field="kind", forbid_unknown_fields=True):
    """An Apple device token (hex), with the app's bundle id as `topic`."""

    token: Annotated[str, Meta(pattern=r"^[0-9a-fA-F]{64,200}$")]
    topic: Annotated[str, Meta(min_length=1, max_length=255)] | None = None


CreateDevice = WebPushDevice | FcmDevice | ApnsDevice


class Device(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    user_id: str
    kind: Literal["webpush", "fcm", "apns"]
    endpoint: str | None = None
    keys: WebPushKeys | None = None
    token: str | None = None
    topic: str | None = None
    created_at: datetime

    @classmethod
    def of(cls, record: DeviceRecord) -> Device:
        kind: Any = record.kind
        device = cls(
            id=record.id, user_id=record.user_id, kind=kind, created_at=from_ms(record.created_at)
        )
        if record.kind == "webpush":
            device.endpoint = record.address
            device.keys = WebPushKeys(record.details["p256dh"], record.details["auth"])
        else:
            device.token = record.address
            device.topic = record.details.get("topic")
        return device


def device_address_and_details(device: CreateDevice) -> tuple[str, dict[str, str]]:
    """Split a device into what identifies it at its provider and the kind's extras."""
    match device:
        case WebPushDevice(endpoint=endpoint, keys=keys):
            return endpoint, {"p256dh": keys.p256dh, "auth": keys.auth}
        case ApnsDevice(token=token, topic=topic):
            return token, ({"topic": topic} if topic else {})
        case FcmDevice(token=token):
            return token, {}


class DeviceList(msgspec.Struct):
    items: list[Device]


# notifications -----------------------------------------------------------------------


MAX_TTL_SECONDS = 31_536_000  # one year

DeliveryStatus = Literal["queued", "sent", "delivered", "read", "expired", "failed"]
ChannelDeliveryStatus = Literal[
    "scheduled", "queued", "sending", "sent", "delivered", "failed", "skipped", "cancelled"
]
DeliveryChannel = Literal["email", "webpush", "fcm", "apns", "sms", "webhook", "push"]
MAX_PLAN_STEPS = 16


_RECIPIENTS = ("user_id", "external_id", "topic", "broadcast", "segment")


def _given(field: str) -> dict[str, Any]:
    return {"required": [field], "properties": {field: {"type": "string"}}}


# The longest `delay` of a scheduled send: one year.
MAX_SCHEDULE_DELAY_SECONDS = 31_536_000


class SendNotification(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Send now to one user, named by `user_id` or by `external_id`, to every
    subscriber of a `topic`, to every user (`broadcast`) or to a `segment` (exactly one
    of the five). At least one of `title` and
    `body` is required, or a `template` instead of them (and of `content`)."""

    # The two rules above, which the handler checks, as JSON Schema for the document.
    __openapi_extra__: ClassVar[dict[str, Any]] = {
        "allOf": [
            {"anyOf": [_given("title"), _given("body"), _given("template")]},
            {
                "oneOf": [
                    {
                        "required": [one],
                        "not": {"anyOf": [{"required": [o]} for o in _RECIPIENTS if o != one]},
                    }
                    for one in _RECIPIENTS
                ]
            },
        ]
    }

    user_id: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    external_id: ExternalId | None = None
    topic: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=64,
                description="A topic's slug: one notification to each of its subscribers, "
                "fanned out in the background (answered with a `SendAccepted`).",
            ),
        ]
        | None
    ) = None
    broadcast: (
        Annotated[
            Literal[True],
            Meta(
                description="true: one notification to every user, fanned out in the "
                "background (answered with a `SendAccepted`; admin keys, or publisher keys "
                "created with `broadcast`)."
            ),
        ]
        | None
    ) = None
    segment: (
        Annotated[
            str | dict[str, Any],
            Meta(
                description="A saved segment's id (`POST /api/segments`) or a filter "
                "(docs/audiences.md): one notification to each matching user, fanned out "
                "in the background (answered with a `SendAccepted`; same keys as "
                "`broadcast`)."
            ),
        ]
        | None
    ) = None
    title: Annotated[str, Meta(max_length=1024)] | None = None
    body: Annotated[str, Meta(max_length=16384)] | None = None
    data: (
        Annotated[
            dict[str, Any], Meta(description="Free-form JSON object handed to the client as is.")
        ]
        | None
    ) = None
    category: Category | None = None
    priority: Priority = "normal"
    ttl: (
        Annotated[
            float,
            Meta(
                ge=1,
                le=MAX_TTL_SECONDS,
                multiple_of=1,
                description="Whole seconds until it is no longer delivered (not with "
                "`expires_at`).",
            ),
        ]
        | None
    ) = None
    expires_at: (
        Annotated[
            datetime,
            Meta(
                tz=True,
                description="Instant after which it is no longer delivered (not with `ttl`).",
            ),
        ]
        | None
    ) = None
    # Scheduled sends (pushd/api/scheduled.py): at most one of the three.
    send_at: (
        Annotated[
            datetime,
            Meta(
                tz=True,
                description="Deliver at this instant (RFC 3339, not in the past) instead of "
                "now: answered 202 with `status: scheduled` and no seq yet (README, "
                "Scheduled sends). Not with `delay` or `deliver_at_local`.",
            ),
        ]
        | None
    ) = None
    delay: (
        Annotated[
            float,
            Meta(
                ge=0,
                le=MAX_SCHEDULE_DELAY_SECONDS,
                description="Deliver this many seconds from now (a scheduled send).",
            ),
        ]
        | None
    ) = None
    deliver_at_local: (
        Annotated[
            str,
            Meta(
                pattern=r"^(([01]\d|2[0-3]):[0-5]\d|best)$",
                description="Deliver the next time the recipient's wall clock reads HH:MM, "
                "in their `timezone` (else `routing.default_timezone`); a time skipped by a "
                "daylight-saving change is delivered when the clock jumps (a scheduled send). "
                "`best`: at the hour the recipient has read most often lately, within the "
                "category's `send_window` (`routing.best_hour_default` without enough "
                "history); each channel delivery's `decision` says why.",
            ),
        ]
        | None
    ) = None
    channels: (
        Annotated[
            list[PlanStep],
            Meta(
                max_length=MAX_PLAN_STEPS,
                description="The channel plan: steps beyond the socket (docs/channels.md). "
                "Absent: the plan configured for the category (`channels.plans`); empty: "
                "in-app only. A step whose channel has no provider on this server is a 422.",
            ),
        ]
        | None
    ) = None
    content: (
        Annotated[
            ChannelContent,
            Meta(description="Per-channel content; what is left out is derived from title/body."),
        ]
        | None
    ) = None
    template: (
        Annotated[
            str,
            Meta(
                pattern=TEMPLATE_ID_PATTERN,
                description="A stored template's id (`PUT /api/templates/{templateId}`), "
                "rendered for each recipient with `data` and the user's profile, in the "
                "user's locale: the title, body and per-channel content. Not with "
                "`title`, `body` or `content`.",
            ),
        ]
        | None
    ) = None
    template_version: (
        Annotated[
            int,
            Meta(
                ge=1,
                le=2_147_483_647,
                description="That version of `template` (default: its latest).",
            ),
        ]
        | None
    ) = None


class NotificationAccepted(msgspec.Struct, kw_only=True):
    """The notification is committed to storage; delivery proceeds asynchronously."""

    id: str
    user_id: str
    seq: int
    created_at: datetime


class Notification(msgspec.Struct, kw_only=True):
    id: str
    user_id: str
    seq: int
    title: str | None
    body: str | None
    data: dict[str, Any] | None
    category: str | None
    priority: Priority
    created_at: datetime
    expires_at: datetime | None
    read_at: datetime | None
    status: Annotated[
        DeliveryStatus,
        Meta(description="In-app delivery status (see `deliveries` on the single notification)."),
    ]
    data_unreadable: Annotated[
        bool,
        Meta(
            description="true: the stored `data` could not be decoded (nested deeper than "
            "128 levels, stored before depth was limited) and `data` is null instead."
        ),
    ] = False
    version: Annotated[
        int, Meta(description="1 when sent; raised by each edit (PATCH) and by the retract.")
    ] = 1
    updated_at: Annotated[
        datetime | None, Meta(description="When it was last edited or retracted.")
    ] = None
    retracted_at: Annotated[
        datetime | None,
        Meta(description="When it was retracted (DELETE): title, body and data are null."),
    ] = None


class Delivery(msgspec.Struct, kw_only=True):
    """One channel's delivery of a notification; the status only moves forward:
    queued -> sent -> delivered -> read, or queued/sent -> expired or failed."""

    channel: Literal["inapp"]
    status: DeliveryStatus
    queued_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None
    expired_at: datetime | None
    failed_at: datetime | None
    last_error: str | None


class ChannelDelivery(msgspec.Struct, kw_only=True):
    """One step of the notification's channel plan for one address (docs/channels.md):
    scheduled (due later) -> queued (due) -> sending -> sent, then delivered where the
    provider reports it, or failed; skipped and cancelled ones were never sent."""

    id: str
    channel: Annotated[
        DeliveryChannel,
        Meta(description="`push`: a push step for a user without any push device (skipped)."),
    ]
    device_id: str | None
    endpoint_id: Annotated[str | None, Meta(description="Webhook deliveries: the endpoint.")]
    status: ChannelDeliveryStatus
    reason: Annotated[
        str | None,
        Meta(
            description="Why skipped (`no_address`, `no_provider`, `preference`), "
            "deferred (`quiet_hours`: status `scheduled`, due when the user's quiet hours "
            "end) or cancelled (`read`, `expired`)."
        ),
    ]
    due_at: Annotated[datetime, Meta(description="When it is (or was last) due.")]
    attempts: Annotated[int, Meta(description="Sends so far, through any provider.")]
    provider: Annotated[str | None, Meta(description="The provider of the last attempt.")]
    fallback: Annotated[
        bool, Meta(description="true: sent (or tried) through another than the channel's first")
    ]
    provider_message_id: str | None
    last_error: str | None
    updated_at: datetime
    decision: Annotated[
        dict[str, Any] | None,
        Meta(
            description="Why delivery optimisation planned it so (README, Delivery "
            'optimisation): `time` for `deliver_at_local: "best"` (the hour chosen and '
            'the reads behind it), `order` for a category with `channel_order: "engagement"` '
            "(the median seconds from send to read per channel). null: planned as given."
        ),
    ] = None


class NotificationDetail(Notification, kw_only=True):
    deliveries: Annotated[list[Delivery], Meta(description="The in-app delivery.")]
    channel_deliveries: Annotated[
        list[ChannelDelivery], Meta(description="Beyond the socket, by due time then channel.")
    ]


class DeliveryEvent(msgspec.Struct, kw_only=True):
    """A status change of the in-app delivery, or of a channel delivery (then with its
    id and, for an attempt, the provider's answer)."""

    channel: Literal["inapp"] | DeliveryChannel
    status: DeliveryStatus | ChannelDeliveryStatus
    at: datetime
    error: str | None = None
    delivery_id: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    provider_code: str | None = None
    duration_ms: int | None = None
    fallback: bool = False
    detail: Annotated[
        dict[str, Any] | None, Meta(description="e.g. SMS {`encoding`, `segments`}.")
    ] = None


class DeliveryEventList(msgspec.Struct):
    """Every status transition of every channel, oldest first."""

    items: list[DeliveryEvent]


class VapidPublicKey(msgspec.Struct):
    public_key: Annotated[
        str,
        Meta(
            description="base64url of the uncompressed P-256 point: the "
            "`applicationServerKey` of `pushManager.subscribe()`."
        ),
    ]


class NotificationPage(msgspec.Struct):
    items: list[Notification]
    next_cursor: Annotated[
        str | None, Meta(description="Pass as `cursor` for the next (older) page; null at the end.")
    ]
    unread_count: Annotated[
        int,
        Meta(
            description="The user's unread notifications in all (for a key limited to "
            "categories: of those categories)."
        ),
    ]
    scheduled: Annotated[
        list[ScheduledNotificationView],
        Meta(
            description="On the first page (no `cursor`): the user's sends scheduled for "
            "later or cancelled before their release, oldest accepted first, at most `limit` "
            "(all of them: `GET /api/notifications/user/{userId}/scheduled`). They have no "
            "seq yet; once released they are in `items`."
        ),
    ] = msgspec.field(default_factory=list)


class ReadIds(msgspec.Struct, forbid_unknown_fields=True):
    ids: Annotated[
        list[Annotated[str, Meta(min_length=1, max_length=64)]], Meta(min_length=1, max_length=100)
    ]


class ReadResult(msgspec.Struct, kw_only=True):
    marked: Annotated[int, Meta(description="How many were unread and are read now.")]
    through_seq: int | None = None


# tokens ------------------------------------------------------------------------------


# JSON Schema counts 295.0 as an integer and clients may compute seconds as floats, but
# msgspec's `int` refuses 295.0 (found by schemathesis): whole numbers of seconds are
# decoded as floats that must be whole (`multipleOf: 1` in the document), then int()-ed.
WholeSeconds = Annotated[float, Meta(ge=1, multiple_of=1)]


class IssueToken(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    ttl: (
        Annotated[WholeSeconds, Meta(description="Lifetime in seconds (default from config).")]
        | None
    ) = None


class TokenIssued(msgspec.Struct):
    token: str
    expires_at: datetime


# health ------------------------------------------------------------------------------


class ComponentHealth(msgspec.Struct, omit_defaults=True):
    ok: bool
    backend: str
    error: str | None = None


class Health(msgspec.Struct):
    status: Literal["ok", "unavailable"]
    storage: ComponentHealth
    bus: ComponentHealth
    state: ComponentHealth


# scheduled sends (pushd/api/scheduled.py) ------------------------------------------------

ScheduledStatus = Literal["scheduled", "cancelled"]


class ScheduledAccepted(msgspec.Struct, kw_only=True):
    """The notification is stored and will be committed to the user's mailbox (and take
    its seq) at `send_at`."""

    id: str
    user_id: str
    status: Literal["scheduled"] = "scheduled"
    send_at: Annotated[datetime, Meta(description="When it is due.")]
    created_at: Annotated[datetime, Meta(description="When it was accepted.")]


class ScheduledNotificationView(msgspec.Struct, kw_only=True):
    """A scheduled send not released yet, or cancelled. Released ones are ordinary
    notifications (with their seq) under the same id."""

    id: str
    user_id: str
    status: ScheduledStatus
    seq: Annotated[None, Meta(description="Always null: a seq is taken at release.")] = None
    send_at: datetime
    created_at: Annotated[datetime, Meta(description="When it was accepted.")]
    cancelled_at: datetime | None
    title: str | None
    body: str | None
    data: dict[str, Any] | None
    category: str | None
    priority: Priority
    expires_at: datetime | None
    planned_channels: Annotated[
        list[str], Meta(description="The channels of its plan's steps, in plan order.")
    ]
    decision: Annotated[
        dict[str, Any] | None,
        Meta(
            description='Why it is due when it is, for `deliver_at_local: "best"`: '
            '`{"time": {"time": "best", "hour": 19, "reads": 42, ...}}` or '
            '`{"time": {"time": "default", "reads": 3, ...}}`. null: a time given.'
        ),
    ] = None


class ScheduledPage(msgspec.Struct):
    items: list[ScheduledNotificationView]
    next_cursor: Annotated[
        str | None, Meta(description="Pass as `cursor` for the next page; null at the end.")
    ]
