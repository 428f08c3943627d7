"""Which client-supplied URLs pushd may send requests to (docs/security.md, "Outbound
URLs").

A client registers a web push device with an `endpoint` URL, and a channel sender will
POST to it. Unchecked, that is a request from inside the network to wherever the client
points: a cloud metadata service (`https://169.254.169.254/`), an admin port on
loopback, a private service. `check_outbound_url` allows https only, resolves the host
(off the event loop) and refuses it unless every address it resolves to is public, and
`[outbound] allow_private` is the documented way to allow the others.

Called twice: when a device is registered (a 422 naming `endpoint`), and by a channel
sender right before each request, because DNS can change in between. A sender connects
to one of the returned `CheckedUrl.addresses` (with the URL's host for TLS and the Host
header) rather than resolving again, so that no answer it has not checked is used.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

RESOLVE_TIMEOUT = 5.0
"""Seconds a host has to resolve; a slower DNS makes the check fail (never pass)."""

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# getaddrinfo's answers for a name that does not exist (other errors may pass).
_NO_SUCH_HOST = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
_ALLOW = "set outbound.allow_private = true to allow it"


class OutboundUrlError(ValueError):
    """pushd must not send to this URL; the message says why and what would fix it."""


class ResolveFailedError(OSError):
    """The URL's host could not be resolved right now (DNS unreachable, too slow): the URL
    is neither allowed nor refused. Unlike `OutboundUrlError`, worth trying again later;
    a sender treats it as a transient failure."""


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed the check, with what it was checked against."""

    url: str
    host: str
    """Lower-cased, without brackets: for TLS (SNI, certificate) and the Host header."""
    port: int
    addresses: tuple[str, ...]
    """Every address the host resolved to, all allowed: connect to one of these."""


async def check_outbound_url(
    url: str,
    *,
    allow_private: bool,
    resolve: Resolver | None = None,
    resolve_timeout: float = RESOLVE_TIMEOUT,
) -> CheckedUrl:
    """Check `url` before pushd sends to it; raise `OutboundUrlError` if it must not.

    https only, a host, no user name or password; then the host's addresses (an IP
    literal is its own) must each be public unless `allow_private`. A host that does not
    exist (or has no address) is refused either way; one whose resolution fails
    otherwise, or takes longer than `resolve_timeout` seconds, raises `ResolveFailedError`.
    `resolve` replaces the system resolver (`loop.getaddrinfo`, which runs in a thread)
    in tests.
    """
    host, port = _parse(url)
    addresses = await _addresses(host, port, resolve or _system_resolver, resolve_timeout)
    if not allow_private:
        for address in addresses:
            reason = _not_public(ipaddress.ip_address(address))
            if reason is not None:
                raise OutboundUrlError(
                    f"{host} resolves to {address}, a {reason} address: pushd only sends "
                    f"to public addresses ({_ALLOW})"
                )
    return CheckedUrl(url=url, host=host, port=port, addresses=addresses)


def _parse(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme.lower() != "https":
        raise OutboundUrlError(f"the URL must start with https:// (got {url[:40]!r})")
    if parts.username is not None or parts.password is not None:
        raise OutboundUrlError("the URL must not hold a user name or password")
    try:
        port = parts.port or 443
    except ValueError:
        raise OutboundUrlError("the URL's port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise OutboundUrlError("the URL has no host")
    return parts.hostname, port


async def _addresses(host: str, port: int, resolve: Resolver, limit: float) -> tuple[str, ...]:
    try:
        return (str(ipaddress.ip_address(host)),)
    except ValueError:
        pass  # a name, not an IP literal
    try:
        async with asyncio.timeout(limit):
            found = await resolve(host, port)
    except socket.gaierror as exc:
        if exc.errno in _NO_SUCH_HOST:
            raise OutboundUrlError(f"{host} does not resolve ({exc.strerror})") from None
        raise ResolveFailedError(f"{host} could not be resolved now ({exc.strerror})") from None
    except TimeoutError:
        raise ResolveFailedError(f"{host} could not be resolved within {limit:g} s") from None
    except OSError as exc:
        raise ResolveFailedError(f"{host} could not be resolved now ({exc})") from None
    except UnicodeError:
        raise OutboundUrlError(f"{host!r} is not a valid host name") from None
    if not found:
        raise OutboundUrlError(f"{host} does not resolve (no address)")
    return tuple(dict.fromkeys(found))  # in order, once each


async def _system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # An IPv6 link-local answer carries its zone (`fe80::1%eth0`): checked without it.
    return [str(info[4][0]).partition("%")[0] for info in infos]


def _not_public(address: IpAddress) -> str | None:
    """Why `address` is not a public destination, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            reason = _not_public(embedded)
            return None if reason is None else f"{reason} (embedded in {address})"
    for reason, applies in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("non-global", not address.is_global),
    ):
        if applies:
            return reason
    return None
