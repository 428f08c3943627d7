"""The HTTP client every aiohttp provider sends through (pushd/channels/http_client.py),
against a local server; the providers' own tests cover the URL check and pinning."""

from __future__ import annotations

from contextlib import aclosing

import pytest
from aiohttp import web

from actors.channel_sender import TransientSendError
from pushd.channels.http_client import ProviderClient
from tests.channels.harness import AiohttpServer, closed_port_url, served

LONG_BODY = "x" * 100_000


@pytest.fixture
async def base_url(aiohttp_server: AiohttpServer) -> str:
    async def long_answer(request: web.Request) -> web.Response:
        return web.Response(status=400, text=LONG_BODY)

    async def moved(request: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": "/target"})

    async def target(request: web.Request) -> web.Response:
        raise AssertionError("a redirect was followed")

    app = web.Application()
    app.router.add_post("/long", long_answer)
    app.router.add_post("/moved", moved)
    app.router.add_post("/target", target)
    return await served(aiohttp_server, app)


def client(max_body: int = 8192) -> ProviderClient:
    return ProviderClient(who="test provider `local`", timeout=5.0, max_body=max_body)


async def test_an_answer_is_read_up_to_max_body(base_url: str) -> None:
    """Guards the bound on what an endpoint that pushd does not control can make it
    hold in memory."""
    async with aclosing(client(max_body=1000)) as provider:
        answer = await provider.post(f"{base_url}/long", name="the local server", data=b"")
    assert (answer.status, answer.body) == (400, b"x" * 1000)


async def test_a_redirect_is_returned_not_followed(base_url: str) -> None:
    async with aclosing(client()) as provider:
        answer = await provider.post(f"{base_url}/moved", name="the local server", data=b"")
    assert (answer.status, answer.headers["Location"]) == (307, "/target")


async def test_no_answer_is_transient_and_names_the_destination_only() -> None:
    url = f"{closed_port_url()}/hook?token=s3cr3t"
    async with aclosing(client()) as provider:
        with pytest.raises(TransientSendError, match="the local server cannot be reached") as info:
            await provider.post(url, name="the local server", data=b"")
    assert info.value.provider_code == "unreachable"
    assert "s3cr3t" not in str(info.value)


async def test_no_post_follows_aclose() -> None:
    provider = client()
    await provider.aclose()
    await provider.aclose()  # idempotent
    with pytest.raises(RuntimeError, match=r"test provider `local`: send called after aclose"):
        await provider.post("http://127.0.0.1:1/", name="the local server", data=b"")
