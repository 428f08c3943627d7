"""`pushd status`: a running server's health (GET /api/healthcheck, public) and, with an
API key, its key figures (GET /api/stats)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from pushd.cli.server_client import (
    EXIT_OK,
    EXIT_UNREACHABLE,
    Server,
    ServerUnreachableError,
    add_server_options,
    exit_code_of,
    request,
)

FIGURES = (
    ("uptime_seconds", "uptime (s)"),
    ("notifications_accepted", "notifications accepted"),
    ("notifications_committed", "notifications committed"),
    ("websockets_open", "WebSockets open"),
    ("mailbox_actors", "mailbox actors"),
    ("bus_healthy", "bus healthy"),
    ("outbox_relaying", "outbox relaying"),
)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add `status` to the `pushd` parser."""
    status: argparse.ArgumentParser = commands.add_parser(
        "status",
        help="a running server's health and key figures",
        description="Print a running server's health (storage, bus, shared state) and, "
        "with an API key, its key figures.",
        epilog="exit codes: 0 healthy; 1 unreachable or unhealthy (any component down); "
        "2 usage error, or the key was refused.\nenvironment: PUSHD_URL, PUSHD_API_KEY "
        "(prefer it to --key: a key on the command line shows in `ps` and shell history).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_server_options(status, key_required=False)
    status.set_defaults(standalone=run)
    return status


async def run(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    """Print the status; return the exit code."""
    server = Server.of(args)
    try:
        health = await request(server, "GET", "/api/healthcheck", authenticated=False)
        stats = None if server.key is None else await request(server, "GET", "/api/stats")
    except ServerUnreachableError as exc:
        say(f"pushd: {exc}")
        return EXIT_UNREACHABLE
    if not isinstance(health.body, dict) or "status" not in health.body:
        say(f"pushd: {server.url} did not answer like a pushd server (HTTP {health.status})")
        return EXIT_UNREACHABLE
    say(f"server: {server.url}  status: {health.body['status']}")
    for component in ("storage", "bus", "state"):
        detail = health.body.get(component) or {}
        say(f"  {component}: {_describe(detail)}")
    code = EXIT_OK if health.body["status"] == "ok" else EXIT_UNREACHABLE
    if stats is not None:
        if stats.status != 200:
            say(f"pushd: figures refused: {stats.error}")
            return max(code, exit_code_of(stats))
        for name, label in FIGURES:
            say(f"  {label}: {stats.body.get(name)}")
    return code


def _describe(detail: Any) -> str:
    if not isinstance(detail, dict):
        return str(detail)
    return ", ".join(f"{key}={value}" for key, value in detail.items())
