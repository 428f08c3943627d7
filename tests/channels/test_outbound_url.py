"""pushd/channels/outbound_url.py: which client-supplied URLs pushd may send to (issue #10,
"Also"). A web push endpoint of `https://169.254.169.254/...` (a cloud metadata service)
was accepted: once channels send, it would have been a request from inside the network."""

from __future__ import annotations

import asyncio
import socket

import pytest

from pushd.channels.outbound_url import OutboundUrlError, ResolveFailedError, check_outbound_url

PUBLIC_V4, PUBLIC_V6 = "8.8.8.8", "2606:4700:4700::1111"


class FakeResolver:
    """Answers every name with `addresses` (or raises `error`), and records the calls."""

    def __init__(self, *addresses: str, error: OSError | None = None) -> None:
        self.addresses, self.error = list(addresses), error
        self.seen: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.seen.append((host, port))
        if self.error is not None:
            raise self.error
        return self.addresses


@pytest.mark.parametrize(
    "url",
    [
        "http://push.example.com/x",
        "ftp://push.example.com/x",
        "https:///x",
        "https://user:secret@push.example.com/x",
        "https://push.example.com:99999/x",
        "//push.example.com/x",
    ],
)
async def test_only_https_urls_with_a_host(url: str) -> None:
    with pytest.raises(OutboundUrlError):
        await check_outbound_url(url, allow_private=True, resolve=FakeResolver(PUBLIC_V4))


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",  # link-local: cloud metadata
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",  # carrier-grade NAT (shared)
        "0.0.0.0",
        "224.0.0.1",  # multicast
        "240.0.0.1",  # reserved
        "255.255.255.255",
        "192.0.2.1",  # documentation
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:169.254.169.254",  # IPv4-mapped
        "::ffff:127.0.0.1",
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2001:db8::1",
    ],
)
async def test_private_and_special_addresses_are_refused(address: str) -> None:
    literal = f"[{address}]" if ":" in address else address
    with pytest.raises(OutboundUrlError, match=r"outbound\.allow_private"):
        await check_outbound_url(f"https://{literal}/x", allow_private=False)
    with pytest.raises(OutboundUrlError, match=r"outbound\.allow_private"):
        await check_outbound_url(
            "https://push.example.com/x", allow_private=False, resolve=FakeResolver(address)
        )
    allowed = await check_outbound_url(
        "https://push.example.com/x", allow_private=True, resolve=FakeResolver(address)
    )
    assert allowed.addresses == (address,)


async def test_every_resolved_address_must_be_public() -> None:
    """A name with one public and one private address would let the sender reach the
    private one (DNS answers in any order, or a rebinding attacker chooses)."""
    with pytest.raises(OutboundUrlError, match=r"10\.0\.0\.5"):
        await check_outbound_url(
            "https://push.example.com/x",
            allow_private=False,
            resolve=FakeResolver(PUBLIC_V4, "10.0.0.5"),
        )
    resolve = FakeResolver(PUBLIC_V4, PUBLIC_V6, "::ffff:8.8.4.4")
    checked = await check_outbound_url(
        "https://Push.Example.com:8443/x?y=1", allow_private=False, resolve=resolve
    )
    assert (checked.host, checked.port) == ("push.example.com", 8443)
    assert checked.addresses == (PUBLIC_V4, PUBLIC_V6, "::ffff:8.8.4.4")
    assert resolve.seen == [("push.example.com", 8443)]


async def test_a_host_that_does_not_resolve_is_refused() -> None:
    gone = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    with pytest.raises(OutboundUrlError, match="does not resolve"):
        await check_outbound_url(
            "https://push.example.test/x", allow_private=True, resolve=FakeResolver(error=gone)
        )
    with pytest.raises(OutboundUrlError, match="does not resolve"):
        await check_outbound_url(
            "https://push.example.test/x", allow_private=False, resolve=FakeResolver()
        )


async def test_a_resolver_failure_is_neither_allowed_nor_refused() -> None:
    """DNS down or slow: `ResolveFailedError` (an OSError, transient for a sender),
    never a pass."""
    down = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    with pytest.raises(ResolveFailedError, match="could not be resolved now"):
        await check_outbound_url(
            "https://push.example.com/x", allow_private=True, resolve=FakeResolver(error=down)
        )

    async def hang(host: str, port: int) -> list[str]:
        await asyncio.sleep(60)
        return [PUBLIC_V4]

    with pytest.raises(ResolveFailedError, match=r"within 0\.05 s"):
        await check_outbound_url(
            "https://push.example.com/x", allow_private=False, resolve=hang, resolve_timeout=0.05
        )


async def test_the_default_resolver_runs_off_the_event_loop() -> None:
    """`localhost` through the system resolver (loop.getaddrinfo): loopback."""
    with pytest.raises(OutboundUrlError, match="loopback"):
        await check_outbound_url("https://localhost:8443/push", allow_private=False)
    checked = await check_outbound_url("https://localhost:8443/push", allow_private=True)
    assert "127.0.0.1" in checked.addresses or "::1" in checked.addresses
