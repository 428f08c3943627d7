"""Migration 0011 (issue #13): the opt-outs that email unsubscribe links stored in
`channel_optouts` become preference switches turned off, and the old table goes: one
source of truth, and no user loses an unsubscription on upgrade."""

from __future__ import annotations

from storage.records import PreferencesRecord
from tests.storage.conftest import CREATED_AT, opened, raw_sql, schema_at_version

BEFORE = 10


async def test_0011_turns_opt_outs_into_preferences(storage_url: str) -> None:
    await schema_at_version(storage_url, BEFORE)
    for user_id in ("u1", "u2"):
        await raw_sql(
            storage_url, "INSERT INTO users (id, created_at) VALUES ($1, $2)", user_id, CREATED_AT
        )
    for category in ("news", ""):
        await raw_sql(
            storage_url,
            "INSERT INTO channel_optouts (user_id, category, channel, created_at) "
            "VALUES ('u1', $1, 'email', $2)",
            category,
            CREATED_AT,
        )
    async with opened(storage_url) as store:
        await store.migrate()
        found = await store.get_preferences("u1")
        assert found is not None
        assert found.channels == {"": {"email": False}, "news": {"email": False}}
        assert await store.get_preferences("u2") == PreferencesRecord(user_id="u2")
    tables = await raw_sql(
        storage_url,
        "SELECT count(*) FROM channel_preferences WHERE updated_at = $1",
        CREATED_AT,
    )
    assert tables == [(2,)]
