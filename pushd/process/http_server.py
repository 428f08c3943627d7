"""The HTTP server under the app: the bounds aiohttp's own connection handling lacks.

aiohttp waits for a request's headers as long as the client takes to send them, and
answers a request its parser refuses with a text body that repeats the offending line
(the API key, when that line is `Authorization`), which it also logs at ERROR with a
traceback. `pushd serve` runs the app on `app_runner`, whose connections:

- must send a request's complete headers within `server.header_timeout` seconds, counted
  from the accept for the first request and from its first byte for a later one;
- are closed after `server.keepalive_timeout` idle seconds between two requests
  (aiohttp's own keep-alive timer; an upgraded WebSocket is never idle);
- number at most `server.max_connections_per_address` per client address at once: one
  more is closed as soon as it is accepted, before any of its bytes is read;
- answer a request the parser refuses with the API's JSON error (`bad_request`) and the
  security headers, and log only that it happened, never what was received.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from pushd.api.errors import ApiError, ErrorCode, error_response
from pushd.api.headers import security_headers
from pushd.api.request_ids import HEADER as REQUEST_ID_HEADER
from pushd.api.request_ids import request_id_of
from pushd.config.settings import ServerConfig

log = logging.getLogger("pushd.http")

MALFORMED_REQUEST = (
    "malformed HTTP request: its request line or a header breaks HTTP/1.1 (a control "
    "character, a space before a header's colon, a line over 8190 bytes...); nothing was "
    "done. What was received is not repeated here: check what the client sends"
)
# At most one warning per this many seconds about refused connections: under a flood
# of them, the log must not grow with every one.
_REFUSAL_WARNING_INTERVAL_S = 60.0


class ConnectionGuard:
    """What every connection of one server shares: the header timeout, and the count of
    open connections per client address with its cap (0: no cap)."""

    def __init__(self, *, header_timeout: float, max_per_address: int) -> None:
        self.header_timeout = header_timeout
        self._cap = max_per_address
        self._open: dict[str, int] = {}
        self._refused_since_warning = 0
        self._next_warning = 0.0

    def admit(self, address: str) -> bool:
        """Count one more connection from `address`, or refuse it (False) at the cap."""
        count = self._open.get(address, 0)
        if self._cap and count >= self._cap:
            self._refused(address)
            return False
        self._open[address] = count + 1
        return True

    def release(self, address: str) -> None:
        """An admitted connection from `address` is closed."""
        count = self._open[address] - 1
        if count:
            self._open[address] = count
        else:
            del self._open[address]

    def _refused(self, address: str) -> None:
        self._refused_since_warning += 1
        now = time.monotonic()
        if now < self._next_warning:
            return
        log.warning(
            "refused %d connection(s) over server.max_connections_per_address (%d open "
            "at once from one address), the latest from %s. Behind a reverse proxy or a "
            "NAT all clients share one address: raise the setting, or set 0 for no cap",
            self._refused_since_warning,
            self._cap,
            address,
        )
        self._refused_since_warning = 0
        self._next_warning = now + _REFUSAL_WARNING_INTERVAL_S


def _peer_address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    # (host, port) for IPv4, (host, port, flow, scope) for IPv6, a path or "" for UNIX.
    return str(peer[0]) if isinstance(peer, tuple) else str(peer or "")


class GuardedRequestHandler(web.RequestHandler):
    """aiohttp's protocol for one connection, plus the header timeout, the per-address
    cap and parser errors that repeat nothing (see the module docstring).

    It reads two attributes of its base class: `_request_count` (requests parsed so far,
    refused ones included) and `_waiter` (set while the connection waits for a request).
    """

    __slots__ = ("_address", "_guard", "_header_deadline", "_timer_loop")

    def __init__(
        self,
        manager: web.Server,
        *,
        guard: ConnectionGuard,
        loop: asyncio.AbstractEventLoop,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._guard = guard
        self._timer_loop = loop
        self._address: str | None = None  # set once admitted
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        address = _peer_address(transport)
        if not self._guard.admit(address):
            transport.close()  # aiohttp never sees this connection
            return
        self._address = address
        super().connection_made(transport)
        self._arm_header_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._address is None:
            return  # refused in connection_made
        self._guard.release(self._address)
        self._address = None
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._address is None:
            return  # refused, closing
        waiting_for_request = self._waiter is not None
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:
            self._disarm_header_deadline()  # a request's headers are complete
        elif waiting_for_request and data and self._header_deadline is None:
            # The first bytes of a later request on a kept-alive connection. (Bytes of a
            # request pipelined behind one being handled are bounded by the keep-alive
            # timer instead, which starts once that one is answered.)
            self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        self._header_deadline = self._timer_loop.call_later(
            self._guard.header_timeout, self._headers_too_slow
        )

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        log.debug(
            "closed a connection from %s: no complete request headers within %ss",
            self._address,
            self._guard.header_timeout,
        )
        self.force_close()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The response to a request the parser refused, or whose handler failed outside
        the app's error middleware: the API's JSON error, with the security headers (the
        app's `on_response_prepare` does not run for it). Closes the connection."""
        if isinstance(exc, HttpProcessingError):
            # Its message quotes the offending bytes, and so would its traceback: the
            # kind only, at DEBUG (anyone can send these; they are no fault of ours).
            log.debug(
                "refused a malformed request from %s (%s)", request.remote, type(exc).__name__
            )
            error = ApiError(ErrorCode.BAD_REQUEST, MALFORMED_REQUEST)
        else:
            # aiohttp's handling: logs the exception, and raises if a response was
            # already under way (then the connection is cut). Its text reply is dropped.
            super().handle_error(request, status, exc, message)
            error = ApiError(ErrorCode.INTERNAL, "internal error; the server log has the details")
        error.headers.update(security_headers(secure=request.secure))
        error.headers[REQUEST_ID_HEADER] = request_id_of(request)
        response = error_response(error)
        response.force_close()
        return response


class GuardedServer(web.Server):
    """aiohttp's server (the protocol factory), making `GuardedRequestHandler`s."""

    def __init__(self, handler: Any, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._guard = guard

    def __call__(self) -> web.RequestHandler:
        return GuardedRequestHandler(self, guard=self._guard, loop=self._loop, **self._kwargs)


class GuardedAppRunner(web.AppRunner):
    """An AppRunner whose server is a `GuardedServer`."""

    def __init__(self, app: web.Application, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._guard = guard

    async def _make_server(self) -> web.Server:
        # aiohttp starts the app and builds its server; ours is built from the same
        # arguments (handler_args, access log, debug) so that nothing else changes.
        plain = await super()._make_server()
        return GuardedServer(
            plain.request_handler,
            guard=self._guard,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
        )


def app_runner(app: web.Application, settings: ServerConfig, **kwargs: Any) -> web.AppRunner:
    """The runner `pushd serve` runs the app on, bounded by `settings` (`[server]`);
    `kwargs` go to `web.AppRunner`."""
    guard = ConnectionGuard(
        header_timeout=settings.header_timeout,
        max_per_address=settings.max_connections_per_address,
    )
    return GuardedAppRunner(
        app, guard=guard, keepalive_timeout=settings.keepalive_timeout, **kwargs
    )
