"""Channel plan expansion (pushd/routing/plan.py): which rows a notification's plan
commits, with what status, reason and absolute due time."""

from __future__ import annotations

import itertools
from collections.abc import Collection, Sequence
from typing import Any

import msgspec
import pytest

from pushd.routing.plan import (
    ChannelContent,
    ChannelPlanner,
    PlanError,
    PlanStep,
    Recipient,
)
from storage.records import DeviceRecord, PlannedDelivery

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
    opted_out: Collection[str] = (),
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
            opted_out=opted_out,
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


def test_opted_out_channels_are_skipped() -> None:
    plan = steps({"channel": "email"}, {"channel": "push"}, {"channel": "sms"})
    rows = expand(plan, opted_out={"email", "push"})
    assert [(r.channel, r.status, r.reason) for r in rows] == [
        ("email", "skipped", "opted_out"),
        ("webpush", "skipped", "opted_out"),
        ("fcm", "skipped", "opted_out"),
        ("apns", "skipped", "opted_out"),
        ("sms", "queued", None),
    ]


async def test_opt_outs_are_asked_for_the_category_or_the_empty_one() -> None:
    asked: list[tuple[str, str]] = []

    async def lookup(user_id: str, category: str) -> set[str]:
        asked.append((user_id, category))
        return {"email"}

    planner = ChannelPlanner({}, EVERY_CHANNEL, opt_outs=lookup)
    assert await planner.opted_out("usr_1", "billing") == {"email"}
    assert await planner.opted_out("usr_1", None) == {"email"}
    assert asked == [("usr_1", "billing"), ("usr_1", "")]
    assert await ChannelPlanner({}, EVERY_CHANNEL).opted_out("usr_1", "billing") == ()


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
