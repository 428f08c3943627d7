"""What the one-provider throughput benches share (bench/emails.py, bench/webpush.py):
sends with a fixed number in flight, timed runs that count what the local server
received and the CPU each side used, the median of the runs, and the event loop.

A bench starts its local server (`local_server`: a child process, so that its CPU is
not the sender's), warms up with `send_concurrently`, then calls `measure_runs`, which
prints each run as it ends; the bench prints the median line itself, as it names its
own units.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import cpu_seconds

REPO = Path(__file__).resolve().parent.parent


class LocalServer:
    """A local server in bench mode (`python -m <module> --bench`, e.g.
    tests/channels/smtp_server.py): it answers with JSON lines on stdout and exits at
    EOF on stdin."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self.pid = process.pid
        self._process = process
        self._stdin = process.stdin
        self._stdout = process.stdout

    async def read(self) -> dict[str, Any]:
        """The server's next JSON line."""
        line = await self._stdout.readline()
        if not line:
            raise SystemExit("the bench's local server ended early")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def ask(self, line: bytes) -> dict[str, Any]:
        """Write `line` to the server; its answer."""
        self._stdin.write(line)
        return await self.read()

    async def stop(self) -> None:
        """Close its stdin and wait for it to exit."""
        self._stdin.close()
        await self._process.wait()


@asynccontextmanager
async def local_server(module: str, *options: str) -> AsyncIterator[LocalServer]:
    """Run `python -m <module> --bench <options>` from the repository root while the
    block runs."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        "--bench",
        *options,
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    server = LocalServer(process)
    try:
        yield server
    finally:
        await server.stop()


async def send_concurrently(
    send: Callable[[int], Awaitable[object]], numbers: Iterable[int], concurrency: int
) -> float:
    """Call `send(number)` for every number, `concurrency` at a time; the seconds taken."""
    pending = iter(numbers)

    async def worker() -> None:
        for number in pending:
            await send(number)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return time.perf_counter() - started


@dataclass(frozen=True, slots=True)
class Run:
    """One timed run: `items` sent in `seconds`, with the CPU seconds this process and
    the server process used meanwhile."""

    number: int
    items: int
    seconds: float
    own_cpu: float
    server_cpu: float

    @property
    def rate(self) -> float:
        """Items a second."""
        return self.items / self.seconds

    def microseconds_each(self, cpu: float) -> float:
        """`cpu` seconds spread over the run's items, in microseconds."""
        return cpu / self.items * 1e6


async def measure_runs(
    *,
    runs: int,
    items: int,
    run_once: Callable[[int], Awaitable[float]],
    received: Callable[[], Awaitable[int]],
    server_pid: int,
    describe: Callable[[Run], str],
) -> list[Run]:
    """`runs` timed runs of `run_once(number)` (which sends `items` and returns the
    seconds taken), numbered from 1. Each must reach the server whole (`received`
    counts what it has taken so far), else the bench stops; each is printed as
    `run N: <describe(run)>` as soon as it ends."""
    results = []
    for number in range(1, runs + 1):
        before = await received()
        own_before, server_before = _cpu(os.getpid()), _cpu(server_pid)
        seconds = await run_once(number)
        own_cpu, server_cpu = _cpu(os.getpid()) - own_before, _cpu(server_pid) - server_before
        got = await received() - before
        if got != items:
            raise SystemExit(f"run {number}: the server got {got} of {items}")
        run = Run(number, items, seconds, own_cpu, server_cpu)
        print(f"run {number}: {describe(run)}", flush=True)
        results.append(run)
    return results


def median_rate(results: Iterable[Run]) -> float:
    """The median of the runs' rates."""
    return statistics.median(run.rate for run in results)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """--runs and --no-uvloop."""
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-uvloop", action="store_true", help="the standard asyncio loop")


def run_bench(bench: Coroutine[Any, Any, None], *, no_uvloop: bool) -> None:
    """Run `bench` on uvloop (as pushd runs), or on the standard loop."""
    if no_uvloop:
        asyncio.run(bench)
        return
    import uvloop

    uvloop.run(bench)


def _cpu(pid: int) -> float:
    return cpu_seconds(pid) or 0.0
