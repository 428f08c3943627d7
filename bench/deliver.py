"""Delivery benchmark of pushd: POST -> WebSocket frame throughput, latency, memory.

    .venv/bin/python bench/deliver.py [--quick] [--profile]

For each shape (embedded: SQLite + in-process bus; cluster: PostgreSQL + RabbitMQ, one
pushd process) it starts `pushd serve` as a child, creates the users, opens one
WebSocket per user in a receiver process (receivers.py) and drives POSTs from a
load-generator process (loadgen.py); then it measures the server's memory per idle
socket on a fresh server. It prints a Markdown report and writes it to
docs/benchmarks.md.

Only processes started here are ever signalled, by their own PID. Everything is bounded
by a global deadline; children, the PostgreSQL database and the RabbitMQ vhost are
removed on the way out, also on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime
import json
import math
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
from benchlib import (
    Command,
    cpu_seconds,
    machine_busy_seconds,
    main_thread_cpu_seconds,
    make_dir,
    postgres_pids,
    rabbitmq_server_pids,
    raise_nofile_limit,
    read_columns,
    rss_kib,
    write_text,
)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LISTENING = re.compile(r"pushd listening on http://([\d.]+):(\d+)")
PR_SET_PDEATHSIG = 1

PG_ADMIN_URL = os.environ.get("PUSHD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
AMQP_BASE_URL = os.environ.get("PUSHD_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672")

DRAIN_TIMEOUT = 30.0  # longest wait for the last accepted notification to arrive
DRAIN_STALL = 5.0  # ...and the longest wait without any new frame
RECORD_COLUMNS = 5  # n, user, seq, sent ns, received ns (receivers.Records)


class BenchError(Exception):
    """Something the bench cannot measure through (shown, then everything is cleaned)."""


# processes --------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the forked child: get SIGTERM if the bench dies, so nothing is left running."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


async def _stop_process(process: asyncio.subprocess.Process, grace: float) -> int:
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
    async def start(cls, data_dir: Path, env: dict[str, str]) -> Server:
        log = make_dir(data_dir) / "server.log"
        environment = {k: v for k, v in os.environ.items() if not k.startswith("PUSHD_")}
        environment.update(env)
        with log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "pushd",
                "serve",
                "--port",
                "0",
                "--data-dir",
                str(data_dir),
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env=environment,
                cwd=REPO,
                preexec_fn=_die_with_parent,
            )
        assert process.stdout is not None
        lines: list[str] = []
        try:
            async with asyncio.timeout(60):
                while True:
                    line = (await process.stdout.readline()).decode(errors="replace")
                    if not line:
                        raise BenchError(
                            "pushd exited during start-up:\n"
                            + "".join(lines)
                            + log.read_text(errors="replace")[-3000:]
                        )
                    lines.append(line)
                    match = LISTENING.search(line)
                    if match:
                        break
        except BaseException:
            await _stop_process(process, 5)
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
        code = await _stop_process(self.process, 30)
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
            preexec_fn=_die_with_parent,
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
            await _stop_process(self.process, 10)


@contextlib.asynccontextmanager
async def started(script: str, max_seconds: float) -> AsyncIterator[Child]:
    child = await Child.start(script, max_seconds)
    try:
        yield child
    finally:
        await child.stop()


@contextlib.asynccontextmanager
async def running_server(data_dir: Path, env: dict[str, str]) -> AsyncIterator[Server]:
    server = await Server.start(data_dir, env)
    try:
        yield server
    finally:
        code = await server.stop()
        if code != 0:
            print(f"   (pushd exited with code {code}; log: {server.log})", flush=True)


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


# CPU accounting ---------------------------------------------------------------------


@dataclass
class CpuSample:
    at: float
    seconds: dict[str, float]
    pg: dict[int, float]
    rabbit: dict[int, float]
    busy: float


def cpu_sample(pids: dict[str, int], database: str | None) -> CpuSample:
    def by_pid(found: list[int]) -> dict[int, float]:
        return {pid: s for pid in found if (s := cpu_seconds(pid)) is not None}

    return CpuSample(
        at=time.monotonic(),
        seconds={
            **{name: cpu_seconds(pid) or 0.0 for name, pid in pids.items()},
            "server_loop": main_thread_cpu_seconds(pids["server"]) or 0.0,
        },
        pg=by_pid(postgres_pids(database)),
        rabbit=by_pid(rabbitmq_server_pids()),
        busy=machine_busy_seconds(),
    )


def cpu_percent(before: CpuSample, after: CpuSample) -> dict[str, float]:
    """% of one core for each process (and the machine's total) between two samples."""
    elapsed = after.at - before.at

    def group(a: dict[int, float], b: dict[int, float]) -> float:
        return sum(s - a.get(pid, 0.0) for pid, s in b.items())

    used = {name: after.seconds[name] - before.seconds[name] for name in before.seconds}
    used["postgres"] = group(before.pg, after.pg)
    used["rabbitmq"] = group(before.rabbit, after.rabbit)
    used["machine"] = after.busy - before.busy
    used["other"] = used["machine"] - sum(
        v for k, v in used.items() if k not in ("machine", "server_loop")
    )
    return {name: 100 * seconds / elapsed for name, seconds in used.items()}


async def wait_until_quiet(max_wait: float, threshold: float = 25.0) -> float:
    """Wait (at most `max_wait` s) until the machine is idle: other people's work on
    these 2 cores would be measured as ours. Returns the last busy % of one core."""
    deadline = time.monotonic() + max_wait
    while True:
        before = machine_busy_seconds()
        await asyncio.sleep(1.0)
        busy = 100 * (machine_busy_seconds() - before)
        if busy < threshold or time.monotonic() >= deadline:
            return busy
        print(f"   machine busy ({busy:.0f}% of one core) before we start: waiting", flush=True)


# one measurement --------------------------------------------------------------------


@dataclass
class RunResult:
    shape: str
    mode: str  # "max" or "rate"
    target_rate: float | None
    duration: float
    accepted: int
    accepted_per_s: float
    delivered_per_s: float
    delivered_overall_per_s: float  # all frames / (last frame - window start)
    drain_s: float | None  # after the window, until the last accepted one arrived
    p50_ms: float
    p99_ms: float
    max_ms: float
    post_p50_ms: float | None
    cpu: dict[str, float]
    missing: int
    duplicates: int
    out_of_order: int
    wrong_user: int
    extra: int
    failed_posts: int
    closed_sockets: int
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def load(self) -> str:
        return "max" if self.target_rate is None else f"rate:{self.target_rate:g}"


def percentile(ordered: list[int], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return math.nan
    return float(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)])


@dataclass
class Rig:
    """One running server with its receivers and load generator."""

    shape: str
    server: Server
    receivers: Child
    loadgen: Child
    key: str
    users_file: str
    work: Path
    connections: int
    database: str | None
    runs: int = 0


async def measure(rig: Rig, mode: str, duration: float, rate: float | None) -> RunResult:
    rig.runs += 1
    tag = f"{rig.shape}-{mode}-{rig.runs}"
    accepted_file, records_file = str(rig.work / f"{tag}.accepted"), str(rig.work / f"{tag}.rec")
    await rig.receivers.call({"cmd": "dump", "path": records_file}, timeout=30)  # start empty
    pids = {"server": rig.server.pid, "loadgen": rig.loadgen.pid, "receivers": rig.receivers.pid}
    start_ns = time.time_ns() + 300_000_000
    window_end_ns = start_ns + int(duration * 1e9)
    command = {
        "cmd": "run",
        "host": "127.0.0.1",
        "port": rig.server.port,
        "key": rig.key,
        "users_file": rig.users_file,
        "mode": mode,
        "rate": rate,
        "connections": rig.connections,
        "start_ns": start_ns,
        "duration": duration,
        "n_base": rig.runs * 10_000_000,
        "out": accepted_file,
    }
    load = asyncio.create_task(rig.loadgen.call(command, timeout=duration + 60))
    try:
        await asyncio.sleep((start_ns - time.time_ns()) / 1e9)
        before = cpu_sample(pids, rig.database)
        await asyncio.sleep((window_end_ns - time.time_ns()) / 1e9)
        after = cpu_sample(pids, rig.database)
        summary = await load
    finally:
        if not load.done():
            load.cancel()
            await asyncio.gather(load, return_exceptions=True)

    # Drain: wait until every accepted notification arrived (or nothing more comes).
    accepted_count = int(summary["accepted"])
    began, last_progress, seen = time.monotonic(), time.monotonic(), -1
    while time.monotonic() - began < DRAIN_TIMEOUT:
        frames = int((await rig.receivers.call({"cmd": "count"}, timeout=10))["frames"])
        if frames >= accepted_count:
            break
        if frames != seen:
            seen, last_progress = frames, time.monotonic()
        elif time.monotonic() - last_progress > DRAIN_STALL:
            break
        await asyncio.sleep(0.1)
    dump = await rig.receivers.call({"cmd": "dump", "path": records_file}, timeout=60)

    (accepted,) = read_columns(accepted_file, 1, accepted_count)
    n, _user, _seq, sent, received = read_columns(records_file, RECORD_COLUMNS, dump["frames"])
    accepted_set = set(accepted)
    counts = Counter(n)
    latencies = sorted(r - s for r, s in zip(received, sent, strict=True))
    in_window = sum(start_ns <= r <= window_end_ns for r in received)
    last = max(received) if received else window_end_ns
    closes = dump["closed_by_server"]
    result = RunResult(
        shape=rig.shape,
        mode=mode,
        target_rate=rate,
        duration=duration,
        accepted=accepted_count,
        accepted_per_s=summary["accepted_in_window"] / duration,
        delivered_per_s=in_window / duration,
        delivered_overall_per_s=len(received) / max(1e-9, (last - start_ns) / 1e9),
        drain_s=max(0.0, (last - window_end_ns) / 1e9) if accepted_set <= counts.keys() else None,
        p50_ms=percentile(latencies, 50) / 1e6,
        p99_ms=percentile(latencies, 99) / 1e6,
        max_ms=(latencies[-1] / 1e6) if latencies else math.nan,
        post_p50_ms=summary["post_p50_ms"],
        cpu=cpu_percent(before, after),
        missing=len(accepted_set - counts.keys()),
        duplicates=sum(c - 1 for c in counts.values() if c > 1),
        out_of_order=int(dump["out_of_order"]),
        wrong_user=int(dump["wrong_user"]),
        extra=len(counts.keys() - accepted_set),
        failed_posts=sum(summary["statuses"].values()) + sum(summary["errors"].values()),
        closed_sockets=sum(closes.values()),
        errors={**summary["statuses"], **summary["errors"], **closes},
    )
    print("   " + describe(result), flush=True)
    for path in (accepted_file, records_file):
        os.unlink(path)
    return result


def describe(r: RunResult) -> str:
    what = "max load" if r.mode == "max" else f"{r.target_rate:,.0f}/s"
    drain = f"{r.drain_s:.2f} s" if r.drain_s is not None else "incomplete"
    cpu = r.cpu
    return (
        f"{what:>9}: accepted {r.accepted_per_s:,.0f}/s, delivered {r.delivered_per_s:,.0f}/s "
        f"(overall {r.delivered_overall_per_s:,.0f}/s), drain {drain}, "
        f"POST->frame p50 {r.p50_ms:.1f} p99 {r.p99_ms:.1f} max {r.max_ms:.1f} ms | "
        f"CPU server {cpu['server']:.0f}% (loop thread {cpu['server_loop']:.0f}%) "
        f"loadgen {cpu['loadgen']:.0f}% "
        f"receivers {cpu['receivers']:.0f}% pg {cpu['postgres']:.0f}% "
        f"rabbit {cpu['rabbitmq']:.0f}% other {cpu['other']:.0f}% machine {cpu['machine']:.0f}% | "
        f"missing {r.missing} dup {r.duplicates} out-of-order {r.out_of_order} "
        f"wrong-user {r.wrong_user} extra {r.extra} failed POSTs {r.failed_posts} "
        f"closed {r.closed_sockets}" + (f" {r.errors}" if r.errors else "")
    )


# profiling --------------------------------------------------------------------------


# Frames on (nearly) every stack of a thread: they say nothing about where time goes.
PLUMBING = (
    "<frozen runpy>",
    "asyncio/runners.py",
    "asyncio/base_events.py",
    "asyncio/events.py",
    "threading.py",
    "concurrent/futures/thread.py",
    "pushd/cli.py",
    "pushd/__main__.py",
)
PROJECT = ("(pushd/", "(storage/", "(actors/")
# A sample counts for the first component any of whose markers is in one of its frames.
COMPONENTS = (
    ("logging (aiohttp access log)", ("aiohttp/web_log.py", "(logging/")),
    ("storage (storage/, sqlite3, asyncpg)", ("(storage/", "asyncpg/", "sqlite3")),
    ("bus (pushd/bus/, aiormq, pamqp)", ("(pushd/bus/", "aiormq/", "pamqp/")),
    (
        "WebSocket delivery (actors/, pushd/realtime/, aiohttp WebSocket)",
        ("(actors/", "(pushd/realtime/", "aiohttp/_websocket/", "aiohttp/web_ws.py"),
    ),
    ("pushd's HTTP API and ingest (pushd/api/, pushd/ingest.py)", ("(pushd/",)),
    ("aiohttp HTTP server (parsing, routing, responses)", ("aiohttp/",)),
    ("event loop, tasks, threads (asyncio, selectors, threading)", ("",)),
)


def summarize_profile(collapsed: Path, top: int = 15) -> list[str]:
    """Where a py-spy `--format raw` profile spends its samples: by thread, by function
    (self), and by project function (inclusive)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    components: Counter[str] = Counter()
    total = 0
    prefix = str(REPO) + "/"
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [
            re.sub(r":\d+\)$", ")", f).replace(prefix, "").replace("|", "/")
            for f in stack.split(";")
        ]
        total += count
        worker = any("concurrent/futures/thread.py" in f for f in frames[:6])
        threads["worker thread (run_in_executor)" if worker else "event loop thread"] += count
        own[frames[-1]] += count
        working = [f for f in frames if not any(p in f for p in PLUMBING)]
        component = next(
            (name for name, marks in COMPONENTS if any(m in f for f in working for m in marks)),
            COMPONENTS[-1][0],
        )
        components[component] += count
        for frame in set(frames):
            if not any(p in frame for p in PLUMBING):
                inclusive[frame] += count
    if not total:
        return ["(no samples)"]

    def share(count: int) -> str:
        return f"{100 * count / total:5.1f}%"

    def table(counter: Counter[str], keep: tuple[str, ...] = ()) -> list[str]:
        chosen = [(f, c) for f, c in counter.most_common() if not keep or any(k in f for k in keep)]
        rows = chosen[:top]
        return [
            "| share | function (file) |",
            "|---:|---|",
            *(f"| {share(c)} | `{f}` |" for f, c in rows),
        ]

    return [
        f"{total} samples of the server's busy threads (idle waits excluded): "
        + ", ".join(f"{name} {share(c)}" for name, c in threads.most_common())
        + ".",
        "",
        "By component (each sample counted once, for the first matching row):",
        "",
        "| share | component |",
        "|---:|---|",
        *(f"| {share(components[name])} | {name} |" for name, _ in COMPONENTS),
        "",
        "Self time (the function itself was running):",
        "",
        *table(own),
        "",
        "Inclusive time, pushd's own code (the function was on the stack):",
        "",
        *table(inclusive, PROJECT),
        "",
        "Inclusive time, everything but the event loop's and threads' plumbing:",
        "",
        *table(inclusive),
    ]


async def profile_run(rig: Rig, duration: float) -> list[str]:
    """One extra max-load run with py-spy sampling the server (not counted in results)."""
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=Path(sys.executable).parent)
    if py_spy is None:
        return ["(py-spy not installed: `.venv/bin/pip install py-spy`)"]
    output = rig.work / f"{rig.shape}-profile.txt"
    process = await asyncio.create_subprocess_exec(
        py_spy,
        "record",
        "--pid",
        str(rig.server.pid),
        "--duration",
        str(math.ceil(duration)),
        "--rate",
        "100",
        "--format",
        "raw",
        "--output",
        str(output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=_die_with_parent,
    )
    try:
        await asyncio.sleep(1.0)  # py-spy attaches
        result = await measure(rig, "max", duration, None)
        async with asyncio.timeout(60):
            _, errors = await process.communicate()
    finally:
        if process.returncode is None:
            await _stop_process(process, 5)
    if not output.exists():
        return [f"(py-spy failed: {errors.decode(errors='replace')[-500:]})"]
    kept = BENCH / "profiles"
    kept.mkdir(exist_ok=True)
    shutil.copy(output, kept / output.name)
    return [
        f"Profiled run ({rig.shape}, `py-spy record --rate 100`, not counted above): "
        f"accepted {result.accepted_per_s:,.0f}/s, delivered {result.delivered_per_s:,.0f}/s, "
        f"server CPU {result.cpu['server']:.0f}%. Collapsed stacks: "
        f"`bench/profiles/{output.name}`.",
        "",
        *summarize_profile(output),
    ]


# memory -----------------------------------------------------------------------------


@dataclass
class MemoryResult:
    rss_idle_kib: int
    rss_sockets_kib: int
    sockets: int
    failed: int
    connect_seconds: float

    @property
    def per_socket_kib(self) -> float:
        return (self.rss_sockets_kib - self.rss_idle_kib) / max(1, self.sockets)


async def measure_memory(
    *, shape: str, env: dict[str, str], key: str, users: int, work: Path, max_seconds: float
) -> MemoryResult:
    """RSS of a fresh server with its users but no socket, then with `users` idle sockets."""
    async with running_server(work / f"{shape}-memory", env) as server:
        print(f"   memory: creating {users:,} users and tokens", flush=True)
        _, tokens = await create_users(server.url, key, users)
        tokens_file = work / f"{shape}-memory-tokens.json"
        write_text(tokens_file, json.dumps(tokens))
        await asyncio.sleep(2)
        idle = rss_kib(server.pid)
        async with started("receivers.py", max_seconds) as receivers:
            connect = await receivers.call(
                {
                    "cmd": "connect",
                    "host": "127.0.0.1",
                    "port": server.port,
                    "tokens_file": str(tokens_file),
                    "concurrency": 100,
                },
                timeout=300,
            )
            if connect["failed"]:
                print(f"   memory: {connect['failed']} sockets failed: {connect['errors']}")
            await asyncio.sleep(3)
            with_sockets = rss_kib(server.pid)
        result = MemoryResult(
            idle, with_sockets, connect["connected"], connect["failed"], connect["seconds"]
        )
        print(
            f"   memory: RSS {idle / 1024:.1f} MiB with 0 sockets, "
            f"{with_sockets / 1024:.1f} MiB with {result.sockets:,} "
            f"({connect['seconds']:.1f} s to open) -> {result.per_socket_kib:.1f} KiB/socket",
            flush=True,
        )
        return result


# one shape --------------------------------------------------------------------------


@dataclass
class ShapeResult:
    shape: str
    runs: list[RunResult]
    memory: MemoryResult | None
    connect_seconds: float
    busy_before: float  # machine's busy % of one core just before the shape ran
    profile: list[str]
    log_problems: list[str]


async def run_shape(shape: str, args: argparse.Namespace, work: Path) -> ShapeResult:
    run_id = f"{os.getpid()}_{secrets.token_hex(3)}"
    key = "pk_bench_" + secrets.token_urlsafe(32)
    env = {"PUSHD_ADMIN_KEY": key, "PUSHD_AUTH__TOKEN_SECRET": secrets.token_urlsafe(48)}
    print(f"== {shape}", flush=True)
    quiet = await wait_until_quiet(20)
    async with contextlib.AsyncExitStack() as stack:
        if shape == "cluster":
            env.update(await stack.enter_async_context(cluster_services(run_id)))
        shape_work = make_dir(work / shape)
        runs: list[RunResult] = []
        profile: list[str] = []
        async with running_server(shape_work / "server", env) as server:
            print(f"   pushd pid {server.pid} on {server.url}", flush=True)
            started_at = time.monotonic()
            user_ids, tokens = await create_users(server.url, key, args.users)
            users_file, tokens_file = shape_work / "users.json", shape_work / "tokens.json"
            write_text(users_file, json.dumps(user_ids))
            write_text(tokens_file, json.dumps(tokens))
            print(
                f"   {args.users:,} users + tokens in {time.monotonic() - started_at:.1f} s",
                flush=True,
            )
            async with (
                started("receivers.py", args.deadline) as receivers,
                started("loadgen.py", args.deadline) as loadgen,
            ):
                connect = await receivers.call(
                    {
                        "cmd": "connect",
                        "host": "127.0.0.1",
                        "port": server.port,
                        "tokens_file": str(tokens_file),
                        "concurrency": 100,
                    },
                    timeout=120,
                )
                if connect["failed"]:
                    raise BenchError(f"{connect['failed']} sockets failed: {connect['errors']}")
                print(
                    f"   {connect['connected']:,} sockets open in {connect['seconds']:.1f} s",
                    flush=True,
                )
                rig = Rig(
                    shape, server, receivers, loadgen, key, str(users_file), shape_work,
                    args.connections, env.get("PUSHD_STORAGE__URL", "").rpartition("/")[2] or None,
                )  # fmt: skip
                for _ in range(args.repeats):
                    runs.append(await measure(rig, "max", args.duration, None))
                    await asyncio.sleep(1)
                for rate in args.rates:
                    for _ in range(args.repeats):
                        runs.append(await measure(rig, "rate", args.duration, rate))
                        await asyncio.sleep(1)
                if args.profile:
                    profile = await profile_run(rig, args.duration)
            problems = server.log_problems()
        memory = None
        if args.memory_users:
            memory = await measure_memory(
                shape=shape,
                env=env,
                key=key,
                users=args.memory_users,
                work=shape_work,
                max_seconds=args.deadline,
            )
        return ShapeResult(shape, runs, memory, connect["seconds"], quiet, profile, problems)


# report -----------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    meminfo = Path("/proc/meminfo").read_text()
    total = re.search(r"^MemTotal:\s*(\d+)", meminfo, re.MULTILINE)
    return {
        "CPU": model.group(1).strip() if model else platform.processor() or "?",
        "cores": str(os.cpu_count()),
        "RAM": f"{int(total.group(1)) / 1024**2:.1f} GiB" if total else "?",
        "Python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "kernel": platform.release(),
    }


def median(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def report(
    results: list[ShapeResult],
    args: argparse.Namespace,
    command: str,
    versions: dict[str, str],
    elapsed: float,
) -> str:
    shapes = [r.shape for r in results]
    names = {
        "embedded": "embedded (SQLite + in-process bus)",
        "cluster": "cluster (PostgreSQL + RabbitMQ, 1 node)",
    }

    def row(label: str, cells: list[str]) -> str:
        return f"| {label} | " + " | ".join(cells) + " |"

    def of(load: str, attribute: str) -> list[float]:
        return [
            median([getattr(r, attribute) for r in shape.runs if r.load == load])
            for shape in results
        ]

    def cpu(load: str, name: str) -> list[str]:
        return [
            f"{median([r.cpu[name] for r in shape.runs if r.load == load]):.0f}%"
            for shape in results
        ]

    def number(values: list[float], fmt: str = ",.0f") -> list[str]:
        return [format(v, fmt) if not math.isnan(v) else "n/a" for v in values]

    def drains(load: str) -> list[str]:
        cells = []
        for shape in results:
            values = [r.drain_s for r in shape.runs if r.load == load]
            cells.append(
                f"{median([v for v in values if v is not None]):.2f} s"
                if all(v is not None for v in values)
                else f"{sum(v is None for v in values)} run(s) incomplete"
            )
        return cells

    def correctness(shape: ShapeResult) -> str:
        keys = ("missing", "duplicates", "out_of_order", "wrong_user", "extra", "failed_posts")
        totals = {k: sum(getattr(r, k) for r in shape.runs) for k in keys}
        accepted = sum(r.accepted for r in shape.runs)
        return (
            f"{accepted:,} accepted: {totals['missing']} missing, {totals['duplicates']} dup, "
            f"{totals['out_of_order']} out of order, {totals['wrong_user']} wrong user, "
            f"{totals['failed_posts']} failed POSTs"
        )

    def rate_rows(rate: float) -> list[str]:
        load = f"rate:{rate:g}"
        return [
            row(
                f"**fixed rate {rate:,.0f}/s**: accepted (202/s)",
                number(of(load, "accepted_per_s")),
            ),
            row("delivered (frames/s, same window)", number(of(load, "delivered_per_s"))),
            row(
                "POST→frame p50 / p99 / max (ms)",
                [
                    f"{a:,.1f} / {b:,.1f} / {c:,.1f}"
                    for a, b, c in zip(
                        of(load, "p50_ms"), of(load, "p99_ms"), of(load, "max_ms"), strict=True
                    )
                ],
            ),
            row(
                "CPU server / load generator",
                [
                    f"{a} / {b}"
                    for a, b in zip(cpu(load, "server"), cpu(load, "loadgen"), strict=True)
                ],
            ),
            row("CPU whole machine (of 200%)", cpu(load, "machine")),
        ]

    repeats = "median of 3 runs" if args.repeats == 3 else f"median of {args.repeats} run(s)"
    memory = [s.memory for s in results]
    lines = [
        "# pushd delivery benchmark",
        "",
        f"Generated by `bench/deliver.py` on {datetime.date.today().isoformat()} "
        f"({elapsed / 60:.1f} min). Command (from the repository root):",
        "",
        "```",
        command,
        "```",
        "",
        "Machine: "
        + ", ".join(f"{k} {v}" for k, v in {**machine(), **versions}.items())
        + ". Everything (pushd, PostgreSQL, RabbitMQ, the load generator and the "
        "receivers) shares these cores over loopback.",
        "",
        "## Results",
        "",
        f"{args.users:,} users, one WebSocket each; {args.duration:g} s per run, {repeats}. "
        "CPU is % of one core over the run's window. Machine busy just before each shape "
        "started (others' work would skew the figures): "
        + ", ".join(f"{s.shape} {s.busy_before:.0f}% of one core" for s in results)
        + ".",
        "",
        "| | " + " | ".join(names[s] for s in shapes) + " |",
        "|---|" + "---:|" * len(shapes),
        row("**max load**: accepted (202/s)", number(of("max", "accepted_per_s"))),
        row("delivered (frames/s, same window)", number(of("max", "delivered_per_s"))),
        row(
            "delivered overall (frames/s, window start to last frame)",
            number(of("max", "delivered_overall_per_s")),
        ),
        row("drain after the window", drains("max")),
        row(
            "POST→frame p50 / p99 (ms)",
            [
                f"{a:,.1f} / {b:,.1f}"
                for a, b in zip(of("max", "p50_ms"), of("max", "p99_ms"), strict=True)
            ],
        ),
        row("POST round trip p50 (ms)", number(of("max", "post_p50_ms"), ",.1f")),
        row("CPU server (all threads)", cpu("max", "server")),
        row("CPU server's event-loop thread", cpu("max", "server_loop")),
        row("CPU load generator", cpu("max", "loadgen")),
        row("CPU receivers", cpu("max", "receivers")),
        row(
            "CPU PostgreSQL / RabbitMQ",
            [
                f"{a} / {b}"
                for a, b in zip(cpu("max", "postgres"), cpu("max", "rabbitmq"), strict=True)
            ],
        ),
        row("CPU anything else on the machine", cpu("max", "other")),
        row("CPU whole machine (of 200%)", cpu("max", "machine")),
        *(line for rate in args.rates for line in rate_rows(rate)),
        row("**correctness** (all runs)", [correctness(s) for s in results]),
        row(
            "**memory**: server RSS, 0 sockets",
            [f"{m.rss_idle_kib / 1024:.1f} MiB" if m else "n/a" for m in memory],
        ),
        row(
            f"RSS with {args.memory_users:,} idle sockets",
            [f"{m.rss_sockets_kib / 1024:.1f} MiB" if m else "n/a" for m in memory],
        ),
        row("RSS per idle socket", [f"{m.per_socket_kib:.1f} KiB" if m else "n/a" for m in memory]),
        "",
        "### Every run",
        "",
        "| shape | load | accepted/s | delivered/s | drain | p50 / p99 / max ms | "
        "CPU server (loop thread) / loadgen / receivers / pg / rabbit / other / machine "
        "| problems |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for shape in results:
        for r in shape.runs:
            c = r.cpu
            problems = (
                r.missing + r.duplicates + r.out_of_order + r.wrong_user + r.extra + r.failed_posts
            )
            lines.append(
                f"| {r.shape} | {'max' if r.mode == 'max' else f'{r.target_rate:,.0f}/s'} | "
                f"{r.accepted_per_s:,.0f} | {r.delivered_per_s:,.0f} | "
                + (f"{r.drain_s:.2f} s" if r.drain_s is not None else "incomplete")
                + f" | {r.p50_ms:,.1f} / {r.p99_ms:,.1f} / {r.max_ms:,.1f} | "
                f"{c['server']:.0f}% ({c['server_loop']:.0f}%) / {c['loadgen']:.0f}% / "
                f"{c['receivers']:.0f}% / "
                f"{c['postgres']:.0f}% / {c['rabbitmq']:.0f}% / {c['other']:.0f}% / "
                f"{c['machine']:.0f}% | "
                + (f"{problems} {r.errors}" if problems or r.errors else "none")
                + " |"
            )
    lines += [
        "",
        "## How it is measured",
        "",
        "`bench/deliver.py` starts `pushd serve --port 0` as a child process with default "
        "settings (no config file; only the admin key and token secret, plus the storage and "
        "bus URLs for the cluster shape, come from the environment), creates the users and a "
        "token each through the HTTP API, and opens one WebSocket per user in a separate "
        "receiver process (`bench/receivers.py`: an asyncio Protocol per socket, hand-parsed "
        "frames) that stamps every `notification` frame with `time.time_ns()` on arrival. "
        "A separate load-generator process (`bench/loadgen.py`) POSTs "
        "`/api/notifications` over "
        f"{args.connections} keep-alive HTTP/1.1 connections, round-robin over the users, "
        "writing pre-built request bytes and parsing only status lines and Content-Length; "
        'each notification carries `data = {"n": unique number, "u": user, "t": '
        "time.time_ns() when the request was written}`. *Max load*: every connection sends "
        "its next request as soon as the previous answer arrived, for the run's duration. "
        "*Fixed rate R*: request k is written at start + k / R (or at once if the "
        "connections fell behind, and none after the window). "
        "Accepted/s counts 202 answers received inside the window; delivered/s counts frames "
        "received inside the same window; then the bench waits (at most "
        f"{DRAIN_TIMEOUT:.0f} s) until every accepted notification arrived, and *drain* is "
        "how long after the window the last one did. POST→frame latency is receive time "
        "minus the `t` stamp, over every frame of the run (both processes read the same "
        "wall clock). CPU is user+system time from `/proc/<pid>/stat` (all threads) between "
        "the window's start and end, for the server, the load generator, the receiver "
        "process, the server's main (event-loop) thread alone, PostgreSQL's own processes "
        "and the backends of the bench's database, and RabbitMQ's broker VM, plus the "
        "machine's busy time from `/proc/stat`; *other* is the machine's busy time minus "
        "all those (the kernel's loopback work not charged to a process, and anything else "
        "running; /proc/stat and per-process times are accounted differently, so it is only "
        "good to about ±10 points). Correctness: every accepted `n` must arrive exactly "
        "once, at its own user's socket, with seq increasing per socket. Memory: a fresh "
        f"server gets {args.memory_users:,} users and tokens; its VmRSS is read after 2 s "
        f"idle, then again 3 s after {args.memory_users:,} authenticated idle WebSockets "
        "were opened (100 handshakes at a time); the difference divided by the sockets is "
        "the cost of one idle connection. The cluster shape uses a fresh PostgreSQL "
        "database and RabbitMQ vhost, dropped at the end. With `--profile`, one more "
        "max-load run per shape (not counted in the table) is sampled by `py-spy record` "
        "(100 Hz, idle waits excluded; a thread blocked on a lock still counts, so part of "
        "the `_worker` and `Runner.run` self time is waiting) and summarised below. The "
        "bench waits up to 20 s for an idle machine before each shape, stops itself at a "
        "global deadline (`--deadline`, 600 s) and removes its children, database and vhost "
        "on every exit.",
    ]
    if any(s.profile for s in results):
        lines += ["", "## Where the server spends its time", ""]
        for shape in results:
            if shape.profile:
                lines += [f"### {shape.shape}", "", *shape.profile, ""]
    logged = [(s.shape, line) for s in results for line in s.log_problems]
    if logged:
        lines += ["", "Server log warnings/errors:", ""]
        lines += [f"- {name}: `{line[:200]}`" for name, line in logged]
    return "\n".join(lines).rstrip() + "\n"


# main -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s runs, once each")
    parser.add_argument("--shapes", default="embedded,cluster", help="embedded,cluster")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--memory-users", type=int, default=5000, help="0 skips memory")
    parser.add_argument("--connections", type=int, default=64, help="HTTP connections")
    parser.add_argument("--duration", type=float, help="seconds per run (10; quick: 3)")
    parser.add_argument("--rates", default="2000,500", help="fixed-rate runs, per s")
    parser.add_argument("--repeats", type=int, help="runs per measurement (3; quick: 1)")
    parser.add_argument("--profile", action="store_true", help="one extra py-spy run")
    parser.add_argument("--deadline", type=float, default=600.0, help="global limit, s")
    parser.add_argument("--output", default=str(REPO / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    args.shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if not set(args.shapes) <= {"embedded", "cluster"}:
        parser.error("--shapes takes embedded and/or cluster")
    return args


async def run(args: argparse.Namespace, command: str) -> int:
    began = time.monotonic()
    results: list[ShapeResult] = []
    with tempfile.TemporaryDirectory(prefix="pushd-bench-") as tmp:
        async with asyncio.timeout(args.deadline):
            versions = await service_versions() if "cluster" in args.shapes else {}
            for shape in args.shapes:
                results.append(await run_shape(shape, args, Path(tmp)))
    text = report(results, args, command, versions, time.monotonic() - began)
    print()
    print(text)
    write_text(args.output, text)
    print(f"written to {args.output}")
    return 0


def main() -> int:
    args = parse_args()
    command = ".venv/bin/python bench/deliver.py " + shlex.join(sys.argv[1:])
    raise_nofile_limit()
    # Last resort if cleanup itself hangs: the children die with us (PR_SET_PDEATHSIG).
    signal.alarm(int(args.deadline) + 120)

    async def guarded() -> int:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        return await run(args, command.strip())

    try:
        return asyncio.run(guarded())
    except TimeoutError:
        print(f"bench: stopped at the {args.deadline:.0f} s deadline", file=sys.stderr)
    except asyncio.CancelledError:
        print("bench: interrupted", file=sys.stderr)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
