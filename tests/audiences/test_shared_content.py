"""A fan-out's content stored once per send, over the real app (docs/audiences.md, "How a
fan-out is stored"): a topic send to several users in several chunks stores ONE content,
and every user still reads their notification with its content on a live socket, on
resume, in their history, by id and in their export; a template send stores one content
per rendering; erasing one recipient leaves the others' content."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from tests.api.test_broadcast import accepted_send, finished, save_template, titles_of
from tests.api.test_topic_sends import subscribe
from tests.api.test_topics import create_topic
from tests.app_client import AUTH, SQLITE_FILE, MakeClient, create_user, user_token
from tests.realtime.test_ws import connect, next_notification
from tests.storage.conftest import raw_sql

Client = TestClient[Any, Any]
SMALL_CHUNKS = {"chunk_size": 2}  # five recipients: three chunks, three transactions
CONTENT = {"title": "Maintenance", "body": "Tonight 22:00", "data": {"window": "2h"}}


async def stored(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of the app's embedded database (in the test's data dir)."""
    return await raw_sql(f"sqlite:///{tmp_path / SQLITE_FILE}", sql)


async def history(client: Client, user_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/notifications/user/{user_id}", headers=AUTH)
    assert response.status == 200, await response.text()
    items: list[dict[str, Any]] = (await response.json())["items"]
    return items


def content(item: dict[str, Any]) -> tuple[Any, ...]:
    return item["title"], item["body"], item["data"]


async def test_a_topic_send_stores_its_content_once_and_everyone_reads_it(
    make_client: MakeClient, tmp_path: Path
) -> None:
    client = await make_client(audiences=SMALL_CHUNKS)
    await create_topic(client, "ops")
    users = [(await create_user(client))["id"] for _ in range(5)]
    await subscribe(client, "ops", users)
    live, _ = await connect(client, await user_token(client, users[0]))
    send_id = await accepted_send(client, {"topic": "ops", **CONTENT})
    frame = await next_notification(live)  # the live frame, from the bus
    await live.close()
    assert (await finished(client, send_id))["status"] == "done"
    assert (frame["title"], frame["body"], frame["data"]) == tuple(CONTENT.values())

    # One content for five recipients; their rows hold a reference, no copy.
    assert await stored(tmp_path, "SELECT send_id FROM send_contents") == [(send_id,)]
    rows = await stored(
        tmp_path,
        "SELECT title, body, data, channel_content, content_no IS NOT NULL FROM notifications",
    )
    assert rows == [(None, None, None, None, 1)] * 5
    # Encryption at rest (on by default): the one content is sealed.
    [sealed] = await stored(tmp_path, "SELECT title, body, data FROM send_contents")
    assert all(value.startswith("enc:v1:") for value in sealed)

    # Resume: a socket that reconnects from seq 0 is replayed the stored notification.
    replay, _ = await connect(client, await user_token(client, users[1]))
    replayed = await next_notification(replay)
    await replay.close()
    assert (replayed["title"], replayed["body"], replayed["data"]) == tuple(CONTENT.values())
    for user_id in users:
        [item] = await history(client, user_id)
        assert content(item) == tuple(CONTENT.values())
    by_id = await client.get(f"/api/notifications/{item['id']}", headers=AUTH)
    assert content(await by_id.json()) == tuple(CONTENT.values())
    export = await client.get(f"/api/users/{users[2]}/export", headers=AUTH)
    assert export.status == 200
    [exported] = (await export.json())["notifications"]
    assert content(exported) == tuple(CONTENT.values())

    # Erasing a recipient removes their row; the content stays for the four others.
    assert (await client.delete(f"/api/users/{users[0]}", headers=AUTH)).status == 204
    assert await stored(tmp_path, "SELECT send_id FROM send_contents") == [(send_id,)]
    for user_id in users[1:]:
        assert content((await history(client, user_id))[0]) == tuple(CONTENT.values())


async def test_a_template_send_stores_one_content_per_rendering(
    make_client: MakeClient, tmp_path: Path
) -> None:
    client = await make_client(audiences=SMALL_CHUNKS)
    await save_template(
        client,
        "release",
        {
            "default_locale": "en",
            "locales": {
                "en": {"inapp": {"title": "Released"}},
                "fr": {"inapp": {"title": "Publiée"}},
            },
        },
    )
    english = [(await create_user(client, locale="en"))["id"] for _ in range(3)]
    french = [(await create_user(client, locale="fr"))["id"] for _ in range(3)]
    send_id = await accepted_send(client, {"broadcast": True, "template": "release"})
    assert (await finished(client, send_id))["recipients"]["committed"] == 6
    assert await stored(tmp_path, "SELECT count(*) FROM send_contents") == [(2,)]
    for user_id in english:
        assert await titles_of(client, user_id) == ["Released"]
    for user_id in french:
        assert await titles_of(client, user_id) == ["Publiée"]
