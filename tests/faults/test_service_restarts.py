"""RabbitMQ or PostgreSQL stopped and started again under load (issue #3, point 7).

Cluster shape: one `pushd serve` on PostgreSQL + RabbitMQ, 500 users with a resuming
WebSocket client each, 10,000 notifications POSTed 32 at a time. The service that is
stopped is a private instance (tests/faults/services.py), never the machine's shared
one; the other service is the shared one, in a fresh database or vhost. pushd itself
is never restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.faults.harness import (
    Job,
    Outcome,
    Publisher,
    Report,
    ResumingClient,
    check,
    last_seqs,
    open_rig,
    run_all,
    wait_caught_up,
)
from tests.faults.services import private_postgres, private_rabbitmq

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

USERS = 500
NOTIFICATIONS = 10_000
STOP_AFTER_ACCEPTED = 3_000
CONCURRENCY = 32
STORAGE_OUTAGE = 3.0  # seconds PostgreSQL stays down at least

Outage = Callable[[Publisher], Awaitable[dict[str, object]]]


async def _under_load(
    data_dir: Path, env: dict[str, str], outage: Outage
) -> tuple[Outcome, bool, list[ResumingClient], Publisher]:
    """Run the load, call `outage` once STOP_AFTER_ACCEPTED were accepted, finish the
    load, wait for every client to catch up; the outcome and whether all caught up."""
    began = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        rig = await open_rig(stack, data_dir, env, users=USERS, concurrency=CONCURRENCY)
        server, session, endpoint = rig.server, rig.session, rig.endpoint
        clients, user_ids = rig.clients, rig.user_ids
        publisher = Publisher(session, endpoint, user_ids)
        stop_point = publisher.when(lambda: len(publisher.accepted) >= STOP_AFTER_ACCEPTED)
        jobs = [Job(k % USERS) for k in range(NOTIFICATIONS)]
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(publisher.publish(jobs, concurrency=CONCURRENCY))
            async with asyncio.timeout(60):
                await stop_point.wait()
            figures = await outage(publisher)
        truth = await last_seqs(session, server.url, user_ids)
        caught_up = await wait_caught_up(clients, truth, timeout=60)
        figures["test s"] = round(time.monotonic() - began, 1)
        outcome = check(clients, publisher, truth, extra=figures)
        # Only our own process, still the first one: pushd recovered by itself.
        assert server.process.returncode is None, server.log()[-3000:]
        assert await server.stop() == 0, server.log()[-3000:]
        return outcome, caught_up, clients, publisher


async def test_rabbitmq_restart(tmp_path: Path, postgres_url: str, report_figures: Report) -> None:
    """The broker stops for a while (a clean `rabbitmqctl stop`) and comes back.

    Guards against: a notification committed while the bus is down being only logged
    and never pushed (the outbox relay must publish it once the bus is back); the API
    refusing or hanging while only the bus is down (storage is fine, so it must keep
    answering 202); the bus client never reconnecting; sockets that stay open but are
    no longer fed after the broker came back.
    """
    async with private_rabbitmq() as rabbitmq:

        async def outage(publisher: Publisher) -> dict[str, object]:
            accepted_at_stop = len(publisher.accepted)
            await rabbitmq.stop()
            down_at = time.monotonic()
            # The API must keep accepting while the bus is down: wait for 1,000 more 202s.
            more = publisher.when(lambda: len(publisher.accepted) >= accepted_at_stop + 1_000)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    await more.wait()
            accepted_while_down = len(publisher.accepted) - accepted_at_stop
            await rabbitmq.start()
            return {
                "accepted while bus down": accepted_while_down,
                "bus down s": round(time.monotonic() - down_at, 2),
            }

        env = {"PUSHD_STORAGE__URL": postgres_url, "PUSHD_BUS__URL": rabbitmq.url}
        outcome, caught_up, _, _ = await _under_load(tmp_path / "pushd", env, outage)
    report_figures(outcome.summary())
    summary = outcome.summary()
    assert caught_up, f"not every client caught up within 60 s: {summary}"
    assert not outcome.problems, "\n".join([summary, *outcome.problems])
    accepted_while_down = outcome.figures["accepted while bus down"]
    assert accepted_while_down >= 1_000, (
        f"the API stopped accepting while the bus was down: {summary}"
    )
    assert outcome.figures["unanswered"] == 0, summary


async def test_postgres_restart(tmp_path: Path, amqp_url: str, report_figures: Report) -> None:
    """PostgreSQL stops (fast shutdown: sessions cut) and comes back; pushd is not
    restarted.

    Guards against: a 202 for a notification that was not committed (gone once the
    database is back); a 500, a hang or a 503 without `Retry-After` while storage is
    down; a POST answered 503 that was stored anyway (503 says "nothing was changed");
    a connection pool that never recovers from its broken connections, so that pushd
    needs a restart.
    """
    async with private_postgres() as postgres:

        async def outage(publisher: Publisher) -> dict[str, object]:
            rejected_before = len(publisher.rejected)
            await postgres.stop()
            down_at = time.monotonic()
            # Down for STORAGE_OUTAGE seconds (the scenario, not a synchronisation), and
            # until the API has said "unavailable" a few times (or 20 s went by).
            refused = publisher.when(lambda: len(publisher.rejected) >= rejected_before + 20)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(20):
                    await run_all([refused.wait(), asyncio.sleep(STORAGE_OUTAGE)])
            down_seconds = time.monotonic() - down_at
            await postgres.start()
            return {"storage down s": round(down_seconds, 2)}

        env = {"PUSHD_STORAGE__URL": postgres.url, "PUSHD_BUS__URL": amqp_url}
        outcome, caught_up, _, publisher = await _under_load(tmp_path / "pushd", env, outage)
    outcome.figures["503s"] = publisher.statuses[503]
    outcome.figures["Retry-After"] = dict(publisher.retry_after)
    summary = outcome.summary()
    report_figures(summary)
    assert caught_up, f"not every client caught up within 60 s: {summary}"
    assert not outcome.problems, "\n".join([summary, *outcome.problems])
    assert publisher.statuses[503] > 0, f"no 503 while PostgreSQL was down: {summary}"
    assert "" not in publisher.retry_after, f"a 503 without Retry-After: {summary}"
    assert set(publisher.statuses) <= {202, 503}, summary
