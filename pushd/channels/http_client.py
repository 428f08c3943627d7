"""The HTTP client of pushd's aiohttp providers: web push, FCM and its OAuth token
endpoint, the SMS APIs, webhooks. (APNs speaks only HTTP/2, which aiohttp's client does
not; pushd/channels/apns.py has its own httpx client.)

A `ProviderClient` is one provider's: one aiohttp session, made on first use inside the
running loop and shared by every send (keep-alive, at most `max_connections` open
connections), closed by `aclose`. Every request it makes

- has `timeout` seconds in all, connecting included;
- never follows a redirect: its target would escape the outbound URL check, and a
  configured provider that moved is a configuration to fix;
- reads at most `max_body` bytes of the answer (`read_bounded`);
- when the client has a `check_url` (for URLs that clients chose: web push endpoints,
  webhook URLs), passes the outbound URL check first (pushd/channels/outbound_url.py)
  and goes to an address the check approved, never to a second DNS answer, with the
  URL's host in Host, SNI and the certificate check;
- raises `TransientSendError` when it gets no answer (refused, reset, timed out).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import aiohttp
from yarl import URL

from actors.channel_sender import PermanentSendError, TransientSendError
from pushd.channels.http_answer import HttpAnswer
from pushd.channels.outbound_url import CheckedUrl

UrlChecker = Callable[[str], Awaitable[CheckedUrl | None]]
"""The outbound URL check (`functools.partial(check_outbound_url, allow_private=...)`),
run before each request. It raises ValueError when pushd must not send to the URL
(OSError when it cannot tell, e.g. DNS is down). It returns the `CheckedUrl` whose
addresses the request then goes to, or None to let aiohttp resolve the host itself (only
for a checker that needs no pinning, e.g. in tests and benchmarks)."""

MAX_PROVIDER_ANSWER_BYTES: Final = 1 << 20
"""The default `max_body`: a configured provider's answers are a few KiB; the bound
guards memory only."""
MAX_CHOSEN_ENDPOINT_ANSWER_BYTES: Final = 8192
"""The `max_body` for endpoints that clients chose (web push services, webhook
receivers): pushd reads their answer only to quote a refusal, and does not let a server
it does not control fill its memory."""


async def read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The first `limit` bytes of an answer's body. A longer body is cut, and its
    connection closed instead of reused."""
    body = bytearray()
    while len(body) < limit:
        chunk = await response.content.read(limit - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


class ProviderClient:
    """The HTTP session of one provider (see the module docstring for what every
    request does). `who` names the provider in errors ("SMS provider `relay`")."""

    def __init__(
        self,
        *,
        who: str,
        timeout: float,
        max_connections: int = 100,
        max_body: int = MAX_PROVIDER_ANSWER_BYTES,
        headers: Mapping[str, str] | None = None,
        check_url: UrlChecker | None = None,
        refused_code: str = "url-refused",
    ) -> None:
        self._who = who
        self._timeout = timeout
        self._max_connections = max_connections
        self._max_body = max_body
        self._headers = {"User-Agent": "pushd", **(headers or {})}
        self._check_url = check_url
        self._refused_code = refused_code
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def ensure_open(self) -> None:
        """Raise RuntimeError once `aclose` has been called: no send may follow it."""
        if self._closed:
            raise RuntimeError(f"{self._who}: send called after aclose(); the sender is closed")

    async def post(
        self,
        url: str | URL,
        *,
        name: str,
        data: bytes | Mapping[str, str],
        headers: Mapping[str, str] | None = None,
        unreachable_code: str = "unreachable",
    ) -> HttpAnswer:
        """POST `data` (bytes as they are, a mapping as a form) to `url`; the answer,
        whatever its status. `name` is what errors call the destination: never a URL
        whose path or query may hold a secret (a push endpoint, a webhook token).

        Raises `PermanentSendError` for a URL that is not one or that the outbound URL
        check refuses, `TransientSendError` when the check cannot tell or no answer
        comes (with `unreachable_code`).
        """
        self.ensure_open()
        try:
            target = URL(url)
        except ValueError:
            raise PermanentSendError(f"{name} is not a valid URL") from None
        checked = await self._checked(url, name)
        try:
            return await self._post_to_checked(target, checked, data, dict(headers or {}))
        except aiohttp.InvalidURL:
            raise PermanentSendError(f"{name} is not a valid URL") from None
        except (aiohttp.ClientError, TimeoutError) as failure:
            raise TransientSendError(
                f"{name} cannot be reached ({_described(failure, target)}): it is down, "
                "unreachable or slow; retried later",
                provider_code=unreachable_code,
            ) from failure

    async def aclose(self) -> None:
        """Close the connections. Idempotent."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _checked(self, url: str | URL, name: str) -> CheckedUrl | None:
        if self._check_url is None:
            return None
        try:
            return await self._check_url(str(url))
        except ValueError as error:
            raise PermanentSendError(
                f"{name} refused by the outbound URL check: {error}",
                provider_code=self._refused_code,
            ) from None
        except OSError as error:
            raise TransientSendError(
                f"{name} could not be checked ({error}); retried later",
                provider_code="url-unchecked",
            ) from error

    async def _post_to_checked(
        self,
        url: URL,
        checked: CheckedUrl | None,
        data: bytes | Mapping[str, str],
        headers: dict[str, str],
    ) -> HttpAnswer:
        """POST to the first of the checked addresses that takes the connection."""
        if checked is None:
            return await self._post_once(url, None, data, headers)
        # The URL's host still names the server: in Host, in SNI and for the
        # certificate check.
        headers["Host"] = _host_header(url)
        *others, last = checked.addresses
        for address in others:
            try:
                return await self._post_once(url.with_host(address), url.raw_host, data, headers)
            except aiohttp.ClientConnectorError:
                pass  # not connected, so nothing was sent: try the next one
        return await self._post_once(url.with_host(last), url.raw_host, data, headers)

    async def _post_once(
        self,
        target: URL,
        server_hostname: str | None,
        data: bytes | Mapping[str, str],
        headers: dict[str, str],
    ) -> HttpAnswer:
        async with self._open_session().post(
            target,
            data=data,
            headers=headers,
            allow_redirects=False,
            server_hostname=server_hostname,
        ) as response:
            body = await read_bounded(response, self._max_body)
            return HttpAnswer(response.status, response.headers, body)

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers=self._headers,
            )
        return self._session


def _host_header(url: URL) -> str:
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    return host if url.explicit_port is None or url.is_default_port() else f"{host}:{url.port}"


def url_origin(url: URL) -> str:
    """What errors name instead of a URL whose path or query may hold a secret."""
    return str(url.origin()) if url.absolute and url.host else "(not a URL)"


def _described(failure: BaseException, url: URL) -> str:
    """The failure's type and text, with the URL (whose path may be a secret) and any
    address it was sent to replaced by the URL's origin."""
    text = str(failure)
    origin = url_origin(url)
    for sent_to in (str(url), *_request_urls(failure)):
        text = text.replace(sent_to, origin)
    kind = type(failure).__name__
    return f"{kind}: {text}" if text else kind


def _request_urls(failure: BaseException) -> list[str]:
    request_info = getattr(failure, "request_info", None)
    return [str(request_info.real_url)] if request_info is not None else []
