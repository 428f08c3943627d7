"""`kill -9` of pushd in the middle of sending a few hundred emails (issue #12, point 2).

A real SMTP relay (aiosmtpd, tests/channels/smtp_server.py) runs in the test process on
127.0.0.1 and takes `RELAY_DELAY` per message, so that pushd, with `POOL_SIZE` sessions,
needs a few seconds for them all. 300 notifications (100 users, 3 each) are POSTed, each
with one email step due now and a unique token in its subject. Once `KILL_AT` of them
have reached the relay, the server is SIGKILLed by its PID; the test reads the SQLite
file of the dead process (which rows were `sending`), restarts pushd on the same data
directory and waits until every delivery is `sent`.

Guards against: a delivery lost in the crash (its row committed before the 202 but never
sent, or a `sending` row whose expired lease is never taken again), and duplicates beyond
the bound of actors/channel_dispatch.py. A duplicate can only be a delivery whose email
the relay had accepted while its outcome was not stored yet (its row still `sending` in
the file the dead process left); every such delivery is sent again once its lease runs
out, so the duplicated tokens must be exactly those, and there can be at most the sends
in flight plus the outcomes waiting for their write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from actors.channel_dispatch import DispatchSettings
from tests.channels.smtp_server import LocalSmtpServer, RecordingHandler
from tests.faults.harness import AUTH, HTTP_TIMEOUT, Report, run_all, start_server
from tests.process.server_process import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

USERS = 100
PER_USER = 3
NOTIFICATIONS = USERS * PER_USER
POOL_SIZE = 4  # SMTP sessions of the provider: the sends in flight at most
RELAY_DELAY = 0.04  # seconds per message: about 100 emails/s, 3 s for them all
KILL_AT = 0.3  # share of the emails received when the server is killed
# Short, so that the restarted server takes the killed one's rows soon; long enough
# that a send (80% of it) never runs out of time on a busy machine, which would make a
# duplicate the crash did not cause.
LEASE_SECONDS = 3.0
# Outcomes waiting for their write: one batch at most (DispatchSettings.flush_size).
OUTCOME_BATCH = DispatchSettings().flush_size
DRAIN_DEADLINE = 60.0

_HEADERS = BytesHeaderParser(policy=policy.default)


class SlowRelay(RecordingHandler):
    """A relay that takes `delay` s in DATA before accepting, and remembers each
    accepted message's token (its subject) and Message-ID.

    A session lost during the delay accepts nothing (aiosmtpd cancels the handler), as a
    relay that never answered 250; `in_data_now` counts the messages inside DATA."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.in_data_now = 0
        self.accepted: Counter[str] = Counter()
        self.message_ids: dict[str, list[str]] = {}
        self._waiting: list[tuple[Callable[[], bool], asyncio.Event]] = []

    def when(self, condition: Callable[[], bool]) -> asyncio.Event:
        """An event set once `condition()` holds (checked whenever DATA begins or ends)."""
        event = asyncio.Event()
        self._waiting.append((condition, event))
        self._changed()
        return event

    def _changed(self) -> None:
        for condition, event in self._waiting:
            if not event.is_set() and condition():
                event.set()

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.in_data_now += 1
        try:
            await asyncio.sleep(self.delay)  # the relay's work, not synchronisation
            reply = await super().handle_DATA(server, session, envelope)
            assert isinstance(envelope.content, bytes)
            headers = _HEADERS.parsebytes(envelope.content)
            token = str(headers["Subject"])
            self.accepted[token] += 1
            self.message_ids.setdefault(token, []).append(str(headers["Message-ID"]))
            return reply
        finally:
            self.in_data_now -= 1
            self._changed()


def _token(index: int) -> str:
    return f"kill9-email-{index:04d}"


def _env(relay_port: int) -> dict[str, str]:
    provider = {
        "name": "relay",
        "host": "127.0.0.1",
        "port": relay_port,
        "security": "none",
        "from_address": "pushd@example.com",
        "pool_size": POOL_SIZE,
        "timeout": 2.0,
    }
    return {
        "PUSHD_CHANNELS__EMAIL": json.dumps([provider]),
        "PUSHD_CHANNELS__LEASE_SECONDS": str(LEASE_SECONDS),
        "PUSHD_CHANNELS__POLL_INTERVAL": "0.1",
        "PUSHD_CHANNELS__SHUTDOWN_TIMEOUT": "1",
    }


async def _create_users(session: aiohttp.ClientSession, url: str) -> list[str]:
    gate = asyncio.Semaphore(16)

    async def one(index: int) -> str:
        body = {"email": f"user{index}@example.com"}
        async with gate, session.post(f"{url}/api/users", json=body, headers=AUTH) as response:
            assert response.status == 201, await response.text()
            return str((await response.json())["id"])

    return await run_all(one(i) for i in range(USERS))


async def _post_notifications(
    session: aiohttp.ClientSession, url: str, user_ids: list[str]
) -> dict[str, str]:
    """POST every notification, with its email step due now: {token: notification id}."""
    gate = asyncio.Semaphore(16)

    async def one(index: int) -> tuple[str, str]:
        token = _token(index)
        body = {
            "user_id": user_ids[index % USERS],
            "title": token,
            "body": "sent while pushd is killed",
            "channels": [{"channel": "email"}],
        }
        async with (
            gate,
            session.post(
                f"{url}/api/notifications", json=body, headers=AUTH, timeout=HTTP_TIMEOUT
            ) as response,
        ):
            assert response.status == 202, await response.text()
            return token, str((await response.json())["id"])

    return dict(await run_all(one(i) for i in range(NOTIFICATIONS)))


def _statuses_in_file(database: Path) -> dict[str, str]:
    """{notification id: email delivery status} as the dead process left its file."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT notification_id, status FROM channel_deliveries WHERE channel = 'email'"
        ).fetchall()
    finally:
        connection.close()
    return {str(notification_id): str(status) for notification_id, status in rows}


async def _email_deliveries(
    session: aiohttp.ClientSession, url: str, notification_ids: list[str]
) -> dict[str, dict[str, Any]]:
    """{notification id: its one email delivery} from `GET /api/notifications/{id}`."""
    gate = asyncio.Semaphore(16)

    async def one(notification_id: str) -> tuple[str, dict[str, Any]]:
        async with (
            gate,
            session.get(
                f"{url}/api/notifications/{notification_id}", headers=AUTH, timeout=HTTP_TIMEOUT
            ) as response,
        ):
            assert response.status == 200, await response.text()
            [email] = (await response.json())["channel_deliveries"]
            return notification_id, email

    return dict(await run_all(one(n) for n in notification_ids))


async def _drained(
    session: aiohttp.ClientSession, url: str, relay: SlowRelay, ids: list[str]
) -> dict[str, dict[str, Any]]:
    """Every email delivery, once each token reached the relay and every delivery is
    `sent`, or as they are at `DRAIN_DEADLINE`."""
    deadline = time.monotonic() + DRAIN_DEADLINE
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_DEADLINE):
            await relay.when(lambda: len(relay.accepted) == NOTIFICATIONS).wait()
    while True:
        deliveries = await _email_deliveries(session, url, ids)
        if all(d["status"] == "sent" for d in deliveries.values()):
            return deliveries
        if time.monotonic() > deadline:
            return deliveries
        await asyncio.sleep(0.2)


async def test_kill9_while_sending_emails_loses_none(
    tmp_path: Path, report_figures: Report
) -> None:
    """Every email is received after a `kill -9` mid-send and a restart; the only
    duplicates are the emails the relay had accepted whose outcome was not stored."""
    data_dir = tmp_path / "pushd"
    relay = SlowRelay(RELAY_DELAY)
    smtp = LocalSmtpServer(relay)
    await smtp.start()
    env = _env(smtp.port)
    server: ServerProcess | None = None
    try:
        server = await start_server(data_dir, env)
        async with aiohttp.ClientSession() as session:
            user_ids = await _create_users(session, server.url)
            posted_at = time.monotonic()
            by_token = await _post_notifications(session, server.url, user_ids)
            posting_seconds = time.monotonic() - posted_at
            async with asyncio.timeout(30):
                await relay.when(lambda: len(relay.accepted) >= KILL_AT * NOTIFICATIONS).wait()
            in_data_at_kill = relay.in_data_now
            assert await server.stop(signal.SIGKILL) == -signal.SIGKILL
            killed_at = time.monotonic()
            async with asyncio.timeout(5):  # the relay ends the dead sessions' DATA
                await relay.when(lambda: relay.in_data_now == 0).wait()
            received_at_kill = set(relay.accepted)
            in_file = await asyncio.to_thread(_statuses_in_file, data_dir / "pushd.db")
            server = await start_server(data_dir, env)
            restart_seconds = time.monotonic() - killed_at
            deliveries = await _drained(session, server.url, relay, list(by_token.values()))
            drain_seconds = time.monotonic() - killed_at
            assert await server.stop() == 0, server.log()[-3000:]
    finally:
        if server is not None:
            await server.__aexit__()
        await smtp.stop()

    at_kill = Counter(in_file.values())
    # The relay accepted these, and the dead process had not stored their outcome.
    unrecorded = {t for t in received_at_kill if in_file[by_token[t]] == "sending"}
    lost = sorted(t for t in by_token if relay.accepted[t] == 0)
    duplicated = {t for t, count in relay.accepted.items() if count > 1}
    not_sent = Counter(d["status"] for d in deliveries.values() if d["status"] != "sent")
    figures = {
        "notifications": NOTIFICATIONS,
        "posting s": round(posting_seconds, 2),
        "received at kill": len(received_at_kill),
        "in DATA at kill": in_data_at_kill,
        "rows at kill": dict(at_kill),
        "accepted, outcome not stored": len(unrecorded),
        "received": relay.accepted.total(),
        "distinct": len(relay.accepted),
        "lost": len(lost),
        "duplicates": len(duplicated),
        "restart s": round(restart_seconds, 2),
        "drain s (from kill)": round(drain_seconds, 2),
        "bound": POOL_SIZE + OUTCOME_BATCH,
    }
    report_figures(", ".join(f"{k} {v}" for k, v in figures.items()))

    summary = f"figures: {figures}"
    assert len(received_at_kill) < 0.8 * NOTIFICATIONS, f"killed too late to prove much; {summary}"
    assert not lost, f"emails never received: {lost[:10]}; {summary}"
    assert not not_sent, f"deliveries not sent after {DRAIN_DEADLINE} s: {not_sent}; {summary}"
    assert set(relay.accepted) == set(by_token), summary
    assert max(relay.accepted.values()) <= 2, f"an email received 3 times or more; {summary}"
    assert duplicated == unrecorded, (
        f"duplicates {sorted(duplicated - unrecorded)[:10]} were stored as sent or not "
        f"received before the kill; accepted with no stored outcome but not sent again: "
        f"{sorted(unrecorded - duplicated)[:10]}; {summary}"
    )
    # The bound of actors/channel_dispatch.py: sends in flight plus outcomes not stored.
    assert len(duplicated) <= at_kill["sending"] <= POOL_SIZE + OUTCOME_BATCH, summary
    for token, notification_id in by_token.items():
        delivery = deliveries[notification_id]
        # The stored Message-ID is the last send's: the relay got it.
        assert delivery["provider_message_id"] == relay.message_ids[token][-1], token
        # Leased once, and once more when the crash left it `sending`.
        expected_attempts = 2 if in_file[notification_id] == "sending" else 1
        assert delivery["attempts"] == expected_attempts, (token, in_file[notification_id])
