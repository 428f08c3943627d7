"""The categories part of the `Storage` contract (storage/areas/categories.py), on every
backend."""

from __future__ import annotations

from storage import Storage
from storage.areas.categories import CategoryRecord
from tests.storage.conftest import CREATED_AT

LATER = CREATED_AT + 1000
SECURITY = {"name": "Security", "opt_out": False, "channels": {"email": True}}


async def test_a_put_category_is_stored_and_read_back(storage: Storage) -> None:
    stored = await storage.put_category("security", SECURITY, at=CREATED_AT)
    expected = CategoryRecord(slug="security", definition=SECURITY, updated_at=CREATED_AT)
    assert stored == expected
    assert await storage.get_category("security") == expected
    assert await storage.get_category("Security") is None  # slugs match exactly
    assert await storage.get_category("nothing") is None


async def test_a_second_put_replaces_the_whole_definition(storage: Storage) -> None:
    await storage.put_category("news", {"name": "News", "digest_window": 3600}, at=CREATED_AT)
    replaced = await storage.put_category("news", {"name": "Newsletter"}, at=LATER)
    assert replaced == CategoryRecord(
        slug="news", definition={"name": "Newsletter"}, updated_at=LATER
    )
    assert await storage.get_category("news") == replaced


async def test_categories_are_listed_by_slug(storage: Storage) -> None:
    assert await storage.list_categories() == []
    for slug in ("news", "billing", "security"):
        await storage.put_category(slug, {"name": slug.title()}, at=CREATED_AT)
    assert [c.slug for c in await storage.list_categories()] == ["billing", "news", "security"]


async def test_delete_says_whether_the_category_existed(storage: Storage) -> None:
    await storage.put_category("news", {"name": "News"}, at=CREATED_AT)
    assert await storage.delete_category("news") is True
    assert await storage.delete_category("news") is False
    assert await storage.get_category("news") is None
    assert await storage.list_categories() == []


async def test_nested_definitions_keep_their_shape(storage: Storage) -> None:
    definition = {
        "name": "Billing",
        "plan": [{"channel": "email", "delay": 60.0, "unless_read": True, "min_priority": "low"}],
        "channels": {"sms": False},
        "retention": 0.0,
    }
    await storage.put_category("billing", definition, at=CREATED_AT)
    found = await storage.get_category("billing")
    assert found is not None
    assert found.definition == definition
