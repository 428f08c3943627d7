"""The Markdown report of the delivery modes (`--acks`, `--reconnect-storm`):
docs/benchmarks-delivery.md."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass

from measure import DRAIN_TIMEOUT, RunResult
from report import median, report_header
from storm import StormResult

ACK_BUDGET = 0.8  # issue #3: acks may cost at most 20% of the throughput without them

NAMES = {
    "embedded": "embedded (SQLite + in-process bus)",
    "cluster": "cluster (PostgreSQL + RabbitMQ, 1 node)",
}


@dataclass
class DeliveryShapeResult:
    shape: str
    ack_runs: list[RunResult]
    storms: list[StormResult]
    connect_seconds: float
    busy_before: float
    log_problems: list[str]


def _slash(first: list[str], second: list[str]) -> list[str]:
    """Cells "a / b" from two rows of cells."""
    return [f"{a} / {b}" for a, b in zip(first, second, strict=True)]


def _fmt(value: float | None, fmt: str = ",.0f", unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return format(value, fmt) + unit


def _ack_section(results: list[DeliveryShapeResult], args: argparse.Namespace) -> list[str]:
    def runs(shape: DeliveryShapeResult, load: str, acks: bool) -> list[RunResult]:
        return [r for r in shape.ack_runs if r.load == load and r.acks == acks]

    def of(load: str, acks: bool, attribute: str) -> list[float]:
        return [median([getattr(r, attribute) for r in runs(s, load, acks)]) for s in results]

    def row(label: str, cells: list[str]) -> str:
        return f"| {label} | " + " | ".join(cells) + " |"

    def pair(load: str, acks: bool) -> list[str]:
        return [
            f"{_fmt(a, ',.1f')} / {_fmt(b, ',.1f')}"
            for a, b in zip(of(load, acks, "p50_ms"), of(load, acks, "p99_ms"), strict=True)
        ]

    def cpu(load: str, acks: bool) -> list[str]:
        return [
            _fmt(median([r.cpu["server"] for r in runs(s, load, acks)]), ".0f", "%")
            for s in results
        ]

    without, with_acks = of("max", False, "delivered_per_s"), of("max", True, "delivered_per_s")
    # Each no-ack run is followed by an ack run on the same server: the ratio of each
    # such pair cancels most of what the rest of the machine did meanwhile.
    pair_ratios = [
        [
            b.delivered_per_s / a.delivered_per_s if a.delivered_per_s else math.nan
            for a, b in zip(runs(s, "max", False), runs(s, "max", True), strict=True)
        ]
        for s in results
    ]
    ratios = [median(pairs) for pairs in pair_ratios]
    rate_load = f"rate:{args.ack_rate:g}"
    lines = [
        "## Acknowledgements",
        "",
        "| | " + " | ".join(NAMES[s.shape] for s in results) + " |",
        "|---|" + "---:|" * len(results),
        row("**max load**, no acks: delivered (frames/s)", [_fmt(v) for v in without]),
        row("max load, every frame acked: delivered (frames/s)", [_fmt(v) for v in with_acks]),
        row(
            "**with acks / without** (delivered/s; median of the run pairs)",
            [_fmt(r, ".2f") for r in ratios],
        ),
        row(
            "each pair (no-ack run, then ack run)",
            [", ".join(_fmt(r, ".2f") for r in pairs) for pairs in pair_ratios],
        ),
        row("POST→frame p50 / p99 (ms), no acks", pair("max", False)),
        row("POST→frame p50 / p99 (ms), acks", pair("max", True)),
        row(
            "CPU server, no acks / acks",
            _slash(cpu("max", False), cpu("max", True)),
        ),
        row(
            f"**fixed rate {args.ack_rate:,.0f}/s**: POST→frame p50 / p99 (ms), no acks",
            pair(rate_load, False),
        ),
        row("fixed rate: POST→frame p50 / p99 (ms), acks", pair(rate_load, True)),
        row(
            "fixed rate: CPU server, no acks / acks",
            [
                f"{a} / {b}"
                for a, b in zip(cpu(rate_load, False), cpu(rate_load, True), strict=True)
            ],
        ),
        row("**correctness** (all runs)", [_correctness(s.ack_runs) for s in results]),
        "",
    ]
    for shape, ratio in zip(results, ratios, strict=True):
        verdict = (
            "within" if ratio >= ACK_BUDGET else "**over**"
        ) if not math.isnan(ratio) else "not measured"  # fmt: skip
        lines.append(
            f"- {shape.shape}: with acks the server delivers {_fmt(ratio * 100, '.0f')}% of "
            f"the frames/s it delivers without them: {verdict} issue #3's budget (acks may "
            "cost at most 20%)."
        )
    return [*lines, ""]


def _correctness(runs: list[RunResult]) -> str:
    accepted = sum(r.accepted for r in runs)
    return (
        f"{accepted:,} accepted: {sum(r.missing for r in runs)} missing, "
        f"{sum(r.duplicates for r in runs)} dup, {sum(r.out_of_order for r in runs)} out of "
        f"order, {sum(r.gaps for r in runs)} gaps, {sum(r.failed_posts for r in runs)} "
        "failed POSTs"
    )


def _storm_section(results: list[DeliveryShapeResult], args: argparse.Namespace) -> list[str]:
    def of(attribute: str) -> list[float]:
        return [
            median([v for r in s.storms if (v := getattr(r, attribute)) is not None])
            for s in results
        ]

    def row(label: str, cells: list[str]) -> str:
        return f"| {label} | " + " | ".join(cells) + " |"

    def seconds(attribute: str) -> list[str]:
        return [_fmt(v, ".2f", " s") for v in of(attribute)]

    def joined(first: str, second: str, fmt: str = ",.1f") -> list[str]:
        return [
            f"{_fmt(a, fmt)} / {_fmt(b, fmt)}" for a, b in zip(of(first), of(second), strict=True)
        ]

    def correctness(shape: DeliveryShapeResult) -> str:
        runs = shape.storms

        def total(name: str) -> int:
            return sum(getattr(r, name) for r in runs)

        return (
            f"{sum(r.accepted for r in runs):,} accepted: {total('missing')} missing, "
            f"{total('duplicates')} dup, {total('out_of_order')} out of order, "
            f"{total('gaps')} gaps, {total('behind_at_end')} users behind at the end, "
            f"{total('reconnect_failed')} failed reconnects, {total('failed_posts')} "
            "failed POSTs"
        )

    return [
        "## Reconnect storm",
        "",
        f"{args.users:,} clients acking every frame; notifications at a steady "
        f"{args.storm_rate:,.0f}/s for {args.storm_before:g} s, then every socket is "
        f"dropped at once and reconnected with `since` while the load goes on for "
        f"{args.storm_after:g} s more.",
        "",
        "| | " + " | ".join(NAMES[s.shape] for s in results) + " |",
        "|---|" + "---:|" * len(results),
        row("every socket welcomed again after", seconds("reconnect_s")),
        row(
            "caught up (holds its user's last seq at reconnect): p50 / p99",
            _slash(seconds("caught_up_p50_s"), seconds("caught_up_p99_s")),
        ),
        row("**every client caught up after**", seconds("caught_up_max_s")),
        row(
            "delivered (frames/s): before the drop / the storm window",
            joined("delivered_before_per_s", "delivered_storm_per_s", ",.0f"),
        ),
        row("POST→frame p50 / p99 (ms) before the drop", joined("p50_before_ms", "p99_before_ms")),
        row(
            "POST→frame p50 / p99 (ms), posted during the storm window",
            joined("p50_storm_ms", "p99_storm_ms"),
        ),
        row(
            "POST→frame max (ms), posted during the storm window",
            [_fmt(v, ",.1f") for v in of("max_storm_ms")],
        ),
        row("**correctness** (all storms)", [correctness(s) for s in results]),
        "",
    ]


def delivery_report(
    results: list[DeliveryShapeResult],
    args: argparse.Namespace,
    command: str,
    versions: dict[str, str],
    elapsed: float,
) -> str:
    repeats = f"median of {args.repeats} run(s)"
    lines = [
        *report_header(
            "pushd delivery benchmark: acknowledgements and reconnect storm",
            command,
            versions,
            elapsed,
        ),
        f"{args.users:,} users, one WebSocket each, {args.connections} HTTP connections for "
        f"the POSTs; {args.duration:g} s per run, {repeats}. Machine busy just before each "
        "shape started: "
        + ", ".join(f"{s.shape} {s.busy_before:.0f}% of one core" for s in results)
        + ".",
        "",
    ]
    if args.acks:
        lines += _ack_section(results, args)
    if args.reconnect_storm:
        lines += _storm_section(results, args)
    lines += ["### Every run", ""]
    describe_ack: Callable[[RunResult], str] = lambda r: (  # noqa: E731
        f"| {r.shape} | {'max' if r.mode == 'max' else f'{r.target_rate:,.0f}/s'} | "
        f"{'yes' if r.acks else 'no'} | {r.accepted_per_s:,.0f} | {r.delivered_per_s:,.0f} | "
        f"{r.p50_ms:,.1f} / {r.p99_ms:,.1f} / {r.max_ms:,.1f} | {r.cpu['server']:.0f}% "
        f"({r.cpu['server_loop']:.0f}%) / {r.cpu['receivers']:.0f}% / {r.cpu['other']:.0f}% / "
        f"{r.cpu['machine']:.0f}% | "
        f"{r.missing + r.duplicates + r.out_of_order + r.gaps + r.failed_posts} |"
    )
    if args.acks:
        lines += [
            "| shape | load | acks | accepted/s | delivered/s | p50 / p99 / max ms | "
            "CPU server (loop thread) / receivers / other / machine | problems |",
            "|---|---|---|---:|---:|---:|---|---:|",
            *(describe_ack(r) for s in results for r in s.ack_runs),
            "",
        ]
    if args.reconnect_storm:
        lines += [
            "| shape | back in | caught up p50 / p99 / all | delivered/s before / during | "
            "p50 / p99 ms before / during | problems |",
            "|---|---:|---:|---:|---:|---|",
            *(
                f"| {r.shape} | {r.reconnect_s:.2f} s | {_fmt(r.caught_up_p50_s, '.2f')} / "
                f"{_fmt(r.caught_up_p99_s, '.2f')} / {_fmt(r.caught_up_max_s, '.2f')} s | "
                f"{r.delivered_before_per_s:,.0f} / {r.delivered_storm_per_s:,.0f} | "
                f"{r.p50_before_ms:.1f} / {r.p99_before_ms:.1f} — {r.p50_storm_ms:.1f} / "
                f"{r.p99_storm_ms:.1f} | missing {r.missing}, dup {r.duplicates}, "
                f"out of order {r.out_of_order}, gaps {r.gaps}, behind {r.behind_at_end}, "
                f"failed reconnects {r.reconnect_failed}, failed POSTs {r.failed_posts} |"
                for s in results
                for r in s.storms
            ),
            "",
        ]
    lines += [
        "## How it is measured",
        "",
        "The rig is the one of docs/benchmarks.md (`bench/deliver.py`: `pushd serve` with "
        "default settings except the rate limits, switched off, a load-generator "
        "process, a receiver process holding one "
        "WebSocket per user and stamping each frame on arrival). The receivers speak "
        "protocol 1.1: each socket checks that its sequenced frames are `since + 1, "
        "since + 2, …` after its `welcome` (out of order otherwise) and counts `gap` frames. "
        "*Acks*: in an ack run every `notification` frame is answered at once with "
        '`{"type": "ack", "seq": N}`; runs without and with acks alternate on the same '
        "server and sockets (no-ack, ack, no-ack, ack, …), so both see the same machine "
        "and the same database size; the ratio is the median, over the (no-ack, ack) pairs "
        "of max-load runs, of the pair's delivered/s with acks over delivered/s without "
        "(*other* in the table below is CPU used by the rest of the machine meanwhile). "
        "*Reconnect storm*: the load generator posts at a fixed "
        "rate; at the drop, the receiver process aborts every TCP connection (no close "
        "frame, like a network cut) and at once opens a new socket per user, all in "
        "parallel, each sending `since` = the highest seq its user holds; new sockets ack "
        "every frame. *Welcomed again after*: until the last `welcome`. *Caught up*: for "
        "each new socket, until it held the user's `last_seq` announced in its welcome "
        "(what was stored when it came back); *every client caught up after* is the "
        "slowest. Delivered/s during the storm counts every frame received in the window "
        "after the drop (replays included). Latency *during the storm* is over the "
        "notifications POSTed after the drop. Correctness: every accepted notification "
        "arrives, no (user, seq) twice, every socket's stream in order, and at the end "
        "every user's highest seq equals the last seq stored for it (`GET /api/"
        f"notifications/user/{{id}}`). The bench waits at most {DRAIN_TIMEOUT:.0f} s for "
        "the last frames after each run.",
    ]
    logged = [(s.shape, line) for s in results for line in s.log_problems]
    if logged:
        lines += ["", "Server log warnings/errors:", ""]
        lines += [f"- {name}: `{line[:200]}`" for name, line in logged]
    return "\n".join(lines).rstrip() + "\n"
