"""`pushd users create|list|show`: users through a running server's API."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import msgspec

from pushd.cli.server_client import (
    EXIT_CODES_EPILOG,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    Answer,
    Server,
    ServerUnreachableError,
    add_server_options,
    needs_key,
    report,
    request,
)

PAGE_SIZE = 200


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add `users` and its subcommands to the `pushd` parser."""
    users: argparse.ArgumentParser = commands.add_parser(
        "users", help="create, list or show users on a running server"
    )
    actions = users.add_subparsers(dest="users_command", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name,
            help=help_text,
            description=help_text[0].upper() + help_text[1:] + ".",
            epilog=EXIT_CODES_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_server_options(parser)
        parser.set_defaults(standalone=run)
        return parser

    create = action("create", "create a user and print it as JSON")
    create.add_argument("--external-id", help="the user's id in your app (unique)")
    create.add_argument("--name")
    create.add_argument("--email")
    create.add_argument("--phone", help="E.164, e.g. +14155550123")
    create.add_argument("--locale", help="e.g. fr-FR")
    create.add_argument("--timezone", help="IANA name, e.g. Europe/Paris")
    create.add_argument(
        "--tag", action="append", dest="tags", metavar="TAG", help="repeat for several"
    )
    listing = action("list", "list users, oldest first, one JSON object per line")
    listing.add_argument(
        "--limit", type=int, default=None, help="at most this many (default: every user)"
    )
    show = action("show", "print one user as JSON")
    show.add_argument("user_id", help="the user's pushd id (usr_…)")
    return users


async def run(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    """Run one `pushd users` subcommand; return the exit code."""
    server = Server.of(args)
    if needs_key(server, say):
        return EXIT_REFUSED
    try:
        match args.users_command:
            case "create":
                return report(await _create(server, args), say)
            case "list":
                return await _list(server, args.limit, say)
            case _:
                answer = await request(server, "GET", f"/api/users/{quote(args.user_id, safe='')}")
                return report(answer, say)
    except ServerUnreachableError as exc:
        say(f"pushd: {exc}")
        return EXIT_UNREACHABLE


async def _create(server: Server, args: argparse.Namespace) -> Answer:
    fields = ("external_id", "name", "email", "phone", "locale", "timezone", "tags")
    body = {name: getattr(args, name) for name in fields if getattr(args, name) is not None}
    return await request(server, "POST", "/api/users", json=body)


async def _list(server: Server, limit: int | None, say: Callable[[str], None]) -> int:
    if limit is not None and limit < 1:
        say("pushd: --limit must be at least 1")
        return EXIT_REFUSED
    left, cursor = limit, None
    while left is None or left > 0:
        params = {"limit": str(min(PAGE_SIZE, left or PAGE_SIZE))}
        if cursor is not None:
            params["cursor"] = cursor
        answer = await request(server, "GET", "/api/users", params=params)
        if answer.status != 200:
            return report(answer, say)
        for user in answer.body["items"]:
            say(_one_line(user))
        if left is not None:
            left -= len(answer.body["items"])
        cursor = answer.body["next_cursor"]
        if cursor is None:
            break
    return EXIT_OK


def _one_line(user: dict[str, Any]) -> str:
    return msgspec.json.encode(user).decode()
