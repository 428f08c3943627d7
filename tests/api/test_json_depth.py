"""Deeply nested JSON at every boundary (issue #10, item 5): request bodies, WebSocket
frames, and JSON read back from storage. msgspec decodes recursively: about 1,000 levels
raised RecursionError (a 500, or an unhandled error in the socket's reader), and a few
levels less were stored and then broke every read of the notification."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from actors.transport import CloseCode
from tests.app_client import AUTH, MakeClient, create_user, send, user_token

Client = TestClient[Any, Any]


def nested(levels: int) -> Any:
    """`levels` arrays inside each other, innermost holding 1."""
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def nested_text(levels: int) -> str:
    return "[" * levels + "]" * levels


async def error_of(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    error: dict[str, Any] = (await response.json())["error"]
    return error


async def test_data_nested_deeper_than_the_limit_is_a_422_naming_data(client: Client) -> None:
    user = await create_user(client)
    # The body is level 1 and `data` level 2: 30 arrays inside it make 32 levels in all.
    within = {"user_id": user["id"], "title": "t", "data": {"a": nested(30)}}
    accepted = await client.post("/api/notifications", json=within, headers=AUTH)
    assert accepted.status == 202, await accepted.text()
    over = {"user_id": user["id"], "title": "t", "data": {"a": nested(31)}}
    error = await error_of(await client.post("/api/notifications", json=over, headers=AUTH), 422)
    assert (error["code"], error["field"]) == ("validation_failed", "data")
    assert "limits.json_max_depth" in error["message"]


async def test_thousands_of_levels_are_a_422_not_a_500(client: Client) -> None:
    """Guards the RecursionError: 986 levels in `data` answered 500."""
    user = await create_user(client)
    for levels in (985, 5000):
        raw = f'{{"user_id": "{user["id"]}", "title": "t", "data": {{"a": {nested_text(levels)}}}}}'
        response = await client.post(
            "/api/notifications", data=raw, headers={**AUTH, "Content-Type": "application/json"}
        )
        assert (await error_of(response, 422))["field"] == "data"
    # Every route's body is measured, whatever its type: the member is named.
    raw = f'{{"name": {nested_text(5000)}}}'
    response = await client.post(
        "/api/users", data=raw, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert (await error_of(response, 422))["field"] == "name"


async def test_the_limit_is_configuration(make_client: MakeClient) -> None:
    client = await make_client(limits={"json_max_depth": 4})
    user = await create_user(client)
    ok = {"user_id": user["id"], "title": "t", "data": {"a": nested(2)}}
    assert (await client.post("/api/notifications", json=ok, headers=AUTH)).status == 202
    over = {"user_id": user["id"], "title": "t", "data": {"a": nested(3)}}
    response = await client.post("/api/notifications", json=over, headers=AUTH)
    assert (await error_of(response, 422))["field"] == "data"


async def close_code_of(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    while True:
        message = await ws.receive(timeout=5)
        if message.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
        ):
            return ws.close_code


async def test_a_deep_websocket_frame_closes_the_socket_with_4500(client: Client) -> None:
    """Guards the reader's unhandled RecursionError: a 60 KB frame of nested arrays."""
    user = await create_user(client)
    token = await user_token(client, user["id"])
    deep = f'{{"type": "ping", "x": {nested_text(30_000)}}}'
    first = await client.ws_connect("/ws")
    await first.send_str(deep)
    assert await close_code_of(first) == CloseCode.PROTOCOL_ERROR
    ws = await client.ws_connect("/ws")
    await ws.send_json({"type": "auth", "token": token})
    assert (await ws.receive_json(timeout=5))["type"] == "welcome"
    await ws.send_str(deep)
    assert await close_code_of(ws) == CloseCode.PROTOCOL_ERROR
    # Within the limit, a frame the server cannot use is still only an error frame.
    again = await client.ws_connect("/ws")
    await again.send_json({"type": "auth", "token": token})
    assert (await again.receive_json(timeout=5))["type"] == "welcome"
    await again.send_str(f'{{"type": "ping", "x": {nested_text(5)}}}')
    while (frame := await again.receive_json(timeout=5))["type"] != "error":
        pass
    assert frame["code"] == "invalid_frame"
    await again.close()


def _write_data(database: Path, notification_id: str, data: str) -> None:
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        connection.execute(
            "UPDATE notifications SET data = ? WHERE id = ?", (data, notification_id)
        )


async def test_stored_data_that_cannot_be_decoded_never_breaks_a_read(
    client: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Guards a notification stored before the limit (984 levels were accepted) making
    its detail, every page of the user's history and the GDPR export answer 500."""
    user = await create_user(client)
    fine = await send(client, user["id"], data={"k": "v"})
    broken = await send(client, user["id"], data={"k": "v"})
    garbled = await send(client, user["id"], data={"k": "v"})
    await asyncio.to_thread(
        _write_data, tmp_path / "pushd.db", broken["id"], f'{{"a": {nested_text(5000)}}}'
    )
    await asyncio.to_thread(_write_data, tmp_path / "pushd.db", garbled["id"], '{"a": [1, ')
    caplog.set_level(logging.WARNING)

    for notification in (broken, garbled):
        response = await client.get(f"/api/notifications/{notification['id']}", headers=AUTH)
        assert response.status == 200, await response.text()
        detail = await response.json()
        assert (detail["data"], detail["data_unreadable"]) == (None, True)
        assert detail["title"] == "hello"
    page = await client.get(f"/api/notifications/user/{user['id']}", headers=AUTH)
    assert page.status == 200, await page.text()
    items = {item["id"]: item for item in (await page.json())["items"]}
    assert (items[fine["id"]]["data"], items[fine["id"]]["data_unreadable"]) == ({"k": "v"}, False)
    assert (items[broken["id"]]["data"], items[broken["id"]]["data_unreadable"]) == (None, True)
    export = await client.get(f"/api/users/{user['id']}/export", headers=AUTH)
    assert export.status == 200
    exported = {n["id"]: n for n in (await export.json())["notifications"]}
    assert exported[broken["id"]]["data_unreadable"] is True
    logged = [r.getMessage() for r in caplog.records if "data_unreadable" in r.getMessage()]
    assert any(broken["id"] in line for line in logged)
    assert any(garbled["id"] in line for line in logged)
