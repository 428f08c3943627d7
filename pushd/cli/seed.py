"""`pushd seed --users N --notifications M`: fill a database with realistic test data
through the storage layer the server uses (`create_user`, and `insert_notifications` in
batches as the group commit does: pushd/ingest/group_commit.py), never raw SQL, so what
it writes is what the server would have written, encrypted at rest the same way.

Notifications are spread over the users at random; each user's `seq` increases as the
server's would. They are recorded as committed by node `pushd-seed`, which no server
is: no outbox relay republishes them to the bus. Clients get them by replay.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

from pushd.config.settings import Config
from pushd.ids import new_id, now_ms
from pushd.process.key_ring import storage_cipher
from storage import Storage, StorageError, open_storage
from storage.records import NewNotification, NewUser

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

SEED_NODE_ID: Final = "pushd-seed"
NOTIFICATION_BATCH: Final = 500
"""Notifications per transaction: about the server's group-commit batch (ingest.max_batch)."""
USERS_AT_ONCE: Final = 64
"""User inserts in flight at once: enough to keep the storage busy, a bounded number."""

_FIRST = (
    "Ada",
    "Grace",
    "Alan",
    "Linus",
    "Margaret",
    "Ken",
    "Barbara",
    "Dennis",
    "Frances",
    "Edsger",
    "Radia",
    "Tim",
    "Hedy",
    "John",
    "Sophie",
    "Yukihiro",
    "Anita",
    "Guido",
)
_LAST = (
    "Lovelace",
    "Hopper",
    "Turing",
    "Torvalds",
    "Hamilton",
    "Thompson",
    "Liskov",
    "Ritchie",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Berners-Lee",
    "Lamarr",
    "Backus",
    "Wilson",
    "Matsumoto",
    "Borg",
    "van Rossum",
)
_PLACES = (
    ("en-US", "America/New_York"),
    ("en-US", "America/Los_Angeles"),
    ("en-GB", "Europe/London"),
    ("fr-FR", "Europe/Paris"),
    ("de-DE", "Europe/Berlin"),
    ("es-ES", "Europe/Madrid"),
    ("ja-JP", "Asia/Tokyo"),
    ("pt-BR", "America/Sao_Paulo"),
    ("en-AU", "Australia/Sydney"),
    ("hi-IN", "Asia/Kolkata"),
)
_TAGS = ("beta", "premium", "trial", "staff", "mobile", "web", "eu", "us", "newsletter")
_MESSAGES = (
    ("billing", "Your invoice is ready", "Invoice #{n} for {amount} EUR is available."),
    ("security", "New sign-in", "A new device signed in to your account from {city}."),
    ("social", "New comment", "{name} commented on your post."),
    ("builds", "Build failed", "Pipeline #{n} failed on main."),
    ("orders", "Order shipped", "Order #{n} is on its way."),
    (None, "Reminder", "Your meeting starts in {minutes} minutes."),
)
_CITIES = ("Paris", "Berlin", "Tokyo", "Austin", "Lagos", "Lima", "Pune")
_PRIORITIES = ("low", "normal", "normal", "normal", "high")


def add_parser(
    commands: Any, common: Callable[[argparse.ArgumentParser], None]
) -> argparse.ArgumentParser:
    """Add `seed` to the `pushd` parser (`common` adds --config, --data-dir, --storage-url,
    --log-level)."""
    seed: argparse.ArgumentParser = commands.add_parser(
        "seed",
        help="fill a database with realistic test data",
        description="Create N users and M notifications spread over them, through the "
        "storage layer the server uses (the schema is migrated first). A progress bar goes "
        "to stderr, a summary (rows/s) to stdout.",
        epilog="example: pushd seed --users 10000 --notifications 100000 --data-dir /tmp/d\n"
        "exit codes: 0 done; 1 the storage failed; 2 usage or configuration error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(seed)
    seed.add_argument("--users", type=int, required=True, metavar="N", help="users to create")
    seed.add_argument(
        "--notifications", type=int, default=0, metavar="M", help="notifications (default 0)"
    )
    seed.add_argument("--random-seed", type=int, default=None, help="for repeatable data")
    return seed


@dataclass
class Progress:
    """A progress bar on a terminal (`\\r` updates), a line per tenth otherwise."""

    what: str
    total: int
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    done: int = 0
    _shown_tenth: int = -1

    def advance(self, count: int) -> None:
        self.done += count
        share = self.done / self.total if self.total else 1.0
        if self.stream.isatty():
            bar = "#" * int(share * 30)
            end = "\n" if self.done >= self.total else ""
            self.stream.write(f"\r{self.what:>13} [{bar:<30}] {self.done}/{self.total}{end}")
        elif int(share * 10) > self._shown_tenth:
            self._shown_tenth = int(share * 10)
            self.stream.write(f"{self.what}: {self.done}/{self.total}\n")
        self.stream.flush()


def new_users(count: int, rng: random.Random, now: int) -> list[NewUser]:
    """`count` users with names, e-mail addresses, phones, locales, zones and tags."""
    users = []
    run = new_id("s")[-6:]  # distinct external ids when seeding the same database twice
    for index in range(count):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        locale, timezone = rng.choice(_PLACES)
        handle = f"{first}.{last}".lower().replace(" ", "")
        users.append(
            NewUser(
                id=new_id("usr"),
                external_id=f"seed-{run}-{index}",
                name=f"{first} {last}",
                email=f"{handle}.{index}@example.com",
                phone=f"+1555{index:07d}",
                locale=locale,
                timezone=timezone,
                created_at=now,
                tags=tuple(sorted(set(rng.sample(_TAGS, rng.randint(0, 3))))),
                attributes={"plan": rng.choice(("free", "pro", "team")), "seeded": True},
            )
        )
    return users


def new_notifications(
    count: int, user_ids: Sequence[str], rng: random.Random, now: int
) -> list[NewNotification]:
    """`count` notifications for users picked at random, in creation order."""
    made = []
    for index in range(count):
        category, title, text = rng.choice(_MESSAGES)
        body = text.format(
            n=rng.randint(1000, 99999),
            amount=rng.randint(5, 500),
            city=rng.choice(_CITIES),
            name=rng.choice(_FIRST),
            minutes=rng.choice((5, 10, 15)),
        )
        made.append(
            NewNotification(
                id=new_id("ntf"),
                user_id=rng.choice(user_ids),
                title=title,
                body=body,
                data={"source": "seed", "index": index},
                category=category,
                priority=rng.choice(_PRIORITIES),
                created_at=now,
            )
        )
    return made


async def _create_users(storage: Storage, users: list[NewUser], progress: Progress) -> None:
    for start in range(0, len(users), USERS_AT_ONCE):
        chunk = users[start : start + USERS_AT_ONCE]
        await asyncio.gather(*(storage.create_user(user) for user in chunk))
        progress.advance(len(chunk))


async def _insert_notifications(
    storage: Storage, notifications: list[NewNotification], progress: Progress
) -> None:
    for start in range(0, len(notifications), NOTIFICATION_BATCH):
        batch = notifications[start : start + NOTIFICATION_BATCH]
        await storage.insert_notifications(batch, node_id=SEED_NODE_ID)
        progress.advance(len(batch))


async def run(config: Config, args: argparse.Namespace, say: Callable[[str], None]) -> int:
    """Seed; return the exit code."""
    if args.users < 1 or args.notifications < 0:
        say("pushd: --users must be at least 1 and --notifications at least 0")
        return EXIT_USAGE
    rng = random.Random(args.random_seed)  # test data: no secret comes from it
    cipher = await asyncio.to_thread(storage_cipher, config)
    started = time.perf_counter()
    storage = await open_storage(config.storage_url, pool_size=4, cipher=cipher)
    try:
        await storage.migrate()
        now = now_ms()
        users = new_users(args.users, rng, now)
        await _create_users(storage, users, Progress("users", len(users)))
        users_done = time.perf_counter()
        ids = [user.id for user in users]
        notifications = new_notifications(args.notifications, ids, rng, now)
        await _insert_notifications(
            storage, notifications, Progress("notifications", len(notifications))
        )
    except StorageError as exc:
        say(f"pushd: seeding failed: {exc}")
        return EXIT_FAILED
    finally:
        await storage.close()
    ended = time.perf_counter()
    say(_summary(len(users), users_done - started, len(notifications), ended - users_done))
    return EXIT_OK


def _summary(users: int, user_seconds: float, notifications: int, seconds: float) -> str:
    def rate(rows: int, spent: float) -> str:
        return f"{rows / spent:,.0f} rows/s" if spent > 0 else "-"

    return (
        f"seeded {users} users in {user_seconds:.1f}s ({rate(users, user_seconds)}) and "
        f"{notifications} notifications in {seconds:.1f}s ({rate(notifications, seconds)}); "
        f"total {user_seconds + seconds:.1f}s"
    )
