"""The channel plan of a notification (docs/channels.md, "The plan"): which channels
reach the user beyond the socket, when, and on what condition; expanded at accept time
into `PlannedDelivery` rows with ABSOLUTE due times, committed with the notification.

A plan is a list of steps, given in the request (`channels`), else the category's own
(`plan` of a defined category: pushd/routing/categories.py), else configured per category
(`channels.plans`, with a `default` entry). Expansion, per step:

- a notification below the step's `min_priority` leaves the step out (no row);
- priority `critical` passes every `min_priority` and makes every delay 0;
- one row per address: `email` and `sms` the user's contact field, `webpush` / `fcm` /
  `apns` each of the user's devices of that kind, `push` every push device;
- a row that cannot be sent is recorded `skipped` at once, with its reason:
  `no_provider` (no provider of that channel is configured; a step given in the
  request is refused with 422 instead), `preference` (the user turned the channel off
  for the category, or muted everything: pushd/routing/preferences.py), `no_address`
  (no contact field or device: one row for the step);
- a row due inside the user's quiet hours on its channel is deferred to their end
  (status `scheduled`, reason `quiet_hours`: pushd/routing/quiet_hours.py), unless the
  priority is `critical`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Final, Literal, Protocol

import msgspec

from pushd.ids import new_id
from pushd.routing.digests import DigestRule
from pushd.routing.preferences import NO_PREFERENCES, RecipientRouting, RoutingPolicy
from pushd.routing.quiet_hours import quiet_until
from storage.records import DeviceRecord, PlannedDelivery, PreferencesRecord

Meta = msgspec.Meta

Priority = Literal["low", "normal", "high", "critical"]
PRIORITY_RANK: Final[Mapping[str, int]] = {"low": 0, "normal": 1, "high": 2, "critical": 3}

PUSH_CHANNELS: Final = ("webpush", "fcm", "apns")
"""The push channels; each is also the `kind` of the devices it reaches."""
StepChannel = Literal["push", "webpush", "fcm", "apns", "email", "sms"]
STEP_CHANNELS: Final = ("push", *PUSH_CHANNELS, "email", "sms")

MAX_DELAY_SECONDS: Final = 2_592_000
"""30 days: a later step is a scheduled notification, not an escalation."""

SkipReason = Literal["no_provider", "no_address", "preference"]


class PlanStep(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One step of a channel plan: a channel, after a delay, unless read."""

    channel: Annotated[
        StepChannel,
        Meta(description="`push`: every push device of the user (web push, FCM and APNs)."),
    ]
    delay: Annotated[
        float,
        Meta(
            ge=0,
            le=MAX_DELAY_SECONDS,
            description="Seconds after the notification is accepted (0: at once; "
            "priority `critical` makes every delay 0).",
        ),
    ] = 0.0
    unless_read: Annotated[
        bool,
        Meta(
            description="Cancel the step (status `cancelled`, reason `read`) when the "
            "notification is read or acknowledged on any device before it is sent."
        ),
    ] = True
    min_priority: Annotated[
        Priority,
        Meta(description="Left out for a notification of lower priority."),
    ] = "low"


# Per-channel content ------------------------------------------------------------------


class EmailContent(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What an email says; each part left out is derived from the title and body."""

    subject: Annotated[str, Meta(min_length=1, max_length=998)] | None = None
    html: Annotated[str, Meta(min_length=1, max_length=262_144)] | None = None
    text: Annotated[str, Meta(min_length=1, max_length=65_536)] | None = None


class PushContent(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What a push (web push, FCM, APNs) shows instead of the title and body."""

    title: Annotated[str, Meta(min_length=1, max_length=1024)] | None = None
    # Push services take about 4 KB of payload in all.
    body: Annotated[str, Meta(min_length=1, max_length=4096)] | None = None


class SmsContent(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The SMS text instead of the title and body on two lines."""

    # 1,600 characters: the most Twilio accepts (10 concatenated segments).
    text: Annotated[str, Meta(min_length=1, max_length=1600)]


class ChannelContent(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Per-channel content, winning over `title` and `body` on that channel."""

    email: EmailContent | None = None
    push: PushContent | None = None
    sms: SmsContent | None = None

    def as_stored(self) -> dict[str, dict[str, str]] | None:
        """`NewNotification.channel_content`: the parts given, None when none is."""
        stored = {
            name: {key: value for key, value in msgspec.structs.asdict(part).items() if value}
            for name, part in (("email", self.email), ("push", self.push), ("sms", self.sms))
            if part is not None
        }
        stored = {name: part for name, part in stored.items() if part}
        return stored or None


# Planning -----------------------------------------------------------------------------


class PlanError(ValueError):
    """A plan given in a request cannot be carried out; `field` is its path."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class CategoryCatalogue(Protocol):
    """The defined categories as planning reads them: in memory, no I/O per send
    (pushd/routing/categories.py, `CategoryRegistry`)."""

    def is_defined(self, category: str) -> bool:
        """Whether `category` is defined (in config or through the API)."""
        ...

    def plan_of(self, category: str) -> Sequence[PlanStep] | None:
        """The category's own plan, None when it has none (or is not defined)."""
        ...

    def digest_of(self, category: str) -> DigestRule | None:
        """The category's digest, None when it has no window (or is not defined)."""
        ...


PreferencesLookup = Callable[[str], Awaitable[PreferencesRecord | None]]
"""user id -> the user's stored preferences (`Storage.get_preferences`). The API's plan
expansion does not ask it: it reads the user, devices and preferences in one storage call
(`Storage.plan_context`, pushd/api/notifications.py)."""


@dataclass(frozen=True, slots=True)
class ChannelPlan:
    """The steps chosen for one notification."""

    steps: tuple[PlanStep, ...]

    @property
    def needs_devices(self) -> bool:
        """Whether expanding it needs the user's devices (one read, only then)."""
        return any(step.channel == "push" or step.channel in PUSH_CHANNELS for step in self.steps)


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who the plan is expanded for, as read at accept time."""

    user_id: str
    email: str | None = None
    phone: str | None = None
    devices: Sequence[DeviceRecord] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class _Target:
    channel: str
    device_id: str | None = None
    reachable: bool = True


class ChannelPlanner:
    """Chooses a notification's plan and expands it into deliveries.

    `plans`: category -> steps (`channels.plans`; the "default" entry serves a category
    without one, and a notification without a category). `configured`: the delivery
    channels with at least one provider. `preferences`: see `PreferencesLookup`;
    `policy`: the `[routing]` settings applied to them. `categories`: the defined
    categories, whose own plan wins over `plans`; `allow_unknown_categories` False
    refuses a category that is not defined (`routing.allow_unknown_categories`).
    """

    def __init__(
        self,
        plans: Mapping[str, Sequence[PlanStep]],
        configured: Collection[str],
        *,
        preferences: PreferencesLookup | None = None,
        policy: RoutingPolicy | None = None,
        categories: CategoryCatalogue | None = None,
        allow_unknown_categories: bool = True,
    ) -> None:
        self._plans = {category: tuple(steps) for category, steps in plans.items()}
        self._categories = categories
        self._allow_unknown_categories = allow_unknown_categories
        self._configured = frozenset(configured)
        self._preferences = preferences
        self.policy = policy or RoutingPolicy()

    def plan_for(self, requested: Sequence[PlanStep] | None, category: str | None) -> ChannelPlan:
        """The request's steps when it gives some, else the category's own plan, else
        its configured plan, else the "default" one (an empty list, given or configured:
        in-app only). Raises `PlanError` for a requested step whose channel has no
        provider, and for a category that is not defined when unknown ones are refused."""
        self._check_category(category)
        if requested is None:
            own = self._categories.plan_of(category) if category and self._categories else None
            if own is not None:
                return ChannelPlan(tuple(own))
            steps = self._plans.get(category) if category else None
            return ChannelPlan(self._plans.get("default", ()) if steps is None else steps)
        for position, step in enumerate(requested):
            if not self._has_provider(step.channel):
                raise PlanError(
                    f"no {step.channel} provider is configured on this server: configure "
                    f"one ([[channels.{_section_of(step.channel)}]] in config.toml) or "
                    "leave the step out",
                    field=f"channels[{position}].channel",
                )
        return ChannelPlan(tuple(requested))

    def _check_category(self, category: str | None) -> None:
        if not category or self._allow_unknown_categories:
            return
        if self._categories is None or not self._categories.is_defined(category):
            raise PlanError(
                f"unknown category {category!r}: define it (PUT /api/categories/{category} "
                f"or [routing.categories.{category}] in config.toml), send without a "
                "category, or turn routing.allow_unknown_categories on",
                field="category",
            )

    async def preferences_of(self, user_id: str) -> PreferencesRecord | None:
        """The user's stored preferences (None without a lookup, or none stored)."""
        if self._preferences is None:
            return None
        return await self._preferences(user_id)

    def routing_for(
        self, preferences: PreferencesRecord | None, category: str | None, timezone: str | None
    ) -> RecipientRouting:
        """What the preferences decide for a notification of `category` to a user in
        `timezone` (`RoutingPolicy.for_recipient`)."""
        return self.policy.for_recipient(preferences, category, timezone)

    def expand(
        self,
        plan: ChannelPlan,
        recipient: Recipient,
        *,
        priority: str,
        created_at: int,
        routing: RecipientRouting = NO_PREFERENCES,
        make_id: Callable[[], str] = lambda: new_id("dlv"),
        category: str | None = None,
    ) -> tuple[PlannedDelivery, ...]:
        """One `PlannedDelivery` per step and address (see the module docstring); a row
        on a digest channel of `category` waits for its digest (pushd/routing/digests.py),
        unless the priority is critical."""
        critical = priority == "critical"
        rank = PRIORITY_RANK[priority]
        digest = None
        if category and self._categories is not None and not critical:
            digest = self._categories.digest_of(category)
        rows: list[PlannedDelivery] = []
        for step in plan.steps:
            if not critical and rank < PRIORITY_RANK[step.min_priority]:
                continue
            due_at = created_at if critical else created_at + round(step.delay * 1000)
            for target in self._targets(step.channel, recipient):
                when, status, reason = self._decide(
                    target, due_at, created_at=created_at, routing=routing, critical=critical
                )
                if digest is not None:
                    when, status, reason = digest.apply(
                        target.channel, (when, status, reason), created_at=created_at
                    )
                rows.append(
                    PlannedDelivery(
                        id=make_id(),
                        channel=target.channel,
                        due_at=when,
                        device_id=target.device_id,
                        # Held back by quiet hours: read before they end, it is not
                        # sent then, whatever the step's `unless_read` (issue #13).
                        cancel_on_read=step.unless_read or reason == "quiet_hours",
                        status=status,
                        reason=reason,
                    )
                )
        return tuple(rows)

    def _has_provider(self, channel: str) -> bool:
        if channel == "push":
            return any(kind in self._configured for kind in PUSH_CHANNELS)
        return channel in self._configured

    def _decide(
        self,
        target: _Target,
        due_at: int,
        *,
        created_at: int,
        routing: RecipientRouting,
        critical: bool,
    ) -> tuple[int, str, str | None]:
        """(due time, status, reason) of one row: skipped at once, deferred to the end of
        the user's quiet hours, or due as planned."""
        skip = self._skip_reason(target, routing)
        if skip is not None:
            return created_at, "skipped", skip
        quiet_end = None if critical else _quiet_end(target.channel, due_at, routing)
        if quiet_end is not None:
            return quiet_end, "scheduled", "quiet_hours"
        return due_at, _status(due_at, created_at), None

    def _skip_reason(self, target: _Target, routing: RecipientRouting) -> SkipReason | None:
        # The user's choice comes before the address: a user who turned email off and
        # has no email address is told "preference", the reason that still holds once
        # an address is added.
        if not self._has_provider(target.channel):
            return "no_provider"
        if routing.turned_off(target.channel):
            return "preference"
        if not target.reachable:
            return "no_address"
        return None

    @staticmethod
    def _targets(channel: str, recipient: Recipient) -> list[_Target]:
        if channel == "email":
            return [_Target("email", reachable=bool(recipient.email))]
        if channel == "sms":
            return [_Target("sms", reachable=bool(recipient.phone))]
        kinds = PUSH_CHANNELS if channel == "push" else (channel,)
        devices = [_Target(d.kind, d.id) for d in recipient.devices if d.kind in kinds]
        # No device: one row says so, under the step's own channel ("push" included).
        return devices or [_Target(channel, reachable=False)]


def _quiet_end(channel: str, due_at: int, routing: RecipientRouting) -> int | None:
    """The end of the quiet hours `due_at` falls in on `channel`, or None."""
    if routing.quiet_hours is None or not routing.holds(channel):
        return None
    return quiet_until(due_at, routing.quiet_hours, routing.zone)


def _status(due_at: int, created_at: int) -> str:
    return "scheduled" if due_at > created_at else "queued"


def _section_of(channel: str) -> str:
    if channel == "push":
        return "webpush]], [[channels.fcm]] or [[channels.apns"
    return channel
