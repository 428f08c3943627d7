"""Delivery benchmark of pushd: POST -> WebSocket frame throughput, latency, memory.

    .venv/bin/python bench/deliver.py [--quick] [--profile] [--pin] [--anchor relay|none]
    .venv/bin/python bench/deliver.py --acks --reconnect-storm [--quick]

For each shape (embedded: SQLite + in-process bus; cluster: PostgreSQL + RabbitMQ, one
pushd process) it starts `pushd serve` as a child, creates the users, opens one
WebSocket per user in a receiver process (receivers.py) and drives POSTs from a
load-generator process (loadgen.py); then it measures the server's memory per idle
socket on a fresh server. It prints a Markdown report and writes it to
docs/benchmarks.md.

The anchor (issue #16): with `--anchor relay` (the default for these max-load and
fixed-rate runs) the bare aiohttp relay of bench/relay.py runs in the same shape with its
own receivers and load generator, each of its runs right after the same run on pushd
(pushd, relay, pushd, relay, ...), and the report gives pushd's figures as ratios to it.
`--pin` puts the server (pushd or the relay) on core 0 and the load generator, the
receivers and this process on core 1, and the report says so; the load generator's CPU
(% of its core over each window) is reported, with a warning at 50 % or more.

Delivery modes (issue #3), written to docs/benchmarks-delivery.md instead: `--acks`
interleaves runs where the receivers ack every frame with runs where they do not, on the
same server, and compares them; `--reconnect-storm` drops every socket at once while
notifications flow and measures how the clients resume (storm.py).

Channels (issue #12): `--push-step` gives every user a web push device at a local push
service run by the bench, and interleaves max-load runs where every notification also
plans a web push due at once with runs where it does not, on the same server; it
reports in-app delivery of both, the pushes sent and whether each arrived, and the
ratio (push_step.py, report_push.py). It replaces its block in the "Channels (issue
#12)" section of docs/benchmarks.md, and the other modes keep that section when they
rewrite their file.

Only processes started here are ever signalled, by their own PID. Everything is bounded
by a global deadline; children, the PostgreSQL database and the RabbitMQ vhost are
removed on the way out, also on failure.

This file parses the options and runs the shapes; rigs.py sets up a shape and its rig
(server, users, receivers, load generator); services.py starts and stops the server (or
the relay), the child processes, the database and the vhost; measure.py takes the
measurements; storm.py the reconnect storm; profiling.py runs py-spy; report.py and
report_delivery.py write the Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path

from benchlib import raise_nofile_limit, read_json
from measure import (
    MemoryResult,
    Rig,
    RunResult,
    ShapeResult,
    measure,
    measure_memory,
    python_speed_us,
)
from profiling import profile_run
from push_step import PushProbe, push_service, register_devices, server_env
from report import report
from report_delivery import DeliveryShapeResult, delivery_report
from report_push import PushShapeResult, push_report, write_keeping_channels
from rigs import ShapeSetup, add_placement_options, apply_placement, shape_rig, shape_setup
from services import REPO, BenchError, service_versions
from storm import StormResult, measure_storm

# one shape --------------------------------------------------------------------------


async def run_shape(shape: str, args: argparse.Namespace, work: Path) -> ShapeResult:
    """The standard measurements: max load, fixed rates, optional profile, memory; with
    the relay anchor, each run is followed by the same run on the relay."""
    async with shape_setup(shape, work) as setup:
        if args.no_hot_path_metrics:  # to measure the instruments' cost (docs/metrics.md)
            setup.env["PUSHD_METRICS__HOT_PATH"] = "false"
        runs: list[RunResult] = []
        anchor_runs: list[RunResult] = []
        profile: list[str] = []
        async with contextlib.AsyncExitStack() as stack:
            rig, connect_seconds, problems = await stack.enter_async_context(shape_rig(setup, args))
            anchor = None
            if args.anchor == "relay":
                anchor, _, _ = await stack.enter_async_context(shape_rig(setup, args, relay=True))
            loads = [("max", None)] + [("rate", rate) for rate in args.rates]
            for mode, rate in loads:
                for _ in range(args.repeats):
                    runs.append(await measure(rig, mode, args.duration, rate))
                    if anchor is not None:
                        anchor_runs.append(await measure(anchor, mode, args.duration, rate))
            if args.profile:
                profile = await profile_run(rig, args.duration, args.profile_args.split())
            sweep = await sweep_connections(rig, args)
        memory = anchor_memory = None
        if args.memory_users:
            memory = await shape_memory(setup, args, relay=False)
            if anchor is not None:
                anchor_memory = await shape_memory(setup, args, relay=True)
        return ShapeResult(
            shape, runs, memory, connect_seconds, setup.quiet, profile, problems, sweep,
            anchor_runs, anchor_memory,
        )  # fmt: skip


async def shape_memory(setup: ShapeSetup, args: argparse.Namespace, *, relay: bool) -> MemoryResult:
    """RSS per idle socket of a fresh pushd (or relay) with --memory-users sockets."""
    return await measure_memory(
        shape="relay" if relay else setup.shape,
        env=setup.env,
        key=setup.key,
        users=args.memory_users,
        work=setup.work,
        max_seconds=args.deadline,
        relay=relay,
    )


async def sweep_connections(rig: Rig, args: argparse.Namespace) -> list[tuple[int, RunResult]]:
    """--sweep: one max-load run per number of HTTP connections, fewest first, on the
    same server after the counted runs (so the larger counts meet the larger file)."""
    sweep = []
    counted = rig.connections
    try:
        for connections in sorted(args.sweep):
            rig.connections = connections
            sweep.append((connections, await measure(rig, "max", args.duration, None)))
    finally:
        rig.connections = counted
    return sweep


async def run_delivery_shape(
    shape: str, args: argparse.Namespace, work: Path
) -> DeliveryShapeResult:
    """--acks and/or --reconnect-storm: runs with and without acks interleaved on the
    same server (so both see the same machine), then the storms."""
    async with shape_setup(shape, work) as setup:
        ack_runs: list[RunResult] = []
        storms: list[StormResult] = []
        async with shape_rig(setup, args) as (rig, connect_seconds, problems):
            if args.acks:
                for _ in range(args.repeats):
                    for acks in (False, True):
                        ack_runs.append(await measure(rig, "max", args.duration, None, acks=acks))
                for _ in range(args.repeats):
                    for acks in (False, True):
                        ack_runs.append(
                            await measure(rig, "rate", args.duration, args.ack_rate, acks=acks)
                        )
            if args.reconnect_storm:
                for _ in range(args.repeats):
                    storms.append(
                        await measure_storm(
                            rig, args.storm_rate, args.storm_before, args.storm_after
                        )
                    )
                    await asyncio.sleep(1)
        return DeliveryShapeResult(shape, ack_runs, storms, connect_seconds, setup.quiet, problems)


async def run_push_shape(shape: str, args: argparse.Namespace, work: Path) -> PushShapeResult:
    """--push-step: max-load runs without and with a web push step per notification,
    in pairs on the same server, the order alternating from one pair to the next."""
    async with (
        shape_setup(shape, work) as setup,
        push_service(setup.work, args.deadline) as service,
    ):
        setup.env.update(server_env(service))
        runs: list[RunResult] = []
        async with shape_rig(setup, args) as (rig, connect_seconds, problems):
            user_ids: list[str] = read_json(rig.users_file)
            began = time.monotonic()
            await register_devices(rig.server.url, rig.key, user_ids, service.origin)
            print(
                f"   {len(user_ids):,} web push devices in {time.monotonic() - began:.1f} s",
                flush=True,
            )
            probe = PushProbe(service, rig.server.url, rig.key, len(user_ids), args.duration)
            await probe.start()
            for pair in range(args.repeats):
                for push in (False, True) if pair % 2 == 0 else (True, False):
                    run = await measure(
                        rig, "max", args.duration, None, probe=probe if push else None
                    )
                    runs.append(run)
            profile: list[str] = []
            if args.profile:
                extra = args.profile_args.split()
                profile = await profile_run(rig, args.duration, extra, probe=probe)
        return PushShapeResult(shape, runs, connect_seconds, setup.quiet, problems, profile)


# main -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s runs, once each")
    parser.add_argument("--shapes", default="embedded,cluster", help="embedded,cluster")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--memory-users", type=int, default=5000, help="0 skips memory")
    parser.add_argument(
        "--no-hot-path-metrics",
        action="store_true",
        help="metrics.hot_path = false: no HTTP, commit or delivery-latency instruments",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=512,
        help="HTTP connections (512: fewer leave the server waiting, see --sweep)",
    )
    parser.add_argument(
        "--sweep",
        default="",
        help="extra max-load runs, one per number of connections: --sweep 128,256,512,1024",
    )
    parser.add_argument("--duration", type=float, help="seconds per run (10; quick: 3)")
    parser.add_argument("--rates", default="2000,500", help="fixed-rate runs, per s")
    parser.add_argument("--repeats", type=int, help="runs per measurement (3; quick: 1)")
    parser.add_argument("--profile", action="store_true", help="one extra py-spy run")
    parser.add_argument(
        "--profile-args",
        default="",
        help='more py-spy record flags, with =: --profile-args=--gil, or ="--idle --native"',
    )
    parser.add_argument("--deadline", type=float, default=600.0, help="global limit, s")
    add_placement_options(
        parser,
        anchor_help="relay (default): each max-load and fixed-rate run is followed by the same "
        "run on the bare aiohttp relay (bench/relay.py), and pushd's figures are given as "
        "ratios to it; none: pushd alone",
    )
    parser.add_argument(
        "--acks",
        action="store_true",
        help="delivery mode: max-load and fixed-rate runs without and with acks, interleaved",
    )
    parser.add_argument("--ack-rate", type=float, default=2000.0, help="fixed rate, per s")
    parser.add_argument(
        "--reconnect-storm",
        action="store_true",
        help="delivery mode: all clients drop and resume at once while notifications flow",
    )
    parser.add_argument("--storm-rate", type=float, default=1000.0, help="per s during storms")
    parser.add_argument("--storm-before", type=float, help="s of steady load first (3; quick 2)")
    parser.add_argument("--storm-after", type=float, help="s of load after the drop (10; quick 5)")
    parser.add_argument(
        "--push-step",
        action="store_true",
        help="channels mode: max-load runs without and with a web push per notification, "
        "interleaved; replaces its block in docs/benchmarks.md",
    )
    parser.add_argument(
        "--output",
        help="default: docs/benchmarks.md, or docs/benchmarks-delivery.md in delivery modes",
    )
    args = parser.parse_args(argv)
    args.delivery = args.acks or args.reconnect_storm
    if args.push_step and args.delivery:
        parser.error("--push-step runs alone, not with --acks or --reconnect-storm")
    if args.output is None:
        name = "benchmarks-delivery.md" if args.delivery else "benchmarks.md"
        args.output = str(REPO / "docs" / name)
    if args.storm_before is None:
        args.storm_before = 2.0 if args.quick else 3.0
    if args.storm_after is None:
        args.storm_after = 5.0 if args.quick else 10.0
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    args.sweep = [int(n) for n in args.sweep.split(",") if n.strip()]
    args.shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if not set(args.shapes) <= {"embedded", "cluster"}:
        parser.error("--shapes takes embedded and/or cluster")
    return args


async def run(args: argparse.Namespace, command: str) -> int:
    began = time.monotonic()
    speed_before = python_speed_us()
    results: list[ShapeResult] = []
    delivery: list[DeliveryShapeResult] = []
    pushes: list[PushShapeResult] = []
    with tempfile.TemporaryDirectory(prefix="pushd-bench-") as tmp:
        async with asyncio.timeout(args.deadline):
            versions = await service_versions() if "cluster" in args.shapes else {}
            for shape in args.shapes:
                if args.delivery:
                    delivery.append(await run_delivery_shape(shape, args, Path(tmp)))
                elif args.push_step:
                    pushes.append(await run_push_shape(shape, args, Path(tmp)))
                else:
                    results.append(await run_shape(shape, args, Path(tmp)))
    elapsed = time.monotonic() - began
    versions["Python speed probe"] = (
        f"{speed_before:.1f} µs at the start and {python_speed_us():.1f} µs at the end "
        "(bench/measure.py python_speed_us; lower is faster)"
    )
    if args.push_step:
        block = push_report(pushes, args, command, versions, elapsed)
        print()
        print(block)
        write_keeping_channels(args.output, block, push_block=True)
        print(f"written to {args.output}")
        return 0
    if args.delivery:
        text = delivery_report(delivery, args, command, versions, elapsed)
    else:
        text = report(results, args, command, versions, elapsed)
    print()
    print(text)
    write_keeping_channels(args.output, text)
    print(f"written to {args.output}")
    return 0


def main() -> int:
    args = parse_args()
    command = ".venv/bin/python bench/deliver.py " + shlex.join(sys.argv[1:])
    raise_nofile_limit()
    if not apply_placement(args):
        return 1
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
