"""What one measurement of the delivery benchmark does and yields: CPU sampling from
/proc, a throughput/latency run against a running server (`measure`), the memory of idle
sockets on a fresh server (`measure_memory`), and the result records the report reads.
"""

from __future__ import annotations

import array
import asyncio
import json
import math
import os
import time
import timeit
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from benchlib import (
    cancel_unfinished,
    cpu_seconds,
    machine_busy_seconds,
    main_thread_cpu_seconds,
    postgres_pids,
    rabbitmq_server_pids,
    read_columns,
    rss_kib,
    write_text,
)
from services import Child, Server, create_users, running_server, started

DRAIN_TIMEOUT = 30.0  # longest wait for the last accepted notification to arrive
DRAIN_STALL = 5.0  # ...and the longest wait without any new frame
RECORD_COLUMNS = 5  # n, user, seq, sent ns, received ns (receivers.Records)


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


def python_speed_us() -> float:
    """Microseconds one core takes for a fixed pure-Python workload (best of 5).

    The cores of this shared machine do not always run at the same speed: the same probe
    was seen at 1.7 µs and at 5 µs minutes apart in one session, with nothing else of
    ours running. The report prints it so that figures from different runs can be put
    side by side."""
    timer = timeit.Timer("sum([i * i for i in range(100)])")
    return min(timer.repeat(5, 2000)) / 2000 * 1e6


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

SETTLE_MAX_S = 15.0
"""Longest wait for a quiet machine before each run."""


@dataclass
class PushStats:
    """What a local push service got during a run of `deliver.py --push-step`
    (push_step.py): every accepted notification plans one web push to its user's device."""

    expected: int  # accepted notifications = pushes due
    received: int  # pushes the push service accepted (201) for this run
    in_window: int  # ...of which inside the run's window
    per_s: float  # in_window / duration
    overall_per_s: float  # received / (last push - window start)
    drain_s: float | None  # after the window, until the last push (None: some never came)
    lost: int  # per subscription: pushes expected and not received
    duplicates: int  # per subscription: received more often than expected
    refused: dict[str, int]  # push service answers other than 201, by status
    outcomes: dict[str, int]  # the server's pushd_channel_attempts_total, by outcome
    queue: dict[str, float]  # the server's channel queue gauges after the run


class RunProbe(Protocol):
    """More that a run measures (push_step.PushProbe): JSON members added to every
    POSTed notification, more processes whose CPU is reported, and what it reads at
    the window's start and end and once the run's frames have arrived."""

    body_extra: str
    pids: dict[str, int]

    async def window_started(self) -> None: ...

    async def window_ended(self) -> None: ...

    async def run_ended(
        self, accepted: array.array[int], n_base: int, window: tuple[int, int]
    ) -> PushStats: ...


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
    acks: bool = False  # the receivers acked every frame
    gaps: int = 0
    push: PushStats | None = None  # --push-step: the run's notifications each planned a push

    @property
    def load(self) -> str:
        return "max" if self.target_rate is None else f"rate:{self.target_rate:g}"


async def connect_receivers(
    receivers: Child,
    port: int,
    tokens_file: Path,
    *,
    timeout: float,  # noqa: ASYNC109
) -> dict[str, Any]:
    """Have the receiver process open one authenticated WebSocket per token."""
    command = {
        "cmd": "connect",
        "host": "127.0.0.1",
        "port": port,
        "tokens_file": str(tokens_file),
        "concurrency": 100,
    }
    return await receivers.call(command, timeout=timeout)


async def wait_for_frames(receivers: Child, count: int) -> None:
    """Drain: wait until `count` frames arrived (or nothing more comes)."""
    began, last_progress, seen = time.monotonic(), time.monotonic(), -1
    while time.monotonic() - began < DRAIN_TIMEOUT:
        frames = int((await receivers.call({"cmd": "count"}, timeout=10))["frames"])
        if frames >= count:
            return
        if frames != seen:
            seen, last_progress = frames, time.monotonic()
        elif time.monotonic() - last_progress > DRAIN_STALL:
            return
        await asyncio.sleep(0.1)  # polling another process's counter


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


def load_command(
    rig: Rig,
    mode: str,
    rate: float | None,
    *,
    start_ns: int,
    duration: float,
    out: str,
    body_extra: str = "",
    batch: int = 0,
) -> dict[str, Any]:
    """The load generator's `run` command: POSTs from `start_ns` for `duration` s."""
    return {
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
        "out": out,
        "body_extra": body_extra,
        "batch": batch,
    }


async def measure(
    rig: Rig,
    mode: str,
    duration: float,
    rate: float | None,
    *,
    acks: bool = False,
    probe: RunProbe | None = None,
    batch: int = 0,
) -> RunResult:
    """One run; with `acks`, the receivers ack every notification frame during it; with
    `probe`, the notifications carry its `body_extra` and it measures more (push_step);
    with `batch`, each request is a `POST /api/notifications/batch` of that many
    (bench/bulk.py).

    It starts once the machine is quiet: what the previous run left the server to do
    (the audit queue, the cursor flush, a WAL checkpoint) would otherwise be measured
    in this one, and the first fixed-rate run after a max-load run suffered from it."""
    await wait_until_quiet(SETTLE_MAX_S)
    rig.runs += 1
    tag = f"{rig.shape}-{mode}-{rig.runs}"
    await rig.receivers.call({"cmd": "acks", "on": acks}, timeout=10)
    accepted_file, records_file = str(rig.work / f"{tag}.accepted"), str(rig.work / f"{tag}.rec")
    await rig.receivers.call({"cmd": "dump", "path": records_file}, timeout=30)  # start empty
    pids = {"server": rig.server.pid, "loadgen": rig.loadgen.pid, "receivers": rig.receivers.pid}
    pids.update(probe.pids if probe is not None else {})
    start_ns = time.time_ns() + 300_000_000
    window_end_ns = start_ns + int(duration * 1e9)
    command = load_command(
        rig,
        mode,
        rate,
        start_ns=start_ns,
        duration=duration,
        out=accepted_file,
        body_extra=probe.body_extra if probe is not None else "",
        batch=batch,
    )
    load = asyncio.create_task(rig.loadgen.call(command, timeout=duration + 60))
    try:
        await asyncio.sleep((start_ns - time.time_ns()) / 1e9)
        before = cpu_sample(pids, rig.database)
        if probe is not None:
            await probe.window_started()
        await asyncio.sleep((window_end_ns - time.time_ns()) / 1e9)
        after = cpu_sample(pids, rig.database)
        if probe is not None:
            await probe.window_ended()
        summary = await load
    finally:
        await cancel_unfinished(load)

    accepted_count = int(summary["accepted"])
    await wait_for_frames(rig.receivers, accepted_count)
    dump = await rig.receivers.call({"cmd": "dump", "path": records_file}, timeout=60)

    (accepted,) = read_columns(accepted_file, 1, accepted_count)
    push = None
    if probe is not None:
        push = await probe.run_ended(accepted, command["n_base"], (start_ns, window_end_ns))
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
        acks=acks,
        gaps=int(dump.get("gaps", 0)),
        push=push,
    )
    print("   " + describe(result), flush=True)
    if warning := loadgen_warning(result):
        print("   " + warning, flush=True)
    for path in (accepted_file, records_file):
        os.unlink(path)
    return result


LOADGEN_CPU_LIMIT = 50.0
"""Issue #16: the load generator must stay below half of its core, or the figures
measure it rather than the server."""


def loadgen_warning(r: RunResult) -> str | None:
    """A warning when the run's load generator used ≥ 50 % of its core."""
    used = r.cpu.get("loadgen", 0.0)
    if used < LOADGEN_CPU_LIMIT:
        return None
    return (
        f"WARNING: the load generator used {used:.0f}% of its core in this run "
        f"(≥ {LOADGEN_CPU_LIMIT:.0f}%): the figure may measure it, not the server"
    )


def cpu_per_notification_us(r: RunResult, process: str = "server") -> float:
    """CPU µs a process spent per notification accepted in the run's window."""
    per_s = r.accepted_per_s
    return r.cpu[process] / 100 * 1e6 / per_s if per_s else math.nan


def describe(r: RunResult) -> str:
    what = (
        ("max load" if r.mode == "max" else f"{r.target_rate:,.0f}/s")
        + (" +acks" if r.acks else "")
        + (" +push" if r.push is not None else "")
    )
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
        f"missing {r.missing} dup {r.duplicates} out-of-order {r.out_of_order} gaps {r.gaps} "
        f"wrong-user {r.wrong_user} extra {r.extra} failed POSTs {r.failed_posts} "
        f"closed {r.closed_sockets}" + (f" {r.errors}" if r.errors else "") + describe_push(r)
    )


def describe_push(r: RunResult) -> str:
    p = r.push
    if p is None:
        return ""
    drain = f"{p.drain_s:.2f} s" if p.drain_s is not None else "incomplete"
    return (
        f"\n      push: {p.received:,} of {p.expected:,} received, {p.per_s:,.0f}/s in the window "
        f"(overall {p.overall_per_s:,.0f}/s), drain {drain}, lost {p.lost} dup {p.duplicates}"
        f" | CPU push service {r.cpu.get('push_service', math.nan):.0f}%"
        f" | server attempts {p.outcomes} queue {p.queue}"
        + (f" refused {p.refused}" if p.refused else "")
    )


# memory -----------------------------------------------------------------------------


@dataclass
class MemoryResult:
    rss_idle_kib: int
    rss_sockets_kib: int
    sockets: int
    failed: int
    connect_seconds: float
    rss_settled_kib: int
    """RSS once the sockets stayed quiet past `actors.idle_timeout` (pushd parks the
    mailboxes of users whose sockets are idle); the same reading for the relay."""

    @property
    def per_socket_kib(self) -> float:
        return (self.rss_sockets_kib - self.rss_idle_kib) / max(1, self.sockets)

    @property
    def per_socket_settled_kib(self) -> float:
        return (self.rss_settled_kib - self.rss_idle_kib) / max(1, self.sockets)


IDLE_SETTLE_SECONDS = 65.0
"""pushd's default `actors.idle_timeout` (60 s) and a margin."""


async def measure_memory(
    *,
    shape: str,
    env: dict[str, str],
    key: str,
    users: int,
    work: Path,
    max_seconds: float,
    relay: bool = False,
) -> MemoryResult:
    """RSS of a fresh server (pushd, or with `relay` the bare relay) with its users but no
    socket, then with `users` idle sockets."""
    async with running_server(work / f"{shape}-memory", env, relay=relay) as server:
        print(f"   memory: creating {users:,} users and tokens", flush=True)
        _, tokens = await create_users(server.url, key, users)
        tokens_file = work / f"{shape}-memory-tokens.json"
        write_text(tokens_file, json.dumps(tokens))
        await asyncio.sleep(2)
        idle = rss_kib(server.pid)
        async with started("receivers.py", max_seconds) as receivers:
            connect = await connect_receivers(receivers, server.port, tokens_file, timeout=300)
            if connect["failed"]:
                print(f"   memory: {connect['failed']} sockets failed: {connect['errors']}")
            await asyncio.sleep(3)
            with_sockets = rss_kib(server.pid)
            # The relay keeps nothing per user that could settle; pushd parks idle users'
            # mailboxes after actors.idle_timeout (60 s by default, not changed here).
            if not relay:
                await asyncio.sleep(IDLE_SETTLE_SECONDS)
            settled = rss_kib(server.pid)
        result = MemoryResult(
            idle,
            with_sockets,
            connect["connected"],
            connect["failed"],
            connect["seconds"],
            settled,
        )
        print(
            f"   memory: RSS {idle / 1024:.1f} MiB with 0 sockets, "
            f"{with_sockets / 1024:.1f} MiB with {result.sockets:,} "
            f"({connect['seconds']:.1f} s to open) -> {result.per_socket_kib:.1f} KiB/socket; "
            f"{result.per_socket_settled_kib:.1f} KiB/socket once idle past the actor "
            "idle timeout",
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
    sweep: list[tuple[int, RunResult]] = field(default_factory=list)
    """--sweep: (HTTP connections, one max-load run), after the counted runs."""
    anchor_runs: list[RunResult] = field(default_factory=list)
    """--anchor relay: the same runs on the bare aiohttp relay, each right after pushd's."""
    anchor_memory: MemoryResult | None = None
