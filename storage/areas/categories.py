"""Notification categories defined through the API (issue #13): the durable copy that
every node reads into its in-memory registry (pushd/routing/categories.py)."""

from __future__ import annotations

from typing import Any, Protocol

import msgspec


class CategoryRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A stored category: its slug, its definition (JSON object whose meaning routing
    owns) and when it was last written (Unix ms)."""

    slug: str
    definition: dict[str, Any]
    updated_at: int


class Categories(Protocol):
    """Categories keyed by slug (matched exactly). Storage gives the definition no
    meaning: it stores and returns the JSON object as given."""

    async def put_category(
        self, slug: str, definition: dict[str, Any], *, at: int
    ) -> CategoryRecord:
        """Create the category or replace its definition (one statement: a concurrent
        writer of the same slug wins or loses whole); return it as stored."""
        ...

    async def get_category(self, slug: str) -> CategoryRecord | None:
        """The category with this slug, or None."""
        ...

    async def list_categories(self) -> list[CategoryRecord]:
        """Every stored category, by slug ascending. Unpaged: the API caps how many may
        exist (pushd/api/categories.py), and every node reads them all into memory."""
        ...

    async def delete_category(self, slug: str) -> bool:
        """Remove the category; return whether it existed. Users' stored switches of
        that category are kept (they still mean something if it is defined again)."""
        ...
