"""Emails per second from `SmtpSender` into a local SMTP server over reused connections.

Every email is a distinct message, built as in production: multipart/alternative text and
HTML, its own Message-ID, and a List-Unsubscribe link signed for its user; the sender
keeps `--pool` SMTP sessions open and `--concurrency` sends run at once. The server is
aiosmtpd in its own process (tests/channels/smtp_server.py in bench mode: it takes every
message without parsing it). Prints each run and the median, with the CPU each side used
and the SMTP sessions the server saw.

    .venv/bin/python bench/emails.py
    .venv/bin/python bench/emails.py --emails 20000 --pool 4 --concurrency 16

(Not bench/email.py: run as a script, that name would shadow the standard library's
`email` package for every import in the process.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchlib import cpu_seconds  # noqa: E402

from actors.channel_sender import ChannelMessage  # noqa: E402
from pushd.channels.smtp import SmtpProviderConfig, SmtpSender  # noqa: E402
from pushd.channels.unsubscribe import UnsubscribeLinks  # noqa: E402

LINKS = UnsubscribeLinks(b"bench-unsubscribe-secret-0123456789abcdef", "https://pushd.test/u")


def message(number: int) -> ChannelMessage:
    return ChannelMessage(
        delivery_id=f"d{number}",
        notification_id=f"n{number}",
        user_id=f"user-{number}",
        channel="email",
        address={"email": f"user{number}@example.test"},
        title=f"Build #{number} of main passed",
        body=(
            f"Hello user {number},\n\nbuild #{number} of main passed: 1,204 tests, "
            "3 warnings, 0 errors, in 4 min 12 s.\nThe artefacts are kept for 30 days.\n\n"
            "You receive this because you follow the main branch."
        ),
        category="builds",
    )


async def send_all(sender: SmtpSender, first: int, emails: int, concurrency: int) -> float:
    """Send `emails` distinct messages; returns the seconds taken."""
    numbers = iter(range(first, first + emails))

    async def worker() -> None:
        for number in numbers:
            await sender.send(message(number))

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    return time.perf_counter() - started


class Server:
    """The bench SMTP server process."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self.process = process
        self._stdin = process.stdin
        self._stdout = process.stdout

    async def read(self) -> dict[str, Any]:
        line = await self._stdout.readline()
        if not line:
            raise SystemExit("the bench SMTP server ended early")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def counts(self) -> dict[str, Any]:
        self._stdin.write(b"counts\n")
        return await self.read()

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid) or 0.0

    async def stop(self) -> None:
        self._stdin.close()  # EOF: the server exits
        await self.process.wait()


async def bench(args: argparse.Namespace) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.channels.smtp_server",
        "--bench",
        *(["--uvloop"] if not args.no_uvloop else []),
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    server = Server(process)
    try:
        port = (await server.read())["port"]
        config = SmtpProviderConfig(
            name="bench",
            host="127.0.0.1",
            port=port,
            security="none",
            from_address="alerts@pushd.test",
            from_name="Pushd Alerts",
            reply_to="Support <help@pushd.test>",
            pool_size=args.pool,
        )
        sender = SmtpSender(config, unsubscribe_url=LINKS.url)
        try:
            await send_all(sender, 0, args.concurrency * 10, args.concurrency)  # warm-up
            rates = []
            for run in range(1, args.runs + 1):
                before = await server.counts()
                own_cpu, server_cpu = cpu_seconds(os.getpid()) or 0.0, server.cpu()
                seconds = await send_all(sender, run * args.emails, args.emails, args.concurrency)
                own_cpu = (cpu_seconds(os.getpid()) or 0.0) - own_cpu
                server_cpu = server.cpu() - server_cpu
                after = await server.counts()
                received = after["received"] - before["received"]
                if received != args.emails:
                    raise SystemExit(f"run {run}: the server got {received} of {args.emails}")
                rates.append(args.emails / seconds)
                print(
                    f"run {run}: {args.emails} emails in {seconds:.2f} s = {rates[-1]:,.0f}/s "
                    f"(CPU: sender {own_cpu / args.emails * 1e6:.0f} us/email, server "
                    f"{server_cpu / args.emails * 1e6:.0f} us/email; "
                    f"SMTP sessions so far: {after['connections']})",
                    flush=True,
                )
        finally:
            await sender.aclose()
        print(
            f"median of {args.runs}: {statistics.median(rates):,.0f} emails/s "
            f"(pool {args.pool}, concurrency {args.concurrency}, "
            f"{'asyncio' if args.no_uvloop else 'uvloop'}, {os.cpu_count()} CPUs)"
        )
    finally:
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emails", type=int, default=5000)
    parser.add_argument("--pool", type=int, default=8, help="SMTP sessions kept open")
    parser.add_argument("--concurrency", type=int, default=32, help="sends in flight")
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
