"""Topic fan-out benchmark (issue #14): deliveries/s when one send reaches every subscriber
of a topic, each on a WebSocket, against the bare aiohttp relay doing the same fan-out.

    .venv/bin/python bench/topic_fanout.py [--quick] [--pin] [--subscribers 1000,5000]

For each number of subscribers N (a shape of its own: fresh servers) it starts
`pushd serve` (embedded defaults but the rate limits) and, with the anchor, the bare relay
of bench/relay.py; creates N users, a topic and subscribes them all (`POST
/api/topics/{topic}/subscribers`, 1,000 at a time), and opens one WebSocket per user in a
receiver process (bench/rigs.py). A round POSTs K = ceil(--deliveries / N) topic sends
(`POST /api/notifications` with `topic`, at most 4 in flight) from this process and waits
until every socket has every one of them. Deliveries/s = frames received / (last frame -
first POST). pushd answers a topic send once the send is stored and fans it out in bounded
chunks afterwards (docs/audiences.md); the relay writes one frame to every subscriber's
socket before it answers. Rounds alternate pushd, relay, pushd, relay, ...; the report
gives medians and the ratio pushd / relay, against the issue's bar (≥ 0.5).

The Markdown block goes to `--output` (docs/benchmarks.md by default) between its
markers, replacing the previous run's; the rest of the file is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import services
from benchlib import read_columns, read_json
from measure import (
    RECORD_COLUMNS,
    SETTLE_MAX_S,
    Rig,
    cpu_sample,
    percentile,
    python_speed_us,
    wait_until_quiet,
)
from report import median
from rigs import (
    ShapeSetup,
    add_placement_options,
    bench_main,
    machine_sentence,
    publish,
    shape_rig,
    shape_setup,
)
from services import REPO, BenchError

RATIO_BAR = 0.5  # issue #14: at least half of what the relay does in the same run
SUBSCRIBE_PAGE = 1000  # users per bulk subscribe request (pushd's MAX_BULK_SUBSCRIBE)
IN_FLIGHT = 4  # topic sends posted at once
STALL_S = 10.0  # a round ends without its last frames after this long with none arriving


@dataclass
class FanoutRun:
    server: str  # "pushd" or "relay"
    subscribers: int
    sends: int
    deliveries: int  # frames received
    seconds: float  # first POST to last frame
    per_s: float
    post_p50_ms: float
    p50_ms: float  # POST written -> frame received
    p99_ms: float
    cpu_us_per_delivery: float  # the server's CPU over the round / deliveries
    missing: int
    duplicates: int
    out_of_order: int
    failed_posts: int


@dataclass
class SubscribersResult:
    subscribers: int
    runs: list[FanoutRun] = field(default_factory=list)
    relay_runs: list[FanoutRun] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)


# set-up -----------------------------------------------------------------------------


async def subscribe_all(session: aiohttp.ClientSession, rig: Rig, slug: str) -> None:
    """Create topic `slug` on the rig's server and subscribe every user of the rig."""
    url = rig.server.url
    async with session.post(f"{url}/api/topics", json={"slug": slug, "name": slug}) as answer:
        if answer.status != 201:
            raise BenchError(f"POST /api/topics: {answer.status} {await answer.text()}")
    user_ids: list[str] = read_json(rig.users_file)
    for start in range(0, len(user_ids), SUBSCRIBE_PAGE):
        page = {"user_ids": user_ids[start : start + SUBSCRIBE_PAGE]}
        async with session.post(f"{url}/api/topics/{slug}/subscribers", json=page) as answer:
            if answer.status != 200:
                raise BenchError(f"subscribe: {answer.status} {await answer.text()}")


# one round --------------------------------------------------------------------------


async def post_sends(
    session: aiohttp.ClientSession, url: str, slug: str, numbers: range
) -> tuple[list[int], int]:
    """POST one topic send per number, IN_FLIGHT at a time: (round trips in ns, failures)."""
    gate = asyncio.Semaphore(IN_FLIGHT)
    round_trips: list[int] = []
    failures = 0

    async def one(n: int) -> None:
        nonlocal failures
        async with gate:
            sent = time.time_ns()
            data = {"n": n, "u": -1, "t": sent}  # u: no one user (receivers count it apart)
            body = {"topic": slug, "title": "bench", "body": "hello", "data": data}
            async with session.post(f"{url}/api/notifications", json=body) as answer:
                await answer.read()
                if answer.status != 202:
                    failures += 1
                    print(f"   topic send: {answer.status} {await answer.text()}", flush=True)
            round_trips.append(time.time_ns() - sent)

    await asyncio.gather(*(one(n) for n in numbers))
    return sorted(round_trips), failures


async def wait_for_deliveries(rig: Rig, expected: int) -> None:
    """Until the receivers hold `expected` frames, or none came for STALL_S."""
    seen, last_progress = -1, time.monotonic()
    while time.monotonic() - last_progress < STALL_S:
        frames = int((await rig.receivers.call({"cmd": "count"}, timeout=10))["frames"])
        if frames >= expected:
            return
        if frames != seen:
            seen, last_progress = frames, time.monotonic()
        await asyncio.sleep(0.05)  # polling another process's counter


async def fanout_round(
    rig: Rig, session: aiohttp.ClientSession, slug: str, subscribers: int, sends: int
) -> FanoutRun:
    """K topic sends to `subscribers` sockets; what arrived, how fast, at what CPU."""
    await wait_until_quiet(SETTLE_MAX_S)
    rig.runs += 1
    records_file = str(rig.work / f"{rig.shape}-fanout-{rig.runs}.rec")
    await rig.receivers.call({"cmd": "dump", "path": records_file}, timeout=30)  # start empty
    pids = {"server": rig.server.pid, "receivers": rig.receivers.pid, "loadgen": rig.loadgen.pid}
    numbers = range(rig.runs * 10_000_000, rig.runs * 10_000_000 + sends)
    expected = sends * subscribers
    before = cpu_sample(pids, rig.database)
    first_post_ns = time.time_ns()
    round_trips, failures = await post_sends(session, rig.server.url, slug, numbers)
    await wait_for_deliveries(rig, expected - failures * subscribers)
    after = cpu_sample(pids, rig.database)
    dump = await rig.receivers.call({"cmd": "dump", "path": records_file}, timeout=60)
    n, user, _seq, sent, received = read_columns(records_file, RECORD_COLUMNS, dump["frames"])
    os.unlink(records_file)
    pairs = set(zip(n, user, strict=True))
    wanted = set(numbers)
    last = max(received) if received else first_post_ns
    seconds = max(1e-9, (last - first_post_ns) / 1e9)
    latencies = sorted(r - s for r, s in zip(received, sent, strict=True))
    server_cpu = after.seconds["server"] - before.seconds["server"]
    run = FanoutRun(
        server="relay" if rig.shape == "relay" else "pushd",
        subscribers=subscribers,
        sends=sends,
        deliveries=len(n),
        seconds=seconds,
        per_s=len(n) / seconds,
        post_p50_ms=percentile(round_trips, 50) / 1e6,
        p50_ms=percentile(latencies, 50) / 1e6,
        p99_ms=percentile(latencies, 99) / 1e6,
        cpu_us_per_delivery=server_cpu * 1e6 / len(n) if n else math.nan,
        missing=expected - sum(1 for k, _ in pairs if k in wanted),
        duplicates=len(n) - len(pairs),
        out_of_order=int(dump["out_of_order"]),
        failed_posts=failures,
    )
    print(
        f"   {run.server}: {sends} sends x {subscribers:,} subscribers: {run.deliveries:,} "
        f"frames in {seconds:.2f} s = {run.per_s:,.0f} deliveries/s, POST p50 "
        f"{run.post_p50_ms:.1f} ms, POST->frame p50 {run.p50_ms:.1f} p99 {run.p99_ms:.1f} ms, "
        f"server CPU {run.cpu_us_per_delivery:.1f} µs/delivery | missing {run.missing} dup "
        f"{run.duplicates} out-of-order {run.out_of_order} failed POSTs {failures}",
        flush=True,
    )
    return run


# one number of subscribers ------------------------------------------------------------


async def run_subscribers(
    subscribers: int, args: argparse.Namespace, work: Path
) -> SubscribersResult:
    """Rounds alternating pushd and relay, each with `subscribers` sockets on one topic."""
    args.users = subscribers  # the rig creates and connects args.users users
    sends = math.ceil(args.deliveries / subscribers)
    slug = f"bench-{secrets.token_hex(3)}"
    result = SubscribersResult(subscribers)
    async with contextlib.AsyncExitStack() as stack:
        setup: ShapeSetup = await stack.enter_async_context(
            shape_setup("embedded", work / f"n{subscribers}")
        )
        rig, _, result.log_problems = await stack.enter_async_context(shape_rig(setup, args))
        rigs = [rig]
        if args.anchor == "relay":
            relay, _, _ = await stack.enter_async_context(shape_rig(setup, args, relay=True))
            rigs.append(relay)
        session = await stack.enter_async_context(
            aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {setup.key}"},
                timeout=aiohttp.ClientTimeout(total=120),
            )
        )
        for each in rigs:
            await subscribe_all(session, each, slug)
        for _ in range(args.repeats):
            for each in rigs:
                run = await fanout_round(each, session, slug, subscribers, sends)
                (result.relay_runs if run.server == "relay" else result.runs).append(run)
    return result


# report -----------------------------------------------------------------------------


def report(results: list[SubscribersResult], args: argparse.Namespace, header: str) -> str:
    def of(runs: list[FanoutRun], name: str) -> float:
        return median([float(getattr(r, name)) for r in runs])

    def ratio(result: SubscribersResult) -> str:
        if not result.relay_runs:
            return "n/a"
        ratios = [p.per_s / r.per_s for p, r in zip(result.runs, result.relay_runs, strict=True)]
        value = median(ratios)
        verdict = "met" if value >= RATIO_BAR else "**not met**"
        pairs = ", ".join(f"{x:.2f}" for x in ratios)
        return f"**{value:.2f}** ({pairs}); bar ≥ {RATIO_BAR}: {verdict}"

    def problems(runs: list[FanoutRun]) -> str:
        total = sum(r.missing + r.duplicates + r.out_of_order + r.failed_posts for r in runs)
        frames = sum(r.deliveries for r in runs)
        return f"{frames:,} frames, {total} missing/dup/out of order/failed"

    lines = [
        "### Topic fan-out",
        "",
        header,
        "",
        f"Each round: ceil({args.deliveries:,} / N) topic sends to N subscribers, every one "
        f"on a WebSocket; median of {args.repeats} round(s), pushd and relay rounds "
        f"alternating on the same servers. Placement: {services.PLACEMENT.describe()}.",
        "",
        "| subscribers | pushd deliveries/s | relay deliveries/s | pushd / relay (each pair) "
        "| first POST → last frame, pushd / relay | POST→frame p50 / p99 ms, pushd | "
        "server CPU per delivery, pushd / relay | correctness, pushd |",
        "|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for r in results:
        relay = r.relay_runs
        lines.append(
            f"| {r.subscribers:,} | {of(r.runs, 'per_s'):,.0f} | "
            + (f"{of(relay, 'per_s'):,.0f}" if relay else "n/a")
            + f" | {ratio(r)} | {of(r.runs, 'seconds'):.2f} / "
            + (f"{of(relay, 'seconds'):.2f} s" if relay else "n/a")
            + f" | {of(r.runs, 'p50_ms'):,.1f} / {of(r.runs, 'p99_ms'):,.1f} | "
            f"{of(r.runs, 'cpu_us_per_delivery'):,.1f} / "
            + (f"{of(relay, 'cpu_us_per_delivery'):,.1f} µs" if relay else "n/a")
            + f" | {problems(r.runs)} |"
        )
    lines += [
        "",
        "How: `bench/topic_fanout.py` (rig of bench/rigs.py). Deliveries/s is frames "
        "received by the receiver process over the time from the round's first POST to its "
        "last frame; every subscriber must get every send of the round exactly once, in seq "
        "order per socket. Server CPU is the server process's user+system time over the "
        "round divided by the frames.",
    ]
    logged = [(r.subscribers, line) for r in results for line in r.log_problems]
    if logged:
        lines += ["", "Server log warnings/errors:", ""]
        lines += [f"- {n:,} subscribers: `{line[:200]}`" for n, line in logged]
    return "\n".join(lines).rstrip() + "\n"


# main -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 deliveries, once each")
    parser.add_argument("--subscribers", default="1000,5000", help="one set-up per number")
    parser.add_argument("--deliveries", type=int, help="frames per round (100,000; quick 10,000)")
    parser.add_argument("--repeats", type=int, help="rounds per server (3; quick: 1)")
    parser.add_argument("--deadline", type=float, default=900.0, help="global limit, s")
    parser.add_argument("--output", default=str(REPO / "docs" / "benchmarks.md"))
    add_placement_options(
        parser,
        anchor_help="relay (default): each pushd round is followed by the same round on the "
        "bare aiohttp relay (bench/relay.py); none: pushd alone",
    )
    args = parser.parse_args(argv)
    args.deliveries = args.deliveries or (10_000 if args.quick else 100_000)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.subscribers = [int(n) for n in args.subscribers.split(",") if n.strip()]
    args.connections = 1  # the rig's load generator stays idle: this process POSTs
    if not args.subscribers or min(args.subscribers) < 1:
        parser.error("--subscribers takes positive numbers: 1000,5000")
    return args


async def run(args: argparse.Namespace, command: str) -> int:
    began = time.monotonic()
    speed = python_speed_us()
    results = []
    with tempfile.TemporaryDirectory(prefix="pushd-topic-fanout-") as tmp:
        async with asyncio.timeout(args.deadline):
            for subscribers in args.subscribers:
                print(f"== {subscribers:,} subscribers", flush=True)
                results.append(await run_subscribers(subscribers, args, Path(tmp)))
    header = (
        f"`bench/topic_fanout.py`, {time.strftime('%Y-%m-%d')} "
        f"({(time.monotonic() - began) / 60:.1f} min), from the repository root:\n\n"
        f"```\n{command}\n```\n\n{machine_sentence(speed)}"
    )
    publish(args.output, "topic_fanout.py", report(results, args, header))
    return 0


def main() -> int:
    return bench_main("topic_fanout.py", parse_args(), run)


if __name__ == "__main__":
    sys.exit(main())
