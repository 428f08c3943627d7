"""The audit trail: every state-changing call recorded (failed ones too) by the route
dispatcher, read back through `GET /api/audit`; and the batching writer behind it."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from actors.retry import Backoff
from pushd.access import audit_writer as audit_module
from pushd.access.audit_fields import HANDLER_ACTIONS
from pushd.access.audit_writer import AuditWriter
from pushd.access.failed_auth import FAILED_AUTH_ACTION
from pushd.api import ROUTES
from pushd.appkeys import AUDIT, STORAGE
from storage import Storage, open_storage
from storage.records import NewAuditRecord
from tests.app_client import AUTH, MakeClient, create_key, create_user, send

Client = TestClient[Any, Any]


async def audit_items(client: Client, **params: str) -> list[dict[str, Any]]:
    response = await client.get("/api/audit", params=params, headers=AUTH)
    assert response.status == 200, await response.text()
    items: list[dict[str, Any]] = (await response.json())["items"]
    return items


async def test_state_changing_calls_are_recorded_with_who_what_where_and_result(
    client: Client,
) -> None:
    user = await create_user(client)
    accepted = await send(client, user["id"], category="billing")
    reader_key, reader = await create_key(client, "reader")
    denied = await client.post(
        "/api/users", json={}, headers={"Authorization": f"Bearer {reader_key}"}
    )
    assert denied.status == 403
    anonymous = await client.post("/api/notifications", json={})
    assert anonymous.status == 401
    invalid = await client.post("/api/users", json={"phone": "nope"}, headers=AUTH)
    assert invalid.status == 422
    assert (await client.get("/api/users", headers=AUTH)).status == 200  # a GET: not recorded
    revoked = await client.post(f"/api/users/{user['id']}/tokens/revoke", headers=AUTH)
    assert revoked.status == 200
    assert (await client.delete(f"/api/keys/{reader['id']}", headers=AUTH)).status == 200

    items = await audit_items(client)
    summary = [(i["action"], i["target"], i["result"]) for i in reversed(items)]
    admin = items[-1]["actor"]
    assert admin.startswith("key:key_")
    assert summary == [
        ("user.create", f"user:{user['id']}", "201"),
        ("notification.send", f"user:{user['id']}", "202"),
        ("key.create", f"key:{reader['id']}", "201"),
        ("user.create", None, "403"),
        ("user.create", None, "422"),
        ("user.tokens_revoke", f"user:{user['id']}", "200"),
        ("key.revoke", f"key:{reader['id']}", "200"),
        # The failed authentication, tallied and written when the trail is read.
        ("auth.fail", None, "401"),
    ]
    actors = [i["actor"] for i in reversed(items)]
    assert actors == [admin, admin, admin, f"key:{reader['id']}", admin, admin, admin, "anonymous"]
    failed = items[0]["detail"]
    assert (failed["count"], failed["actions"]) == (1, {"notification.send": 1})
    items = items[1:]
    assert {i["source"] for i in items} == {"127.0.0.1"}
    sent = items[-2]
    assert sent["detail"] == {"notification_id": accepted["id"], "seq": accepted["seq"]}
    assert items[-3]["detail"] == {"role": "reader", "categories": None, "broadcast": False}
    ids = [i["id"] for i in items]
    assert ids == sorted(ids, reverse=True)


async def test_audit_filters_and_pages(client: Client) -> None:
    users = [await create_user(client) for _ in range(5)]
    for user in users:
        await send(client, user["id"])
    sends = await audit_items(client, action="notification.send")
    assert len(sends) == 5
    assert [i["target"] for i in sends] == [f"user:{u['id']}" for u in reversed(users)]
    one = await audit_items(client, target=f"user:{users[0]['id']}")
    assert [i["action"] for i in one] == ["notification.send", "user.create"]
    assert await audit_items(client, actor="key:nobody") == []
    now = datetime.now(UTC)
    later = (now + timedelta(hours=1)).isoformat()
    assert await audit_items(client, since=later) == []
    assert len(await audit_items(client, until=later)) == 10
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = await (await client.get("/api/audit", params=params, headers=AUTH)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 10
    assert seen == sorted(seen, reverse=True)
    for bad in ({"since": "yesterday"}, {"since": "2026-01-01T00:00:00"}, {"limit": "0"}):
        response = await client.get("/api/audit", params=bad, headers=AUTH)
        assert response.status == 400, bad
        assert (await response.json())["error"]["field"] == next(iter(bad))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_unauthenticated_flood_is_limited_per_source_and_tallied_not_stored_per_call(
    make_client: MakeClient,
) -> None:
    """Guards anyone without a key filling the database (issue #10 item 2): every failed
    call used to append a record, before any rate limit, with the path's made-up 8 KB
    user id as its target."""
    client = await make_client(limits={"unauthenticated_rate": 0.01, "unauthenticated_burst": 5})
    statuses = []
    for n in range(30):
        response = await client.post(f"/api/users/{'x' * 8000}{n}/tokens", json={})
        statuses.append(response.status)
        if response.status == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert (await response.json())["error"]["code"] == "rate_limited"
    assert statuses == [401] * 5 + [429] * 25
    # Authenticated calls from the same address are not held back.
    user = await create_user(client)
    items = await audit_items(client)
    assert [(i["actor"], i["action"], i["target"]) for i in items[:2]] == [
        ("anonymous", "auth.fail", None)
    ] * 2
    tallied = {i["result"]: i["detail"] for i in items[:2]}
    assert {result: detail["count"] for result, detail in tallied.items()} == {"401": 5, "429": 25}
    assert tallied["429"]["actions"] == {"token.issue": 25}
    assert [(i["action"], i["target"]) for i in items[2:]] == [
        ("user.create", f"user:{user['id']}")
    ]
    assert max(len(i["target"] or "") for i in items) < 100


async def test_failed_authentications_are_written_once_per_window_without_a_reader(
    make_client: MakeClient,
) -> None:
    client = await make_client(audit={"unauthenticated_window": 0.2})
    for _ in range(3):
        assert (await client.post("/api/users", json={})).status == 401
    storage = client.app[STORAGE]
    async with asyncio.timeout(5):  # written by the window's end, not by a reader
        while not await storage.list_audit(action="auth.fail", limit=10):  # noqa: ASYNC110 - polls storage
            await asyncio.sleep(0.05)
    await client.app[AUDIT].flush()
    stored = await storage.list_audit(action="auth.fail", limit=10)
    assert sum(record.detail["count"] for record in stored if record.detail) == 3
    assert {record.source for record in stored} == {"127.0.0.1"}


async def test_a_revoked_key_is_recorded_with_its_id_not_as_anonymous(client: Client) -> None:
    """Guards issue #10 item 11: a call with a revoked key was recorded as `anonymous`,
    losing which key is still in use after its revocation."""
    key, record = await create_key(client, "publisher")
    assert (await client.delete(f"/api/keys/{record['id']}", headers=AUTH)).status == 200
    response = await client.post("/api/users", json={}, headers=bearer(key))
    assert response.status == 401
    assert "revoked" in (await response.json())["error"]["message"]
    items = await audit_items(client, actor=f"key:{record['id']}")
    assert [(i["action"], i["target"], i["result"]) for i in items] == [("auth.fail", None, "401")]
    assert items[0]["detail"]["key_revoked"] is True
    assert items[0]["detail"]["actions"] == {"user.create": 1}


SECURITY_DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
# Recorded outside the route table: by `pushd keys` and `pushd rekey`.
CLI_ACTIONS = {"key.create", "key.revoke", "storage.rekey"}


def test_the_documented_audit_actions_are_exactly_the_recorded_ones() -> None:
    """Guards actions missing from docs/security.md (issue #10 item 11: the mark-read
    routes were recorded under names the document did not list)."""
    rows = [
        line
        for line in SECURITY_DOC.read_text(encoding="utf-8").splitlines()
        if line.startswith("| `action` |")
    ]
    assert len(rows) == 1, "docs/security.md lost the `action` row of the audit table"
    documented = set(re.findall(r"`([a-z_]+\.[a-z_]+)`", rows[0]))
    recorded = {route.audit_action for route in ROUTES if route.audited}
    assert documented == recorded | HANDLER_ACTIONS | CLI_ACTIONS | {FAILED_AUTH_ACTION}
    assert all(re.fullmatch(r"[a-z_]+\.[a-z_]+", action) for action in recorded)


# the writer ------------------------------------------------------------------------------


@pytest.fixture
async def sqlite_storage(tmp_path: Path) -> Any:
    store = await open_storage(f"sqlite:///{tmp_path / 'audit.db'}")
    await store.migrate()
    yield store
    await store.close()


def record(number: int) -> NewAuditRecord:
    return NewAuditRecord(at=number, actor="key:k", action="test.write", result="ok")


async def test_writer_batches_records_instead_of_one_write_each(sqlite_storage: Storage) -> None:
    """Guards a storage round trip per audited request (the hot POST /api/notifications):
    records queued together are appended in one transaction."""
    writer = AuditWriter(sqlite_storage, queue_size=1000, max_batch=512)
    await writer.start()
    for number in range(300):
        await writer.record(record(number))
    await writer.flush()
    assert writer.written == 300
    assert writer.batches == 1
    await writer.close()
    stored = await sqlite_storage.list_audit(limit=1000)
    assert [r.at for r in reversed(stored)] == list(range(300))


async def test_full_queue_makes_callers_wait_and_close_writes_everything(
    sqlite_storage: Storage,
) -> None:
    """Guards the overflow policy: with a tiny queue, many concurrent callers wait for
    space; none is dropped, and close() writes what is still queued."""
    writer = AuditWriter(sqlite_storage, queue_size=2, max_batch=3)
    await writer.start()
    await asyncio.gather(*(writer.record(record(n)) for n in range(100)))
    await writer.close()
    stored = await sqlite_storage.list_audit(limit=1000)
    assert sorted(r.at for r in stored) == list(range(100))
    assert writer.logged_instead == 0
    with pytest.raises(audit_module.AuditWriterClosedError):
        await writer.record(record(0))


async def test_records_storage_refuses_are_logged_not_lost_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_module, "_WRITE_BACKOFF", Backoff(base=0.001, cap=0.001))
    store = await open_storage(f"sqlite:///{tmp_path / 'gone.db'}")
    await store.migrate()
    await store.close()  # every append now raises StorageUnavailableError
    writer = AuditWriter(store, queue_size=10, max_batch=10)
    await writer.start()
    with caplog.at_level(logging.WARNING, logger="pushd.access.audit_writer"):
        await writer.record(record(1))
        await writer.record(record(2))
        await writer.flush()
        await writer.close()
    assert writer.logged_instead == 2
    lost = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(lost) == 2
    assert '"action":"test.write"' in lost[0]


async def test_close_writes_the_failed_authentications_tallied_so_far(
    sqlite_storage: Storage,
) -> None:
    """Guards tallies lost on shutdown: they wait for the end of their window, which
    close() brings forward."""
    writer = AuditWriter(sqlite_storage, queue_size=10, max_batch=10, failed_auth_window=3600)
    await writer.start()
    for at in (1, 2):
        writer.record_failed_auth(
            key_id=None, source="10.0.0.1", action="user.create", result="401", at=at
        )
    await writer.close()
    stored = await sqlite_storage.list_audit(limit=10)
    assert [(r.action, r.at, r.detail) for r in stored] == [
        ("auth.fail", 1, {"count": 2, "last_at": 2, "actions": {"user.create": 2}})
    ]
    with pytest.raises(audit_module.AuditWriterClosedError):
        writer.record_failed_auth(
            key_id=None, source="10.0.0.1", action="user.create", result="401", at=3
        )


async def test_audit_writer_is_flushed_on_app_shutdown(client: Client) -> None:
    """Guards records lost on SIGTERM: what is queued when the app stops is written
    before storage closes (the writer's cleanup context stops first)."""
    writer = client.app[AUDIT]
    await create_user(client)
    await writer.flush()
    before = writer.written
    await writer.record(record(7))  # the queue had room: nothing yielded, still queued
    assert writer.written == before
    await client.close()
    assert writer.written == before + 1
