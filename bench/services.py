"""The services the delivery benchmark starts and stops: the `pushd serve` child, the
bench's own child processes (receivers.py, loadgen.py) spoken to in JSON lines, a fresh
PostgreSQL database and RabbitMQ vhost for the cluster shape, and the users created
through the server's API.

Only processes started here are ever signalled, by their own PID; each child gets
SIGTERM if the bench dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
from benchlib import Command, make_dir

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LISTENING = re.compile(r"(?:pushd|relay) listening on http://([\d.]+):(\d+)")
PR_SET_PDEATHSIG = 1

PG_ADMIN_URL = os.environ.get("PUSHD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
AMQP_BASE_URL = os.environ.get("PUSHD_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672")


class BenchError(Exception):
    """Something the bench cannot measure through (shown, then everything is cleaned)."""


# processes --------------------------------------------------------------------------


def die_with_parent() -> None:
    """In the forked child: get SIGTERM if the bench dies, so nothing is left running."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True)
class Placement:
    """Which cores the server and the load (load generator, receivers, this process)
    may run on; None: wherever the kernel puts them."""

    server: frozenset[int] | None = None
    load: frozenset[int] | None = None

    def describe(self) -> str:
        if self.server is None or self.load is None:
            return "not pinned: the server and the load share the cores as the kernel decides"
        return (
            f"pinned: the server (all its threads) on core {_cores(self.server)}, the load "
            f"generator, the receivers and the orchestrator on core {_cores(self.load)} "
            "(sched_setaffinity, as `taskset -c`)"
        )


def _cores(cores: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cores))


PLACEMENT = Placement()
"""The bench run's placement, set once by `pin_processes` before any child starts."""


def pin_processes() -> Placement:
    """--pin: the server on core 0, everything else of the bench on core 1 (this process
    now, its children as they start). Refused on a machine with fewer than 2 cores."""
    global PLACEMENT  # noqa: PLW0603 - set once, before any child starts
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        raise BenchError(f"--pin needs 2 cores; this process may use {available}")
    server, load = frozenset(available[:1]), frozenset(available[1:2])
    PLACEMENT = Placement(server, load)
    os.sched_setaffinity(0, load)
    return PLACEMENT


def child_setup(cores: frozenset[int] | None) -> Callable[[], None]:
    """The forked child's set-up: die with the bench, and run on `cores` if given."""

    def setup() -> None:
        die_with_parent()
        if cores is not None:
            os.sched_setaffinity(0, cores)

    return setup


async def stop_process(process: asyncio.subprocess.Process, grace: float) -> int:
    """SIGTERM our own child by its PID, wait, SIGKILL if it does not go."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(grace):
            return await process.wait()
    except TimeoutError:
        process.kill()
        return await process.wait()


class Server:
    """A `pushd serve` child; its stdout is read in the background, stderr goes to a file."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.output: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(cls, data_dir: Path, env: dict[str, str], *, relay: bool = False) -> Server:
        """`pushd serve` on a free port, or with `relay` the bare aiohttp relay
        (bench/relay.py), on the server's cores of the run's placement."""
        log = make_dir(data_dir) / "server.log"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PUSHD_")}
        environment.update(env)
        argv = (
            [str(BENCH / "relay.py"), "--port", "0"]
            if relay
            else ["-m", "pushd", "serve", "--port", "0", "--data-dir", str(data_dir)]
        )
        with log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                *argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env=environment,
                cwd=REPO,
                preexec_fn=child_setup(PLACEMENT.server),
            )
        assert process.stdout is not None
        lines: list[str] = []
        try:
            async with asyncio.timeout(60):
                while True:
                    line = (await process.stdout.readline()).decode(errors="replace")
                    if not line:
                        raise BenchError(
                            f"{'relay' if relay else 'pushd'} exited during start-up:\n"
                            + "".join(lines)
                            + log.read_text(errors="replace")[-3000:]
                        )
                    lines.append(line)
                    match = LISTENING.search(line)
                    if match:
                        break
        except BaseException:
            await stop_process(process, 5)
            raise
        server = cls(process, int(match.group(2)), log)
        server.output = lines
        server._reader = asyncio.create_task(server._collect())
        return server

    async def _collect(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.output.append(line.decode(errors="replace"))

    def log_problems(self) -> list[str]:
        """WARNING/ERROR lines of the server's log (the first few)."""
        lines = self.log.read_text(errors="replace").splitlines()
        return [line for line in lines if " WARNING " in line or " ERROR " in line][:10]

    async def stop(self) -> int:
        code = await stop_process(self.process, 30)
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader
        return code


class Child:
    """A bench child process (receivers.py, loadgen.py) spoken to in JSON lines."""

    def __init__(self, name: str, process: asyncio.subprocess.Process) -> None:
        self.name = name
        self.process = process
        self.busy = False  # a command is waiting for its answer

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(cls, script: str, max_seconds: float) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(BENCH / script),
            "--max-seconds",
            str(int(max_seconds)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=BENCH,
            preexec_fn=child_setup(PLACEMENT.load),
            limit=1 << 20,
        )
        return cls(script, process)

    async def call(self, command: Command, timeout: float) -> Command:  # noqa: ASYNC109
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.busy = True
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()
        async with asyncio.timeout(timeout):
            line = await self.process.stdout.readline()
        self.busy = False
        if not line:
            raise BenchError(f"{self.name} exited (code {await self.process.wait()})")
        answer: Command = json.loads(line)
        if "error" in answer:
            raise BenchError(f"{self.name}: {answer['error']}")
        return answer

    async def stop(self) -> None:
        """Ask it to quit (EOF if it is busy); SIGTERM it by its PID if it lingers."""
        if self.process.returncode is None and not self.busy:
            with contextlib.suppress(Exception):
                await self.call({"cmd": "quit"}, timeout=10)
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            async with asyncio.timeout(0 if self.busy else 5):
                await self.process.wait()
        except TimeoutError:
            await stop_process(self.process, 10)


@contextlib.asynccontextmanager
async def started(script: str, max_seconds: float) -> AsyncIterator[Child]:
    child = await Child.start(script, max_seconds)
    try:
        yield child
    finally:
        await child.stop()


@contextlib.asynccontextmanager
async def running_server(
    data_dir: Path, env: dict[str, str], *, relay: bool = False
) -> AsyncIterator[Server]:
    server = await Server.start(data_dir, env, relay=relay)
    try:
        yield server
    finally:
        code = await server.stop()
        if code != 0:
            name = "relay" if relay else "pushd"
            print(f"   ({name} exited with code {code}; log: {server.log})", flush=True)


# PostgreSQL database and RabbitMQ vhost --------------------------------------------


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(f"{PG_ADMIN_URL}/postgres", timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "-q",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(60):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise BenchError(f"rabbitmqctl {' '.join(args)}: {output.decode(errors='replace')}")


@contextlib.asynccontextmanager
async def cluster_services(run_id: str) -> AsyncIterator[dict[str, str]]:
    """A fresh database and vhost for one shape, dropped and deleted afterwards."""
    database, vhost = f"pushd_bench_{run_id}", f"pushd-bench-{run_id}"
    await _pg_admin(f'CREATE DATABASE "{database}"')
    try:
        await _rabbitmqctl("add_vhost", vhost)
        try:
            await _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
            yield {
                "PUSHD_STORAGE__URL": f"{PG_ADMIN_URL}/{database}",
                "PUSHD_BUS__URL": f"{AMQP_BASE_URL}/{quote(vhost, safe='')}",
            }
        finally:
            await _rabbitmqctl("delete_vhost", vhost)
            print(f"   deleted vhost {vhost}", flush=True)
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        print(f"   dropped database {database}", flush=True)


async def service_versions() -> dict[str, str]:
    versions = {}
    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(f"{PG_ADMIN_URL}/postgres", timeout=10)
        try:
            versions["PostgreSQL"] = str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()
    with contextlib.suppress(Exception):
        process = await asyncio.create_subprocess_exec(
            "rabbitmqctl", "-q", "version", stdout=asyncio.subprocess.PIPE
        )
        async with asyncio.timeout(30):
            output, _ = await process.communicate()
        versions["RabbitMQ"] = output.decode().strip()
    return versions


# users ------------------------------------------------------------------------------


async def create_users(url: str, key: str, count: int) -> tuple[list[str], list[str]]:
    """Create `count` users and one token each through the API; (ids, tokens)."""
    concurrency = 32
    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Authorization": f"Bearer {key}"}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        headers=headers, connector=connector, timeout=timeout
    ) as session:

        async def post(path: str, body: dict[str, Any], expect: int) -> dict[str, Any]:
            async with session.post(f"{url}{path}", json=body) as response:
                if response.status != expect:
                    raise BenchError(f"POST {path}: {response.status} {await response.text()}")
                answer: dict[str, Any] = await response.json()
                return answer

        async def one() -> tuple[str, str]:
            async with gate:
                user_id = str((await post("/api/users", {}, 201))["id"])
                token = str(
                    (await post(f"/api/users/{user_id}/tokens", {"ttl": 7200}, 201))["token"]
                )
                return user_id, token

        pairs = await asyncio.gather(*(one() for _ in range(count)))
    return [p[0] for p in pairs], [p[1] for p in pairs]
