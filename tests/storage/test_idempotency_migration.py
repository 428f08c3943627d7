"""Migration 0005 (issue #10, item 3): the unkeyed SHA-256 request hashes written
before it are dropped from `idempotency_keys`, on every backend. The rows stay, marked,
so that a retry within the window still finds its key (pushd replays it on the key
alone, docs/security.md)."""

from __future__ import annotations

import hashlib

from storage.migrations import newest_version
from tests.storage.conftest import CREATED_AT, opened, raw_sql, schema_at_version

OLD_HASH = hashlib.sha256(b'{"body":"Your code is 493021","user_id":"u1"}').hexdigest()


async def test_0005_drops_unkeyed_request_hashes(storage_url: str) -> None:
    await schema_at_version(storage_url, 4)
    await raw_sql(
        storage_url,
        "INSERT INTO users (id, created_at) VALUES ('u1', $1)",
        CREATED_AT,
    )
    await raw_sql(
        storage_url,
        "INSERT INTO idempotency_keys (scope, key, request_hash, notification_id, user_id, "
        "seq, created_at) VALUES ('key_a', 'otp-1', $1, 'n1', 'u1', 1, $2)",
        OLD_HASH,
        CREATED_AT,
    )
    async with opened(storage_url) as store:
        assert await store.migrate() == newest_version() >= 5
        found = await store.find_idempotency("key_a", "otp-1", not_before=0)
    assert found is not None
    assert (found.notification_id, found.seq) == ("n1", 1)
    assert found.request_hash == "dropped:unkeyed-sha256"
    rows = await raw_sql(storage_url, "SELECT request_hash FROM idempotency_keys")
    assert rows == [("dropped:unkeyed-sha256",)]
