"""The reconnect storm: every client drops and resumes at once while notifications keep
flowing (issue #3, speed section).

The load generator posts at a fixed rate for `before + after` seconds. At `before`, the
receiver process aborts every socket (no close frame: like a network cut) and reconnects
them all at once, each with `since` = the highest seq its user holds. Measured: how fast
the sockets are back, how long until each one holds the seq its user had reached when
it was welcomed again (caught up), the frames delivered per second and the POST-to-frame
latency of what was posted during the storm, whether every user ends with every
seq exactly once and in order, and the server CPU the storm added (what the server spent
in the `after` window beyond the steady load's CPU rate measured in the `before` window,
per reconnected socket; meaningful only while the steady load leaves the server room:
a server already saturated before the drop cannot spend more after it).
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
from benchlib import cancel_unfinished, cpu_seconds, read_columns, read_json
from measure import RECORD_COLUMNS, Rig, load_command, percentile, wait_for_frames


@dataclass
class StormResult:
    shape: str
    rate: float
    before: float
    after: float
    accepted: int
    reconnected: int
    reconnect_failed: int
    reconnect_s: float  # until every socket was welcomed again
    caught_up_p50_s: float | None
    caught_up_p99_s: float | None
    caught_up_max_s: float | None  # the time until every client had caught up
    not_caught_up: int
    delivered_before_per_s: float
    delivered_storm_per_s: float  # frames received in the `after` window, replays included
    p50_before_ms: float
    p99_before_ms: float
    p50_storm_ms: float  # notifications POSTed during the `after` window
    p99_storm_ms: float
    max_storm_ms: float
    missing: int
    duplicates: int
    out_of_order: int
    gaps: int
    wrong_user: int
    behind_at_end: int  # users whose highest seq held != their last stored seq
    failed_posts: int
    added_cpu_ms_per_socket: float | None = None  # server CPU the storm added, per socket


async def stored_last_seqs(url: str, key: str, user_ids: list[str]) -> list[int]:
    """Each user's newest stored seq (`GET /api/notifications/user/{id}?limit=1`)."""
    gate = asyncio.Semaphore(32)
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(
        headers=headers, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:

        async def one(user_id: str) -> int:
            async with (
                gate,
                session.get(
                    f"{url}/api/notifications/user/{user_id}", params={"limit": "1"}
                ) as response,
            ):
                response.raise_for_status()
                items: list[dict[str, Any]] = (await response.json())["items"]
                return int(items[0]["seq"]) if items else 0

        return list(await asyncio.gather(*(one(u) for u in user_ids)))


async def measure_storm(rig: Rig, rate: float, before: float, after: float) -> StormResult:
    rig.runs += 1
    tag = f"{rig.shape}-storm-{rig.runs}"
    accepted_file = str(rig.work / f"{tag}.accepted")
    records_file = str(rig.work / f"{tag}.rec")
    highest_file = str(rig.work / f"{tag}.highest")
    await rig.receivers.call({"cmd": "acks", "on": True}, timeout=10)
    await rig.receivers.call({"cmd": "dump", "path": records_file}, timeout=30)  # start empty
    duration = before + after
    start_ns = time.time_ns() + 300_000_000
    storm_at_ns = start_ns + int(before * 1e9)
    command = load_command(
        rig, "rate", rate, start_ns=start_ns, duration=duration, out=accepted_file
    )
    load = asyncio.create_task(rig.loadgen.call(command, timeout=duration + 60))
    try:
        await asyncio.sleep((start_ns - time.time_ns()) / 1e9)
        steady_from = ServerCpu.now(rig.server.pid)
        await asyncio.sleep((storm_at_ns - time.time_ns()) / 1e9)
        storm_ns = time.time_ns()
        storm_from = ServerCpu.now(rig.server.pid)
        storm = await rig.receivers.call({"cmd": "storm", "concurrency": 1000}, timeout=120)
        summary = await load
        storm_to = ServerCpu.now(rig.server.pid)
    finally:
        await cancel_unfinished(load)
    accepted_count = int(summary["accepted"])
    await wait_for_frames(rig.receivers, accepted_count)
    catchup = await rig.receivers.call({"cmd": "catchup", "storm_ns": storm_ns}, timeout=30)
    dump = await rig.receivers.call({"cmd": "dump", "path": records_file}, timeout=60)
    users = await rig.receivers.call({"cmd": "highest", "path": highest_file}, timeout=30)
    user_ids: list[str] = read_json(rig.users_file)
    stored = await stored_last_seqs(rig.server.url, rig.key, user_ids)

    (accepted,) = read_columns(accepted_file, 1, accepted_count)
    n, user, seq, sent, received = read_columns(records_file, RECORD_COLUMNS, dump["frames"])
    (highest,) = read_columns(highest_file, 1, int(users["users"]))
    counts = Counter(n)
    seq_counts = Counter(zip(user, seq, strict=True))
    window_end = storm_ns + int(after * 1e9)
    before_latencies = sorted(r - s for r, s in zip(received, sent, strict=True) if s < storm_ns)
    storm_latencies = sorted(
        r - s for r, s in zip(received, sent, strict=True) if storm_ns <= s <= window_end
    )
    result = StormResult(
        shape=rig.shape,
        rate=rate,
        before=before,
        after=after,
        accepted=accepted_count,
        reconnected=int(storm["connected"]),
        reconnect_failed=int(storm["failed"]),
        reconnect_s=float(storm["seconds"]),
        caught_up_p50_s=catchup["caught_up_p50_s"],
        caught_up_p99_s=catchup["caught_up_p99_s"],
        caught_up_max_s=catchup["caught_up_max_s"],
        not_caught_up=int(catchup["not_caught_up"]),
        delivered_before_per_s=sum(start_ns <= r < storm_ns for r in received)
        / max(1e-9, (storm_ns - start_ns) / 1e9),
        delivered_storm_per_s=sum(storm_ns <= r <= window_end for r in received) / after,
        p50_before_ms=percentile(before_latencies, 50) / 1e6,
        p99_before_ms=percentile(before_latencies, 99) / 1e6,
        p50_storm_ms=percentile(storm_latencies, 50) / 1e6,
        p99_storm_ms=percentile(storm_latencies, 99) / 1e6,
        max_storm_ms=(storm_latencies[-1] / 1e6) if storm_latencies else math.nan,
        missing=len(set(accepted) - counts.keys()),
        duplicates=sum(c - 1 for c in seq_counts.values() if c > 1),
        out_of_order=int(dump["out_of_order"]),
        gaps=int(dump.get("gaps", 0)),
        wrong_user=int(dump["wrong_user"]),
        behind_at_end=sum(h != s for h, s in zip(highest, stored, strict=True)),
        failed_posts=sum(summary["statuses"].values()) + sum(summary["errors"].values()),
        added_cpu_ms_per_socket=added_cpu_ms_per_socket(
            steady_from, storm_from, storm_to, int(storm["connected"])
        ),
    )
    print("   " + describe_storm(result), flush=True)
    for path in (accepted_file, records_file, highest_file):
        os.unlink(path)
    return result


@dataclass(frozen=True)
class ServerCpu:
    """The server's CPU seconds (all threads) read at a monotonic instant."""

    at: float
    seconds: float | None

    @classmethod
    def now(cls, pid: int) -> ServerCpu:
        return cls(time.monotonic(), cpu_seconds(pid))


def added_cpu_ms_per_socket(
    steady_from: ServerCpu, storm_from: ServerCpu, storm_to: ServerCpu, sockets: int
) -> float | None:
    """The server CPU of the storm window beyond the steady rate before it, per socket:
    the dropped socket's teardown, its successor's handshake and catch-up (assuming the
    notifications posted meanwhile cost what they cost before the drop). /proc counts
    10 ms ticks: with 1,000 sockets, 0.01 ms per socket."""
    readings = (steady_from.seconds, storm_from.seconds, storm_to.seconds)
    if None in readings or not sockets or storm_from.at <= steady_from.at:
        return None
    steady, before, after = (float(r) for r in readings if r is not None)
    steady_rate = (before - steady) / (storm_from.at - steady_from.at)
    added = (after - before) - steady_rate * (storm_to.at - storm_from.at)
    return 1000 * added / sockets


def describe_storm(r: StormResult) -> str:
    def seconds(value: float | None) -> str:
        return f"{value:.2f} s" if value is not None else "n/a"

    return (
        f"storm at {r.rate:,.0f}/s: {r.reconnected:,} sockets back in {r.reconnect_s:.2f} s "
        f"({r.reconnect_failed} failed), caught up p50 {seconds(r.caught_up_p50_s)} "
        f"p99 {seconds(r.caught_up_p99_s)} all {seconds(r.caught_up_max_s)} "
        f"({r.not_caught_up} never) | delivered {r.delivered_before_per_s:,.0f}/s before, "
        f"{r.delivered_storm_per_s:,.0f}/s during | POST->frame p50/p99 before "
        f"{r.p50_before_ms:.1f}/{r.p99_before_ms:.1f} ms, during {r.p50_storm_ms:.1f}/"
        f"{r.p99_storm_ms:.1f} ms (max {r.max_storm_ms:.1f}) | missing {r.missing} "
        f"dup {r.duplicates} out-of-order {r.out_of_order} gaps {r.gaps} wrong-user "
        f"{r.wrong_user} behind at end {r.behind_at_end} failed POSTs {r.failed_posts} | "
        f"server CPU added {_milliseconds(r.added_cpu_ms_per_socket)} per socket"
    )


def _milliseconds(value: float | None) -> str:
    return f"{value:.2f} ms" if value is not None else "n/a"
