"""What the fault tests share: resuming WebSocket clients (protocol 1.1), a publisher
that records the truth of every POST, and the final check.

Every client checks the stream guarantee of docs/protocol.md on every socket it opens:
after `welcome {since}`, sequenced frames cover `since + 1, since + 2, …` exactly once,
in order. Half the clients resume with `since` = the highest seq they hold; the other
half send no `since` and resume from the ack cursor the server stored, which is how a
cursor lost in a crash shows up (as replayed, already acknowledged seqs).

Every notification carries `data = {"a": attempt number, "t": time.time() at POST,
"p": phase}`: the attempt tells which POST a frame belongs to (a frame for a POST that
was answered 503 is a notification accepted after saying "nothing was changed").
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from tests.process.server_process import ServerProcess

ADMIN_KEY = "pk_fault_test_admin_key_0123456789abcdefghijk"
TOKEN_SECRET = "fault-test-shared-token-secret-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
Report = Callable[[str], None]  # records one line of figures for the test

BASE_ENV = {
    "PUSHD_ADMIN_KEY": ADMIN_KEY,
    "PUSHD_AUTH__TOKEN_SECRET": TOKEN_SECRET,
    # The load here is about delivery guarantees, not rate limits (tested elsewhere): no
    # per-key request budget, no per-recipient budget (user 0 of the slow-client test
    # gets thousands).
    "PUSHD_LIMITS__API_KEY_RATE": "0",
    "PUSHD_LIMITS__PER_RECIPIENT": "{}",
    # Every client of these tests connects from 127.0.0.1: no per-address cap.
    "PUSHD_SERVER__MAX_CONNECTIONS_PER_ADDRESS": "0",
}

RECONNECT_BACKOFF = 0.25  # first wait before a client reconnects to the same server
RECONNECT_BACKOFF_MAX = 2.0
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=5)

T = TypeVar("T")


# where the server is ----------------------------------------------------------------


class Endpoint:
    """Where the server listens now. A restarted server listens on a new port: clients
    and publishers that lost it wait here for `move` instead of polling a dead port."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.generation = 0
        self._moved = asyncio.Event()

    def move(self, url: str) -> None:
        self.url = url
        self.generation += 1
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def wait_moved(self, generation: int, timeout: float) -> None:  # noqa: ASYNC109
        """Return when the server moved since `generation`, or after `timeout` s."""
        if self.generation != generation:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._moved.wait()


async def run_all(coroutines: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run coroutines as tasks of one TaskGroup (if one fails, the others are cancelled
    and awaited); their results in order."""
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(coroutine) for coroutine in coroutines]
    return [task.result() for task in tasks]


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


# a resuming client --------------------------------------------------------------------


@dataclass
class Delivery:
    """The first time a client received a seq."""

    seq: int
    notification_id: str
    attempt: int
    phase: str
    delay: float  # seconds from the POST to the frame


@dataclass
class ResumingClient:
    """One user's WebSocket client: reconnects, resumes, acks, checks the stream."""

    index: int
    user_id: str
    token: str
    send_since: bool  # resume with `since`; else from the server's ack cursor
    highest: int = 0  # every seq up to this one is held (the stream has no holes)
    last_ack: int = 0  # highest ack sent
    deliveries: dict[int, Delivery] = field(default_factory=dict)
    duplicates: int = 0  # seqs received again
    acked_duplicates: int = 0  # ... of them, seqs this client had acked before
    duplicates_outside_crash: int = 0  # duplicates not on the first socket after a crash
    gaps: list[tuple[int, int, str]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    connects: int = 0
    close_codes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    target: int | None = None  # caught up once highest reaches it
    caught_up: asyncio.Event = field(default_factory=asyncio.Event)
    welcomed: asyncio.Event = field(default_factory=asyncio.Event)
    _generation_of_last_socket: int = 0  # the server generation of the previous socket

    def violation(self, text: str) -> None:
        if len(self.violations) < 5:
            self.violations.append(f"user {self.index} ({self.user_id}): {text}")

    def expect(self, last_seq: int) -> None:
        """Set the seq this client must end at; `caught_up` is set once it holds it."""
        self.target = last_seq
        self._check_caught_up()

    def _check_caught_up(self) -> None:
        if self.target is not None and self.highest >= self.target:
            self.caught_up.set()

    async def run(self, session: aiohttp.ClientSession, endpoint: Endpoint) -> None:
        """Connect and reconnect until cancelled."""
        backoff = RECONNECT_BACKOFF
        while True:
            generation = endpoint.generation
            try:
                if await self._one_socket(session, endpoint.url, generation):
                    backoff = RECONNECT_BACKOFF
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.errors[type(exc).__name__] += 1
            await endpoint.wait_moved(generation, backoff)
            backoff = min(RECONNECT_BACKOFF_MAX, backoff * 2)

    async def _one_socket(self, session: aiohttp.ClientSession, url: str, generation: int) -> bool:
        """One socket, from connect to close; True if it was welcomed."""
        async with session.ws_connect(f"{url}/ws", autoping=True, heartbeat=None) as ws:
            auth: dict[str, Any] = {"type": "auth", "token": self.token}
            if self.send_since:
                auth["since"] = self.highest
            await ws.send_json(auth)
            message = await ws.receive(timeout=15)
            if message.type != aiohttp.WSMsgType.TEXT:
                self.close_codes[f"{ws.close_code} before welcome"] += 1
                return False
            welcome = json.loads(message.data)
            if welcome.get("type") != "welcome":
                self.violation(f"first frame {welcome!r}, not welcome")
                return False
            self.connects += 1
            self.welcomed.set()
            after_crash = self.connects > 1 and generation > self._generation_of_last_socket
            self._generation_of_last_socket = generation
            expected = self._check_welcome(welcome)
            held_at_connect = self.highest
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                # A burst of buffered frames is otherwise read without ever suspending:
                # one long loop step, which the blocking-call guard would report.
                await asyncio.sleep(0)
                frame = json.loads(message.data)
                following = self._on_frame(frame, expected, after_crash, held_at_connect)
                if following is None:
                    continue
                expected = following
                if self.highest > self.last_ack:
                    await ws.send_json({"type": "ack", "seq": self.highest})
                    self.last_ack = self.highest
                self._check_caught_up()
            self.close_codes[str(ws.close_code)] += 1
            return True

    def _on_frame(
        self, frame: dict[str, Any], expected: int, after_crash: bool, held: int
    ) -> int | None:
        """Check and record one server frame. For a sequenced frame (`notification`,
        `gap`), the seq the socket's next one must cover; else None."""
        match frame.get("type"):
            case "notification":
                seq = int(frame["seq"])
                if seq != expected:
                    self.violation(f"expected seq {expected}, got notification {seq}")
                self._on_notification(frame, after_crash, held)
                return seq + 1
            case "gap":
                first, last = int(frame["from_seq"]), int(frame["to_seq"])
                if first != expected:
                    self.violation(f"expected seq {expected}, got gap {first}..{last}")
                self.gaps.append((first, last, str(frame.get("reason"))))
                self.highest = max(self.highest, last)
                return last + 1
            case "error":
                self.violation(f"error frame {frame}")
        return None

    def _check_welcome(self, welcome: dict[str, Any]) -> int:
        since, last_seq = int(welcome["since"]), int(welcome["last_seq"])
        if self.send_since and since != self.highest:
            self.violation(f"sent since {self.highest}, welcome says since {since}: {welcome}")
        if not self.send_since and since > self.last_ack:
            # The stored cursor can only come from this client's acks.
            self.violation(f"ack cursor {since} above the last ack sent {self.last_ack}")
        if since > self.highest:
            self.violation(f"stream starts after {since}, client holds only {self.highest}")
        if last_seq < self.highest:
            self.violation(f"server's last_seq {last_seq} below the {self.highest} held")
        return since + 1

    def _on_notification(self, frame: dict[str, Any], after_crash: bool, held: int) -> None:
        seq, notification_id = int(frame["seq"]), str(frame["id"])
        known = self.deliveries.get(seq)
        if known is not None:
            self.duplicates += 1
            if seq <= self.last_ack:
                self.acked_duplicates += 1
            if not after_crash or seq > held:
                self.duplicates_outside_crash += 1
            if known.notification_id != notification_id:
                self.violation(f"seq {seq} was {known.notification_id}, now {notification_id}")
            return
        if seq <= self.highest:
            self.violation(f"seq {seq} arrived after {self.highest} but was never received")
        data = frame.get("data") or {}
        self.deliveries[seq] = Delivery(
            seq,
            notification_id,
            int(data.get("a", -1)),
            str(data.get("p", "")),
            time.time() - float(data.get("t", math.nan)),
        )
        self.highest = max(self.highest, seq)


# users, clients and the publisher -----------------------------------------------------


async def create_users(
    session: aiohttp.ClientSession, url: str, count: int
) -> list[tuple[str, str]]:
    """`count` users with a token each: [(user id, token)]."""
    gate = asyncio.Semaphore(32)

    async def one() -> tuple[str, str]:
        async with gate:
            async with session.post(f"{url}/api/users", json={}, headers=AUTH) as response:
                assert response.status == 201, await response.text()
                user_id = str((await response.json())["id"])
            async with session.post(
                f"{url}/api/users/{user_id}/tokens", json={"ttl": 3600}, headers=AUTH
            ) as response:
                assert response.status == 201, await response.text()
                return user_id, str((await response.json())["token"])

    return await run_all(one() for _ in range(count))


@contextlib.asynccontextmanager
async def connected_clients(
    endpoint: Endpoint, users: list[tuple[str, str]], *, connect_timeout: float = 60
) -> AsyncIterator[list[ResumingClient]]:
    """One running client per user (even indexes resume with `since`, odd ones from the
    ack cursor), all welcomed once before this yields; all cancelled on exit."""
    clients = [
        ResumingClient(i, user_id, token, send_since=i % 2 == 0)
        for i, (user_id, token) in enumerate(users)
    ]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(c.run(session, endpoint)) for c in clients]
        try:
            async with asyncio.timeout(connect_timeout):
                await run_all(c.welcomed.wait() for c in clients)
            yield clients
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class Accepted:
    user: int
    seq: int
    notification_id: str
    attempt: int


@dataclass
class Job:
    """One notification to send."""

    user: int
    phase: str = "load"
    body: str = "fault test"


class Publisher:
    """POSTs notifications with bounded concurrency and records what each POST got.

    A POST that could not even connect is retried once the server is back (it never
    reached the server). A POST that got no answer is not retried: it may or may not
    have been committed, and the final check accepts both. A 503 is retried after its
    `Retry-After`, with a new attempt number.
    """

    def __init__(self, session: aiohttp.ClientSession, endpoint: Endpoint, user_ids: list[str]):
        self.session = session
        self.endpoint = endpoint
        self.user_ids = user_ids
        self.attempts = itertools.count(1)
        self.sent = 0  # POSTs written (attempts that reached a listening socket)
        self.accepted: list[Accepted] = []
        self.unanswered: set[int] = set()
        self.rejected: dict[int, int] = {}  # attempt -> status (never to be delivered)
        self.statuses: Counter[int] = Counter()
        self.in_flight = 0  # POSTs written and not answered yet
        self.errors: Counter[str] = Counter()
        self.retry_after: Counter[str] = Counter()  # Retry-After values seen on 503
        self._thresholds: list[tuple[Callable[[], bool], asyncio.Event]] = []

    def when(self, condition: Callable[[], bool]) -> asyncio.Event:
        """An event set as soon as `condition()` holds after an answer."""
        event = asyncio.Event()
        self._thresholds.append((condition, event))
        self._check()
        return event

    def _check(self) -> None:
        for condition, event in self._thresholds:
            if not event.is_set() and condition():
                event.set()

    async def publish(
        self, jobs: Iterable[Job], *, concurrency: int = 32, rate: float | None = None
    ) -> None:
        """Send every job; with `rate`, job k is started at start + k / rate."""
        queue = iter(enumerate(jobs))
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def worker() -> None:
            for k, job in queue:
                if rate is not None and (delay := start + k / rate - loop.time()) > 0:
                    await asyncio.sleep(delay)  # pacing, not synchronisation
                await self._send(job)

        await run_all(worker() for _ in range(concurrency))

    async def _send(self, job: Job) -> None:
        while True:
            attempt = next(self.attempts)
            generation = self.endpoint.generation
            body = {
                "user_id": self.user_ids[job.user],
                "title": f"n{attempt}",
                "body": job.body,
                "data": {"a": attempt, "t": time.time(), "p": job.phase},
            }
            self.in_flight += 1
            try:
                retry = await self._post(attempt, job, body)
            except aiohttp.ClientConnectorError as exc:
                # Nothing reached the server: retry once it is back.
                self.errors[type(exc).__name__] += 1
                retry = None
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.sent += 1
                self.errors[type(exc).__name__] += 1
                self.unanswered.add(attempt)
                return
            finally:
                self.in_flight -= 1
                self._check()
            if retry is None:
                await self.endpoint.wait_moved(generation, RECONNECT_BACKOFF)
            elif retry < 0:
                return
            else:
                await asyncio.sleep(retry)  # what Retry-After asks a client to do

    async def _post(self, attempt: int, job: Job, body: dict[str, Any]) -> float:
        """One POST; -1 when done, else the seconds to wait before retrying (503)."""
        async with self.session.post(
            f"{self.endpoint.url}/api/notifications", json=body, headers=AUTH, timeout=HTTP_TIMEOUT
        ) as response:
            self.sent += 1
            status = response.status
            self.statuses[status] += 1
            if status == 202:
                answer = await response.json()
                self.accepted.append(
                    Accepted(job.user, int(answer["seq"]), str(answer["id"]), attempt)
                )
                return -1
            self.rejected[attempt] = status
            text = await response.text()
            if status != 503:
                raise AssertionError(f"POST answered {status}: {text}")
            retry = response.headers.get("Retry-After", "")
            self.retry_after[retry] += 1
            return float(retry) if retry else 1.0


async def last_seqs(session: aiohttp.ClientSession, url: str, user_ids: list[str]) -> list[int]:
    """Each user's newest stored seq, from `GET /api/notifications/user/{id}`."""
    gate = asyncio.Semaphore(16)

    async def one(user_id: str) -> int:
        async with (
            gate,
            session.get(
                f"{url}/api/notifications/user/{user_id}",
                params={"limit": "1"},
                headers=AUTH,
                timeout=HTTP_TIMEOUT,
            ) as response,
        ):
            assert response.status == 200, await response.text()
            items = (await response.json())["items"]
            return int(items[0]["seq"]) if items else 0

    return await run_all(one(u) for u in user_ids)


# the final check --------------------------------------------------------------------


@dataclass
class Outcome:
    figures: dict[str, Any]
    problems: list[str]

    def summary(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.figures.items())


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


async def wait_caught_up(clients: list[ResumingClient], truth: list[int], timeout: float) -> bool:  # noqa: ASYNC109
    """Wait until every client holds its user's last stored seq; False after `timeout`."""
    for client, last in zip(clients, truth, strict=True):
        client.expect(last)
    try:
        async with asyncio.timeout(timeout):
            await run_all(c.caught_up.wait() for c in clients)
    except TimeoutError:
        return False
    return True


def check(
    clients: list[ResumingClient],
    publisher: Publisher,
    truth: list[int],
    *,
    allow_acked_duplicates_across_crash: bool = False,
    extra: dict[str, Any] | None = None,
) -> Outcome:
    """Compare what every client holds with what was accepted and what is stored."""
    problems: list[str] = []
    for client in clients:
        problems.extend(client.violations)
    for client, last in zip(clients, truth, strict=True):
        missing = [s for s in range(1, last + 1) if s not in client.deliveries]
        if missing or client.gaps:  # nothing here may expire or exceed the backlog
            problems.append(
                f"user {client.index}: stored up to {last}, missing {missing[:10]} "
                f"(gaps {client.gaps[:3]})"
            )
        if client.highest > last:
            problems.append(f"user {client.index}: holds {client.highest} > stored {last}")
    for accepted in publisher.accepted:
        client = clients[accepted.user]
        got = client.deliveries.get(accepted.seq)
        if accepted.seq > truth[accepted.user]:
            problems.append(f"202'd {accepted} is above the stored last seq {truth[accepted.user]}")
        elif got is None:
            problems.append(f"202'd {accepted} never delivered")
        elif got.notification_id != accepted.notification_id or got.attempt != accepted.attempt:
            problems.append(f"202'd {accepted} but seq {accepted.seq} delivered as {got}")
    rejected_delivered = [
        d for c in clients for d in c.deliveries.values() if d.attempt in publisher.rejected
    ]
    if rejected_delivered:
        problems.append(
            f"{len(rejected_delivered)} notifications answered 503 were stored and delivered, "
            f"e.g. {rejected_delivered[:3]}"
        )
    since_duplicates = sum(c.duplicates for c in clients if c.send_since)
    if since_duplicates:
        problems.append(f"{since_duplicates} duplicates to clients that resumed with `since`")
    cursor_duplicates = sum(c.duplicates for c in clients if not c.send_since)
    outside = sum(c.duplicates_outside_crash for c in clients)
    if allow_acked_duplicates_across_crash and outside:
        problems.append(f"{outside} duplicates not explained by the crash")
    delays = [d.delay for c in clients for d in c.deliveries.values()]
    closes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for client in clients:
        closes.update(client.close_codes)
        errors.update(client.errors)
    figures: dict[str, Any] = {
        "sent": publisher.sent,
        "accepted": len(publisher.accepted),
        "unanswered": len(publisher.unanswered),
        "stored": sum(truth),
        "delivered": sum(len(c.deliveries) for c in clients),
        "duplicates(since)": since_duplicates,
        "duplicates(cursor)": cursor_duplicates,
        "of which acked": sum(c.acked_duplicates for c in clients),
        "gaps": sum(len(c.gaps) for c in clients),
        "p50 delay ms": round(percentile(delays, 50) * 1e3, 1),
        "p99 delay ms": round(percentile(delays, 99) * 1e3, 1),
        "max delay ms": round(max(delays, default=math.nan) * 1e3, 1),
        "sockets opened": sum(c.connects for c in clients),
        **(extra or {}),
        "statuses": dict(publisher.statuses),
        "closes": dict(closes.most_common(4)),
        "client errors": dict(errors.most_common(3)),
    }
    return Outcome(figures, problems[:20])


async def start_server(data_dir: Path, env: dict[str, str]) -> ServerProcess:
    """`pushd serve` with the fault tests' admin key and token secret."""
    return await ServerProcess.start(data_dir, env={**BASE_ENV, **env}, timeout=60)


@dataclass
class Rig:
    """A started server, a client session, the users and their connected clients."""

    server: ServerProcess
    session: aiohttp.ClientSession
    endpoint: Endpoint
    users: list[tuple[str, str]]
    clients: list[ResumingClient]

    @property
    def user_ids(self) -> list[str]:
        return [user_id for user_id, _ in self.users]


async def open_rig(
    stack: contextlib.AsyncExitStack,
    data_dir: Path,
    env: dict[str, str],
    *,
    users: int,
    concurrency: int,
    connect: int | None = None,
) -> Rig:
    """Start the server and `users` users, and connect a resuming client for the first
    `connect` of them (all by default); everything is closed with `stack`."""
    server = await stack.enter_async_context(await start_server(data_dir, env))
    session = await stack.enter_async_context(
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency + 8))
    )
    created = await create_users(session, server.url, users)
    endpoint = Endpoint(server.url)
    to_connect = created if connect is None else created[:connect]
    clients = await stack.enter_async_context(connected_clients(endpoint, to_connect))
    return Rig(server, session, endpoint, created, list(clients))
