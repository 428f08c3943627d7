"""The rig every delivery-style bench shares: a shape's environment (and, for the cluster,
its fresh database and vhost), a running server (pushd, or the bare relay of relay.py)
with its users, a receiver process holding one WebSocket per user and a load-generator
process; and the options that say where the processes run (`--pin`) and whether the relay
anchor runs beside pushd (`--anchor`).

Used by deliver.py (unicast), bulk.py (bulk ingest) and topic_fanout.py (topic fan-out).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shlex
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import make_dir, raise_nofile_limit, write_marked_block, write_text
from measure import Rig, connect_receivers, python_speed_us, wait_until_quiet
from report import machine
from services import (
    BenchError,
    cluster_services,
    create_users,
    pin_processes,
    running_server,
    started,
)


@dataclass
class ShapeSetup:
    """What a shape's runs share: the server's environment and a work directory."""

    shape: str
    env: dict[str, str]
    key: str
    work: Path
    quiet: float  # machine's busy % of one core before the shape started


@contextlib.asynccontextmanager
async def shape_rig(
    setup: ShapeSetup, args: argparse.Namespace, *, relay: bool = False
) -> AsyncIterator[tuple[Rig, float, list[str]]]:
    """A running server with its users, receivers (one socket per user) and load
    generator: (rig, seconds to open the sockets, server log problems filled on exit).
    With `relay`, the server is the bare aiohttp relay (bench/relay.py) instead of pushd
    and the rig's shape is "relay"."""
    problems: list[str] = []
    name = "relay" if relay else "pushd"
    async with running_server(setup.work / name, setup.env, relay=relay) as server:
        print(f"   {name} pid {server.pid} on {server.url}", flush=True)
        started_at = time.monotonic()
        user_ids, tokens = await create_users(server.url, setup.key, args.users)
        users_file = setup.work / f"{name}-users.json"
        tokens_file = setup.work / f"{name}-tokens.json"
        write_text(users_file, json.dumps(user_ids))
        write_text(tokens_file, json.dumps(tokens))
        print(
            f"   {args.users:,} users + tokens in {time.monotonic() - started_at:.1f} s",
            flush=True,
        )
        async with (
            started("receivers.py", args.deadline) as receivers,
            started("loadgen.py", args.deadline) as loadgen,
        ):
            connect = await connect_receivers(receivers, server.port, tokens_file, timeout=120)
            if connect["failed"]:
                raise BenchError(f"{connect['failed']} sockets failed: {connect['errors']}")
            print(
                f"   {connect['connected']:,} sockets open in {connect['seconds']:.1f} s",
                flush=True,
            )
            database = setup.env.get("PUSHD_STORAGE__URL", "").rpartition("/")[2] or None
            rig = Rig(
                "relay" if relay else setup.shape, server, receivers, loadgen, setup.key,
                str(users_file), setup.work, args.connections, database,
            )  # fmt: skip
            yield rig, connect["seconds"], problems
        problems.extend(server.log_problems())


@contextlib.asynccontextmanager
async def shape_setup(
    shape: str, work: Path, run_id: str | None = None
) -> AsyncIterator[ShapeSetup]:
    """The environment of one shape (and, for the cluster, a fresh database and vhost)."""
    run_id = run_id or f"{os.getpid()}_{secrets.token_hex(3)}"
    key = "pk_bench_" + secrets.token_urlsafe(32)
    env = {
        "PUSHD_ADMIN_KEY": key,
        "PUSHD_AUTH__TOKEN_SECRET": secrets.token_urlsafe(48),
        # The bench measures delivery, not the rate limits (1,000 requests/s per API key
        # and 3,600 notifications/hour per user by default would answer 429).
        "PUSHD_LIMITS__API_KEY_RATE": "0",
        "PUSHD_LIMITS__PER_RECIPIENT": "{}",
        # Every simulated client connects from 127.0.0.1 (256 at once by default).
        "PUSHD_SERVER__MAX_CONNECTIONS_PER_ADDRESS": "0",
    }
    print(f"== {shape}", flush=True)
    quiet = await wait_until_quiet(20)
    async with contextlib.AsyncExitStack() as stack:
        if shape == "cluster":
            env.update(await stack.enter_async_context(cluster_services(run_id)))
        yield ShapeSetup(shape, env, key, make_dir(work / shape), quiet)


def add_placement_options(parser: argparse.ArgumentParser, *, anchor_help: str) -> None:
    """--anchor and --pin, the same in every bench that runs the relay beside pushd."""
    parser.add_argument(
        "--anchor",
        choices=("relay", "none"),
        default="relay",
        help=anchor_help,
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the server on core 0, the load generator, receivers and this process on core 1",
    )


def apply_placement(args: argparse.Namespace) -> bool:
    """Pin this process (and so its children) if --pin; False (and a message) if it
    cannot be done here."""
    if not args.pin:
        return True
    try:
        pin_processes()
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return False
    return True


def bench_main(
    script: str,
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace, str], Coroutine[Any, Any, int]],
) -> int:
    """The `main` of a bench script: pin if asked, run with a last-resort alarm past the
    deadline, and turn the bench's own errors into a message and exit status 1."""
    command = f".venv/bin/python bench/{script} " + shlex.join(sys.argv[1:])
    raise_nofile_limit()
    if not apply_placement(args):
        return 1
    signal.alarm(int(args.deadline) + 120)  # last resort if cleanup hangs
    try:
        return asyncio.run(run(args, command.strip()))
    except TimeoutError:
        print(f"bench: stopped at the {args.deadline:.0f} s deadline", file=sys.stderr)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
    return 1


def machine_sentence(speed_at_start: float) -> str:
    """The machine, the versions and the Python speed probe at the start and now, for a
    bench's report header."""
    about = machine()
    return (
        f"Machine: {about['cores']} cores, CPU {about['CPU']}, Python {about['Python']}, "
        f"aiohttp {about['aiohttp']}; Python speed probe {speed_at_start:.1f} µs at the "
        f"start, {python_speed_us():.1f} µs at the end (bench/measure.py python_speed_us; "
        "lower is faster)."
    )


def publish(output: str, script: str, block: str) -> None:
    """Print a bench's report and replace its marked block in `output`."""
    print()
    print(block)
    write_marked_block(output, script, block)
    print(f"written to {output}")
