"""Rows as the storage layer hands them out. Timestamps are Unix epoch milliseconds (UTC)."""

from __future__ import annotations

import time
from typing import Any

import msgspec

# A user attribute's value: flat, no nesting (storage/migrations/0010).
AttributeValue = str | int | float | bool


def now_ms() -> int:
    """Wall-clock time in Unix epoch milliseconds, the unit every timestamp here is in."""
    return time.time_ns() // 1_000_000


class NewUser(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    external_id: str | None = None
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    locale: str | None = None
    timezone: str | None = None
    created_at: int
    tags: tuple[str, ...] = ()
    """Distinct, sorted (the API makes them so)."""
    attributes: dict[str, AttributeValue] = msgspec.field(default_factory=dict)


class UserLabels(msgspec.Struct, frozen=True, kw_only=True):
    """A change of a user's tags and attributes: each replaced when not None."""

    tags: tuple[str, ...] | None = None
    attributes: dict[str, AttributeValue] | None = None


class UserRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    external_id: str | None
    name: str | None
    email: str | None
    phone: str | None
    locale: str | None
    timezone: str | None
    created_at: int
    last_seq: int
    """Highest seq ever assigned to this user's notifications (0 = none yet)."""
    ack_seq: int
    """Highest seq the user's clients acknowledged (cumulative)."""
    sent_seq: int = 0
    """Highest seq written to any of the user's sockets (cumulative)."""
    tags: tuple[str, ...] = ()
    attributes: dict[str, AttributeValue] = msgspec.field(default_factory=dict)


class NewDevice(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    user_id: str
    kind: str
    """`webpush`, `fcm` or `apns`; validated at the edge."""
    address: str
    """What identifies the device at its provider: the web push endpoint or the FCM/APNs token."""
    details: dict[str, str]
    """Kind-specific extras: web push keys (`p256dh`, `auth`), APNs `topic`."""
    created_at: int


class DeviceRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    user_id: str
    kind: str
    address: str
    details: dict[str, str]
    created_at: int


class NewNotification(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    user_id: str
    title: str | None = None
    body: str | None = None
    data: dict[str, Any] | None = None
    category: str | None = None
    priority: str = "normal"
    created_at: int
    expires_at: int | None = None
    """Not delivered after this instant (epoch ms); None: never expires."""
    idempotency: IdempotencyClaim | None = None
    """Stored with the notification in the same transaction, when given."""
    deliveries: tuple[PlannedDelivery, ...] = ()
    """Its channel plan, one row per step and address, committed in the same transaction
    (storage/areas/channel_deliveries.py)."""
    channel_content: dict[str, dict[str, str]] | None = None
    """Per-channel content overriding title/body: {"email": {"subject", "html", "text"},
    "push": {"title", "body"}, "sms": {"text"}}. Sealed at rest like the body."""
    send_id: str | None = None
    """The broadcast or segment send it was fanned out for (storage/areas/sends.py);
    a send has at most one notification per user."""


class IdempotencyClaim(msgspec.Struct, frozen=True, kw_only=True):
    """An `Idempotency-Key` to record for the notification it arrived with."""

    scope: str
    """Whose key it is (the API key id): two callers' keys never collide."""
    key: str
    request_hash: str


class IdempotencyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A stored `Idempotency-Key` and the notification it produced."""

    scope: str
    key: str
    request_hash: str
    notification_id: str
    user_id: str
    seq: int
    created_at: int


class NotificationRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    user_id: str
    seq: int
    title: str | None
    body: str | None
    data: dict[str, Any] | None
    category: str | None
    priority: str
    created_at: int
    expires_at: int | None = None
    read_at: int | None = None
    dropped_at: int | None = None
    """When a socket was sent a `gap` over it instead (it will never be delivered)."""
    dropped_reason: str | None = None
    """`expired` or `not_retained`, with `dropped_at`."""
    gid: int = 0
    """Global commit order (for the outbox relay); 0 where not read."""
    data_unreadable: bool = False
    """The stored `data` could not be decoded (nested deeper than
    `storage.jsondepth.CEILING`, or not a JSON object): `data` is None instead."""
    version: int = 1
    """1 at insert, raised by each edit and by the retract (migration 0016)."""
    updated_at: int | None = None
    """When it was last edited or retracted."""
    retracted_at: int | None = None
    """When it was retracted: title, body and data are None from then on."""


class MarkedRead(msgspec.Struct, frozen=True, kw_only=True):
    """A notification that `Storage.mark_read` marked read: its id and category (read
    sync tells only the sockets that may see that category)."""

    id: str
    category: str | None


class CursorTimes(msgspec.Struct, frozen=True, kw_only=True):
    """When a user's cursors first reached one seq (epoch ms), None if not yet."""

    sent_at: int | None
    acked_at: int | None


class ApiKeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    role: str
    key_hash: str
    """Hex SHA-256 of the secret key; the key itself is never stored."""
    created_at: int
    revoked_at: int | None = None
    categories: tuple[str, ...] | None = None
    """Notification categories the key is limited to; None: not limited."""
    may_broadcast: bool = False
    """A publisher key that may send to every user or a segment (admin keys always may)."""


# access control (issue #4) ------------------------------------------------------------


class NewAuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One audited action, before the database numbers it."""

    at: int
    actor: str
    """Who: `key:<id>` (API key), `user:<id>` (token subject), `cli`, or `anonymous`."""
    action: str
    """What, as `noun.verb`: `user.create`, `notification.send`, `key.revoke`, ..."""
    target: str | None = None
    """On what: `user:<id>`, `key:<id>`, ..."""
    source: str | None = None
    """The peer address of the request (None for the CLI)."""
    result: str
    """The HTTP status as text (`"202"`, `"403"`), or `ok` / `error` for the CLI."""
    detail: dict[str, Any] | None = None


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    """Assigned by the database in insertion order; the pagination cursor."""
    at: int
    actor: str
    action: str
    target: str | None
    source: str | None
    result: str
    detail: dict[str, Any] | None


# data protection (issue #4) ------------------------------------------------------------


class CursorHistoryRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One advance of a user's cursor (`sent` or `acked`) to `seq`, at `at`."""

    cursor: str
    seq: int
    at: int


# channel deliveries (issue #12) ---------------------------------------------------------


class PlannedDelivery(msgspec.Struct, frozen=True, kw_only=True):
    """One step of a notification's channel plan for one address, decided at accept time
    and committed with the notification (its `seq` and ids come from the notification)."""

    id: str
    """`dlv_` id."""
    channel: str
    """"email", "webpush", "fcm", "apns", "sms" or "webhook"."""
    due_at: int
    """Epoch ms; absolute (routing turned delays and quiet hours into instants)."""
    device_id: str | None = None
    """Push channels: the device. Email and SMS: None (the user's contact field)."""
    endpoint_id: str | None = None
    """Webhook: the endpoint."""
    cancel_on_read: bool = True
    """A read or an ack of the notification cancels this step while it is unsent."""
    status: str = "scheduled"
    """"scheduled" (due later), "queued" (due now) or "skipped" (decided at accept)."""
    reason: str | None = None
    """Why skipped ("no_provider", "no_address", "preference"), or why a step is due
    later than its plan said ("quiet_hours")."""
    event: dict[str, Any] | None = None
    """Webhook rows: the event to POST ({"id", "type", ...}); sealed at rest."""
    decision: dict[str, Any] | None = None
    """Why it was planned so, when delivery optimisation decided (pushd/routing/
    engagement.py): {"time": ...} for a best-hour send, {"order": ...} for a plan
    ordered by engagement."""


class LeasedDelivery(msgspec.Struct, frozen=True, kw_only=True):
    """A due delivery as a worker leases it: everything needed to send, read at once."""

    id: str
    notification_id: str
    user_id: str
    channel: str
    attempts: int
    """Attempts including this one."""
    first_due_at: int
    """When the step was first due: the age bound of retries counts from here."""
    address: dict[str, str]
    """Resolved at lease time: email {"email"}, sms {"phone"}, webpush {"endpoint",
    "p256dh", "auth"}, fcm {"token"}, apns {"token", "topic"}, webhook {"url",
    "secret"}; {} when the device or contact field is gone."""
    device_id: str | None
    endpoint_id: str | None
    title: str | None
    body: str | None
    data: dict[str, Any] | None
    content: dict[str, str] | None
    """This channel's part of the notification's `channel_content` ("push" for the
    three push channels)."""
    category: str | None
    priority: str
    created_at: int
    expires_at: int | None
    event: dict[str, Any] | None = None
    """Webhook rows: the event to POST (PlannedDelivery.event)."""


class DeliveryOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one attempt came to; a worker records a batch of them per round."""

    delivery_id: str
    at: int
    status: str
    """The row's new status: "sent", "queued" (retry at `next_due_at`), "failed",
    "skipped" or "cancelled"."""
    provider: str | None = None
    next_due_at: int | None = None
    fallback: bool = False
    """Sent (or tried) through a provider other than the channel's first."""
    provider_message_id: str | None = None
    error: str | None = None
    provider_code: str | None = None
    detail: dict[str, Any] | None = None
    """Worth keeping, e.g. {"encoding": "GSM-7", "segments": 2}."""
    duration_ms: int | None = None
    remove_device: bool = False
    """The address is gone for good: delete `device_id` in the same transaction."""
    attempt: int | None = None
    """`LeasedDelivery.attempts` of the lease this outcome ends. Given, the outcome is
    applied only while the row is still under that lease: a worker whose lease ran out
    and whose row was leased again (by another node) cannot overwrite the new attempt."""
    send_attempted: bool = True
    """False: no provider was called (every breaker open, no address to send to). The
    lease counted an attempt; storage gives it back (attempts - 1) in the same update, so
    that waiting out open breakers spends none of the delivery's `max_attempts`."""


class ChannelDeliveryRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    notification_id: str
    user_id: str
    seq: int
    channel: str
    device_id: str | None
    endpoint_id: str | None
    status: str
    reason: str | None
    due_at: int
    attempts: int
    provider: str | None
    fallback: bool
    provider_message_id: str | None
    last_error: str | None
    created_at: int
    updated_at: int
    decision: dict[str, Any] | None = None
    """See `PlannedDelivery.decision`."""


class DeliveryAttemptRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One row of a delivery's history: an attempt, or a status change without one
    (cancelled, skipped, a provider's receipt)."""

    delivery_id: str
    at: int
    status: str
    provider: str | None
    provider_message_id: str | None
    provider_code: str | None
    error: str | None
    detail: dict[str, Any] | None
    duration_ms: int | None
    fallback: bool


class ChannelQueueStats(msgspec.Struct, frozen=True, kw_only=True):
    channel: str
    due: int
    """Scheduled or queued rows with due_at <= now."""
    scheduled: int
    """Rows due later."""
    sending: int
    oldest_due_at: int | None
    """The smallest due_at among due rows (the queue-age gauge)."""


class FailedDeliveryRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A channel delivery's history row that made it failed (a permanent error, the
    last retry, or a provider's receipt), with what the console shows of its delivery."""

    history_id: int
    """The history row's id: the cursor of `latest_failed_deliveries`."""
    delivery_id: str
    notification_id: str
    user_id: str
    channel: str
    provider: str | None
    provider_code: str | None
    error: str | None
    at: int
    attempts: int


# preferences (issue #13) and webhook endpoints (issue #12) --------------------------------


class PreferencesRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What a user chose to receive (issue #13); defaults where nothing is stored."""

    user_id: str
    muted: bool = False
    """Global mute: no channel step beyond the socket (but in mandatory categories)."""
    quiet_hours: dict[str, Any] | None = None
    """The user's own quiet hours (JSON; pushd/routing/quiet_hours.py reads it); None:
    the server's default."""
    channels: dict[str, dict[str, bool]] = msgspec.field(default_factory=dict)
    """category ("" for none) -> preference channel -> on/off; absent: the default (on)."""
    updated_at: int | None = None
    """Epoch ms of the last change; None when the user never set anything."""


class PreferencesChange(msgspec.Struct, frozen=True, kw_only=True):
    """A change of a user's preferences, applied in one transaction. UNSET: unchanged."""

    muted: bool | msgspec.UnsetType = msgspec.UNSET
    quiet_hours: dict[str, Any] | msgspec.UnsetType | None = msgspec.UNSET
    channels: dict[str, dict[str, bool | None]] = msgspec.field(default_factory=dict)
    """category -> channel -> on/off; None: back to the default (the row is removed)."""
    replace_channels: bool = False
    """True: every switch not in `channels` is removed first (a PUT)."""


class WebhookSecret(msgspec.Struct, frozen=True, kw_only=True):
    """One signing secret of a webhook endpoint (the value is sealed at rest)."""

    id: str
    """`whs_` id; secrets are inserted and deleted, never updated."""
    secret: str
    created_at: int
    expires_at: int | None = None
    """None: the current secret; else the instant a rotated-out secret stops signing."""


class NewWebhookEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    """`whk_` id."""
    url: str
    event_types: tuple[str, ...]
    description: str | None = None
    secret: WebhookSecret
    """Its first secret."""
    created_at: int


class WebhookSecretState(msgspec.Struct, frozen=True, kw_only=True):
    """A secret as listed: when it was made and until when it signs, never its value."""

    id: str
    created_at: int
    expires_at: int | None


class WebhookEndpointRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    url: str
    description: str | None
    event_types: tuple[str, ...]
    enabled: bool
    disabled_reason: str | None
    """Why pushd stopped sending to it (410 Gone, too many failures); None while enabled."""
    disabled_at: int | None
    consecutive_failures: int
    """Events failed for good in a row (permanently, or past the attempt limit)."""
    created_at: int
    updated_at: int
    secrets: tuple[WebhookSecretState, ...]
    """The secrets that sign now, newest first."""


class DeliveryUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """A channel delivery whose new status (sent, delivered, failed) webhooks are told
    about (`delivery.updated`)."""

    delivery_id: str
    notification_id: str
    user_id: str
    channel: str
    device_id: str | None
    status: str
    attempts: int
    provider: str | None
    fallback: bool
    provider_message_id: str | None
    error: str | None
    updated_at: int
    """When the delivery reached `status` (epoch ms)."""


class WebhookEndpointDisabled(msgspec.Struct, frozen=True, kw_only=True):
    """An endpoint the webhook sweep disabled, and why."""

    endpoint_id: str
    reason: str
    at: int


class WebhookSweepRound(msgspec.Struct, frozen=True, kw_only=True):
    """What one round of the webhook sweep did."""

    announced: int
    """Deliveries whose status it took (and marked announced)."""
    webhook_rows: int
    """Webhook rows it made (`delivery.updated` events, one per subscriber)."""
    disabled: tuple[WebhookEndpointDisabled, ...] = ()


class NewTopic(msgspec.Struct, frozen=True, kw_only=True):
    slug: str
    name: str
    self_subscribe: bool = False
    """True: a user may subscribe and unsubscribe themself with their user token."""
    created_at: int


class TopicRecord(msgspec.Struct, frozen=True, kw_only=True):
    slug: str
    name: str
    self_subscribe: bool
    created_at: int


class TopicSubscription(msgspec.Struct, frozen=True, kw_only=True):
    topic: str
    user_id: str
    created_at: int


# templates (issue #13) ----------------------------------------------------------------

TemplateLocales = dict[str, dict[str, dict[str, str]]]
"""A template's sources: locale -> channel -> part -> Jinja2 source (meaning: the
renderer's, pushd/routing/templates.py)."""


class NewTemplateVersion(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    description: str
    default_locale: str
    variables: dict[str, Any]
    """Declared defaults of template variables, used when a send's `data` lacks them."""
    locales: TemplateLocales
    created_at: int


class TemplateRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    version: int
    description: str
    default_locale: str
    variables: dict[str, Any]
    locales: TemplateLocales
    created_at: int
    """When this version was saved."""


# scheduled sends (issue #13) ----------------------------------------------------------


class ScheduledNotification(msgspec.Struct, frozen=True, kw_only=True):
    """A notification to commit to its user's mailbox at `due_at`
    (storage/areas/scheduled.py)."""

    notification: NewNotification
    """As it will be inserted at release (its `created_at` is the due instant, its
    planned deliveries count from it). Its `idempotency` claim is stored at once, with
    seq 0 until the release numbers it."""
    due_at: int
    accepted_at: int
    decision: dict[str, Any] | None = None
    """Why `due_at` is what it is, when delivery optimisation chose it
    (`deliver_at_local: "best"`, pushd/routing/engagement.py)."""


class ScheduledRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A scheduled send not released: still `scheduled`, or `cancelled`."""

    notification: NewNotification
    """Its content and plan; `idempotency` is always None here."""
    status: str
    """`scheduled` or `cancelled`."""
    due_at: int
    accepted_at: int
    cancelled_at: int | None = None
    decision: dict[str, Any] | None = None
    """See `ScheduledNotification.decision`."""


# broadcast, segments and sends (issue #14) ----------------------------------------------


class HasTag(msgspec.Struct, frozen=True, tag="tag"):
    """The user's tags hold `tag`."""

    tag: str


class LocaleIs(msgspec.Struct, frozen=True, tag="locale"):
    """The user's locale is `locale`, or starts with it and a `-` (`de` matches `de-AT`)."""

    locale: str


class TimezoneIs(msgspec.Struct, frozen=True, tag="timezone"):
    timezone: str


class CreatedBetween(msgspec.Struct, frozen=True, tag="created"):
    """The user was created at or after `after` and before `before` (epoch ms, each when
    given)."""

    after: int | None = None
    before: int | None = None


class AttributeIs(msgspec.Struct, frozen=True, tag="attribute"):
    """The user's attribute `key` equals `value` (with `value` None: has the attribute).
    Attributes are sealed at rest: no backend can test this in SQL (see `UserFilter`)."""

    key: str
    value: AttributeValue | None = None


class AllOf(msgspec.Struct, frozen=True, tag="all"):
    parts: tuple[UserFilter, ...]


class AnyOf(msgspec.Struct, frozen=True, tag="any"):
    parts: tuple[UserFilter, ...]


class NoneOf(msgspec.Struct, frozen=True, tag="not"):
    part: UserFilter


UserFilter = HasTag | LocaleIs | TimezoneIs | CreatedBetween | AttributeIs | AllOf | AnyOf | NoneOf
"""Which users an audience holds (pushd/audiences/segments.py parses it from the API's
grammar). Storage turns it into a parameterised WHERE clause; an `AttributeIs` cannot be
read there (sealed), so storage selects a superset and the caller tests each user of it
with the whole filter in Python."""


class NewSend(msgspec.Struct, frozen=True, kw_only=True):
    """A broadcast or segment send, as accepted (before any recipient is resolved)."""

    id: str
    audience: dict[str, Any]
    """{"kind": "broadcast"} or {"kind": "segment", "segment_id": ..., "filter": {...}}."""
    content: str
    """The request body as JSON text (sealed at rest: it holds the title, body, data)."""
    category: str | None = None
    api_key_id: str | None = None
    created_at: int


class SendRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    audience: dict[str, Any]
    content: str
    category: str | None
    api_key_id: str | None
    status: str
    """`pending` (nothing done yet), `running`, `done` or `failed`."""
    cursor_user_id: str | None
    """The last user id the fan-out has handled (users are walked in id order)."""
    resolved: int
    """Users of the audience read so far."""
    committed: int
    """Notifications committed so far."""
    skipped: int
    """Users of the audience left out (over their rate limit, erased meanwhile)."""
    error: str | None
    created_at: int
    updated_at: int
    finished_at: int | None


class SendChunk(msgspec.Struct, frozen=True, kw_only=True):
    """What one chunk of a fan-out did, added to its send's counters."""

    cursor_user_id: str
    resolved: int
    committed: int
    skipped: int


class SendDeliveryCount(msgspec.Struct, frozen=True, kw_only=True):
    """How many of a send's channel deliveries are on `channel` in `status`."""

    channel: str
    status: str
    count: int


class NewSegment(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    filter: dict[str, Any]
    """The filter as the API's grammar spells it (docs/audiences.md)."""
    created_at: int


class SegmentRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    filter: dict[str, Any]
    created_at: int
