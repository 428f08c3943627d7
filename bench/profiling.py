"""Where the server spends its time: one extra max-load run sampled by py-spy, and
the summary of its collapsed stacks by thread, component and function.
"""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from measure import Rig, RunProbe, measure
from services import BENCH, REPO, die_with_parent, stop_process

# Frames on (nearly) every stack of a thread: they say nothing about where time goes.
PLUMBING = (
    "<frozen runpy>",
    "asyncio/runners.py",
    "asyncio/base_events.py",
    "asyncio/events.py",
    "threading.py",
    "concurrent/futures/thread.py",
    "pushd/cli/main.py",
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
    ("pushd's HTTP API and ingest (pushd/api/, pushd/ingest/group_commit.py)", ("(pushd/",)),
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


async def profile_run(
    rig: Rig, duration: float, extra_args: Sequence[str] = (), probe: RunProbe | None = None
) -> list[str]:
    """One extra max-load run with py-spy sampling the server (not counted in results).

    `extra_args` go to `py-spy record`: `--gil` samples only the thread holding the GIL,
    `--idle --native --threads` shows where each thread waits (the GIL, fsync, epoll).
    `probe`: the run's measure.RunProbe (deliver.py --push-step profiles a run with the
    push step)."""
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=Path(sys.executable).parent)
    if py_spy is None:
        return ["(py-spy not installed: `.venv/bin/pip install py-spy`)"]
    output = rig.work / f"{rig.shape}{'-push-step' if probe else ''}-profile.txt"
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
        *extra_args,
        "--output",
        str(output),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent,
    )
    try:
        await asyncio.sleep(1.0)  # py-spy attaches
        result = await measure(rig, "max", duration, None, probe=probe)
        async with asyncio.timeout(60):
            _, errors = await process.communicate()
    finally:
        if process.returncode is None:
            await stop_process(process, 5)
    if not output.exists():
        return [f"(py-spy failed: {errors.decode(errors='replace')[-500:]})"]
    kept = BENCH / "profiles"
    kept.mkdir(exist_ok=True)
    shutil.copy(output, kept / output.name)
    command = " ".join(["py-spy record --rate 100", *extra_args])
    return [
        f"Profiled run ({rig.shape}, `{command}`, not counted above): "
        f"accepted {result.accepted_per_s:,.0f}/s, delivered {result.delivered_per_s:,.0f}/s, "
        f"server CPU {result.cpu['server']:.0f}%. Collapsed stacks: "
        f"`bench/profiles/{output.name}`.",
        "",
        *summarize_profile(output),
    ]
