"""Request ids: every request gets one, every response echoes it in `X-Request-Id`, and
every log line written while serving it carries it (pushd/ops/logs.py).

A client's own `X-Request-Id` is kept when it is 1-128 visible ASCII characters, so a
caller (or a proxy in front) can follow one request through its logs and ours; anything
else is replaced with a new id rather than refused: the header is a tracing aid, never a
reason to fail a request.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Awaitable
from typing import Final

from aiohttp import web

from pushd.api.errors import Handler
from pushd.ops import logs

HEADER: Final = "X-Request-Id"
REQUEST_ID: Final[web.RequestKey[str]] = web.RequestKey("request_id", str)
_ACCEPTED = re.compile(r"[\x21-\x7e]{1,128}")


# Ids only need to be unique, not unguessable: a random prefix per process (64 bits, so
# two nodes never share one in practice) and a counter. Cheaper per request than a fresh
# random value, which costs a getrandom() system call each.
_PROCESS_PREFIX: Final = secrets.token_hex(8)
_counter = itertools.count(1)


def new_request_id() -> str:
    """A fresh id: this process's random prefix, then a counter (hex)."""
    return f"{_PROCESS_PREFIX}{next(_counter):08x}"


def request_id_of(request: web.BaseRequest) -> str:
    """The client's `X-Request-Id` when acceptable, else a new one."""
    given = request.headers.get(HEADER)
    return given if given is not None and _ACCEPTED.fullmatch(given) else new_request_id()


@web.middleware
def request_id_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Outermost middleware: the id is known before anything can log or fail. The
    context variable is not reset afterwards on purpose: aiohttp runs each request in a
    task of its own, and the access-log line, written after this returns, belongs to it.
    A plain function, not a coroutine, so that no frame of it stays alive for the life
    of a WebSocket (headers.cors_preflight says why).
    """
    identifier = request_id_of(request)
    request[REQUEST_ID] = identifier
    logs.request_id.set(identifier)
    return handler(request)


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: every response, errors and 404s included, names its id."""
    identifier = request.get(REQUEST_ID)
    if identifier is None:  # a response made before the middleware ran
        identifier = request_id_of(request)
        request[REQUEST_ID] = identifier
    response.headers[HEADER] = identifier
