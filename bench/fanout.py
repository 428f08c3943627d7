"""Broadcast fan-out benchmark (issue #14 point 6): one broadcast to N users while single
sends keep flowing.

    .venv/bin/python bench/fanout.py                 # 100,000 users, 1,000 on sockets
    .venv/bin/python bench/fanout.py --users 2000 --connected 100   # a smoke run

Embedded shape (SQLite, in-process bus), `pushd serve` as a child (bench/services.py).
It creates the users through the API (tokens only for the connected ones), opens the
sockets in this process, then sends ONE `broadcast` and measures:

- time to the 202 (the send is stored, nothing fanned out yet);
- time until every connected socket has the broadcast frame;
- time until the send is `done` (`GET /api/sends/{id}`: every notification committed);
- storage bytes per recipient (database + WAL growth over the broadcast / recipients);
- the latency of single sends (`POST /api/notifications` to one user, at a steady
  `--unicast-rate`) during the fan-out: p50, p99, max, against the issue's 250 ms p99.

Only the server started here is signalled, by its PID; everything is bounded by
`--deadline` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from services import BenchError, running_server


def _used_bytes(database: Path) -> int:
    """Bytes of the database's pages in use, WAL included (the files' sizes are not:
    the WAL is reused, the main file grows only at checkpoints)."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        page_size, pages, free = (
            db.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("page_size", "page_count", "freelist_count")
        )
    return int(page_size * (pages - free))


async def _size(data_dir: Path) -> int:
    return await asyncio.to_thread(_used_bytes, data_dir / "pushd.db")


def percentile(ordered: list[float], p: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def create_users(
    session: aiohttp.ClientSession, url: str, count: int, with_tokens: int
) -> tuple[list[str], list[str]]:
    """`count` users through the API, 32 requests at a time; tokens for the first
    `with_tokens`."""
    gate = asyncio.Semaphore(32)

    async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with gate, session.post(f"{url}{path}", json=body) as response:
            if response.status != 201:
                raise BenchError(f"POST {path}: {response.status} {await response.text()}")
            answer: dict[str, Any] = await response.json()
            return answer

    user_ids = [
        str(u["id"]) for u in await asyncio.gather(*(post("/api/users", {}) for _ in range(count)))
    ]
    tokens = [
        str(t["token"])
        for t in await asyncio.gather(
            *(post(f"/api/users/{u}/tokens", {"ttl": 7200}) for u in user_ids[:with_tokens])
        )
    ]
    return user_ids, tokens


async def open_socket(session: aiohttp.ClientSession, url: str, token: str) -> Any:
    ws = await session.ws_connect(f"{url}/ws")
    await ws.send_json({"type": "auth", "token": token})
    welcome = await ws.receive_json(timeout=30)
    if welcome.get("type") != "welcome":
        raise BenchError(f"no welcome: {welcome}")
    return ws


async def wait_for_title(ws: Any, title: str) -> float:
    """Monotonic time at which `ws` received the notification titled `title`."""
    while True:
        frame = await ws.receive_json()
        if frame.get("type") == "notification" and frame.get("title") == title:
            return time.monotonic()


async def unicast_loop(
    session: aiohttp.ClientSession, url: str, user_id: str, rate: float, stop: asyncio.Event
) -> list[float]:
    """Single sends at `rate` per second until `stop`; each one's latency in ms."""
    latencies: list[float] = []
    period = 1 / rate
    in_flight: set[asyncio.Task[None]] = set()

    async def one() -> None:
        started = time.monotonic()
        body = {"user_id": user_id, "title": "unicast"}
        async with session.post(f"{url}/api/notifications", json=body) as response:
            if response.status != 202:
                raise BenchError(f"unicast: {response.status} {await response.text()}")
        latencies.append((time.monotonic() - started) * 1000)

    next_at = time.monotonic()
    while not stop.is_set():
        task = asyncio.create_task(one())
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        next_at += period
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
    await asyncio.gather(*in_flight)
    return latencies


async def progress_until_done(
    session: aiohttp.ClientSession, url: str, send_id: str
) -> dict[str, Any]:
    while True:
        async with session.get(f"{url}/api/sends/{send_id}") as response:
            progress: dict[str, Any] = await response.json()
        if progress["status"] in ("done", "failed"):
            return progress
        await asyncio.sleep(0.1)


async def bench(args: argparse.Namespace) -> None:
    key = "pk_bench_" + secrets.token_urlsafe(32)
    env = {
        "PUSHD_ADMIN_KEY": key,
        "PUSHD_AUTH__TOKEN_SECRET": secrets.token_urlsafe(48),
        "PUSHD_LIMITS__API_KEY_RATE": "0",
        "PUSHD_LIMITS__PER_RECIPIENT": "{}",
        "PUSHD_SERVER__MAX_CONNECTIONS_PER_ADDRESS": "0",
    }
    with tempfile.TemporaryDirectory(prefix="pushd-fanout-") as work:
        data_dir = Path(work) / "server"
        async with running_server(data_dir, env) as server:
            headers = {"Authorization": f"Bearer {key}"}
            connector = aiohttp.TCPConnector(limit=0)
            timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
            async with aiohttp.ClientSession(
                headers=headers, connector=connector, timeout=timeout
            ) as session:
                started = time.monotonic()
                user_ids, tokens = await create_users(
                    session, server.url, args.users, args.connected
                )
                print(f"{args.users:,} users in {time.monotonic() - started:.1f} s", flush=True)
                sockets = await asyncio.gather(
                    *(open_socket(session, server.url, t) for t in tokens)
                )
                print(f"{len(sockets):,} sockets open", flush=True)
                await asyncio.sleep(1)  # let the users' creation settle
                size_before = await _size(data_dir)
                title = "broadcast " + secrets.token_hex(4)
                arrivals = [asyncio.create_task(wait_for_title(ws, title)) for ws in sockets]
                stop = asyncio.Event()
                unicast = asyncio.create_task(
                    unicast_loop(session, server.url, user_ids[-1], args.unicast_rate, stop)
                )
                await asyncio.sleep(1)  # a baseline of single sends before the broadcast
                sent_at = time.monotonic()
                async with session.post(
                    f"{server.url}/api/notifications", json={"broadcast": True, "title": title}
                ) as response:
                    if response.status != 202:
                        raise BenchError(f"broadcast: {response.status} {await response.text()}")
                    send_id = (await response.json())["send_id"]
                accepted_at = time.monotonic()
                progress = await progress_until_done(session, server.url, send_id)
                done_at = time.monotonic()
                last_frame = max(await asyncio.gather(*arrivals)) if arrivals else done_at
                stop.set()
                latencies = sorted(await unicast)
                for ws in sockets:
                    await ws.close()
                size_after = await _size(data_dir)
    committed = progress["recipients"]["committed"]
    print(f"send {send_id}: {progress['status']}, {committed:,} committed")
    print(f"time to 202:                      {(accepted_at - sent_at) * 1000:.1f} ms")
    print(
        f"time until every socket had it:   {last_frame - sent_at:.2f} s ({len(sockets):,} sockets)"
    )
    print(f"time until all committed:         {done_at - sent_at:.2f} s "
          f"({committed / max(done_at - sent_at, 1e-9):,.0f} recipients/s)")  # fmt: skip
    per_recipient = (size_after - size_before) / max(committed, 1)
    print(f"storage per recipient:            {per_recipient:,.0f} bytes")
    print(
        f"unicast during the fan-out:       {len(latencies):,} sends, p50 "
        f"{percentile(latencies, 50):.1f} ms, p99 {percentile(latencies, 99):.1f} ms, "
        f"max {latencies[-1] if latencies else float('nan'):.1f} ms (target p99 < 250 ms)"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--connected", type=int, default=1_000)
    parser.add_argument("--unicast-rate", type=float, default=50.0, help="single sends per second")
    parser.add_argument("--deadline", type=float, default=3600.0, help="seconds for everything")
    args = parser.parse_args(argv)
    if not 0 <= args.connected <= args.users:
        parser.error("--connected must be between 0 and --users")
    return args


def main() -> int:
    args = parse_args()
    try:
        asyncio.run(asyncio.wait_for(bench(args), args.deadline))
    except BenchError as exc:
        print(f"fanout bench failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
