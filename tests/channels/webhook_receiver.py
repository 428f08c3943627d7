"""A webhook endpoint as an application writes one: it verifies `Pushd-Signature` with
the function docs/channels.md shows (loaded from the document itself), then records the
event. Other paths answer as a failing, moving or overloaded endpoint would.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

DOCS = Path(__file__).parents[2] / "docs" / "channels.md"
SECTION = "## Webhooks: verifying the signature"

Verifier = Callable[[Iterable[str], str, bytes], bool]


def docs_snippet() -> str:
    """The Python block of the webhook section of docs/channels.md."""
    text = DOCS.read_text()
    section = text[text.index(SECTION) :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, f"{DOCS}: no python block under {SECTION!r}"
    return match.group(1)


def docs_verifier() -> Verifier:
    """`verify_signature` as defined by the documentation's snippet."""
    namespace: dict[str, Any] = {}
    exec(docs_snippet(), namespace)  # noqa: S102 - our own documentation, under test
    verify: Verifier = namespace["verify_signature"]
    return verify


@dataclass(frozen=True)
class ReceivedEvent:
    body: bytes
    headers: dict[str, str]


@dataclass
class WebhookReceiver:
    """Knows `secrets` (the endpoint's secret as its operator configured it)."""

    secrets: list[str]
    verify: Verifier = field(default_factory=docs_verifier)
    received: list[ReceivedEvent] = field(default_factory=list)
    refused: int = 0
    hits: dict[str, int] = field(default_factory=dict)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        app.router.add_post("/gone", self._answer(410))
        app.router.add_post("/busy", self._answer(429, {"Retry-After": "30"}))
        app.router.add_post("/broken", self._answer(500, body="upstream failed " * 10_000))
        app.router.add_post("/refuse", self._answer(400, body='{"error": "unknown type"}'))
        app.router.add_post("/redirect", self._answer(307, {"Location": "/hook"}))
        app.router.add_post("/slow", self._slow)
        return app

    async def _hook(self, request: web.Request) -> web.Response:
        self._count(request)
        body = await request.read()
        if not self.verify(self.secrets, request.headers.get("Pushd-Signature", ""), body):
            self.refused += 1
            return web.Response(status=401, text="bad signature")
        self.received.append(ReceivedEvent(body, dict(request.headers)))
        return web.Response(status=204)

    def _answer(
        self, status: int, headers: dict[str, str] | None = None, body: str = ""
    ) -> Callable[[web.Request], Any]:
        async def answer(request: web.Request) -> web.Response:
            self._count(request)
            return web.Response(status=status, headers=headers, text=body)

        return answer

    async def _slow(self, request: web.Request) -> web.Response:
        self._count(request)
        await asyncio.sleep(1)
        return web.Response(status=204)

    def _count(self, request: web.Request) -> None:
        self.hits[request.path] = self.hits.get(request.path, 0) + 1
