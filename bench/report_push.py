"""The Markdown of `deliver.py --push-step`: in-app delivery with and without a web push
step per notification, as a block inside the "Channels (issue #12)" section of
docs/benchmarks.md, which it replaces there without touching the rest of the file; and
`keep_channels_section`, with which the other modes, rewriting their whole file, keep
that section."""

from __future__ import annotations

import argparse
import datetime
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from measure import RunResult
from report import machine, median, problems_of

PUSH_BUDGET = 0.8  # issue #12: the channel layer may cost at most 20% of in-app delivery

SECTION = "## Channels (issue #12)"
BEGIN = "<!-- bench/deliver.py --push-step: begin (rewritten by each run) -->"
END = "<!-- bench/deliver.py --push-step: end -->"

NAMES = {
    "embedded": "embedded (SQLite + in-process bus)",
    "cluster": "cluster (PostgreSQL + RabbitMQ, 1 node)",
}


@dataclass
class PushShapeResult:
    shape: str
    runs: list[RunResult]  # max load, pairs without / with the push step, in run order
    connect_seconds: float
    busy_before: float
    log_problems: list[str]
    profile: list[str]  # --profile: one more run with the push step, sampled by py-spy

    def without(self) -> list[RunResult]:
        return [r for r in self.runs if r.push is None]

    def with_push(self) -> list[RunResult]:
        return [r for r in self.runs if r.push is not None]

    def pair_ratios(self) -> list[float]:
        """delivered/s with the push step over without, per pair of consecutive runs."""
        pairs = zip(self.runs[0::2], self.runs[1::2], strict=False)
        ratios = []
        for a, b in pairs:
            plain, push = (a, b) if a.push is None else (b, a)
            if plain.delivered_per_s:
                ratios.append(push.delivered_per_s / plain.delivered_per_s)
        return ratios


def _fmt(value: float | None, fmt: str = ",.0f", unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return format(value, fmt) + unit


def push_report(
    results: list[PushShapeResult],
    args: argparse.Namespace,
    command: str,
    versions: dict[str, str],
    elapsed: float,
) -> str:
    def row(label: str, cells: list[str]) -> str:
        return f"| {label} | " + " | ".join(cells) + " |"

    def of(
        pick: Callable[[PushShapeResult], list[RunResult]], value: Callable[[RunResult], float]
    ) -> list[float]:
        return [median([value(r) for r in pick(s)]) for s in results]

    def cells(values: list[float], fmt: str = ",.0f", unit: str = "") -> list[str]:
        return [_fmt(v, fmt, unit) for v in values]

    def latency(pick: Callable[[PushShapeResult], list[RunResult]]) -> list[str]:
        return [
            f"{_fmt(a, ',.1f')} / {_fmt(b, ',.1f')}"
            for a, b in zip(of(pick, lambda r: r.p50_ms), of(pick, lambda r: r.p99_ms), strict=True)
        ]

    def cpu(pick: Callable[[PushShapeResult], list[RunResult]], name: str) -> list[str]:
        return cells(of(pick, lambda r: r.cpu.get(name, math.nan)), ".0f", "%")

    without, with_push = PushShapeResult.without, PushShapeResult.with_push

    def push_value(name: str) -> Callable[[RunResult], float]:
        def value(r: RunResult) -> float:
            got = getattr(r.push, name) if r.push is not None else None
            return math.nan if got is None else float(got)

        return value

    def verdict(s: PushShapeResult) -> str:
        ratios = s.pair_ratios()
        ratio = median(ratios)
        met = "met" if ratio >= PUSH_BUDGET else "**not met**"
        each = ", ".join(f"{r:.2f}" for r in ratios)
        return f"**{_fmt(ratio, '.2f')}** (pairs: {each}); bar ≥ {PUSH_BUDGET}: {met}"

    def push_correctness(s: PushShapeResult) -> str:
        runs = s.with_push()
        pushes = [r.push for r in runs if r.push is not None]
        expected = sum(p.expected for p in pushes)
        received = sum(p.received for p in pushes)
        lost = sum(p.lost for p in pushes)
        dup = sum(p.duplicates for p in pushes)
        outcomes: dict[str, int] = {}
        for p in pushes:
            for k, v in p.outcomes.items():
                outcomes[k] = outcomes.get(k, 0) + v
        refused = sum(sum(p.refused.values()) for p in pushes)
        return (
            f"{received:,} of {expected:,} pushes received: {lost} lost, {dup} dup, "
            f"{refused} refused; server attempts "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(outcomes.items()))
        )

    def inapp_correctness(s: PushShapeResult) -> str:
        accepted = sum(r.accepted for r in s.runs)
        problems = sum(problems_of(r) + r.gaps for r in s.runs)
        return f"{accepted:,} accepted, {problems} missing/dup/out of order/failed POSTs"

    info = machine()
    today = datetime.date.today().isoformat()
    lines = [
        BEGIN,
        "### In-app delivery with a push step per notification",
        "",
        f"`bench/deliver.py --push-step`, {today} ({elapsed / 60:.1f} min), from the "
        "repository root:",
        "",
        "```",
        command,
        "```",
        "",
        f"Machine: {os.cpu_count()} cores (nproc), CPU {info['CPU']}, RAM {info['RAM']}, "
        f"Python {info['Python']}, aiohttp {info['aiohttp']}, kernel {info['kernel']}"
        + "".join(f", {k} {v}" for k, v in versions.items())
        + "; pushd, the push service, the load generator and the receivers share these cores "
        "over loopback.",
        "",
        f"{args.users:,} users, one WebSocket and one web push device each; max load over "
        f"{args.connections} HTTP connections, {args.duration:g} s per run, {args.repeats} "
        f"pair{'s' if args.repeats != 1 else ''} of runs on the same server, the order "
        "alternating (without, with; with, without; ...); medians. Machine busy before: "
        + ", ".join(f"{s.shape} {s.busy_before:.0f}% of one core" for s in results)
        + ".",
        "",
        "| | " + " | ".join(NAMES[s.shape] for s in results) + " |",
        "|---|" + "---:|" * len(results),
        row(
            "**without the push step**: accepted (202/s)",
            cells(of(without, lambda r: r.accepted_per_s)),
        ),
        row("delivered in-app (frames/s)", cells(of(without, lambda r: r.delivered_per_s))),
        row("POST→frame p50 / p99 (ms)", latency(without)),
        row(
            "CPU server / whole machine (of 200%)",
            [
                f"{a} / {b}"
                for a, b in zip(cpu(without, "server"), cpu(without, "machine"), strict=True)
            ],
        ),
        row(
            "**with the push step**: accepted (202/s)",
            cells(of(with_push, lambda r: r.accepted_per_s)),
        ),
        row("delivered in-app (frames/s)", cells(of(with_push, lambda r: r.delivered_per_s))),
        row("POST→frame p50 / p99 (ms)", latency(with_push)),
        row(
            "pushes sent (received by the push service /s, same window)",
            cells(of(with_push, push_value("per_s"))),
        ),
        row(
            "pushes overall (/s, window start to last push)",
            cells(of(with_push, push_value("overall_per_s"))),
        ),
        row("last push after the window", cells(of(with_push, push_value("drain_s")), ".2f", " s")),
        row(
            "CPU server / push service / whole machine",
            [
                f"{a} / {b} / {c}"
                for a, b, c in zip(
                    cpu(with_push, "server"),
                    cpu(with_push, "push_service"),
                    cpu(with_push, "machine"),
                    strict=True,
                )
            ],
        ),
        row("**in-app delivered/s, with / without**", [verdict(s) for s in results]),
        row("correctness in-app (all runs)", [inapp_correctness(s) for s in results]),
        row("correctness pushes", [push_correctness(s) for s in results]),
        "",
        "Every run:",
        "",
        "| shape | push step | accepted/s | delivered/s | p50 / p99 ms | pushes/s (overall) | "
        "last push after | lost / dup | CPU server (loop) / push service / other / machine |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
        *(_run_row(r) for s in results for r in s.runs),
        "",
        "How: the bench runs a local push service in its own process (bench/push_endpoint.py: "
        "tests/channels/webpush_endpoint.py in bench mode, served over TLS with a "
        "self-signed certificate that pushd trusts through SSL_CERT_FILE; it reads every "
        "body, checks the headers and answers 201 without decrypting) and configures pushd "
        "with one web push provider (`PUSHD_CHANNELS__WEBPUSH`, a fresh VAPID key) and "
        "`outbound.allow_private`. Each user registers a web push device through "
        "`POST /api/users/{id}/devices` with its own P-256 key and auth secret, so each "
        'push is encrypted for its own subscription. With the push step, every POST adds `"'
        'channels": [{"channel": "webpush", "unless_read": false}]` (due at once); without '
        "it, the body is the core benchmark's. Delivered/s and latency are measured as in "
        "the core benchmark; pushes/s counts the 201s the push service gave inside the "
        "window. CPU is % of one core over the window; *other* is the machine's busy time "
        "not charged to the bench's processes (someone else's work shows there). After each "
        "run the bench waits for the run's pushes (at most "
        "60 s) and compares, per subscription, what arrived with the accepted "
        "notifications of that user: *lost* and *dup* are the differences. Server attempts "
        'are the delta of `pushd_channel_attempts_total{channel="webpush"}` from /metrics.',
    ]
    problems = [f"- {s.shape}: `{p[:200]}`" for s in results for p in s.log_problems]
    if problems:
        lines += ["", "Server log warnings/errors:", "", *problems]
    for s in results:
        if s.profile:
            lines += ["", f"#### Profile, {s.shape}, with the push step", "", *s.profile]
    lines.append(END)
    return "\n".join(lines) + "\n"


def _run_row(r: RunResult) -> str:
    p = r.push
    push = (
        f"{_fmt(p.per_s)} ({_fmt(p.overall_per_s)}) | {_fmt(p.drain_s, '.2f', ' s')} | "
        f"{p.lost} / {p.duplicates}"
        if p is not None
        else "- | - | -"
    )
    return (
        f"| {r.shape} | {'yes' if p is not None else 'no'} | {r.accepted_per_s:,.0f} | "
        f"{r.delivered_per_s:,.0f} | {r.p50_ms:,.1f} / {r.p99_ms:,.1f} | {push} | "
        f"{r.cpu['server']:.0f}% ({r.cpu['server_loop']:.0f}%) / "
        f"{_fmt(r.cpu.get('push_service'), '.0f', '%')} / {r.cpu['other']:.0f}% / "
        f"{r.cpu['machine']:.0f}% |"
    )


# the section in docs/benchmarks.md --------------------------------------------------


def _section_bounds(text: str) -> tuple[int, int] | None:
    """Where the channels section starts and ends (the next `## ` heading, or the end)."""
    start = text.find(f"\n{SECTION}\n")
    if start < 0:
        return None
    start += 1
    following = text.find("\n## ", start + len(SECTION))
    return start, len(text) if following < 0 else following + 1


def merge_push_block(existing: str, block: str) -> str:
    """`existing` with the push-step block replaced (or added at the end of the channels
    section, which is added at the end of the file if missing)."""
    begin, end = existing.find(BEGIN), existing.find(END)
    if begin >= 0 and end > begin:
        return existing[:begin] + block.rstrip("\n") + existing[end + len(END) :]
    bounds = _section_bounds(existing)
    if bounds is None:
        before = existing.rstrip("\n")
        return (f"{before}\n\n" if before else "") + f"{SECTION}\n\n{block}"
    _, stop = bounds
    before, after = existing[:stop].rstrip("\n"), existing[stop:]
    return f"{before}\n\n{block}" + (f"\n{after}" if after else "")


def write_keeping_channels(path: str | Path, text: str, *, push_block: bool = False) -> None:
    """Write a report to `path`: a whole report keeps the channels section the file had;
    a push-step block replaces only its block in the file."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    path.write_text(merge_push_block(old, text) if push_block else keep_channels_section(old, text))


def keep_channels_section(old: str, new: str) -> str:
    """`new` (a whole report) followed by what `old` had from its channels section on
    (the channels section and the hand-written sections after it: audiences, scheduled
    sends, ...), if it had one."""
    bounds = _section_bounds(old)
    if bounds is None:
        return new
    start, _ = bounds
    return new.rstrip("\n") + "\n\n" + old[start:].rstrip("\n") + "\n"
