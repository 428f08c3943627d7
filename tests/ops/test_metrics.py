"""`GET /metrics` (pushd/ops/metrics.py): every instrument is exported under the name and
type docs/metrics.md lists, the figures other components keep for metrics (the actor
runtime's counters, audit records not stored, cursor flush failures, storage usage,
limit refusals) reach it, and the HTTP series are labelled by route template."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from pushd.appkeys import AUDIT, CURSORS, MAILBOXES
from pushd.ops.metrics import Metrics
from tests.app_client import AUTH, create_user, send, user_token

Client = TestClient[Any, Any]

METRICS_DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


async def scrape(client: Client) -> dict[str, float]:
    """name (with its labels, as written) -> value of every sample."""
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


def catalogue() -> list[tuple[str, str]]:
    """(name, type) of every row of the table of docs/metrics.md (also read by the real
    Prometheus test, so that the doc, the code and Prometheus cannot drift apart)."""
    text = METRICS_DOC.read_text(encoding="utf-8")
    return re.findall(r"^\| `(pushd_\w+)` \| (\w+) \|", text, re.MULTILINE)


async def test_every_metric_is_exported_and_documented(client: Client) -> None:
    collectors = Metrics().registry.collectors
    assert await declared(client) == set(collectors)
    rows = catalogue()
    assert len(rows) == len(set(rows)), "a series is listed twice in docs/metrics.md"
    assert dict(rows) == {name: c.kind.name for name, c in collectors.items()}


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
        # The user's mailbox is parked and the notification applied to it at once: no
        # live actor (actors/user_mailbox.py, UserMailboxes.tell).
        assert samples["pushd_mailbox_actors"] == 0
        assert samples["pushd_websocket_connections"] == 1
    stats = await (await client.get("/api/stats", headers=AUTH)).json()
    assert stats["frames_handed_to_mailboxes"] == 1


async def test_http_requests_are_labelled_by_route_template(client: Client) -> None:
    """Never the raw path (one series per user id would grow without bound); the router's
    404 under `unmatched`; latency observed for answered requests."""
    user = await create_user(client)
    assert (await client.get(f"/api/users/{user['id']}", headers=AUTH)).status == 200
    assert (await client.get(f"/api/nowhere/{user['id']}", headers=AUTH)).status == 404
    text = await (await client.get("/metrics", headers=AUTH)).text()
    assert user["id"] not in text
    requests = 'pushd_http_requests_total{method="GET",route="/api/users/{userId}",status="200"}'
    samples = await scrape(client)
    assert samples[requests] == 1
    assert samples['pushd_http_requests_total{method="GET",route="unmatched",status="404"}'] == 1
    latency = 'pushd_http_request_seconds_count{method="GET",route="/api/users/{userId}"}'
    assert samples[latency] == 1


async def test_delivery_latency_counts_live_frames_not_replays(client: Client) -> None:
    user = await create_user(client)
    await send(client, user["id"])  # stored before the socket: replayed
    async with client.ws_connect("/ws") as ws:
        await ws.send_json({"type": "auth", "token": await user_token(client, user["id"])})
        assert (await ws.receive_json(timeout=5))["type"] == "welcome"
        assert (await ws.receive_json(timeout=5))["type"] == "notification"
        await send(client, user["id"])  # live
        assert (await ws.receive_json(timeout=5))["type"] == "notification"
        samples = await scrape(client)
    assert samples["pushd_delivery_latency_seconds_count"] == 1
    assert samples["pushd_replayed_notifications_total"] == 1
    assert samples["pushd_ingest_commit_batch_size_count"] == 2
    assert samples["pushd_bus_messages_published_total"] >= 2
    assert samples["pushd_bus_messages_consumed_total"] >= 2
    after = await scrape(client)
    assert after['pushd_stream_closes_total{reason="normal",transport="websocket"}'] == 1


async def test_storage_usage_and_limit_refusals_are_read_at_scrape(
    make_client: Callable[..., Awaitable[Client]],
) -> None:
    client = await make_client(limits={"unauthenticated_burst": 1, "unauthenticated_rate": 0.01})
    await create_user(client, external_id="same")
    conflict = await client.post("/api/users", json={"external_id": "same"}, headers=AUTH)
    assert conflict.status == 409
    bad = {"Authorization": "Bearer pk_not_a_key_0123456789abcdefghijklmnopqrstuv"}
    statuses = [(await client.get("/api/users", headers=bad)).status for _ in range(3)]
    assert 429 in statuses
    samples = await scrape(client)
    assert samples["pushd_storage_pool_max_connections"] == 1  # SQLite
    assert samples["pushd_storage_pool_connections"] == 1
    assert samples['pushd_storage_errors_total{kind="conflict"}'] == 1
    assert samples['pushd_rate_limited_total{limit="unauthenticated"}'] == statuses.count(429)
    assert samples['pushd_rate_limited_total{limit="api_key"}'] == 0


async def test_hot_path_instruments_can_be_left_out(
    make_client: Callable[..., Awaitable[Client]],
) -> None:
    """`metrics.hot_path = false` (for measuring their cost): no HTTP middleware, no
    delivery or commit observation; the rest is still served."""
    client = await make_client(metrics={"hot_path": False})
    user = await create_user(client)
    await send(client, user["id"])
    samples = await scrape(client)
    assert not [name for name in samples if name.startswith("pushd_http_")]
    assert samples["pushd_ingest_commit_batch_size_count"] == 0
    assert samples["pushd_notifications_accepted_total"] == 1
