"""Delivery optimisation (issue #13, point 8): the send time and the channel order that a
user's own reading suggests, from the read times storage already holds
(storage/areas/engagement.py). No model, no SaaS: counts and medians over one user's
recent history, each decision explained in the delivery rows it shapes.

- `deliver_at_local: "best"`: the hour of the user's wall clock at which they read most
  often over `routing.engagement_lookback`, among the hours the category's `send_window`
  allows; ties go to the hour that comes first after now. With fewer than
  `routing.engagement_min_reads` reads, `routing.best_hour_default`. The chosen HH:00 then
  follows the same next-occurrence and daylight-saving rules as an explicit "HH:MM"
  (pushd/routing/schedule.py).
- a category with `channel_order = "engagement"`: its plan's steps are reordered, fastest
  median send-to-read first; channels without data keep their plan order after those
  with data. The delays stay where they were (the first step keeps the first delay), so
  the escalation's rhythm is the plan's and only who comes first changes. Preferences and
  quiet hours apply to the reordered plan as to any other (pushd/routing/plan.py).

One storage read per send that needs it, none for the others.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol
from zoneinfo import ZoneInfo

import msgspec

from pushd.routing.categories import Category, SendWindow
from pushd.routing.plan import PUSH_CHANNELS, ChannelPlan, PlanStep
from storage.areas.engagement import Engagement, EngagementRecord
from storage.records import PlannedDelivery

BEST: Final = "best"
"""The `deliver_at_local` value that asks for the user's best hour."""
MAX_ENGAGEMENT_READS: Final = 500
"""Reads (and send-to-read delays) looked at per user: a month of a busy user's reads,
and a bound on the one read a send makes."""
_UTC: Final = dt.UTC
_DAY_MS: Final = 86_400_000


@dataclass(frozen=True, slots=True)
class EngagementPolicy:
    """The `[routing]` settings of delivery optimisation."""

    lookback: float = 2_592_000.0
    """Seconds of read history looked at (`routing.engagement_lookback`)."""
    min_reads: int = 10
    """Fewer reads than this: the default hour (`routing.engagement_min_reads`)."""
    default_clock: str = "09:00"
    """HH:MM used without enough history (`routing.best_hour_default`)."""

    def since(self, now_ms: int) -> int:
        """The first instant (epoch ms) of the look-back ending at `now_ms`."""
        return now_ms - round(self.lookback * 1000)


class CategoryLookup(Protocol):
    """The defined categories (`CategoryRegistry`)."""

    def get(self, slug: str) -> Category | None:
        """The category, or None when it is not defined."""
        ...


def in_window(minute_of_day: int, window: SendWindow | None) -> bool:
    """Whether a wall-clock time (minutes after midnight) lies in [start, end) of the
    window; a window whose start is later than its end crosses midnight, one whose
    start equals its end is the whole day."""
    if window is None:
        return True
    start, end = _minutes(window.start), _minutes(window.end)
    if start == end:
        return True
    if start < end:
        return start <= minute_of_day < end
    return minute_of_day >= start or minute_of_day < end


def read_hours(read_times: Sequence[int], zone: ZoneInfo) -> list[int]:
    """How many reads fell in each hour (0-23) of the wall clock of `zone`."""
    histogram = [0] * 24
    for read_at in read_times:
        histogram[dt.datetime.fromtimestamp(read_at / 1000, _UTC).astimezone(zone).hour] += 1
    return histogram


def best_clock(
    engagement: EngagementRecord,
    *,
    zone: ZoneInfo,
    now: dt.datetime,
    policy: EngagementPolicy,
    window: SendWindow | None,
) -> tuple[str, dict[str, Any]]:
    """(HH:MM to deliver at, why) for `deliver_at_local: "best"` (module docstring)."""
    reads = len(engagement.read_times)
    lookback_days = round(policy.lookback * 1000 / _DAY_MS, 2)
    histogram = read_hours(engagement.read_times, zone)
    allowed = [hour for hour in range(24) if in_window(hour * 60, window)]
    counted = [hour for hour in allowed if histogram[hour] > 0]
    if reads >= policy.min_reads and counted:
        now_hour = now.astimezone(zone).hour
        # Most reads first; among equals, the hour whose next HH:00 comes soonest (the
        # current hour's has passed: it comes last).
        hour = min(counted, key=lambda h: (-histogram[h], (h - now_hour - 1) % 24))
        why = {
            "time": "best",
            "hour": hour,
            "reads_at_hour": histogram[hour],
            "reads": reads,
            "lookback_days": lookback_days,
        }
        return f"{hour:02d}:00", _with_window(why, window)
    clock = policy.default_clock
    if not in_window(_minutes(clock), window):
        assert window is not None  # every time is inside no window
        clock = window.start  # the default is outside the category's window: its start
    why = {"time": "default", "clock": clock, "reads": reads, "min_reads": policy.min_reads}
    return clock, _with_window(why, window)


def median_read_seconds(read_delays: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """Delivery channel -> median seconds from send to read; `push` as well, over every
    push channel's delays together (a plan step `push` reaches all three)."""
    medians = {
        channel: round(statistics.median(delays) / 1000, 3)
        for channel, delays in read_delays.items()
        if delays
    }
    pushed = [delay for channel in PUSH_CHANNELS for delay in read_delays.get(channel, ())]
    if pushed:
        medians["push"] = round(statistics.median(pushed) / 1000, 3)
    return medians


def order_by_engagement(
    steps: Sequence[PlanStep], medians: Mapping[str, float]
) -> tuple[PlanStep, ...]:
    """The steps reordered fastest-read channel first (module docstring), each position
    keeping the delay the plan gave it."""
    known = sorted(
        (step for step in steps if step.channel in medians),
        key=lambda step: medians[step.channel],  # stable: equal medians keep plan order
    )
    unknown = [step for step in steps if step.channel not in medians]
    return tuple(
        msgspec.structs.replace(step, delay=slot.delay)
        for step, slot in zip([*known, *unknown], steps, strict=True)
    )


def with_decision(
    rows: Sequence[PlannedDelivery], decision: Mapping[str, Any]
) -> tuple[PlannedDelivery, ...]:
    """The rows, each carrying `decision` (nothing changes for an empty one)."""
    if not decision:
        return tuple(rows)
    return tuple(msgspec.structs.replace(row, decision=dict(decision)) for row in rows)


@dataclass(frozen=True, slots=True)
class OptimisedPlan:
    """A plan after delivery optimisation, and why it is so (empty: as planned)."""

    plan: ChannelPlan
    decision: dict[str, Any]


class DeliveryOptimiser:
    """Reads a user's engagement when a send asks for it, and decides with it."""

    def __init__(
        self, storage: Engagement, categories: CategoryLookup, policy: EngagementPolicy
    ) -> None:
        self._storage = storage
        self._categories = categories
        self.policy = policy

    async def engagement_of(self, user_id: str, now_ms: int) -> EngagementRecord:
        """The user's reads of the look-back (one storage call)."""
        since = self.policy.since(now_ms)
        return await self._storage.engagement_of(user_id, since=since, limit=MAX_ENGAGEMENT_READS)

    def window_of(self, category: str | None) -> SendWindow | None:
        """The category's `send_window`, None for none (or no category)."""
        found = self._categories.get(category) if category else None
        return None if found is None else found.definition.send_window

    def orders_by_engagement(self, category: str | None) -> bool:
        """Whether the category asks `channel_order = "engagement"`."""
        found = self._categories.get(category) if category else None
        return found is not None and found.definition.channel_order == "engagement"

    async def best_clock(
        self,
        user_id: str,
        category: str | None,
        *,
        zone: ZoneInfo,
        now_ms: int,
        known: EngagementRecord | None = None,
    ) -> tuple[str, dict[str, Any], EngagementRecord]:
        """(HH:MM, why, the engagement read) for `deliver_at_local: "best"`."""
        engagement = known if known is not None else await self.engagement_of(user_id, now_ms)
        now = dt.datetime.fromtimestamp(now_ms / 1000, _UTC)
        clock, why = best_clock(
            engagement, zone=zone, now=now, policy=self.policy, window=self.window_of(category)
        )
        return clock, why, engagement

    async def order(
        self,
        plan: ChannelPlan,
        category: str | None,
        user_id: str,
        *,
        now_ms: int,
        known: EngagementRecord | None = None,
    ) -> OptimisedPlan:
        """The plan reordered by engagement when its category asks (else as it is); a
        plan of fewer than two steps has nothing to reorder and reads nothing."""
        if len(plan.steps) < 2 or not self.orders_by_engagement(category):
            return OptimisedPlan(plan, {})
        engagement = known if known is not None else await self.engagement_of(user_id, now_ms)
        medians = median_read_seconds(engagement.read_delays)
        steps = order_by_engagement(plan.steps, medians)
        why = {
            "order": "engagement",
            "median_read_seconds": medians,
            "channels": [step.channel for step in steps],
            "lookback_days": round(self.policy.lookback * 1000 / _DAY_MS, 2),
        }
        return OptimisedPlan(dataclasses.replace(plan, steps=steps), why)


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def _with_window(why: dict[str, Any], window: SendWindow | None) -> dict[str, Any]:
    if window is not None:
        why["window"] = {"start": window.start, "end": window.end}
    return why
