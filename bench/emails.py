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
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from throughput import (  # noqa: E402
    add_run_options,
    local_server,
    measure_runs,
    median_rate,
    run_bench,
    send_concurrently,
)

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

    async def send(number: int) -> None:
        await sender.send(message(number))

    return await send_concurrently(send, range(first, first + emails), concurrency)


async def bench(args: argparse.Namespace) -> None:
    uvloop = [] if args.no_uvloop else ["--uvloop"]
    async with local_server("tests.channels.smtp_server", *uvloop) as server:
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
        sessions = 0  # SMTP sessions the server had seen when last asked

        async def received() -> int:
            nonlocal sessions
            counts = await server.ask(b"counts\n")
            sessions = counts["connections"]
            return int(counts["received"])

        sender = SmtpSender(config, unsubscribe_url=LINKS.url)
        try:
            await send_all(sender, 0, args.concurrency * 10, args.concurrency)  # warm-up
            runs = await measure_runs(
                runs=args.runs,
                items=args.emails,
                run_once=lambda run: send_all(
                    sender, run * args.emails, args.emails, args.concurrency
                ),
                received=received,
                server_pid=server.pid,
                describe=lambda run: (
                    f"{run.items} emails in {run.seconds:.2f} s = {run.rate:,.0f}/s "
                    f"(CPU: sender {run.microseconds_each(run.own_cpu):.0f} us/email, server "
                    f"{run.microseconds_each(run.server_cpu):.0f} us/email; "
                    f"SMTP sessions so far: {sessions})"
                ),
            )
        finally:
            await sender.aclose()
        print(
            f"median of {args.runs}: {median_rate(runs):,.0f} emails/s "
            f"(pool {args.pool}, concurrency {args.concurrency}, "
            f"{'asyncio' if args.no_uvloop else 'uvloop'}, {os.cpu_count()} CPUs)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emails", type=int, default=5000)
    parser.add_argument("--pool", type=int, default=8, help="SMTP sessions kept open")
    parser.add_argument("--concurrency", type=int, default=32, help="sends in flight")
    add_run_options(parser)
    args = parser.parse_args()
    run_bench(bench(args), no_uvloop=args.no_uvloop)


if __name__ == "__main__":
    main()
