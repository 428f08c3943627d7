"""The topics part of the `Storage` contract (storage/areas/topics.py), and the users
area's tags and attributes (storage/migrations/0010), on every backend."""

from __future__ import annotations

import pytest

from storage import ConflictError, KeyRing, Storage
from storage.records import NewTopic, UserLabels
from tests.storage.conftest import CREATED_AT, opened, raw_sql, user

K1 = ("k1", bytes(range(32)))


def topic(slug: str, *, self_subscribe: bool = False) -> NewTopic:
    return NewTopic(
        slug=slug, name=f"Topic {slug}", self_subscribe=self_subscribe, created_at=CREATED_AT
    )


# tags and attributes -------------------------------------------------------------------


async def test_tags_and_attributes_round_trip_and_are_replaced(storage: Storage) -> None:
    attributes = {"plan": "pro", "seats": 12, "ratio": 0.5, "beta": True}
    created = await storage.create_user(user("u1", tags=("a", "b"), attributes=attributes))
    assert (created.tags, created.attributes) == (("a", "b"), attributes)
    assert await storage.get_user("u1") == created
    assert (await storage.create_user(user("u2"))).tags == ()
    assert (await storage.get_user("u2")).attributes == {}  # type: ignore[union-attr]
    only_tags = await storage.update_user_labels("u1", UserLabels(tags=("c",)))
    assert only_tags is not None
    assert (only_tags.tags, only_tags.attributes) == (("c",), attributes)
    only_attributes = await storage.update_user_labels("u1", UserLabels(attributes={"x": 1}))
    assert only_attributes is not None
    assert (only_attributes.tags, only_attributes.attributes) == (("c",), {"x": 1})
    cleared = await storage.update_user_labels("u1", UserLabels(tags=(), attributes={}))
    assert cleared is not None
    assert (cleared.tags, cleared.attributes) == ((), {})
    assert await storage.update_user_labels("nobody", UserLabels(tags=("a",))) is None


async def test_attributes_are_sealed_and_tags_are_not(storage_url: str) -> None:
    """Guards the documented split: tags stay queryable, attributes are personal data."""
    async with opened(storage_url, KeyRing([K1])) as store:
        await store.migrate()
        await store.create_user(user("u1", tags=("plan-pro",), attributes={"company": "AcmeXYZ"}))
        [(tags, attributes)] = await raw_sql(
            storage_url, "SELECT tags, attributes FROM users WHERE id = $1", "u1"
        )
        assert "plan-pro" in tags
        assert "AcmeXYZ" not in attributes
        assert attributes.startswith("enc:")
        found = await store.get_user("u1")
        assert found is not None
        assert found.attributes == {"company": "AcmeXYZ"}


# topics --------------------------------------------------------------------------------


async def test_topics_are_created_listed_and_deleted(storage: Storage) -> None:
    created = await storage.create_topic(topic("news", self_subscribe=True))
    assert (created.slug, created.name, created.self_subscribe) == ("news", "Topic news", True)
    assert await storage.get_topic("news") == created
    with pytest.raises(ConflictError) as taken:
        await storage.create_topic(topic("news"))
    assert taken.value.field == "slug"
    await storage.create_topic(topic("alerts"))
    await storage.create_topic(topic("zoo"))
    assert [t.slug for t in await storage.list_topics(after_slug=None, limit=2)] == [
        "alerts",
        "news",
    ]
    assert [t.slug for t in await storage.list_topics(after_slug="news", limit=5)] == ["zoo"]
    assert (await storage.get_topic("alerts")).self_subscribe is False  # type: ignore[union-attr]
    assert await storage.delete_topic("news") is True
    assert await storage.delete_topic("news") is False
    assert await storage.get_topic("news") is None


async def test_subscribe_tells_each_id_apart(storage: Storage) -> None:
    for user_id in ("u1", "u2", "u3"):
        await storage.create_user(user(user_id))
    await storage.create_topic(topic("news"))
    assert await storage.subscribe("news", ["u1"], at=5) == {"u1": "subscribed"}
    outcomes = await storage.subscribe("news", ["u2", "u1", "ghost", "u2", "u3"], at=6)
    assert outcomes == {
        "u2": "subscribed",
        "u1": "already_subscribed",
        "ghost": "unknown_user",
        "u3": "subscribed",
    }
    assert list(outcomes) == ["u2", "u1", "ghost", "u3"]  # the order given, once each
    assert await storage.subscribe("gone", ["u1"], at=7) == {"u1": "unknown_user"}
    assert await storage.subscribe("news", [], at=7) == {}
    first = await storage.list_subscribers("news", after_user_id=None, limit=2)
    assert [(s.topic, s.user_id, s.created_at) for s in first] == [
        ("news", "u1", 5),
        ("news", "u2", 6),
    ]
    rest = await storage.list_subscribers("news", after_user_id="u2", limit=2)
    assert [s.user_id for s in rest] == ["u3"]
    assert await storage.unsubscribe("news", "u2") is True
    assert await storage.unsubscribe("news", "u2") is False
    assert [
        s.user_id for s in await storage.list_subscribers("news", after_user_id=None, limit=9)
    ] == [
        "u1",
        "u3",
    ]


async def test_a_users_topics_page_by_slug(storage: Storage) -> None:
    await storage.create_user(user("u1"))
    for slug in ("c", "a", "b"):
        await storage.create_topic(topic(slug))
        await storage.subscribe(slug, ["u1"], at=1)
    first = await storage.topics_of_user("u1", after_slug=None, limit=2)
    assert [s.topic for s in first] == ["a", "b"]
    assert [s.topic for s in await storage.topics_of_user("u1", after_slug="b", limit=2)] == ["c"]
    assert await storage.topics_of_user("nobody", after_slug=None, limit=2) == []


async def test_subscriptions_go_with_their_topic_and_their_user(storage: Storage) -> None:
    """Guards erasure and topic deletion against leaving subscriptions behind."""
    for user_id in ("victim", "bystander"):
        await storage.create_user(user(user_id))
    await storage.create_topic(topic("news"))
    await storage.create_topic(topic("other"))
    await storage.subscribe("news", ["victim", "bystander"], at=1)
    await storage.subscribe("other", ["victim", "bystander"], at=1)
    assert await storage.erase_user("victim", batch_size=10) is True
    assert await storage.topics_of_user("victim", after_slug=None, limit=9) == []
    kept = await storage.list_subscribers("news", after_user_id=None, limit=9)
    assert [s.user_id for s in kept] == ["bystander"]
    assert await storage.delete_topic("news") is True
    assert [
        s.topic for s in await storage.topics_of_user("bystander", after_slug=None, limit=9)
    ] == ["other"]
