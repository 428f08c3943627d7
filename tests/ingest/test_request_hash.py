"""The stored hash of an Idempotency-Key's request (issue #10, item 3). It was an
unsalted SHA-256 of the canonical body, so a copy of the database gave away guessable
encrypted content: a 6-digit code was found from the hash in about a second while the
notification's body was encrypted. Now it is keyed (HMAC), with a key not in the
database."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
from aiohttp.test_utils import TestClient

from pushd.api.schemas import SendNotification
from tests.app_client import AUTH, MakeClient, create_user

Client = TestClient[Any, Any]

K1 = "k1:" + base64.b64encode(bytes(range(32))).decode()
K2 = "k2:" + base64.b64encode(bytes(range(100, 132))).decode()


def canonical(body: dict[str, Any]) -> bytes:
    """The body as the server hashed it before: decoded, then encoded with sorted keys."""
    decoded = msgspec.json.decode(msgspec.json.encode(body), type=SendNotification)
    return msgspec.json.Encoder(order="sorted").encode(decoded)


def unkeyed_hashes(body: dict[str, Any]) -> set[str]:
    return {
        hashlib.sha256(canonical(body)).hexdigest(),
        hashlib.sha256(msgspec.json.encode(body)).hexdigest(),
    }


def _stored_hashes(database: Path) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(database)) as connection:
        rows = connection.execute("SELECT key, request_hash FROM idempotency_keys").fetchall()
    return dict(rows)


async def stored_hashes(tmp_path: Path) -> dict[str, str]:
    """Idempotency-Key -> request_hash, read from the SQLite file without pushd."""
    return await asyncio.to_thread(_stored_hashes, tmp_path / "pushd.db")


async def post(client: Client, body: dict[str, Any], key: str) -> Any:
    return await client.post(
        "/api/notifications", json=body, headers={**AUTH, "Idempotency-Key": key}
    )


async def test_stored_hash_is_keyed_and_replays_still_work(
    make_client: MakeClient, tmp_path: Path
) -> None:
    client = await make_client()  # the embedded default: a key generated into secrets.json
    user = await create_user(client)
    body = {"user_id": user["id"], "body": "Your code is 493021"}
    first = await post(client, body, "otp-1")
    assert first.status == 202
    stored = (await stored_hashes(tmp_path))["otp-1"]
    for unkeyed in unkeyed_hashes(body):
        assert unkeyed not in stored
    # The same key and body: the first answer; another body: 422.
    again = await post(client, body, "otp-1")
    assert again.status == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["id"] == (await first.json())["id"]
    other = await post(client, {**body, "body": "Your code is 493022"}, "otp-1")
    assert other.status == 422
    assert (await other.json())["error"]["code"] == "idempotency_key_reused"
    # The hash of the GDPR export is the stored one: nothing there to undo either.
    export = await (await client.get(f"/api/users/{user['id']}/export", headers=AUTH)).json()
    assert [k["request_hash"] for k in export["idempotency_keys"]] == [stored]


async def test_the_hash_depends_on_the_key_and_survives_rotation(
    make_client: MakeClient, tmp_path: Path
) -> None:
    """The same request hashed under two keys differs (so it is keyed, not a digest of
    the body alone); a key kept in the ring after a rotation still checks what it hashed."""
    client = await make_client(encryption={"keys": [K1]})
    user = await create_user(client)
    body = {"user_id": user["id"], "title": "pay", "data": {"amount": 42}}
    assert (await post(client, body, "before")).status == 202
    await client.close()
    rotated = await make_client(encryption={"keys": [K2, K1]})
    assert (await post(rotated, body, "after")).status == 202
    hashes = await stored_hashes(tmp_path)
    assert hashes["before"] != hashes["after"]
    replay = await post(rotated, body, "before")
    assert replay.headers.get("Idempotent-Replayed") == "true"
    refused = await post(rotated, {**body, "title": "refund"}, "before")
    assert refused.status == 422


def _replace_hash(database: Path, key: str, request_hash: str) -> None:
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        connection.execute(
            "UPDATE idempotency_keys SET request_hash = ? WHERE key = ?", (request_hash, key)
        )


async def test_a_hash_that_cannot_be_checked_replays_on_the_key_alone(
    client: Client, tmp_path: Path
) -> None:
    """Rows from before migration 0005 (marked by it), or written by a node not yet
    upgraded (a bare SHA-256): a retry must still get the first answer, never a second
    notification (docs/security.md)."""
    user = await create_user(client)
    body = {"user_id": user["id"], "title": "once"}
    for key, old_hash in (
        ("marked", "dropped:unkeyed-sha256"),
        ("bare", hashlib.sha256(canonical(body)).hexdigest()),
    ):
        first = await post(client, body, key)
        await asyncio.to_thread(_replace_hash, tmp_path / "pushd.db", key, old_hash)
        retry = await post(client, body, key)
        assert retry.status == 202
        assert retry.headers.get("Idempotent-Replayed") == "true"
        assert (await retry.json())["id"] == (await first.json())["id"]
    page = await (await client.get(f"/api/notifications/user/{user['id']}", headers=AUTH)).json()
    assert len(page["items"]) == 2
