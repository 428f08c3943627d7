"""`GET /ws`: the native WebSocket endpoint (protocol v1, docs/protocol.md).

One socket = one `Connection` owned by the user's mailbox actor. The socket's reader (this
handler) and its writer (`Connection.run_writer`) live in one TaskGroup: when either
ends, both end, and the actor forgets the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
from aiohttp import WSMsgType, web

from actors.connection import Connection
from actors.runtime import ActorSystemStoppedError
from actors.transport import CloseCode
from actors.user_mailbox import Attach, Detach
from pushd.appkeys import BUS, CONFIG, MAILBOXES, METRICS, SOCKETS, STORAGE, TOKENS
from pushd.bus import BusError
from pushd.ids import new_id
from pushd.realtime.frames import (
    AckFrame,
    AuthFrame,
    ErrorFrame,
    PingFrame,
    PongFrame,
    WelcomeFrame,
    client_frame_decoder,
    frame_encoder,
)
from pushd.realtime.sockets import WebSocketTransport
from pushd.tokens import TokenError, TokenExpiredError
from storage import StorageError
from storage.records import UserRecord

log = logging.getLogger("pushd.ws")

MAX_CLIENT_FRAME_BYTES = 64 * 1024
PONG = frame_encoder.encode(PongFrame())


async def _authenticate(request: web.Request, ws: web.WebSocketResponse) -> str | None:
    """Read the `auth` frame; return the user id, or close the socket and return None."""
    timeout = request.app[CONFIG].auth.ws_auth_timeout
    try:
        message = await ws.receive(timeout=timeout)
    except TimeoutError:
        await ws.close(code=CloseCode.AUTH_TIMEOUT, message=b"send an auth frame first")
        return None
    if message.type != WSMsgType.TEXT:
        await ws.close(
            code=CloseCode.PROTOCOL_ERROR, message=b"first frame must be a text auth frame"
        )
        return None
    try:
        frame = client_frame_decoder.decode(message.data)
    except msgspec.DecodeError:
        frame = None
    if not isinstance(frame, AuthFrame):
        await ws.close(
            code=CloseCode.PROTOCOL_ERROR, message=b"first frame must be {type: auth, token}"
        )
        return None
    try:
        return request.app[TOKENS].verify(frame.token)
    except TokenExpiredError:
        await ws.close(code=CloseCode.TOKEN_EXPIRED, message=b"token expired")
    except TokenError:
        await ws.close(code=CloseCode.INVALID_TOKEN, message=b"invalid token")
    return None


async def _read_frames(ws: web.WebSocketResponse, connection: Connection) -> None:
    """Handle client frames until the socket closes."""
    async for message in ws:
        if message.type != WSMsgType.TEXT:
            connection.close_soon(CloseCode.PROTOCOL_ERROR, "only JSON text frames are accepted")
            return
        try:
            frame = client_frame_decoder.decode(message.data)
        except msgspec.DecodeError as exc:
            connection.offer(frame_encoder.encode(ErrorFrame("invalid_frame", str(exc))))
            continue
        match frame:
            case PingFrame():
                connection.offer(PONG)
            case AckFrame():
                pass  # acks are stored by issue #3's ack cursor; accepted and ignored here
            case AuthFrame():
                connection.offer(
                    frame_encoder.encode(ErrorFrame("already_authenticated", "auth is sent once"))
                )


async def _serve(request: web.Request, ws: web.WebSocketResponse, user: UserRecord) -> None:
    """Attach the socket to the user's mailbox actor and run its reader and writer."""
    config, metrics = request.app[CONFIG], request.app[METRICS]
    connection = Connection(
        WebSocketTransport(ws),
        queue_size=config.actors.socket_queue_size,
        connection_id=new_id("con"),
    )
    welcome = WelcomeFrame(
        user_id=user.id,
        connection_id=connection.connection_id,
        last_seq=user.last_seq,
        ack_seq=user.ack_seq,
    )
    connection.offer(frame_encoder.encode(welcome))
    bus, mailboxes = request.app[BUS], request.app[MAILBOXES]
    try:
        await bus.watch_user(user.id)
    except BusError:
        await ws.close(code=CloseCode.RECONNECT, message=b"bus unavailable: reconnect later")
        return
    metrics.connections.inc({})
    try:
        await mailboxes.tell(user.id, Attach(connection))
        async with asyncio.TaskGroup() as tasks:
            writer = tasks.create_task(connection.run_writer())
            await _read_frames(ws, connection)
            connection.close_soon(CloseCode.NORMAL, "")
            await writer
    except ActorSystemStoppedError:
        await ws.close(code=CloseCode.GOING_AWAY, message=b"server shutting down: reconnect")
    finally:
        metrics.connections.dec({})
        # During shutdown the actor system may already be stopped; its on_stop has
        # then closed this connection anyway.
        with contextlib.suppress(ActorSystemStoppedError):
            await mailboxes.tell(user.id, Detach(connection))
        await bus.unwatch_user(user.id)


async def websocket(request: web.Request) -> web.StreamResponse:
    """Upgrade, authenticate, then stream the user's notifications until either side closes."""
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_CLIENT_FRAME_BYTES)
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    sockets.add(ws)
    try:
        user_id = await _authenticate(request, ws)
        if user_id is None:
            return ws
        try:
            user = await request.app[STORAGE].get_user(user_id)
        except StorageError:
            await ws.close(
                code=CloseCode.RECONNECT, message=b"storage unavailable: reconnect later"
            )
            return ws
        if user is None:
            await ws.close(code=CloseCode.USER_UNKNOWN, message=b"user does not exist")
            return ws
        await _serve(request, ws, user)
    finally:
        sockets.discard(ws)
    return ws
