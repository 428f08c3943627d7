"""The push service of `deliver.py --push-step`: the local push endpoint of the tests
(tests/channels/webpush_endpoint.py, bench mode: it reads every body and checks the
headers, answers 201, and skips the signature check and decryption) served over TLS,
since pushd only sends to https endpoints, with a self-signed certificate for
127.0.0.1 that the bench hands to the server as its CA file (SSL_CERT_FILE).

It counts, per subscription, the pushes it accepted (`POST /push/{subscription}`
answered 201) and the time of the last one, so that the bench can tell whether every
notification's push arrived exactly once.

Commands (JSON lines on stdin, see benchlib):
  serve   {directory}  write the certificate and key there, listen on 127.0.0.1:0
                       -> {origin, cert}
  counts  {}           -> {pushes, per_subscription, last_ns, refused}
  quit    {}
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from benchlib import Command, raise_nofile_limit, serve_commands

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.channels.harness import self_signed_tls  # noqa: E402
from tests.channels.webpush_endpoint import PushEndpoint  # noqa: E402

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class CountingEndpoint:
    def __init__(self) -> None:
        self.endpoint = PushEndpoint(bench=True)
        self.accepted: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()  # by status
        self.last_ns = 0
        self.runner: web.AppRunner | None = None

    @web.middleware
    async def count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        subscription = request.match_info.get("subscription")
        if subscription is not None:
            if response.status == 201:
                self.accepted[subscription] += 1
                self.last_ns = time.time_ns()
            else:
                self.refused[str(response.status)] += 1
        return response

    async def serve(self, directory: str) -> Command:
        tls = self_signed_tls(Path(directory), "pushd-bench-push-service")
        app = self.endpoint.app()
        app.middlewares.append(self.count)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=tls.server_context())
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.endpoint.origin = f"https://{host}:{port}"
        return {"origin": self.endpoint.origin, "cert": str(tls.cert)}

    async def handle(self, command: Command) -> Command:
        match command["cmd"]:
            case "serve":
                return await self.serve(command["directory"])
            case "counts":
                return {
                    "pushes": sum(self.accepted.values()),
                    "per_subscription": dict(self.accepted),
                    "last_ns": self.last_ns,
                    "refused": dict(self.refused),
                }
            case "quit":
                if self.runner is not None:
                    await self.runner.cleanup()
                return {}
        raise ValueError(f"unknown command {command['cmd']!r}")


async def main(max_seconds: float) -> None:
    raise_nofile_limit()
    await serve_commands(CountingEndpoint().handle, max_seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-seconds", type=float, default=900.0)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(args.max_seconds))
    else:
        uvloop.run(main(args.max_seconds))
