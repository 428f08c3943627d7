"""`kill -9` of pushd while notifications are in flight (issue #3, point 7).

500 users, one resuming WebSocket client each, 10,000 notifications POSTed 32 at a time.
Once 40% are accepted the server is SIGKILLed (by its PID), restarted on the same data
directory (and, in the cluster shape, the same PostgreSQL database and RabbitMQ vhost),
and the rest are sent to the new process. Every client must end holding every seq from
1 to its user's last stored seq, each exactly as accepted, in order.

Guards against: a 202 given before the commit was durable (the notification is gone
after the crash); seqs reused after a restart (a different notification under a seq a
client already has); replay that skips or reorders seqs after a restart; an ack cursor
stored above what the client acknowledged (silent loss for cursor-resuming clients);
duplicates to clients that resume with `since`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import pytest

from tests.faults.harness import (
    Job,
    Publisher,
    Report,
    check,
    last_seqs,
    open_rig,
    start_server,
    wait_caught_up,
)
from tests.process.server_process import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

USERS = 500
NOTIFICATIONS = 10_000
KILL_AFTER_ACCEPTED = 4_000
CONCURRENCY = 32


async def _kill9_and_resume(data_dir: Path, env: dict[str, str], report: Report) -> None:
    began = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        rig = await open_rig(stack, data_dir, env, users=USERS, concurrency=CONCURRENCY)
        server: ServerProcess = rig.server
        session, endpoint, clients, user_ids = rig.session, rig.endpoint, rig.clients, rig.user_ids
        publisher = Publisher(session, endpoint, user_ids)
        crash_point = publisher.when(lambda: len(publisher.accepted) >= KILL_AFTER_ACCEPTED)
        jobs = [Job(k % USERS) for k in range(NOTIFICATIONS)]
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(publisher.publish(jobs, concurrency=CONCURRENCY))
            async with asyncio.timeout(60):
                await crash_point.wait()
            in_flight, accepted_before = publisher.in_flight, len(publisher.accepted)
            assert await server.stop(signal.SIGKILL) == -signal.SIGKILL
            down_at = time.monotonic()
            server = await stack.enter_async_context(await start_server(data_dir, env))
            restart_seconds = time.monotonic() - down_at
            endpoint.move(server.url)
        truth = await last_seqs(session, server.url, user_ids)
        caught_up = await wait_caught_up(clients, truth, timeout=60)
        outcome = check(
            clients,
            publisher,
            truth,
            allow_acked_duplicates_across_crash=True,
            extra={
                "killed with in flight": in_flight,
                "accepted before kill": accepted_before,
                "restart s": round(restart_seconds, 2),
                "test s": round(time.monotonic() - began, 1),
            },
        )
        report(outcome.summary())
        assert caught_up, f"not every client caught up within 60 s: {outcome.summary()}"
        assert not outcome.problems, "\n".join([outcome.summary(), *outcome.problems])
        assert len(publisher.accepted) + len(publisher.unanswered) == NOTIFICATIONS
        assert await server.stop() == 0, server.log()[-3000:]


async def test_kill9_resume_embedded(tmp_path: Path, report_figures: Report) -> None:
    """Embedded shape: SQLite in the data directory, in-process bus."""
    await _kill9_and_resume(tmp_path / "pushd", {}, report_figures)


async def test_kill9_resume_cluster(
    tmp_path: Path, postgres_url: str, amqp_url: str, report_figures: Report
) -> None:
    """Cluster shape: PostgreSQL and RabbitMQ (the shared ones: only pushd is killed)."""
    env = {"PUSHD_STORAGE__URL": postgres_url, "PUSHD_BUS__URL": amqp_url}
    await _kill9_and_resume(tmp_path / "pushd", env, report_figures)
