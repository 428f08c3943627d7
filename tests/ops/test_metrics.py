"""`GET /metrics` (pushd/ops/metrics.py): every instrument is exported under the name
docs/architecture.md lists, and the figures other components keep for metrics (the
actor runtime's counters, audit records not stored, cursor flush failures) reach it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from pushd.appkeys import AUDIT, CURSORS, MAILBOXES
from pushd.ops.metrics import Metrics
from tests.app_client import AUTH, create_user, send, user_token

Client = TestClient[Any, Any]

ARCHITECTURE_DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


async def scrape(client: Client) -> dict[str, float]:
    """name -> value of every sample (pushd's metrics have no labels)."""
    response = await client.get("/metrics", headers=AUTH)
    assert response.status == 200
    assert response.content_type == "text/plain"
    samples = {}
    for line in (await response.text()).splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


async def declared(client: Client) -> set[str]:
    text = await (await client.get("/metrics", headers=AUTH)).text()
    return set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))


def documented() -> set[str]:
    section = ARCHITECTURE_DOC.read_text(encoding="utf-8").split("\n## Metrics\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(pushd_\w+)` \|", section, re.MULTILINE))


async def test_every_metric_is_exported_and_documented(client: Client) -> None:
    names = set(Metrics().registry.collectors)
    assert await declared(client) == names
    assert documented() == names


async def test_figures_kept_by_their_owners_are_read_at_each_scrape(client: Client) -> None:
    """Guards a counter kept "for metrics" that no scrape reads (as `restarts`,
    `dead_letters`, `logged_instead` and `flush_failures` once were)."""
    owned = {
        "pushd_mailbox_actors_started_total": (client.app[MAILBOXES], "actors_started"),
        "pushd_mailbox_actors_passivated_total": (client.app[MAILBOXES], "actors_passivated"),
        "pushd_mailbox_messages_processed_total": (
            client.app[MAILBOXES],
            "messages_processed",
        ),
        "pushd_mailbox_actor_restarts_total": (client.app[MAILBOXES], "restarts"),
        "pushd_mailbox_dead_letters_total": (client.app[MAILBOXES], "dead_letters"),
        "pushd_audit_records_not_stored_total": (client.app[AUDIT], "logged_instead"),
        "pushd_cursor_flush_failures_total": (client.app[CURSORS], "flush_failures"),
    }
    before = await scrape(client)
    others = [
        "pushd_mailbox_sockets_dropped_total",
        "pushd_mailbox_actors",
        "pushd_mailbox_queued_messages",
    ]
    for name in [*owned, *others]:
        assert before[name] == 0, name
    for value, (owner, attribute) in enumerate(owned.values(), start=2):
        setattr(owner, attribute, value)
    after = await scrape(client)
    for value, name in enumerate(owned, start=2):
        assert after[name] == value, name


async def test_handoffs_count_messages_handed_to_a_mailbox(client: Client) -> None:
    """One per notification for a user with a live mailbox here; /api/stats agrees."""
    user = await create_user(client)
    async with client.ws_connect("/ws") as ws:
        await ws.send_json({"type": "auth", "token": await user_token(client, user["id"])})
        assert (await ws.receive_json(timeout=5))["type"] == "welcome"
        await send(client, user["id"])
        assert (await ws.receive_json(timeout=5))["type"] == "notification"
        samples = await scrape(client)
        assert samples["pushd_mailbox_handoffs_total"] == 1
        assert samples["pushd_mailbox_actors"] == 1
        assert samples["pushd_websocket_connections"] == 1
    stats = await (await client.get("/api/stats", headers=AUTH)).json()
    assert stats["frames_handed_to_mailboxes"] == 1
