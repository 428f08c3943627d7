"""Categories (`storage.areas.categories`): SQL and the methods, the same on both
backends."""

# S608 (SQL built from strings): every query here is assembled from this module's
# constants; values travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

from typing import Any

import msgspec

from storage.areas.categories import CategoryRecord
from storage.sql.common import Row, encode_json
from storage.sql.engine import SqlEngine

CATEGORY_COLUMNS = "slug, definition, updated_at"
UPSERT_CATEGORY = (
    f"INSERT INTO categories ({CATEGORY_COLUMNS}) VALUES ($1, $2, $3) "
    "ON CONFLICT (slug) DO UPDATE SET definition = excluded.definition, "
    f"updated_at = excluded.updated_at RETURNING {CATEGORY_COLUMNS}"
)
GET_CATEGORY = f"SELECT {CATEGORY_COLUMNS} FROM categories WHERE slug = $1"
LIST_CATEGORIES = f"SELECT {CATEGORY_COLUMNS} FROM categories ORDER BY slug"
DELETE_CATEGORY = "DELETE FROM categories WHERE slug = $1 RETURNING slug"

_definition = msgspec.json.Decoder(dict[str, Any])


def category_from_row(row: Row) -> CategoryRecord:
    """A row of CATEGORY_COLUMNS."""
    return CategoryRecord(slug=row[0], definition=_definition.decode(row[1]), updated_at=row[2])


class CategoriesSql(SqlEngine):
    """`Categories`."""

    async def put_category(
        self, slug: str, definition: dict[str, Any], *, at: int
    ) -> CategoryRecord:
        """See `Categories.put_category`."""
        row = await self._write_one(UPSERT_CATEGORY, slug, encode_json(definition), at)
        return category_from_row(row)

    async def get_category(self, slug: str) -> CategoryRecord | None:
        """See `Categories.get_category`."""
        row = await self._fetch_one(GET_CATEGORY, slug)
        return None if row is None else category_from_row(row)

    async def list_categories(self) -> list[CategoryRecord]:
        """See `Categories.list_categories`."""
        return [category_from_row(row) for row in await self._fetch_all(LIST_CATEGORIES)]

    async def delete_category(self, slug: str) -> bool:
        """See `Categories.delete_category`."""
        return await self._write_one(DELETE_CATEGORY, slug) is not None
