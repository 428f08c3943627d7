"""The load-generator process of the delivery benchmark: POSTs notifications over
keep-alive HTTP/1.1 connections, either as fast as the server answers or paced at a
fixed rate.

A lean client: each connection is an asyncio Protocol writing request bytes built from a
template, and reading back only the status line and Content-Length, so that the
generator spends far less CPU per request than the server. Each notification carries
`data = {"n": unique number, "u": user index, "t": time.time_ns() at write}`, and
`body_extra` (JSON members, e.g. `,"channels":[...]` for deliver.py --push-step) when the
command gives it. With `batch` = B > 0 (bench/bulk.py), each request is one
`POST /api/notifications/batch` of B such notifications for B consecutive users (B at most
the number of users, so that the items' users are distinct); its answer is read whole, and
an item counts as accepted when its result says 202.

Commands (JSON lines on stdin, see benchlib):
  run   {host, port, key, users_file, mode: "max"|"rate", rate, connections,
         start_ns, duration, n_base, out, body_extra (optional), batch (optional)}
        -> counts; the accepted (202) notification numbers go to `out` as int64
  quit  {}
"""

from __future__ import annotations

import argparse
import array
import asyncio
import itertools
import json
import time
from collections import Counter
from dataclasses import dataclass, field

from benchlib import Command, raise_nofile_limit, read_json, serve_commands, write_columns

RESPONSE_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0

HEAD = (
    "POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    "Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
    "Content-Length: "
)
BODY = (
    '{{"user_id":"{user}","title":"bench","body":"hello","data":{{"n":%d,"u":%d,"t":%d}}{extra}}}'
)


@dataclass
class Run:
    """One measurement: shared state of all the connections."""

    heads: bytes
    bodies: list[bytes]  # per user, with %d slots for n, u, t
    n_base: int
    end: float  # loop.time() after which no request starts
    window_end_ns: int
    rate: float | None
    start: float
    batch: int = 0  # notifications per request; 0: one POST /api/notifications each
    counter: itertools.count[int] = field(default_factory=itertools.count)
    accepted: array.array[int] = field(default_factory=lambda: array.array("q"))
    accepted_in_window: int = 0
    sent: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ns: list[int] = field(default_factory=list)  # POST round trips, sampled


async def next_request(run: Run, loop: asyncio.AbstractEventLoop) -> int | None:
    """The number of this connection's next request, once it is due; None: run over."""
    k = next(run.counter)
    if loop.time() >= run.end:
        return None  # also when a paced run fell behind: the window is what is measured
    if run.rate is None:
        return k
    due = run.start + k / run.rate
    if due >= run.end:
        return None
    delay = due - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)
    return k


class HttpClient(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time; answers are parsed
    only as far as the status code and Content-Length."""

    def __init__(self, *, keep_body: bool = False) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.keep_alive = True
        self.keep_body = keep_body
        self.body = b""  # the last answer's body, when keep_body

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.keep_alive = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def request(self, data: bytes) -> asyncio.Future[int]:
        """Write a request; the future gets the answer's status code."""
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            self._fail("response without Content-Length")
            return
        line_end = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : line_end if line_end >= 0 else len(head)])
        if len(self.buffer) < end + 4 + length:
            return
        if self.keep_body:
            self.body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        if b"\r\nconnection: close" in head:
            self.keep_alive = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(int(head[9:12]))

    def _fail(self, reason: str) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def request_body(run: Run, k: int, sent: int) -> tuple[bytes, list[int]]:
    """Request k's body and the notification numbers in it."""
    users = len(run.bodies)
    if not run.batch:
        n, user = run.n_base + k, k % users
        return run.bodies[user] % (n, user, sent), [n]
    numbers = [run.n_base + k * run.batch + i for i in range(run.batch)]
    items = [run.bodies[n % users] % (n, n % users, sent) for n in numbers]
    return b'{"items":[%s]}' % b",".join(items), numbers


def accepted_items(status: int, answer: bytes, numbers: list[int]) -> list[int]:
    """The numbers of a request's notifications that were answered 202."""
    if len(numbers) == 1 and status == 202:
        return numbers
    if status != 200 or len(numbers) == 1:
        return []
    result = json.loads(answer)
    if result["failed"] == 0:
        return numbers
    return [numbers[r["index"]] for r in result["results"] if r["status"] == 202]


async def connection(run: Run, host: str, port: int) -> None:
    """One keep-alive connection: request, response, repeat until the run ends."""
    loop = asyncio.get_running_loop()
    http: HttpClient | None = None
    try:
        while (k := await next_request(run, loop)) is not None:
            try:
                if http is None or not http.keep_alive:
                    if http is not None:
                        http.close()
                    async with asyncio.timeout(CONNECT_TIMEOUT):
                        _, http = await loop.create_connection(
                            lambda: HttpClient(keep_body=run.batch > 0), host, port
                        )
                sent = time.time_ns()
                body, numbers = request_body(run, k, sent)
                status = await http.request(b"%s%d\r\n\r\n%s" % (run.heads, len(body), body))
            except (OSError, TimeoutError) as exc:
                run.errors[type(exc).__name__] += 1
                if http is not None:
                    http.close()
                    http = None
                continue
            done = time.time_ns()
            run.sent += len(numbers)
            accepted = accepted_items(status, http.body, numbers)
            if len(accepted) < len(numbers):
                run.statuses[str(status)] += len(numbers) - len(accepted)
            if not accepted:
                continue
            run.accepted.extend(accepted)
            if done <= run.window_end_ns:
                run.accepted_in_window += len(accepted)
            if k % 16 == 0 or run.batch:
                run.latencies_ns.append(done - sent)
    finally:
        if http is not None:
            http.close()


class LoadGenerator:
    def __init__(self) -> None:
        self.users: list[str] = []
        self.users_file = ""

    async def handle(self, command: Command) -> Command:
        match command["cmd"]:
            case "run":
                return await self.run(command)
            case "quit":
                return {}
        raise ValueError(f"unknown command {command['cmd']!r}")

    async def run(self, command: Command) -> Command:
        host, port = command["host"], int(command["port"])
        if command["users_file"] != self.users_file:
            self.users = read_json(command["users_file"])
            self.users_file = command["users_file"]
        loop = asyncio.get_running_loop()
        start_ns, duration = int(command["start_ns"]), float(command["duration"])
        start = loop.time() + (start_ns - time.time_ns()) / 1e9
        rate = float(command["rate"]) if command["mode"] == "rate" else None
        extra = str(command.get("body_extra", "")).replace("%", "%%")  # bodies are %-templates
        batch = int(command.get("batch") or 0)
        if batch > len(self.users):
            raise ValueError(f"batch {batch} > {len(self.users)} users: items must be distinct")
        path = "/api/notifications/batch" if batch else "/api/notifications"
        run = Run(
            heads=HEAD.format(path=path, host=host, port=port, key=command["key"]).encode(),
            bodies=[BODY.format(user=user, extra=extra).encode() for user in self.users],
            n_base=int(command["n_base"]),
            end=start + duration,
            window_end_ns=start_ns + int(duration * 1e9),
            rate=rate,
            start=start,
            batch=batch,
        )
        await asyncio.sleep(max(0.0, start - loop.time()))
        # The one bound on answers: a request still unanswered then fails the run.
        async with asyncio.timeout(duration + RESPONSE_TIMEOUT):
            await asyncio.gather(
                *(connection(run, host, port) for _ in range(int(command["connections"])))
            )
        finished_ns = time.time_ns()
        write_columns(command["out"], [run.accepted])
        round_trips = sorted(run.latencies_ns)
        return {
            "accepted": len(run.accepted),
            "accepted_in_window": run.accepted_in_window,
            "answered": run.sent,
            "statuses": dict(run.statuses),
            "errors": dict(run.errors),
            "finished_ns": finished_ns,
            "post_p50_ms": round_trips[len(round_trips) // 2] / 1e6 if round_trips else None,
        }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args()
    raise_nofile_limit()
    await serve_commands(LoadGenerator().handle, args.max_seconds)


if __name__ == "__main__":
    asyncio.run(main())
