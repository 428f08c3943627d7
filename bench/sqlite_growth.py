"""What one notification costs the SQLite worker as the database file grows.

Drives `SqliteStorage` directly (no HTTP, no sockets) the way the embedded server does
under load: batch commits of `--batch` notifications round-robin over `--users` users,
the audit trail appended `--audit-batch` records at a time, and every user's sent
cursor flushed every `--cursor-every` notifications. Prints, per slice of the run:

- the worker thread's CPU time per notification (user + system; noisy on a shared
  machine, compare only runs made side by side);
- bytes written, write calls and read calls per notification (from /proc/self/io): they
  depend on the data layout, not on the machine's speed, so they compare across runs.

    .venv/bin/python bench/sqlite_growth.py
    .venv/bin/python bench/sqlite_growth.py --pragma "PRAGMA cache_size = -16384"
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchlib import thread_cpu_seconds  # noqa: E402

from pushd.ids import new_id, now_ms  # noqa: E402
from storage.crypto import KeyRing  # noqa: E402
from storage.records import NewAuditRecord, NewNotification, NewUser  # noqa: E402
from storage.sqlite import SqliteStorage  # noqa: E402


def io_counters() -> dict[str, int]:
    """This process's I/O counters (rchar, wchar, syscr, syscw, ...)."""
    counters = {}
    for line in Path("/proc/self/io").read_text().splitlines():
        name, value = line.split(":")
        counters[name] = int(value)
    return counters


def worker_cpu_seconds(native_id: int) -> float:
    """User + system CPU time of this process's storage worker thread."""
    seconds = thread_cpu_seconds(os.getpid(), native_id)
    assert seconds is not None, "the worker thread is gone"
    return seconds


def worker_thread_id() -> int:
    """The native id of the storage's worker thread (named `pushd-sqlite...`)."""
    for thread in threading.enumerate():
        if thread.name.startswith("pushd-sqlite") and thread.native_id is not None:
            return thread.native_id
    raise RuntimeError("the SQLite worker thread is not running")


def statement(sql: str) -> Callable[[sqlite3.Connection], object]:
    """A job for the storage's worker thread that runs `sql` on its connection."""
    return lambda connection: connection.execute(sql)


def notification(user_id: str, n: int) -> NewNotification:
    """About what bench/deliver.py posts: a title, a body and a small data object."""
    return NewNotification(
        id=new_id("ntf"),
        user_id=user_id,
        title="Hello",
        body="benchmark body text here",
        data={"n": n, "u": user_id, "t": time.time_ns()},
        created_at=now_ms(),
    )


def send_audit(user_id: str, notification_id: str) -> NewAuditRecord:
    """What POST /api/notifications records."""
    return NewAuditRecord(
        at=now_ms(),
        actor="key:key_bench",
        action="notification.send",
        target=f"user:{user_id}",
        source="127.0.0.1",
        result="202",
        detail={"notification_id": notification_id},
    )


async def run(args: argparse.Namespace, folder: Path) -> int:
    """Store the notifications; returns how many."""
    storage = await SqliteStorage.open(
        f"sqlite:///{folder}/pushd.db",
        pool_size=1,
        cipher=KeyRing([("k1", secrets.token_bytes(32))]),
    )
    try:
        await storage.migrate()
        for pragma in args.pragma:
            # On the worker's own connection: most pragmas are per connection.
            await storage._run(statement(pragma))
        users = [
            (await storage.create_user(NewUser(id=new_id("usr"), created_at=now_ms()))).id
            for _ in range(args.users)
        ]
        worker = worker_thread_id()
        sent: dict[str, int] = {}
        audit: list[NewAuditRecord] = []
        print(
            f"{args.notifications:,} notifications, {args.users:,} users, batches of "
            f"{args.batch}, audit batches of {args.audit_batch}, cursors flushed every "
            f"{args.cursor_every:,}; pragmas: {args.pragma or 'none'}"
        )
        print()
        print("| stored | worker CPU µs | bytes written | write calls | read calls |")
        print("|---:|---:|---:|---:|---:|")
        stored, cpu_before, io_before = 0, worker_cpu_seconds(worker), io_counters()
        slice_start = 0
        while stored < args.notifications:
            batch = [
                notification(users[(stored + i) % len(users)], stored + i)
                for i in range(args.batch)
            ]
            records = await storage.insert_notifications(batch, node_id="bench")
            stored += len(records)
            for record in records:
                sent[record.user_id] = record.seq
                if args.audit_batch:
                    audit.append(send_audit(record.user_id, record.id))
            if args.audit_batch and len(audit) >= args.audit_batch:
                await storage.append_audit(audit)
                audit = []
            if stored % args.cursor_every < args.batch:
                await storage.advance_cursors(sent=dict(sent), acked={}, at=now_ms())
            if stored - slice_start >= args.report_every or stored >= args.notifications:
                cpu, io = worker_cpu_seconds(worker), io_counters()
                count = stored - slice_start
                print(
                    f"| {stored:,} | {(cpu - cpu_before) / count * 1e6:,.0f} | "
                    f"{(io['wchar'] - io_before['wchar']) / count:,.0f} | "
                    f"{(io['syscw'] - io_before['syscw']) / count:.1f} | "
                    f"{(io['syscr'] - io_before['syscr']) / count:.1f} |",
                    flush=True,
                )
                slice_start, cpu_before, io_before = stored, cpu, io
    finally:
        await storage.close()
    return stored


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notifications", type=int, default=160_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=128, help="notifications per commit")
    parser.add_argument(
        "--audit-batch", type=int, default=512, help="records per audit append (0: none)"
    )
    parser.add_argument("--cursor-every", type=int, default=2_500, help="notifications")
    parser.add_argument("--report-every", type=int, default=32_000, help="notifications")
    parser.add_argument(
        "--pragma", action="append", default=[], help="SQL run on the connection first"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pushd-sqlite-growth-") as folder:
        stored = asyncio.run(run(args, Path(folder)))
        size = sum(path.stat().st_size for path in Path(folder).iterdir())
    print()
    print(f"files: {size / 2**20:,.1f} MiB ({size / stored:,.0f} bytes per notification)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
