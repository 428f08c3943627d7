"""Web pushes per second from `WebPushSender` into the local push endpoint.

Each push is encrypted for its own subscription (a fresh ECDH key pair and salt per
push, as in production), signed with a cached VAPID JWT, and POSTed over the sender's
shared keep-alive session, `--concurrency` at a time. The endpoint runs in its own
process (tests/channels/webpush_endpoint.py in bench mode: it reads every body and checks
the headers, but skips the signature check and decryption that the tests do). Prints
each run and the median, with the CPU seconds each side used: on a shared machine the
sender's CPU per push is the steadier figure.

    .venv/bin/python bench/webpush.py
    .venv/bin/python bench/webpush.py --pushes 20000 --concurrency 128
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
from benchlib import cpu_seconds  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from actors.channel_sender import ChannelMessage  # noqa: E402
from pushd.channels.webpush import (  # noqa: E402
    WebPushProviderConfig,
    WebPushSender,
    b64url_encode,
    public_key_b64url,
)


async def allow_every_url(url: str) -> None:
    """The local endpoint is http on loopback, which the real outbound check refuses."""


def subscriptions(origin: str, count: int) -> list[dict[str, str]]:
    """Browser subscriptions, each with its own P-256 key and auth secret."""
    return [
        {
            "endpoint": f"{origin}/push/s{index}",
            "p256dh": public_key_b64url(ec.generate_private_key(ec.SECP256R1())),
            "auth": b64url_encode(secrets.token_bytes(16)),
        }
        for index in range(count)
    ]


def message(number: int, address: dict[str, str]) -> ChannelMessage:
    return ChannelMessage(
        delivery_id=f"d{number}",
        notification_id=f"n{number}",
        user_id=f"u{number}",
        channel="webpush",
        address=address,
        title="Build finished",
        body=f"Build {number} of main is green; 3 warnings, 0 errors.",
        data={"url": f"/builds/{number}", "kind": "build"},
        collapse_key="build-main",
    )


async def push_all(
    sender: WebPushSender, addresses: list[dict[str, str]], pushes: int, concurrency: int
) -> float:
    """Send `pushes` messages round-robin over `addresses`; returns the seconds taken."""
    numbers = iter(range(pushes))

    async def worker() -> None:
        for number in numbers:
            await sender.send(message(number, addresses[number % len(addresses)]))

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return time.perf_counter() - started


async def endpoint_pushes(origin: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{origin}/stats") as response:
        stats = await response.json()
    return int(stats["pushes"])


async def bench(args: argparse.Namespace) -> None:
    endpoint = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.channels.webpush_endpoint",
        "--bench",
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert endpoint.stdin is not None
    assert endpoint.stdout is not None
    try:
        origin = json.loads(await endpoint.stdout.readline())["origin"]
        key = ec.generate_private_key(ec.SECP256R1())
        config = WebPushProviderConfig(
            name="bench",
            vapid_private_key=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode(),
            vapid_subject="mailto:bench@example.com",
            max_connections=args.concurrency,
        )
        sender = WebPushSender(config, check_url=allow_every_url)
        addresses = subscriptions(origin, args.subscriptions)
        try:
            await push_all(sender, addresses, args.concurrency * 4, args.concurrency)  # warm-up
            rates, cpu_per_push = [], []
            for run in range(1, args.runs + 1):
                before = await endpoint_pushes(origin)
                own_cpu, endpoint_cpu = (
                    cpu_seconds(os.getpid()) or 0.0,
                    cpu_seconds(endpoint.pid) or 0.0,
                )
                seconds = await push_all(sender, addresses, args.pushes, args.concurrency)
                own_cpu = (cpu_seconds(os.getpid()) or 0.0) - own_cpu
                endpoint_cpu = (cpu_seconds(endpoint.pid) or 0.0) - endpoint_cpu
                received = await endpoint_pushes(origin) - before
                if received != args.pushes:
                    raise SystemExit(f"run {run}: endpoint got {received} of {args.pushes} pushes")
                rates.append(args.pushes / seconds)
                cpu_per_push.append(own_cpu / args.pushes)
                print(
                    f"run {run}: {args.pushes} pushes in {seconds:.2f} s = {rates[-1]:,.0f}/s "
                    f"(CPU: sender {own_cpu:.2f} s = {own_cpu / args.pushes * 1e6:.0f} us/push, "
                    f"endpoint {endpoint_cpu:.2f} s)",
                    flush=True,
                )
        finally:
            await sender.aclose()
        cpu = statistics.median(cpu_per_push)
        print(
            f"median of {args.runs}: {statistics.median(rates):,.0f} web pushes/s "
            f"({args.subscriptions} subscriptions, concurrency {args.concurrency}); "
            f"sender CPU {cpu * 1e6:.0f} us/push, i.e. {1 / cpu:,.0f}/s per core it has alone"
        )
    finally:
        endpoint.stdin.close()
        await endpoint.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscriptions", type=int, default=200)
    parser.add_argument("--pushes", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-uvloop", action="store_true", help="the standard asyncio loop")
    args = parser.parse_args()
    if args.no_uvloop:
        asyncio.run(bench(args))
        return
    import uvloop

    uvloop.run(bench(args))


if __name__ == "__main__":
    main()
