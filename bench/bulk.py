"""Bulk ingest benchmark (issue #14): notifications/s committed and delivered when they
come 100 to a `POST /api/notifications/batch` request, against the bare aiohttp relay.

    .venv/bin/python bench/bulk.py [--quick] [--pin] [--anchor relay|none]

For each shape (embedded by default; `--shapes embedded,cluster`) it starts `pushd serve`
and, with the anchor, the bare relay of bench/relay.py, each with its users (one WebSocket
each, in a receiver process) and a load-generator process (bench/rigs.py). The load
generator sends batches of `--batch` notifications for distinct users as fast as the
server answers, over `--connections` keep-alive connections; an item counts as committed
when its result in the answer says 202 (pushd answers once the batch's transaction is
committed). Each pushd run is followed by the same run on the relay; the report gives the
medians, pushd's delivered/s as a ratio to the relay's, and the issue's bar (≥ 40,000
delivered/s end to end on the embedded defaults).

The Markdown block goes to `--output` (docs/benchmarks.md by default) between its
markers, replacing the previous run's; the rest of the file is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import services
from measure import RunResult, cpu_per_notification_us, loadgen_warning, measure, python_speed_us
from report import median, problems_of
from rigs import (
    add_placement_options,
    bench_main,
    machine_sentence,
    publish,
    shape_rig,
    shape_setup,
)
from services import REPO

TARGET_PER_S = 40_000.0  # issue #14: delivered end to end, embedded defaults

NAMES = {
    "embedded": "embedded (SQLite + in-process bus)",
    "cluster": "cluster (PostgreSQL + RabbitMQ, 1 node)",
}


@dataclass
class BulkShapeResult:
    shape: str
    runs: list[RunResult]
    relay_runs: list[RunResult] = field(default_factory=list)
    busy_before: float = 0.0
    log_problems: list[str] = field(default_factory=list)


async def run_shape(shape: str, args: argparse.Namespace, work: Path) -> BulkShapeResult:
    """Max-load batch runs on pushd, each followed by the same run on the relay."""
    async with shape_setup(shape, work) as setup, contextlib.AsyncExitStack() as stack:
        rig, _, problems = await stack.enter_async_context(shape_rig(setup, args))
        relay = None
        if args.anchor == "relay":
            relay, _, _ = await stack.enter_async_context(shape_rig(setup, args, relay=True))
        result = BulkShapeResult(shape, [], busy_before=setup.quiet, log_problems=problems)
        for _ in range(args.repeats):
            result.runs.append(await measure(rig, "max", args.duration, None, batch=args.batch))
            if relay is not None:
                result.relay_runs.append(
                    await measure(relay, "max", args.duration, None, batch=args.batch)
                )
    return result


# report -----------------------------------------------------------------------------


def report(
    results: list[BulkShapeResult], args: argparse.Namespace, command: str, header: str
) -> str:
    def row(label: str, cells: list[str]) -> str:
        return f"| {label} | " + " | ".join(cells) + " |"

    def of(runs: list[RunResult], value: str) -> float:
        return median([_value(r, value) for r in runs])

    columns = [(NAMES[s.shape], s.runs) for s in results]
    columns += [(f"bare relay (beside {s.shape})", s.relay_runs) for s in results if s.relay_runs]
    lines = [
        "### Bulk ingest: `POST /api/notifications/batch`",
        "",
        header,
        "",
        "```",
        command,
        "```",
        "",
        f"{args.users:,} users, one WebSocket each; batches of {args.batch} notifications for "
        f"distinct users, as fast as answered over {args.connections} connections; "
        f"{args.duration:g} s per run, median of {args.repeats}. Placement: "
        f"{services.PLACEMENT.describe()}.",
        "",
        "| | " + " | ".join(name for name, _ in columns) + " |",
        "|---|" + "---:|" * len(columns),
        row("**delivered** (frames/s, in the window)", [
            f"{of(r, 'delivered_per_s'):,.0f}" for _, r in columns
        ]),
        row("committed (202 items/s, in the window)", [
            f"{of(r, 'accepted_per_s'):,.0f}" for _, r in columns
        ]),
        row("batch round trip p50 (ms)", [f"{of(r, 'post_p50_ms'):,.1f}" for _, r in columns]),
        row(
            "POST→frame p50 / p99 (ms)",
            [f"{of(r, 'p50_ms'):,.1f} / {of(r, 'p99_ms'):,.1f}" for _, r in columns],
        ),
        row("CPU server / per notification", [
            f"{of(r, 'cpu_server'):.0f}% / {of(r, 'cpu_us'):,.1f} µs" for _, r in columns
        ]),
        row("CPU load generator / receivers", [
            f"{of(r, 'cpu_loadgen'):.0f}% / {of(r, 'cpu_receivers'):.0f}%" for _, r in columns
        ]),
        row("correctness (all runs)", [_correctness(r) for _, r in columns]),
        "",
    ]  # fmt: skip
    for shape in results:
        delivered = of(shape.runs, "delivered_per_s")
        line = (
            f"- {shape.shape}: {delivered:,.0f} delivered/s; issue #14's bar "
            f"(≥ {TARGET_PER_S:,.0f}/s end to end, embedded defaults): "
            + ("met" if delivered >= TARGET_PER_S else "**not met**")
        )
        if shape.relay_runs:
            ratios = [
                p.delivered_per_s / r.delivered_per_s if r.delivered_per_s else float("nan")
                for p, r in zip(shape.runs, shape.relay_runs, strict=True)
            ]
            line += (
                f"; pushd / relay in the same run: **{median(ratios):.2f}** (pairs: "
                + ", ".join(f"{x:.2f}" for x in ratios)
                + ")"
            )
        lines.append(line + ".")
    warnings = [
        f"- {r.shape}: {w}"
        for s in results
        for r in [*s.runs, *s.relay_runs]
        if (w := loadgen_warning(r))
    ]
    lines += ["", *warnings] if warnings else []
    lines += [
        "",
        "Every run: "
        + "; ".join(
            f"{r.shape} {r.delivered_per_s:,.0f}/s (CPU server {r.cpu['server']:.0f}%, loadgen "
            f"{r.cpu['loadgen']:.0f}%)"
            for s in results
            for r in [*s.runs, *s.relay_runs]
        )
        + ".",
        "",
        "How: the rig of the delivery benchmark (bench/rigs.py: `pushd serve` with default "
        "settings but the rate limits off, one receiver process holding a WebSocket per "
        "user and stamping each frame, one load-generator process), the load generator "
        "sending `POST /api/notifications/batch` with items for consecutive users (so the "
        "items of a batch are distinct users). Committed/s counts the items answered 202 "
        "whose batch was answered inside the window; delivered/s counts frames received "
        "inside the same window; every committed item must then arrive exactly once, in "
        "seq order per socket.",
    ]
    logged = [(s.shape, line) for s in results for line in s.log_problems]
    if logged:
        lines += ["", "Server log warnings/errors:", ""]
        lines += [f"- {name}: `{line[:200]}`" for name, line in logged]
    return "\n".join(lines).rstrip() + "\n"


def _value(r: RunResult, name: str) -> float:
    if name.startswith("cpu_") and name != "cpu_us":
        return r.cpu[name.removeprefix("cpu_")]
    if name == "cpu_us":
        return cpu_per_notification_us(r)
    value = getattr(r, name)
    return float("nan") if value is None else float(value)


def _correctness(runs: list[RunResult]) -> str:
    accepted = sum(r.accepted for r in runs)
    problems = sum(problems_of(r) for r in runs)
    return f"{accepted:,} committed, {problems} missing/dup/out of order/failed"


# main -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s runs, once each")
    parser.add_argument("--shapes", default="embedded", help="embedded,cluster")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100, help="notifications per request")
    parser.add_argument("--connections", type=int, default=16, help="HTTP connections")
    parser.add_argument("--duration", type=float, help="seconds per run (10; quick: 3)")
    parser.add_argument("--repeats", type=int, help="runs per server (3; quick: 1)")
    parser.add_argument("--deadline", type=float, default=600.0, help="global limit, s")
    parser.add_argument("--output", default=str(REPO / "docs" / "benchmarks.md"))
    add_placement_options(
        parser,
        anchor_help="relay (default): each run is followed by the same run on the bare "
        "aiohttp relay (bench/relay.py); none: pushd alone",
    )
    args = parser.parse_args(argv)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if not set(args.shapes) <= set(NAMES):
        parser.error("--shapes takes embedded and/or cluster")
    if not 0 < args.batch <= args.users:
        parser.error("--batch must be between 1 and --users (the items' users are distinct)")
    return args


async def run(args: argparse.Namespace, command: str) -> int:
    began = time.monotonic()
    speed = python_speed_us()
    results = []
    with tempfile.TemporaryDirectory(prefix="pushd-bulk-") as tmp:
        async with asyncio.timeout(args.deadline):
            for shape in args.shapes:
                results.append(await run_shape(shape, args, Path(tmp)))
    header = (
        f"`bench/bulk.py`, {time.strftime('%Y-%m-%d')} ({(time.monotonic() - began) / 60:.1f} "
        f"min), from the repository root. {machine_sentence(speed)}"
    )
    publish(args.output, "bulk.py", report(results, args, command, header))
    return 0


def main() -> int:
    return bench_main("bulk.py", parse_args(), run)


if __name__ == "__main__":
    sys.exit(main())
