"""Channel plan expansion (pushd/routing/plan.py): which rows a notification's plan
commits, with what status, reason and absolute due time."""

from __future__ import annotations

import itertools
from collections.abc import Collection, Sequence
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest

from pushd.routing.plan import (
    ChannelContent,
    ChannelPlanner,
    PlanError,
    PlanStep,
    Recipient,
)
from pushd.routing.preferences import NO_PREFERENCES, RecipientRouting
from pushd.routing.quiet_hours import QuietHours
from storage.records import DeviceRecord, PlannedDelivery, PreferencesRecord

NOW = 1_700_000_000_000
EVERY_CHANNEL = ("email", "webpush", "fcm", "apns", "sms", "webhook")


def device(device_id: str, kind: str) -> DeviceRecord:
    return DeviceRecord(
        id=device_id,
        user_id="usr_1",
        kind=kind,
        address=f"{kind}-address",
        details={},
        created_at=NOW,
    )


ADA = Recipient(
    "usr_1",
    email="ada@example.com",
    phone="+14155550123",
    devices=(device("dev_w", "webpush"), device("dev_f", "fcm"), device("dev_a", "apns")),
)
NOBODY = Recipient("usr_2")


def steps(*specs: dict[str, Any]) -> list[PlanStep]:
    return msgspec.convert(list(specs), list[PlanStep])


def expand(
    requested: Sequence[PlanStep] | None,
    recipient: Recipient = ADA,
    *,
    priority: str = "normal",
    configured: Collection[str] = EVERY_CHANNEL,
    plans: dict[str, list[PlanStep]] | None = None,
    category: str | None = None,
    routing: RecipientRouting = NO_PREFERENCES,
) -> list[PlannedDelivery]:
    planner = ChannelPlanner(plans or {}, configured)
    plan = planner.plan_for(requested, category)
    ids = (f"dlv_{n}" for n in itertools.count(1))
    return list(
        planner.expand(
            plan,
            recipient,
            priority=priority,
            created_at=NOW,
            routing=routing,
            make_id=lambda: next(ids),
        )
    )


def summary(rows: list[PlannedDelivery]) -> list[tuple[Any, ...]]:
    return [(r.channel, r.device_id, r.status, r.reason, r.due_at - NOW) for r in rows]


def test_steps_become_rows_with_absolute_due_times() -> None:
    rows = expand(
        steps(
            {"channel": "webpush"},
            {"channel": "email", "delay": 0.25, "unless_read": False},
            {"channel": "sms", "delay": 600},
        )
    )
    assert summary(rows) == [
        ("webpush", "dev_w", "queued", None, 0),
        ("email", None, "scheduled", None, 250),
        ("sms", None, "scheduled", None, 600_000),
    ]
    assert [r.cancel_on_read for r in rows] == [True, False, True]
    assert len({r.id for r in rows}) == 3


def test_push_reaches_every_push_device() -> None:
    rows = expand(steps({"channel": "push", "delay": 30}))
    assert summary(rows) == [
        ("webpush", "dev_w", "scheduled", None, 30_000),
        ("fcm", "dev_f", "scheduled", None, 30_000),
        ("apns", "dev_a", "scheduled", None, 30_000),
    ]


def test_a_step_below_its_min_priority_is_left_out() -> None:
    plan = steps({"channel": "email"}, {"channel": "sms", "min_priority": "high"})
    assert [r.channel for r in expand(plan, priority="normal")] == ["email"]
    assert [r.channel for r in expand(plan, priority="high")] == ["email", "sms"]


def test_critical_takes_every_step_at_once() -> None:
    plan = steps(
        {"channel": "push", "delay": 30},
        {"channel": "email", "delay": 600},
        {"channel": "sms", "delay": 60, "min_priority": "critical"},
    )
    rows = expand(plan, priority="critical")
    assert [r.channel for r in rows] == ["webpush", "fcm", "apns", "email", "sms"]
    assert {(r.status, r.due_at) for r in rows} == {("queued", NOW)}


def test_no_address_is_one_skipped_row_per_step() -> None:
    rows = expand(
        steps({"channel": "email"}, {"channel": "sms"}, {"channel": "push"}, {"channel": "fcm"}),
        NOBODY,
    )
    assert summary(rows) == [
        ("email", None, "skipped", "no_address", 0),
        ("sms", None, "skipped", "no_address", 0),
        ("push", None, "skipped", "no_address", 0),
        ("fcm", None, "skipped", "no_address", 0),
    ]


def test_a_device_kind_step_reaches_only_that_kind() -> None:
    only_apns = Recipient("usr_1", devices=(device("dev_a", "apns"),))
    assert summary(expand(steps({"channel": "webpush"}), only_apns)) == [
        ("webpush", None, "skipped", "no_address", 0)
    ]


@pytest.mark.parametrize(
    ("requested", "configured", "field"),
    [
        ([{"channel": "email"}, {"channel": "sms"}], ("email",), "channels[1].channel"),
        ([{"channel": "push"}], ("email", "sms"), "channels[0].channel"),
        ([{"channel": "apns"}], ("fcm",), "channels[0].channel"),
    ],
)
def test_a_requested_step_without_provider_is_refused(
    requested: list[dict[str, Any]], configured: tuple[str, ...], field: str
) -> None:
    with pytest.raises(PlanError) as refused:
        expand(steps(*requested), configured=configured)
    assert refused.value.field == field
    assert "provider" in str(refused.value)


def test_push_with_some_push_providers_skips_the_other_kinds() -> None:
    rows = expand(steps({"channel": "push"}), configured=("fcm",))
    assert summary(rows) == [
        ("webpush", "dev_w", "skipped", "no_provider", 0),
        ("fcm", "dev_f", "queued", None, 0),
        ("apns", "dev_a", "skipped", "no_provider", 0),
    ]


def test_the_category_plan_else_the_default_plan() -> None:
    plans = {
        "billing": steps({"channel": "email", "delay": 60}),
        "default": steps({"channel": "sms"}),
    }
    assert [r.channel for r in expand(None, plans=plans, category="billing")] == ["email"]
    assert [r.channel for r in expand(None, plans=plans, category="chat")] == ["sms"]
    assert [r.channel for r in expand(None, plans=plans)] == ["sms"]
    assert expand(None, plans={"billing": steps({"channel": "email"})}, category="chat") == []
    assert expand(None) == []  # no plan configured: in-app only, as before channels


def test_an_empty_plan_overrides_the_default_one() -> None:
    plans = {"default": steps({"channel": "email"}), "chat": []}
    assert expand([], plans=plans) == []
    assert expand(None, plans=plans, category="chat") == []


def test_a_configured_step_without_provider_is_skipped() -> None:
    """Unlike a step of the request (422), a configured plan may name a channel the
    server has no provider for: the row says so instead of failing the request."""
    plans = {"default": steps({"channel": "email"}, {"channel": "sms"})}
    rows = expand(None, plans=plans, configured=("email",))
    assert summary(rows) == [
        ("email", None, "queued", None, 0),
        ("sms", None, "skipped", "no_provider", 0),
    ]


def test_channels_turned_off_are_skipped_with_reason_preference() -> None:
    plan = steps({"channel": "email"}, {"channel": "push"}, {"channel": "sms"})
    rows = expand(plan, routing=RecipientRouting(switched_off=frozenset({"email", "push"})))
    assert [(r.channel, r.status, r.reason) for r in rows] == [
        ("email", "skipped", "preference"),
        ("webpush", "skipped", "preference"),
        ("fcm", "skipped", "preference"),
        ("apns", "skipped", "preference"),
        ("sms", "queued", None),
    ]


def test_preference_comes_before_a_missing_address() -> None:
    plan = steps({"channel": "email"}, {"channel": "push"})
    rows = expand(plan, NOBODY, routing=RecipientRouting(switched_off=frozenset({"email"})))
    assert [(r.channel, r.status, r.reason) for r in rows] == [
        ("email", "skipped", "preference"),
        ("push", "skipped", "no_address"),
    ]


async def test_preferences_are_read_through_the_lookup() -> None:
    asked: list[str] = []
    stored = PreferencesRecord(user_id="usr_1", muted=True)

    async def lookup(user_id: str) -> PreferencesRecord | None:
        asked.append(user_id)
        return stored

    planner = ChannelPlanner({}, EVERY_CHANNEL, preferences=lookup)
    assert await planner.preferences_of("usr_1") is stored
    assert asked == ["usr_1"]
    assert await ChannelPlanner({}, EVERY_CHANNEL).preferences_of("usr_1") is None
    routing = planner.routing_for(stored, "news", None)
    assert routing.switched_off == {"email", "push", "sms"}


# Quiet hours: 22:00-07:00 in Paris; NOW is 2023-11-14T22:13:20Z, 23:13:20 in Paris.
PARIS_NIGHT = QuietHours(start="22:00", end="07:00")
NEXT_PARIS_MORNING = 1_700_028_000_000  # 2023-11-15T06:00:00Z, 07:00 in Paris


def paris_routing(**fields: Any) -> RecipientRouting:
    return RecipientRouting(quiet_hours=PARIS_NIGHT, zone=ZoneInfo("Europe/Paris"), **fields)


def test_a_step_due_in_quiet_hours_waits_for_their_end() -> None:
    plan = steps({"channel": "push"}, {"channel": "sms"}, {"channel": "email", "delay": 60})
    rows = expand(plan, routing=paris_routing())
    assert summary(rows) == [
        ("webpush", "dev_w", "scheduled", "quiet_hours", NEXT_PARIS_MORNING - NOW),
        ("fcm", "dev_f", "scheduled", "quiet_hours", NEXT_PARIS_MORNING - NOW),
        ("apns", "dev_a", "scheduled", "quiet_hours", NEXT_PARIS_MORNING - NOW),
        ("sms", None, "scheduled", "quiet_hours", NEXT_PARIS_MORNING - NOW),
        # Email is not among the window's channels (the default: push and SMS).
        ("email", None, "scheduled", None, 60_000),
    ]


def test_a_step_due_after_the_window_keeps_its_time() -> None:
    # 10 h after NOW is 09:13 in Paris: outside the window.
    plan = steps({"channel": "sms", "delay": 36_000})
    assert summary(expand(plan, routing=paris_routing())) == [
        ("sms", None, "scheduled", None, 36_000_000)
    ]


def test_critical_bypasses_quiet_hours() -> None:
    plan = steps({"channel": "sms", "delay": 60})
    rows = expand(plan, priority="critical", routing=paris_routing())
    assert summary(rows) == [("sms", None, "queued", None, 0)]


def test_a_skipped_step_is_not_deferred() -> None:
    rows = expand(
        steps({"channel": "sms"}),
        routing=paris_routing(switched_off=frozenset({"sms"})),
    )
    assert summary(rows) == [("sms", None, "skipped", "preference", 0)]


def test_a_step_refuses_unknown_fields_and_negative_delays() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field `dealy`"):
        steps({"channel": "email", "dealy": 5})
    with pytest.raises(msgspec.ValidationError, match=r">= 0"):
        steps({"channel": "email", "delay": -1})
    with pytest.raises(msgspec.ValidationError, match="Invalid enum value 'inapp'"):
        steps({"channel": "inapp"})


def test_content_is_stored_without_the_parts_left_out() -> None:
    content = msgspec.convert(
        {"email": {"subject": "Invoice"}, "sms": {"text": "Paid"}}, ChannelContent
    )
    assert content.as_stored() == {"email": {"subject": "Invoice"}, "sms": {"text": "Paid"}}
    assert ChannelContent(email=None).as_stored() is None
