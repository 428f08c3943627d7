"""Digests in routing (pushd/routing/digests.py): which planned rows wait for a digest
and until when, and the one message a digest becomes."""

from __future__ import annotations

import msgspec
import pytest

from pushd.routing.categories import CategoryDefinition, CategoryRegistry
from pushd.routing.digests import DigestRule, digest_delivery, digest_rule, render_digest
from pushd.routing.plan import ChannelPlanner, PlanStep, Recipient
from storage import Storage
from storage.records import DeviceRecord, LeasedDelivery
from tests.storage.conftest import storage, storage_url

__all__ = ["storage", "storage_url"]  # the registry reads stored categories

CREATED_AT = 1_700_000_000_000
WINDOW_MS = 600_000
NEWS = CategoryDefinition(
    name="Team <news>",
    plan=[PlanStep(channel="email"), PlanStep(channel="sms"), PlanStep(channel="push")],
    digest_window=WINDOW_MS / 1000,
)
ADA = Recipient(
    "usr_1",
    email="ada@example.org",
    phone="+33611223344",
    devices=(
        DeviceRecord(
            id="dev_1",
            user_id="usr_1",
            kind="fcm",
            address="token",
            details={},
            created_at=CREATED_AT,
        ),
    ),
)


async def planner_with(storage: Storage, **categories: CategoryDefinition) -> ChannelPlanner:
    registry = CategoryRegistry(categories, storage, refresh_interval=60)
    await registry.refresh()
    return ChannelPlanner({}, ["email", "sms", "fcm"], categories=registry)


async def test_only_the_digest_channels_of_a_digest_category_wait(storage: Storage) -> None:
    planner = await planner_with(storage, news=NEWS, plain=NEWS.__replace__(digest_window=0))
    plan = planner.plan_for(None, "news")
    rows = planner.expand(plan, ADA, priority="normal", created_at=CREATED_AT, category="news")
    assert [(r.channel, r.status, r.reason, r.due_at - CREATED_AT) for r in rows] == [
        ("email", "scheduled", "digest", WINDOW_MS),
        ("sms", "queued", None, 0),  # not in digest_channels (default: email)
        ("fcm", "queued", None, 0),
    ]
    # Without a window, a critical notification, or no category given: as planned.
    for category, priority in (("plain", "normal"), ("news", "critical"), (None, "normal")):
        rows = planner.expand(
            plan, ADA, priority=priority, created_at=CREATED_AT, category=category
        )
        assert {r.reason for r in rows} == {None}


async def test_digest_channels_and_a_later_step(storage: Storage) -> None:
    news = NEWS.__replace__(
        digest_channels=["email", "sms"],
        plan=[PlanStep(channel="email", delay=900), PlanStep(channel="sms")],
    )
    planner = await planner_with(storage, news=news)
    plan = planner.plan_for(None, "news")
    rows = planner.expand(plan, ADA, priority="low", created_at=CREATED_AT, category="news")
    # A step due after the window keeps its own time; the window never brings it forward.
    assert [(r.channel, r.reason, r.due_at - CREATED_AT) for r in rows] == [
        ("email", "digest", 900_000),
        ("sms", "digest", WINDOW_MS),
    ]


async def test_a_skipped_row_is_not_digested(storage: Storage) -> None:
    planner = await planner_with(storage, news=NEWS)
    plan = planner.plan_for(None, "news")
    nobody = Recipient("usr_2")
    rows = planner.expand(plan, nobody, priority="normal", created_at=CREATED_AT, category="news")
    assert {(r.status, r.reason) for r in rows} == {("skipped", "no_address")}


def test_the_rule_of_a_definition() -> None:
    assert digest_rule(0, ["email"]) is None
    assert digest_rule(1.5, ["email"]) == DigestRule(1_500, frozenset({"email"}))


def test_digest_channels_are_checked() -> None:
    with pytest.raises(msgspec.ValidationError, match="digest_channels"):
        msgspec.convert({"name": "X", "digest_channels": ["push"]}, CategoryDefinition)
    with pytest.raises(msgspec.ValidationError, match="digest_channels"):
        msgspec.convert({"name": "X", "digest_channels": []}, CategoryDefinition)
    assert NEWS.digest_channels == ["email"]


def member(index: int, channel: str = "email", **fields: object) -> LeasedDelivery:
    values: dict[str, object] = {
        "id": f"dlv_{index}",
        "notification_id": f"ntf_{index}",
        "user_id": "usr_1",
        "channel": channel,
        "attempts": 1,
        "first_due_at": CREATED_AT,
        "address": {"email": "ada@example.org"},
        "device_id": None,
        "endpoint_id": None,
        "title": f"Title {index}",
        "body": f"Body {index}",
        "data": None,
        "content": None,
        "category": "news",
        "priority": "normal",
        "created_at": CREATED_AT + index,
        "expires_at": None,
    }
    return LeasedDelivery(**(values | fields))  # type: ignore[arg-type]


def test_the_message_lists_every_notification_escaped_in_html() -> None:
    members = [
        member(1, title="<b>Deploy</b>"),
        member(2, content={"subject": "Own subject", "text": "Own text"}),
        member(3, priority="high"),
    ]
    message = digest_delivery(members, "Team <news>")
    assert (message.id, message.address, message.priority) == (
        "dlv_1",
        {"email": "ada@example.org"},
        "high",
    )
    assert message.data == {"digest": ["ntf_1", "ntf_2", "ntf_3"]}
    content = message.content or {}
    assert content["subject"] == "3 new notifications in Team <news>"
    assert content["text"].splitlines()[2:] == [
        "- <b>Deploy</b>",
        "  Body 1",
        "- Own subject",
        "  Own text",
        "- Title 3",
        "  Body 3",
    ]
    assert "&lt;b&gt;Deploy&lt;/b&gt;" in content["html"]
    assert "<b>Deploy" not in content["html"]
    assert content["html"].count("<li>") == 3


def test_an_sms_digest_is_text_only() -> None:
    content = render_digest("sms", [member(1, "sms")], "News")
    assert content == {"text": "1 new notification in News\n\n- Title 1\n  Body 1"}
