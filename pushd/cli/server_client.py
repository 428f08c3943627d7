"""What the commands that talk to a running server share (`send`, `users`, `status`):
the `--url`/`--key` options, one HTTP request, and how its outcome maps to an exit code.

The key is best given as `PUSHD_API_KEY` in the environment: a `--key` on the command
line is visible to every local user in `ps` and is kept in the shell's history.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import msgspec

EXIT_OK: Final = 0
EXIT_UNREACHABLE: Final = 1
"""The server could not be reached, or failed (5xx)."""
EXIT_REFUSED: Final = 2
"""Usage error, or a request the server refused (4xx: bad key, unknown user, bad field)."""

DEFAULT_URL: Final = "http://127.0.0.1:8080"
REQUEST_TIMEOUT: Final = 30.0

EXIT_CODES_EPILOG: Final = (
    "exit codes: 0 done; 1 the server could not be reached or failed (5xx); 2 usage "
    "error, or the server refused the request (4xx: key, unknown id, invalid field).\n"
    "environment: PUSHD_URL and PUSHD_API_KEY are the defaults of --url and --key; prefer "
    "them to --key, which other local users can read in `ps` and your shell keeps in its "
    "history."
)


def add_server_options(parser: argparse.ArgumentParser, *, key_required: bool = True) -> None:
    """`--url` and `--key`, defaulting to $PUSHD_URL and $PUSHD_API_KEY."""
    parser.add_argument(
        "--url", help=f"the server's base URL (default: $PUSHD_URL, else {DEFAULT_URL})"
    )
    what = "an API key" if key_required else "an API key (optional: without, health only)"
    parser.add_argument("--key", help=f"{what} (default: $PUSHD_API_KEY)")


@dataclass(frozen=True)
class Server:
    """Where to send requests, and with which key."""

    url: str
    key: str | None

    @classmethod
    def of(cls, args: argparse.Namespace) -> Server:
        url = args.url or os.environ.get("PUSHD_URL") or DEFAULT_URL
        return cls(url.rstrip("/"), args.key or os.environ.get("PUSHD_API_KEY") or None)


@dataclass(frozen=True)
class Answer:
    """A server's answer: its status and decoded JSON body (None when not JSON)."""

    status: int
    body: Any

    @property
    def error(self) -> str:
        """The API error's message (and field), or the status."""
        detail = self.body.get("error") if isinstance(self.body, dict) else None
        if not isinstance(detail, dict):
            return f"HTTP {self.status}"
        field = f" (field {detail['field']})" if detail.get("field") else ""
        return f"{detail.get('message', '')}{field} [HTTP {self.status}]"


class ServerUnreachableError(Exception):
    """No answer: connection refused, DNS, TLS, timeout."""


async def request(
    server: Server,
    method: str,
    path: str,
    *,
    json: Any = None,
    params: dict[str, str] | None = None,
    authenticated: bool = True,
) -> Answer:
    """One request to `server`; raises `ServerUnreachableError` when there is no answer."""
    headers = {"Authorization": f"Bearer {server.key}"} if authenticated and server.key else {}
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(
                method, server.url + path, json=json, params=params, headers=headers
            ) as response,
        ):
            raw = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ServerUnreachableError(
            f"cannot reach {server.url} ({type(exc).__name__}: {exc}); is the server "
            "running, and is --url (or $PUSHD_URL) right?"
        ) from None
    try:
        body = msgspec.json.decode(raw) if raw else None
    except msgspec.DecodeError:
        body = None
    return Answer(response.status, body)


def exit_code_of(answer: Answer) -> int:
    """0 for 2xx, 2 for a refusal (4xx), 1 for a server failure."""
    if answer.status < 400:
        return EXIT_OK
    return EXIT_REFUSED if answer.status < 500 else EXIT_UNREACHABLE


def report(answer: Answer, say: Callable[[str], None], shown: Any = None) -> int:
    """Print the answer's body (or `shown`) as JSON when it succeeded, its error when not;
    return the exit code."""
    code = exit_code_of(answer)
    if code == EXIT_OK:
        body = answer.body if shown is None else shown
        say(msgspec.json.format(msgspec.json.encode(body), indent=2).decode())
    else:
        say(f"pushd: the server refused the request: {answer.error}")
    return code


def needs_key(server: Server, say: Callable[[str], None]) -> bool:
    """Whether the key is missing (said so)."""
    if server.key is None:
        say("pushd: no API key: set PUSHD_API_KEY (or pass --key)")
        return True
    return False
