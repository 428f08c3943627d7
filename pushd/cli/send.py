"""`pushd send`: one notification through a running server's API (POST
/api/notifications), to a user, a user by external id, or a topic's subscribers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import msgspec

from pushd.cli.server_client import (
    EXIT_CODES_EPILOG,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    Server,
    ServerUnreachableError,
    add_server_options,
    needs_key,
    report,
    request,
)

PRIORITIES = ("low", "normal", "high", "critical")


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add `send` to the `pushd` parser (`commands` is its subparsers action)."""
    send: argparse.ArgumentParser = commands.add_parser(
        "send",
        help="send a notification through a running server",
        description="Send one notification through a running server's API. Prints the "
        "server's answer (the notification's id and seq) as JSON.",
        epilog="example: PUSHD_API_KEY=pk_... pushd send --user usr_123 --title 'Build "
        "failed' --data '{\"build\": 42}'\n" + EXIT_CODES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_server_options(send)
    recipient = send.add_mutually_exclusive_group(required=True)
    recipient.add_argument("--user", metavar="ID", help="the user's pushd id (usr_…)")
    recipient.add_argument("--external-id", metavar="ID", help="the user's id in your app")
    recipient.add_argument("--topic", metavar="SLUG", help="every subscriber of this topic")
    send.add_argument("--title", help="the title (a title or a body is needed)")
    send.add_argument("--body", help="the text")
    send.add_argument("--data", metavar="JSON", help="a JSON object handed to the client")
    send.add_argument("--category", help="the notification's category (preferences, plans)")
    send.add_argument("--priority", choices=PRIORITIES, help="default: normal")
    send.set_defaults(standalone=run)
    return send


def notification_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST body the flags describe; raises `ValueError` naming a bad flag."""
    if args.title is None and args.body is None:
        raise ValueError("give --title, --body or both")
    body: dict[str, Any] = {}
    for flag, name in (("user", "user_id"), ("external_id", "external_id"), ("topic", "topic")):
        if getattr(args, flag) is not None:
            body[name] = getattr(args, flag)
    for name in ("title", "body", "category", "priority"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    if args.data is not None:
        try:
            data = msgspec.json.decode(args.data)
        except msgspec.DecodeError as exc:
            raise ValueError(f"--data is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("--data must be a JSON object, e.g. '{\"build\": 42}'")
        body["data"] = data
    return body


async def run(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    """Send; return the exit code."""
    server = Server.of(args)
    if needs_key(server, say):
        return EXIT_REFUSED
    try:
        body = notification_body(args)
    except ValueError as exc:
        say(f"pushd: {exc}")
        return EXIT_REFUSED
    try:
        answer = await request(server, "POST", "/api/notifications", json=body)
    except ServerUnreachableError as exc:
        say(f"pushd: {exc}")
        return EXIT_UNREACHABLE
    return report(answer, say)
