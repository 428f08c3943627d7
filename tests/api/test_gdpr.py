"""GDPR over the HTTP API (issue #4 point 5): a user's export is one JSON document with
everything pushd holds about them; erasure leaves nothing about them in any table of the
database, closes their sockets (4503) and is idempotent. Plus encryption at rest of the
embedded default, read from the SQLite file itself."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp.test_utils import TestClient

from actors.transport import CloseCode
from pushd.api import gdpr
from pushd.api.gdpr import UserExport
from pushd.appkeys import STORAGE
from pushd.ids import now_ms
from storage.records import DeliveryOutcome, NewAuditRecord, NewNotification, PlannedDelivery
from tests.api.test_tokens import refused_with
from tests.app_client import AUTH, MakeClient, create_user, send, user_token
from tests.realtime.test_ws import connect, next_notification

Client = TestClient[Any, Any]

CONTACT = {"name": "Ada Secretname", "email": "ada.secret@example.org", "phone": "+33611223344"}
TITLE, BODY, DATA_VALUE = "TitleSecretGDPR", "BodySecretGDPR", "DataSecretGDPR"


def dump_sqlite(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the SQLite file, read without pushd."""
    connection = sqlite3.connect(path)
    try:
        tables = [
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        return {t: connection.execute(f"SELECT * FROM {t}").fetchall() for t in tables}  # noqa: S608
    finally:
        connection.close()


async def raw_tables(tmp_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    return await asyncio.to_thread(dump_sqlite, tmp_path / "pushd.db")


def _read_files(paths: list[Path]) -> bytes:
    return b"".join(path.read_bytes() for path in paths if path.exists())


async def raw_bytes(tmp_path: Path) -> bytes:
    """The bytes of the database file and of its -wal and -shm, as they are on disk:
    what a copy of the data dir holds, deleted rows and old page images included."""
    names = ("pushd.db", "pushd.db-wal", "pushd.db-shm")
    return await asyncio.to_thread(_read_files, [tmp_path / name for name in names])


async def user_with_history(client: Client, external_id: str = "crm-ada") -> dict[str, Any]:
    """A user with contact fields, a device, notifications (one read, one sent with an
    Idempotency-Key) and moved delivery cursors."""
    user = await create_user(client, external_id=external_id, **CONTACT)
    # A token of their own: a push address registered again moves to the new user.
    device = {"kind": "fcm", "token": f"fcm-token-for-{external_id}-0123456789"}
    response = await client.post(f"/api/users/{user['id']}/devices", json=device, headers=AUTH)
    assert response.status == 201
    for i in range(4):
        await send(client, user["id"], title=f"{TITLE}{i}", body=BODY, data={"k": DATA_VALUE})
    headers = {**AUTH, "Idempotency-Key": f"idem-{external_id}"}
    payload = {"user_id": user["id"], "title": TITLE}
    response = await client.post("/api/notifications", json=payload, headers=headers)
    assert response.status == 202
    read = await client.get(f"/api/notifications/user/{user['id']}?limit=1", headers=AUTH)
    newest = (await read.json())["items"][0]["id"]
    assert (await client.post(f"/api/notifications/{newest}/read", headers=AUTH)).status == 200
    await client.app[STORAGE].advance_cursors(sent={user["id"]: 3}, acked={user["id"]: 2}, at=1)
    return user


async def test_export_is_one_document_with_everything_about_the_user(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gdpr, "EXPORT_PAGE_SIZE", 2)  # several pages of every list
    user = await user_with_history(client)
    other = await create_user(client)
    await send(client, other["id"], title="not hers")
    response = await client.get(f"/api/users/{user['id']}/export", headers=AUTH)
    assert response.status == 200
    assert response.content_type == "application/json"
    raw = await response.read()
    document = msgspec.json.decode(raw, type=UserExport)  # exactly the documented type
    assert document.user.id == user["id"]
    assert (document.user.name, document.user.email, document.user.phone) == tuple(CONTACT.values())
    assert [d.token for d in document.devices] == ["fcm-token-for-crm-ada-0123456789"]
    assert [n.seq for n in document.notifications] == [5, 4, 3, 2, 1]
    assert document.notifications[-1].title == f"{TITLE}0"
    assert document.notifications[-1].data == {"k": DATA_VALUE}
    assert document.notifications[0].read_at is not None
    statuses = [n.deliveries[0].status for n in document.notifications]
    assert statuses == ["read", "queued", "sent", "delivered", "delivered"]
    assert (document.cursors.sent_seq, document.cursors.ack_seq, document.cursors.last_seq) == (
        3,
        2,
        5,
    )
    assert [(h.cursor, h.seq) for h in document.cursor_history] == [("acked", 2), ("sent", 3)]
    assert [(k.key, k.seq) for k in document.idempotency_keys] == [("idem-crm-ada", 5)]
    actions = {entry.action for entry in document.audit}
    assert {"user.create", "device.register", "notification.send"} <= actions
    assert all(entry.target == f"user:{user['id']}" for entry in document.audit)
    assert b"not hers" not in raw

    missing = await client.get("/api/users/usr_nobody/export", headers=AUTH)
    assert missing.status == 404


async def test_export_holds_no_record_of_calls_without_a_valid_key(client: Client) -> None:
    """Guards records anyone could add to a real user's export (issue #10 item 2): a
    call without a valid key named the user of its path, unverified, as its target."""
    user = await create_user(client)
    for _ in range(3):
        assert (await client.post(f"/api/users/{user['id']}/tokens", json={})).status == 401
    # One recorded that way before this rule: left out of the export too.
    legacy = NewAuditRecord(
        at=now_ms(),
        actor="anonymous",
        action="token.issue",
        target=f"user:{user['id']}",
        result="401",
    )
    await client.app[STORAGE].append_audit([legacy])
    response = await client.get(f"/api/users/{user['id']}/export", headers=AUTH)
    document = msgspec.json.decode(await response.read(), type=UserExport)
    assert [(e.action, e.result) for e in document.audit] == [("user.create", "201")]


async def test_export_and_erasure_cover_channel_deliveries(
    client: Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Guards the tables of deliveries beyond the socket: their attempts are in the
    export, page after page, and erasure leaves none of their rows."""
    monkeypatch.setattr(gdpr, "EXPORT_PAGE_SIZE", 2)
    user = await create_user(client, email="ada@example.org")
    storage = client.app[STORAGE]
    at = now_ms()
    steps = tuple(PlannedDelivery(id=f"dlv_{i}", channel="email", due_at=at) for i in range(3))
    await storage.insert_notifications(
        [NewNotification(id="ntf_planned", user_id=user["id"], created_at=at, deliveries=steps)]
    )
    leased = await storage.lease_due_deliveries(
        ["email"], now=at, limit=10, owner="test", lease_ms=60_000
    )
    await storage.record_delivery_outcomes(
        [
            DeliveryOutcome(delivery_id=d.id, at=at + 1, status="sent", provider="smtp")
            for d in leased
        ]
    )
    response = await client.get(f"/api/users/{user['id']}/export", headers=AUTH)
    document = msgspec.json.decode(await response.read(), type=UserExport)
    assert [(e.delivery_id, e.status, e.provider) for e in document.channel_delivery_history] == [
        (f"dlv_{i}", "sent", "smtp") for i in range(3)
    ]

    assert (await client.delete(f"/api/users/{user['id']}", headers=AUTH)).status == 204
    tables = await raw_tables(tmp_path)
    assert (tables["channel_deliveries"], tables["channel_delivery_history"]) == ([], [])


async def test_erase_leaves_nothing_about_the_user_in_any_table(
    make_client: MakeClient, tmp_path: Path
) -> None:
    """Guards erasure against a forgotten table: the table list is read from the SQLite
    file itself, so a new table holding user data without erase support fails here. And
    against deleted bytes left on disk: the raw files, WAL included, are searched too."""
    client = await make_client()
    user = await user_with_history(client)
    bystander = await user_with_history(client, "crm-bob")
    token = await user_token(client, user["id"])
    ws, _ = await connect(client, token)
    accepted = await send(client, user["id"])
    while (await next_notification(ws))["id"] != accepted["id"]:
        pass  # the replay of what was not acked comes first

    response = await client.delete(f"/api/users/{user['id']}", headers=AUTH)
    assert response.status == 204
    # Not even in the files' free space or the WAL's older page images (issue #10).
    on_disk = await raw_bytes(tmp_path)
    for erased in (user["id"], "crm-ada", "fcm-token-for-crm-ada-0123456789", "idem-crm-ada"):
        assert erased.encode() not in on_disk, erased
    assert b"crm-bob" in on_disk  # the bystander: the read does see rows
    closed = await ws.receive(timeout=5)
    # The code the server sent (ws.close_code may read 1006 if the server drops the TCP
    # connection before the client's close reply is out).
    assert (closed.type, closed.data) == (aiohttp.WSMsgType.CLOSE, CloseCode.USER_UNKNOWN)
    assert await refused_with(client, token) == CloseCode.USER_UNKNOWN
    assert (await client.get(f"/api/users/{user['id']}", headers=AUTH)).status == 404
    assert (await client.get(f"/api/users/{user['id']}/export", headers=AUTH)).status == 404

    # Idempotent: a second erasure answers the same and leaves the same.
    again = await client.delete(f"/api/users/{user['id']}", headers=AUTH)
    assert again.status == 204
    audit = await (await client.get("/api/audit?action=user.erase", headers=AUTH)).json()
    targets = [entry["target"] for entry in audit["items"]]
    assert len(targets) == 2
    assert all(target.startswith("user:erased-") for target in targets)

    tables = await raw_tables(tmp_path)
    assert {"users", "devices", "notifications", "cursor_history", "idempotency_keys"} <= set(
        tables
    )
    for table, rows in tables.items():
        text = repr(rows)
        assert user["id"] not in text, table
        assert "crm-ada" not in text, table
    assert "crm-bob" in repr(tables["users"])
    erased_audit = [row for row in tables["audit_log"] if "user:erased-" in repr(row)]
    assert len(erased_audit) >= 4  # create, device, sends: kept, pseudonymised
    # The bystander keeps everything.
    kept = await client.get(f"/api/users/{bystander['id']}/export", headers=AUTH)
    assert len((await kept.json())["notifications"]) == 5
    await ws.close()


async def test_erasing_an_unknown_user_is_a_no_op(client: Client) -> None:
    response = await client.delete("/api/users/usr_never_existed", headers=AUTH)
    assert response.status == 204


# encryption at rest, embedded default -------------------------------------------------------


async def test_embedded_default_encrypts_with_a_generated_key(
    make_client: MakeClient, tmp_path: Path
) -> None:
    client = await make_client()
    user = await user_with_history(client)
    raw = repr(await raw_tables(tmp_path))
    for secret in (*CONTACT.values(), TITLE, BODY, DATA_VALUE):
        assert secret not in raw
    stored = json.loads((tmp_path / "secrets.json").read_text())
    key_id = stored["encryption_key"].partition(":")[0]
    assert f"enc:v1:{key_id}:" in raw
    # Readable through the API, and again after a restart (same data dir, same key).
    await client.close()
    restarted = await make_client()
    listed = await restarted.get(f"/api/notifications/user/{user['id']}", headers=AUTH)
    assert {n["body"] for n in (await listed.json())["items"]} == {BODY, None}
    assert (await (await restarted.get(f"/api/users/{user['id']}", headers=AUTH)).json())[
        "email"
    ] == CONTACT["email"]


async def test_encryption_can_be_turned_off(make_client: MakeClient, tmp_path: Path) -> None:
    """The counterpart of the test above: it proves the raw dump would show plaintext."""
    client = await make_client(encryption={"enabled": False})
    await user_with_history(client)
    raw = repr(await raw_tables(tmp_path))
    assert TITLE in raw
    assert CONTACT["email"] in raw
