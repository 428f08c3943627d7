"""The templates part of the `Storage` contract (storage/areas/templates.py), on every
backend."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from storage import Storage
from storage.records import NewTemplateVersion
from tests.storage.conftest import CREATED_AT


def version(template_id: str, title: str = "Hi {{ name }}", **fields: Any) -> NewTemplateVersion:
    fields.setdefault("locales", {"en": {"inapp": {"title": title}}})
    return NewTemplateVersion(
        id=template_id,
        description=fields.pop("description", ""),
        default_locale=fields.pop("default_locale", "en"),
        variables=fields.pop("variables", {}),
        created_at=fields.pop("created_at", CREATED_AT),
        **fields,
    )


async def test_saves_number_versions_and_keep_the_old_ones(storage: Storage) -> None:
    locales = {
        "en": {"inapp": {"title": "Hi", "body": "b"}, "email": {"subject": "S", "html": "<p>"}},
        "fr-CA": {"inapp": {"title": "Salut"}, "sms": {"text": "t"}},
    }
    first = await storage.save_template(
        version("welcome", locales=locales, variables={"name": "friend", "n": 2}, description="d")
    )
    assert (first.version, first.locales, first.variables) == (
        1,
        locales,
        {"name": "friend", "n": 2},
    )
    second = await storage.save_template(version("welcome", "Hello", created_at=CREATED_AT + 1))
    assert second.version == 2
    assert await storage.get_template("welcome") == second
    assert await storage.get_template("welcome", 1) == first
    assert await storage.get_template("welcome", 2) == second
    assert await storage.get_template("welcome", 3) is None
    assert await storage.get_template("nothing") is None


async def test_concurrent_saves_get_distinct_versions(storage: Storage) -> None:
    saved = await asyncio.gather(*(storage.save_template(version("t", f"v{i}")) for i in range(8)))
    assert sorted(s.version for s in saved) == list(range(1, 9))
    latest = await storage.get_template("t")
    assert latest is not None
    assert latest.version == 8
    by_version = {s.version: s for s in saved}
    assert latest == by_version[8]


async def test_list_gives_latest_versions_by_id_in_pages(storage: Storage) -> None:
    for template_id in ("b", "a", "c", "B"):
        await storage.save_template(version(template_id))
    await storage.save_template(version("a", "second"))
    first = await storage.list_templates(after_id=None, limit=2)
    assert [(t.id, t.version) for t in first] == [("B", 1), ("a", 2)]
    rest = await storage.list_templates(after_id="a", limit=10)
    assert [t.id for t in rest] == ["b", "c"]
    assert await storage.list_templates(after_id="c", limit=10) == []
    with pytest.raises(ValueError, match="limit"):
        await storage.list_templates(after_id=None, limit=-1)


async def test_delete_removes_every_version_and_numbers_are_never_reused(
    storage: Storage,
) -> None:
    """Guards the cache key: (id, version) must never name two contents, so a save
    after a delete continues the numbering instead of starting at 1 again."""
    await storage.save_template(version("gone", "one"))
    await storage.save_template(version("gone", "two"))
    await storage.save_template(version("kept"))
    assert await storage.delete_template("gone") is True
    assert await storage.delete_template("gone") is False
    assert await storage.delete_template("never") is False
    assert await storage.get_template("gone") is None
    assert await storage.get_template("gone", 1) is None
    assert [t.id for t in await storage.list_templates(after_id=None, limit=10)] == ["kept"]
    again = await storage.save_template(version("gone", "three"))
    assert again.version == 3
    assert await storage.get_template("gone", 2) is None
    assert await storage.get_template("gone") == again
