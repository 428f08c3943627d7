"""Release lag of scheduled sends: due time to commit time (issue #13, point 5).

Stores `--count` scheduled notifications whose due instants follow each other at
`--rate` per second (over `--users` users), then runs the release loop of
pushd/ingest/release.py on them (storage of `--storage`, in-memory bus) and prints the
lag of each released notification from its due instant to the commit of its release:
p50, p99 and max. The target is p99 under 1 s at 1,000 due per second.

    .venv/bin/python bench/schedule.py
    .venv/bin/python bench/schedule.py --storage postgresql://postgres@127.0.0.1/bench
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pushd.bus import BusMessage, open_bus  # noqa: E402
from pushd.ids import new_id, now_ms  # noqa: E402
from pushd.ingest.release import ScheduledRelease  # noqa: E402
from storage import Storage, open_storage  # noqa: E402
from storage.records import (  # noqa: E402
    NewNotification,
    NewUser,
    NotificationRecord,
    ScheduledNotification,
)


async def _store(storage: Storage, args: argparse.Namespace, first_due: int) -> list[str]:
    users = [new_id("usr") for _ in range(args.users)]
    for user_id in users:
        await storage.create_user(NewUser(id=user_id, created_at=now_ms()))
    step_ms = 1000 / args.rate
    for index in range(args.count):
        due = first_due + int(index * step_ms)
        notification = NewNotification(
            id=new_id("ntf"), user_id=users[index % args.users], body=str(index), created_at=due
        )
        await storage.schedule_notification(
            ScheduledNotification(notification=notification, due_at=due, accepted_at=now_ms())
        )
    return users


def _percentile(values: Sequence[int], fraction: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


async def run(args: argparse.Namespace) -> None:
    url = args.storage or f"sqlite:///{tempfile.mkdtemp(prefix='pushd-schedule-')}/bench.db"
    storage = await open_storage(url)
    await storage.migrate()
    lags: list[int] = []
    all_released = asyncio.Event()

    def observe(records: Sequence[NotificationRecord], committed_at: int) -> None:
        lags.extend(committed_at - record.created_at for record in records)
        if len(lags) >= args.count:
            all_released.set()

    async def drop(_message: BusMessage) -> None:
        return None

    bus = open_bus("memory://", node_id="bench")
    await bus.start(drop)
    # Stored before the first one is due: scheduling costs a write each.
    started = time.perf_counter()
    first_due = now_ms() + int(args.lead * 1000)
    await _store(storage, args, first_due)
    stored_in = time.perf_counter() - started
    late = now_ms() - first_due
    if late > 0:
        print(f"warning: storing took {stored_in:.1f} s, {late} ms past the first due time")
    release = ScheduledRelease(
        storage,
        bus,
        node_id="bench",
        poll_interval=args.poll_interval,
        batch_size=args.batch_size,
        on_released=observe,
    )
    await release.start()
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_released.wait(), args.lead + args.count / args.rate + 30)
    finally:
        await release.close()
        await bus.close()
        await storage.close()
    if len(lags) < args.count:
        raise SystemExit(f"only {len(lags)} of {args.count} were released in time")
    print(
        f"{args.count} released at {args.rate}/s due ({type(storage).__name__}, poll "
        f"{args.poll_interval} s, batch {args.batch_size}): lag p50 "
        f"{statistics.median(lags):.0f} ms, p99 {_percentile(lags, 0.99)} ms, "
        f"max {max(lags)} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", help="storage URL (default: a new SQLite file)")
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=1000.0, help="due per second")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--lead", type=float, default=20.0, help="seconds to the first due")
    parser.add_argument("--poll-interval", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=500)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
