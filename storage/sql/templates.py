"""Templates (`storage.areas.templates`): SQL, row mapping and the methods, the same on
both backends."""

# S608 (SQL built from strings): every query here is assembled from the constants of this
# module; values travel as parameters.
# ruff: noqa: S608

from __future__ import annotations

from typing import Any

import msgspec

from storage.records import NewTemplateVersion, TemplateLocales, TemplateRecord
from storage.sql.common import Row, check_limit, encode_json
from storage.sql.engine import SqlEngine

VERSION_COLUMNS = (
    "v.template_id, v.version, v.description, v.default_locale, v.variables, v.locales, "
    "v.created_at"
)
# The head row counts versions; it is never deleted, so numbers are never reused.
BUMP_VERSION = (
    "INSERT INTO templates (id, last_version) VALUES ($1, 1) "
    "ON CONFLICT (id) DO UPDATE SET last_version = templates.last_version + 1 "
    "RETURNING last_version"
)
# Reads the number the statement above gave, in the same transaction (on PostgreSQL the
# head row stays locked until commit, so a concurrent save waits and gets the next one).
INSERT_VERSION = (
    "INSERT INTO template_versions "
    "(template_id, version, description, default_locale, variables, locales, created_at) "
    "SELECT id, last_version, $2, $3, $4, $5, CAST($6 AS BIGINT) FROM templates WHERE id = $1 "
    "RETURNING version"
)
GET_LATEST = (
    f"SELECT {VERSION_COLUMNS} FROM templates t JOIN template_versions v "
    "ON v.template_id = t.id AND v.version = t.last_version WHERE t.id = $1"
)
GET_VERSION = (
    f"SELECT {VERSION_COLUMNS} FROM template_versions v WHERE v.template_id = $1 AND v.version = $2"
)
LIST_FIRST = (
    f"SELECT {VERSION_COLUMNS} FROM templates t JOIN template_versions v "
    "ON v.template_id = t.id AND v.version = t.last_version ORDER BY t.id LIMIT $1"
)
LIST_AFTER = (
    f"SELECT {VERSION_COLUMNS} FROM templates t JOIN template_versions v "
    "ON v.template_id = t.id AND v.version = t.last_version WHERE t.id > $1 "
    "ORDER BY t.id LIMIT $2"
)
DELETE_VERSIONS = "DELETE FROM template_versions WHERE template_id = $1 RETURNING version"

_variables = msgspec.json.Decoder(dict[str, Any])
_locales = msgspec.json.Decoder(TemplateLocales)


def template_from_row(row: Row) -> TemplateRecord:
    """A row of VERSION_COLUMNS."""
    return TemplateRecord(
        id=row[0],
        version=row[1],
        description=row[2],
        default_locale=row[3],
        variables=_variables.decode(row[4]),
        locales=_locales.decode(row[5]),
        created_at=row[6],
    )


class TemplatesSql(SqlEngine):
    """`Templates`."""

    async def save_template(self, template: NewTemplateVersion) -> TemplateRecord:
        """See `Templates.save_template`."""
        columns = (
            template.id,
            template.description,
            template.default_locale,
            encode_json(template.variables),
            encode_json(template.locales),
            template.created_at,
        )
        _, [inserted] = await self._write_many(
            [(BUMP_VERSION, (template.id,)), (INSERT_VERSION, columns)]
        )
        return TemplateRecord(
            id=template.id,
            version=inserted[0],
            description=template.description,
            default_locale=template.default_locale,
            variables=template.variables,
            locales=template.locales,
            created_at=template.created_at,
        )

    async def get_template(
        self, template_id: str, version: int | None = None
    ) -> TemplateRecord | None:
        """See `Templates.get_template`."""
        if version is None:
            row = await self._fetch_one(GET_LATEST, template_id)
        else:
            row = await self._fetch_one(GET_VERSION, template_id, version)
        return None if row is None else template_from_row(row)

    async def list_templates(self, *, after_id: str | None, limit: int) -> list[TemplateRecord]:
        """See `Templates.list_templates`."""
        check_limit(limit)
        if after_id is None:
            rows = await self._fetch_all(LIST_FIRST, limit)
        else:
            rows = await self._fetch_all(LIST_AFTER, after_id, limit)
        return [template_from_row(row) for row in rows]

    async def delete_template(self, template_id: str) -> bool:
        """See `Templates.delete_template`."""
        return bool(await self._write_all(DELETE_VERSIONS, template_id))
