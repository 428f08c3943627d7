"""The category registry (pushd/routing/categories.py): config and stored categories
merged (config wins), refreshed from storage so that another node's change is seen
within the refresh interval, and what a category decides for planning and preferences."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from pushd.routing.categories import CategoryDefinition, CategoryRegistry, stored_definition
from pushd.routing.plan import ChannelPlanner, PlanError, PlanStep, Recipient
from pushd.routing.preferences import RoutingPolicy
from storage import Storage
from storage.records import PreferencesRecord
from tests.storage.conftest import storage, storage_url

CREATED_AT = 1_700_000_000_000
SECURITY = CategoryDefinition(
    name="Security", opt_out=False, plan=[PlanStep(channel="email"), PlanStep(channel="sms")]
)
NEWS = CategoryDefinition(name="News", channels={"sms": False}, retention=3600.0)

__all__ = ["storage", "storage_url"]  # the backend matrix of the storage contract


async def test_config_and_stored_categories_merge_and_config_wins(storage: Storage) -> None:
    await storage.put_category("news", stored_definition(NEWS), at=CREATED_AT)
    await storage.put_category("security", {"name": "Hijacked"}, at=CREATED_AT)
    registry = CategoryRegistry({"security": SECURITY}, storage, refresh_interval=60)
    assert registry.get("news") is None  # nothing read before the first refresh
    await registry.refresh()
    assert [c.slug for c in registry.all()] == ["news", "security"]
    security = registry.get("security")
    assert security is not None
    assert (security.source, security.definition.name) == ("config", "Security")
    news = registry.get("news")
    assert news is not None
    assert (news.source, news.updated_at, news.definition) == ("api", CREATED_AT, NEWS)
    assert registry.is_configured("security")
    assert not registry.is_configured("news")
    assert registry.retention_overrides() == {"news": 3600.0}


async def test_a_stored_definition_that_no_longer_decodes_is_left_out(storage: Storage) -> None:
    await storage.put_category("odd", {"name": "Odd", "colour": "teal"}, at=CREATED_AT)
    registry = CategoryRegistry({}, storage, refresh_interval=60)
    await registry.refresh()
    assert registry.get("odd") is None


async def test_another_nodes_change_is_seen_within_the_refresh_interval(storage: Storage) -> None:
    """Guards the cluster staleness bound: a node that did not make the change must pick
    it up by itself, without any request reaching it."""
    interval = 0.05
    other_node = CategoryRegistry({}, storage, refresh_interval=interval)
    await other_node.start()
    try:
        assert not other_node.is_defined("news")
        await storage.put_category("news", stored_definition(NEWS), at=CREATED_AT)
        await asyncio.sleep(interval * 4)
        assert other_node.is_defined("news")
        await storage.delete_category("news")
        await asyncio.sleep(interval * 4)
        assert not other_node.is_defined("news")
    finally:
        await other_node.close()
    await other_node.close()  # idempotent


def _registry_of(**categories: CategoryDefinition) -> CategoryRegistry:
    # Never refreshed: the configured categories are in memory from the start.
    return CategoryRegistry(categories, storage=None, refresh_interval=60)  # type: ignore[arg-type]


def test_the_category_plan_wins_over_the_configured_one() -> None:
    registry = _registry_of(security=SECURITY, news=NEWS)
    configured = {"security": [PlanStep(channel="push")], "news": [PlanStep(channel="push")]}
    planner = ChannelPlanner(configured, {"email", "sms", "webpush"}, categories=registry)
    assert [s.channel for s in planner.plan_for(None, "security").steps] == ["email", "sms"]
    # No plan of its own: the configured one.
    assert [s.channel for s in planner.plan_for(None, "news").steps] == ["push"]
    # The request's own steps still win.
    given = [PlanStep(channel="email")]
    assert planner.plan_for(given, "security").steps == tuple(given)


def test_unknown_categories_are_refused_only_when_configured_so() -> None:
    registry = _registry_of(news=NEWS)
    lenient = ChannelPlanner({}, set(), categories=registry)
    assert lenient.plan_for(None, "other").steps == ()
    strict = ChannelPlanner({}, set(), categories=registry, allow_unknown_categories=False)
    with pytest.raises(PlanError) as refused:
        strict.plan_for(None, "other")
    assert refused.value.field == "category"
    assert strict.plan_for(None, "news").steps == ()
    assert strict.plan_for(None, None).steps == ()


def test_opt_out_false_ignores_mute_and_switches_and_defaults_apply() -> None:
    registry = _registry_of(security=SECURITY, news=NEWS)
    policy = RoutingPolicy(categories=registry)
    planner = ChannelPlanner({}, {"email", "sms"}, policy=policy, categories=registry)
    recipient = Recipient("u1", email="a@example.com", phone="+15550001111")
    muted = PreferencesRecord(user_id="u1", muted=True, channels={"security": {"email": False}})
    assert policy.is_mandatory("security")
    assert not policy.is_mandatory("news")
    assert RoutingPolicy(mandatory_categories=["legal"], categories=registry).mandatory() == [
        "legal",
        "security",
    ]

    def statuses(preferences: PreferencesRecord | None, category: str) -> dict[str, str | None]:
        routing = policy.for_recipient(preferences, category, None)
        plan = [PlanStep(channel="email"), PlanStep(channel="sms")]
        rows = planner.expand(
            planner.plan_for(plan, category),
            recipient,
            priority="normal",
            created_at=0,
            routing=routing,
        )
        return {row.channel: row.reason for row in rows}

    assert statuses(muted, "security") == {"email": None, "sms": None}
    # News: sms off by default, for a user who set nothing and one who set other things.
    assert statuses(None, "news") == {"email": None, "sms": "preference"}
    others = PreferencesRecord(user_id="u1", channels={"news": {"email": False}})
    assert statuses(others, "news") == {"email": "preference", "sms": "preference"}
    # The user's own switch wins over the default.
    turned_on = PreferencesRecord(user_id="u1", channels={"news": {"sms": True}})
    assert statuses(turned_on, "news") == {"email": None, "sms": None}
    assert policy.effective_switches(None, "news") == {"email": True, "push": True, "sms": False}


def test_a_definition_that_contradicts_itself_says_which_field() -> None:
    definition = CategoryDefinition(name="Alerts", opt_out=False, channels={"push": False})
    problem = definition.problem()
    assert problem is not None
    assert problem[1] == "channels.push"
    assert NEWS.problem() is None
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"name": "X", "digest_window": 10**9}, CategoryDefinition)
