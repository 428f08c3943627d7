"""The channel plan of a notification (docs/channels.md, "The plan"): which channels
reach the user beyond the socket, when, and on what condition; expanded at accept time
into `PlannedDelivery` rows with ABSOLUTE due times, committed with the notification.

A plan is a list of steps, given in the request (`channels`) or configured per category
(`channels.plans`, with a `default` entry). Expansion, per step:

- a notification below the step's `min_priority` leaves the step out (no row);
- priority `critical` passes every `min_priority` and makes every delay 0;
- one row per address: `email` and `sms` the user's contact field, `webpush` / `fcm` /
  `apns` each of the user's devices of that kind, `push` every push device;
- a row that cannot be sent is recorded `skipped` at once, with its reason:
  `no_provider` (no provider of that channel is configured; a step given in the
  request is refused with 422 instead), `no_address` (no contact field or device: one
  row for the step), `opted_out` (the user unsubscribed from the category there).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Final, Literal

import msgspec

from pushd.ids import new_id
from storage.areas.channel_optouts import ChannelOptOuts
from storage.records import DeviceRecord, PlannedDelivery

Meta = msgspec.Meta

Priority = Literal["low", "normal", "high", "critical"]
PRIORITY_RANK: Final[Mapping[str, int]] = {"low": 0, "normal": 1, "high": 2, "critical": 3}

PUSH_CHANNELS: Final = ("webpush", "fcm", "apns")
"""The push channels; each is also the `kind` of the devices it reaches."""
StepChannel = Literal["push", "webpush", "fcm", "apns", "email", "sms"]
STEP_CHANNELS: Final = ("push", *PUSH_CHANNELS, "email", "sms")

MAX_DELAY_SECONDS: Final = 2_592_000
"""30 days: a later step is a scheduled notification, not an escalation."""

SkipReason = Literal["no_provider", "no_address", "opted_out"]


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


OptOutLookup = Callable[[str, str], Awaitable[Collection[str]]]
"""(user id, category; "" for none) -> the channels ("email", "sms", "webpush", ...,
"push" for every push channel) the user opted out of for that category. The hook for
stored opt-outs (an email's List-Unsubscribe link): asked once per notification whose
plan has steps."""


async def stored_opt_outs(storage: ChannelOptOuts, user_id: str, category: str) -> set[str]:
    """The `OptOutLookup` of the opt-outs in storage (one query)."""
    opt_outs = await storage.channel_optouts_of([user_id])
    return {opt_out.channel for opt_out in opt_outs if opt_out.category == category}


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
    channels with at least one provider. `opt_outs`: see `OptOutLookup`.
    """

    def __init__(
        self,
        plans: Mapping[str, Sequence[PlanStep]],
        configured: Collection[str],
        *,
        opt_outs: OptOutLookup | None = None,
    ) -> None:
        self._plans = {category: tuple(steps) for category, steps in plans.items()}
        self._configured = frozenset(configured)
        self._opt_outs = opt_outs

    def plan_for(self, requested: Sequence[PlanStep] | None, category: str | None) -> ChannelPlan:
        """The request's steps when it gives some, else the category's configured plan,
        else the "default" one (an empty list, given or configured: in-app only). Raises
        `PlanError` for a requested step whose channel has no provider."""
        if requested is None:
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

    async def opted_out(self, user_id: str, category: str | None) -> Collection[str]:
        """The channels the user opted out of for `category` (none without a lookup)."""
        if self._opt_outs is None:
            return ()
        return await self._opt_outs(user_id, category or "")

    def expand(
        self,
        plan: ChannelPlan,
        recipient: Recipient,
        *,
        priority: str,
        created_at: int,
        opted_out: Collection[str] = (),
        make_id: Callable[[], str] = lambda: new_id("dlv"),
    ) -> tuple[PlannedDelivery, ...]:
        """One `PlannedDelivery` per step and address (see the module docstring)."""
        critical = priority == "critical"
        rank = PRIORITY_RANK[priority]
        rows: list[PlannedDelivery] = []
        for step in plan.steps:
            if not critical and rank < PRIORITY_RANK[step.min_priority]:
                continue
            due_at = created_at if critical else created_at + round(step.delay * 1000)
            for target in self._targets(step.channel, recipient):
                reason = self._skip_reason(target, opted_out)
                rows.append(
                    PlannedDelivery(
                        id=make_id(),
                        channel=target.channel,
                        due_at=created_at if reason else due_at,
                        device_id=target.device_id,
                        cancel_on_read=step.unless_read,
                        status="skipped" if reason else _status(due_at, created_at),
                        reason=reason,
                    )
                )
        return tuple(rows)

    def _has_provider(self, channel: str) -> bool:
        if channel == "push":
            return any(kind in self._configured for kind in PUSH_CHANNELS)
        return channel in self._configured

    def _skip_reason(self, target: _Target, opted_out: Collection[str]) -> SkipReason | None:
        if not self._has_provider(target.channel):
            return "no_provider"
        if not target.reachable:
            return "no_address"
        if target.channel in opted_out or (target.channel in PUSH_CHANNELS and "push" in opted_out):
            return "opted_out"
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


def _status(due_at: int, created_at: int) -> str:
    return "scheduled" if due_at > created_at else "queued"


def _section_of(channel: str) -> str:
    if channel == "push":
        return "webpush]], [[channels.fcm]] or [[channels.apns"
    return channel
