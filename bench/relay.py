"""A bare aiohttp relay: the anchor the benchmarks measure pushd against (issue #16).

    .venv/bin/python bench/relay.py --port 0

It speaks pushd's HTTP and WebSocket shapes as far as the bench's load generator
(loadgen.py) and receivers (receivers.py) see them, and does nothing else: no storage, no
authentication, no encryption, no audit, no limits. What it does is the least any server
built on aiohttp + uvloop must do for the same traffic (parse the request, find the
user's sockets, write a frame with the user's next seq, answer), so its figures are the
ceiling for any aiohttp server on this machine, and pushd's are reported as ratios to
them.

Routes (bodies as pushd's, decoded with msgspec like pushd's):
  POST /api/users                          -> 201 {"id"}
  POST /api/users/{id}/tokens              -> 201 {"token"} (the token names the user)
  POST /api/notifications                  {user_id | topic, title, body, data, ...}
                                           -> 202 {"id", "user_id", "seq", "created_at"},
                                              or with `topic` 202 {"send_id", "topic",
                                              "created_at"} after one frame was written
                                              to every subscriber's sockets
  POST /api/notifications/batch            {items: [...]} -> 200 {"accepted", "failed",
                                              "results"}
  POST /api/topics                         {slug, name} -> 201
  POST /api/topics/{topic}/subscribers     {user_ids} -> 200 {"results"}
  GET  /api/healthcheck                    -> 200
  GET  /ws                                 auth frame (not checked) -> welcome; then
                                           `notification` frames; acks and reads are
                                           read and ignored, ping answered with pong

It prints `relay listening on http://HOST:PORT` once it accepts connections, as
`pushd serve` prints its own line (bench/services.py waits for either).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import socket
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import msgspec
import uvloop
from aiohttp import WSMsgType, web


class Item(msgspec.Struct):
    """What the relay reads of a notification (single send or batch item)."""

    user_id: str | None = None
    topic: str | None = None
    title: str | None = None
    body: str | None = None
    data: dict[str, Any] | None = None
    category: str | None = None
    priority: str = "normal"


class Batch(msgspec.Struct):
    items: list[Item]


class Subscribe(msgspec.Struct):
    user_ids: list[str]


class ClientFrame(msgspec.Struct):
    type: str
    token: str = ""
    since: int | None = None


class Frame(msgspec.Struct, tag="notification", tag_field="type"):
    seq: int
    id: str
    title: str | None
    body: str | None
    data: dict[str, Any] | None
    category: str | None
    priority: str
    created_at: str


decode_item = msgspec.json.Decoder(Item).decode
decode_batch = msgspec.json.Decoder(Batch).decode
decode_subscribe = msgspec.json.Decoder(Subscribe).decode
decode_client_frame = msgspec.json.Decoder(ClientFrame).decode
encode = msgspec.json.Encoder().encode

TOKEN_PREFIX = "relay."  # noqa: S105 - a token is this + the user id, never checked
TOKEN_EXPIRES_AT = "2099-01-01T00:00:00Z"  # noqa: S105 - a date, not a secret


class Relay:
    """Every user's last seq and open sockets, and every topic's subscribers, in memory."""

    def __init__(self) -> None:
        self.user_ids = itertools.count(1)
        self.notification_ids = itertools.count(1)
        self.send_ids = itertools.count(1)
        self.last_seq: dict[str, int] = defaultdict(int)
        self.sockets: dict[str, set[web.WebSocketResponse]] = defaultdict(set)
        self.subscribers: dict[str, list[str]] = {}

    async def deliver(self, user_id: str, item: Item, now: str) -> tuple[str, int]:
        """Give `item` the user's next seq and write it to the user's sockets."""
        seq = self.last_seq[user_id] + 1
        self.last_seq[user_id] = seq
        notification_id = f"n{next(self.notification_ids)}"
        sockets = self.sockets.get(user_id)
        if sockets:
            frame = encode(
                Frame(
                    seq, notification_id, item.title, item.body, item.data, item.category,
                    item.priority, now,
                )
            ).decode()  # fmt: skip
            for ws in tuple(sockets):
                # send_str waits only when the socket's write buffer is over its limit:
                # the same back-pressure pushd's per-socket writer has.
                await ws.send_str(frame)
        return notification_id, seq

    # HTTP -----------------------------------------------------------------------------

    async def create_user(self, request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"id": f"u{next(self.user_ids)}"}, status=201)

    async def create_token(self, request: web.Request) -> web.Response:
        await request.read()
        token = TOKEN_PREFIX + request.match_info["user_id"]
        return web.json_response({"token": token, "expires_at": TOKEN_EXPIRES_AT}, status=201)

    async def send(self, request: web.Request) -> web.Response:
        item = decode_item(await request.read())
        now = _now()
        if item.topic is not None:
            for user_id in self.subscribers.get(item.topic, ()):
                await self.deliver(user_id, item, now)
            send_id = f"s{next(self.send_ids)}"
            sent = {"send_id": send_id, "topic": item.topic, "created_at": now}
            return web.Response(body=encode(sent), status=202, content_type="application/json")
        if item.user_id is None:
            return web.json_response({"error": {"code": "invalid", "field": "user_id"}}, status=422)
        notification_id, seq = await self.deliver(item.user_id, item, now)
        answer = {"id": notification_id, "user_id": item.user_id, "seq": seq, "created_at": now}
        return web.Response(body=encode(answer), status=202, content_type="application/json")

    async def send_batch(self, request: web.Request) -> web.Response:
        batch = decode_batch(await request.read())
        now = _now()
        results = []
        for index, item in enumerate(batch.items):
            if item.user_id is None:
                error = {"code": "invalid", "field": f"items[{index}].user_id"}
                results.append({"index": index, "status": 422, "error": error})
                continue
            notification_id, seq = await self.deliver(item.user_id, item, now)
            accepted = {"id": notification_id, "user_id": item.user_id, "seq": seq}
            results.append({"index": index, "status": 202, "notification": accepted})
        failed = sum(r["status"] != 202 for r in results)
        answer = {"accepted": len(results) - failed, "failed": failed, "results": results}
        return web.Response(body=encode(answer), status=200, content_type="application/json")

    async def create_topic(self, request: web.Request) -> web.Response:
        body = await request.json()
        slug = str(body["slug"])
        self.subscribers.setdefault(slug, [])
        return web.json_response({"slug": slug, "name": body.get("name", slug)}, status=201)

    async def add_subscribers(self, request: web.Request) -> web.Response:
        subscribe = decode_subscribe(await request.read())
        listed = self.subscribers.setdefault(request.match_info["topic"], [])
        known = set(listed)
        results = []
        for user_id in subscribe.user_ids:
            outcome = "already_subscribed" if user_id in known else "subscribed"
            if user_id not in known:
                listed.append(user_id)
                known.add(user_id)
            results.append({"user_id": user_id, "outcome": outcome})
        return web.json_response({"results": results})

    async def healthcheck(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    # WebSocket ------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        user_id = None
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                frame = decode_client_frame(message.data)
                if frame.type == "auth" and user_id is None:
                    user_id = frame.token.removeprefix(TOKEN_PREFIX)
                    await self._welcome(ws, user_id, frame.since)
                elif frame.type == "ping":
                    await ws.send_str('{"type":"pong"}')
                # ack, read, resume, refresh: nothing to store, nothing to answer
        finally:
            if user_id is not None:
                self.sockets[user_id].discard(ws)
        return ws

    async def _welcome(self, ws: web.WebSocketResponse, user_id: str, since: int | None) -> None:
        last_seq = self.last_seq[user_id]
        # Nothing is stored, so nothing is replayed: the stream starts after last_seq
        # whatever `since` asked for (pushd would replay since..last_seq first).
        del since
        welcome = {
            "type": "welcome",
            "user_id": user_id,
            "connection_id": f"c{id(ws):x}",
            "last_seq": last_seq,
            "ack_seq": 0,
            "since": last_seq,
            "token_expires_at": TOKEN_EXPIRES_AT,
            "protocol": "1.3",
        }
        await ws.send_str(encode(welcome).decode())
        self.sockets[user_id].add(ws)

    async def close_sockets(self, _app: web.Application) -> None:
        for sockets in self.sockets.values():
            for ws in tuple(sockets):
                await ws.close(code=1001, message=b"relay shutting down")


def _now() -> str:
    return datetime.fromtimestamp(time.time(), UTC).isoformat().replace("+00:00", "Z")


def make_app() -> web.Application:
    relay = Relay()
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/api/users", relay.create_user)
    app.router.add_post("/api/users/{user_id}/tokens", relay.create_token)
    app.router.add_post("/api/notifications", relay.send)
    app.router.add_post("/api/notifications/batch", relay.send_batch)
    app.router.add_post("/api/topics", relay.create_topic)
    app.router.add_post("/api/topics/{topic}/subscribers", relay.add_subscribers)
    app.router.add_get("/api/healthcheck", relay.healthcheck)
    app.router.add_get("/ws", relay.websocket)
    app.on_shutdown.append(relay.close_sockets)
    return app


async def serve(host: str, port: int) -> None:
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    # One listening socket made here, so that port 0 tells us the port it got.
    listener = socket.create_server((host, port), backlog=4096, reuse_port=False)
    site = web.SockSite(runner, listener)
    await site.start()
    bound_host, bound_port = listener.getsockname()[:2]
    print(f"relay listening on http://{bound_host}:{bound_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
