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
import secrets
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from throughput import (  # noqa: E402
    add_run_options,
    local_server,
    measure_runs,
    median_rate,
    run_bench,
    send_concurrently,
)

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

    async def send(number: int) -> None:
        await sender.send(message(number, addresses[number % len(addresses)]))

    return await send_concurrently(send, range(pushes), concurrency)


async def endpoint_pushes(origin: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{origin}/stats") as response:
        stats = await response.json()
    return int(stats["pushes"])


async def bench(args: argparse.Namespace) -> None:
    async with local_server("tests.channels.webpush_endpoint") as endpoint:
        origin = (await endpoint.read())["origin"]
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
            runs = await measure_runs(
                runs=args.runs,
                items=args.pushes,
                run_once=lambda _: push_all(sender, addresses, args.pushes, args.concurrency),
                received=lambda: endpoint_pushes(origin),
                server_pid=endpoint.pid,
                describe=lambda run: (
                    f"{run.items} pushes in {run.seconds:.2f} s = {run.rate:,.0f}/s "
                    f"(CPU: sender {run.own_cpu:.2f} s = "
                    f"{run.microseconds_each(run.own_cpu):.0f} us/push, "
                    f"endpoint {run.server_cpu:.2f} s)"
                ),
            )
        finally:
            await sender.aclose()
        cpu = statistics.median(run.own_cpu / run.items for run in runs)
        print(
            f"median of {args.runs}: {median_rate(runs):,.0f} web pushes/s "
            f"({args.subscriptions} subscriptions, concurrency {args.concurrency}); "
            f"sender CPU {cpu * 1e6:.0f} us/push, i.e. {1 / cpu:,.0f}/s per core it has alone"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscriptions", type=int, default=200)
    parser.add_argument("--pushes", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    add_run_options(parser)
    args = parser.parse_args()
    run_bench(bench(args), no_uvloop=args.no_uvloop)


if __name__ == "__main__":
    main()
