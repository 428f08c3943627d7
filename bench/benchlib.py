"""What the bench processes share: the JSON-lines control channel between the
orchestrator (`deliver.py`) and its children, and readings from /proc.

Every child reads one JSON command per line on stdin and answers with one JSON line on
stdout; EOF on stdin means "exit now". Bulk results travel through files whose paths
the command names, as raw native-endian int64 arrays.
"""

from __future__ import annotations

import array
import asyncio
import json
import os
import resource
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

Command = dict[str, Any]
Handler = Callable[[Command], Awaitable[Command]]


async def cancel_unfinished(task: asyncio.Task[Any]) -> None:
    """Cancel `task` if it is still running (a measurement that failed half-way) and wait
    for it to end, so that no load keeps going behind the next measurement."""
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def raise_nofile_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# /proc ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """user + system CPU time of a process (all its threads), or None if it is gone."""
    return _stat_seconds(Path(f"/proc/{pid}/stat"))


def _stat_seconds(path: Path) -> float | None:
    try:
        stat = path.read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may hold spaces or parentheses: split after its closing bracket.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def thread_cpu_seconds(pid: int, thread_id: int) -> float | None:
    """user + system CPU time of one thread (its native id) of a process."""
    return _stat_seconds(Path(f"/proc/{pid}/task/{thread_id}/stat"))


def main_thread_cpu_seconds(pid: int) -> float | None:
    """user + system CPU time of a process's main thread (its event loop, for pushd)."""
    return thread_cpu_seconds(pid, pid)


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _processes(comm: str) -> Iterator[tuple[int, bytes]]:
    """(pid, NUL-separated command line) of the processes whose comm is `comm`."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if Path(entry.path, "comm").read_text().strip() != comm:
                continue
            yield int(entry.name), Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue


def rabbitmq_server_pids() -> list[int]:
    """The RabbitMQ broker's Erlang VM (not the short-lived VMs of `rabbitmqctl`)."""
    return [pid for pid, cmdline in _processes("beam.smp") if b"-s\0rabbit\0boot" in cmdline]


def postgres_pids(database: str | None) -> list[int]:
    """The PostgreSQL server's own processes plus the backends serving `database`;
    backends of other databases (other people's tests) are left out."""
    pids = []
    for pid, cmdline in _processes("postgres"):
        title = cmdline.replace(b"\0", b" ")
        is_backend = b"(" in title or b"autovacuum worker" in title
        if not is_backend or (database is not None and database.encode() in title):
            pids.append(pid)
    return pids


def machine_busy_seconds() -> float:
    """CPU seconds spent not idle by all cores since boot (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS


# int64 arrays through files --------------------------------------------------------


def write_columns(path: str, columns: list[array.array[int]]) -> None:
    """Write equally long int64 arrays one after the other."""
    with open(path, "wb") as out:
        for column in columns:
            column.tofile(out)


def read_columns(path: str, count: int, rows: int) -> list[array.array[int]]:
    """Read back `count` int64 arrays of `rows` items each."""
    columns = []
    with open(path, "rb") as source:
        for _ in range(count):
            column = array.array("q")
            if rows:
                column.fromfile(source, rows)
            columns.append(column)
    return columns


def read_json(path: str | Path) -> Any:
    with open(path) as source:
        return json.load(source)


def write_text(path: str | Path, text: str) -> None:
    Path(path).write_text(text)


def make_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


# the child side of the control channel --------------------------------------------


def reply(message: Command) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def serve_commands(handler: Handler, max_seconds: float) -> None:
    """Answer commands from stdin until `quit` or EOF, for at most `max_seconds`."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with asyncio.timeout(max_seconds):
        while line := await reader.readline():
            command: Command = json.loads(line)
            try:
                answer = await handler(command)
            except Exception as exc:  # the orchestrator shows it and stops the bench
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            reply(answer)
            if command["cmd"] == "quit":
                return


# a report's block in a Markdown file -----------------------------------------------


def write_marked_block(path: str | Path, script: str, block: str) -> None:
    """Put `block` into the Markdown file at `path` between the markers of `script`
    (`<!-- bench/<script>: begin -->` ... `end`), replacing what a previous run wrote
    there; the first run appends it at the end of the file. The rest of the file is
    kept as it is."""
    begin, end = f"<!-- bench/{script}: begin -->", f"<!-- bench/{script}: end -->"
    marked = f"{begin}\n{block.strip()}\n{end}"
    path = Path(path)
    existing = path.read_text() if path.exists() else ""
    start, stop = existing.find(begin), existing.find(end)
    if start >= 0 and stop > start:
        text = existing[:start] + marked + existing[stop + len(end) :]
    else:
        before = existing.rstrip("\n")
        text = (f"{before}\n\n" if before else "") + marked + "\n"
    path.write_text(text)
