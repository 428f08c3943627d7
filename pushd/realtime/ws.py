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
from pushd.appkeys import (
    BUS,
    CONFIG,
    LIMITS,
    MAILBOXES,
    METRICS,
    REVOCATIONS,
    SOCKETS,
    STORAGE,
    TOKENS,
)
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
from pushd.revocations import TOKEN_REVOKED_REASON
from pushd.tokens import TokenError, TokenExpiredError, VerifiedToken
from storage import StorageError
from storage.records import UserRecord

log = logging.getLogger("pushd.ws")

PONG = frame_encoder.encode(PongFrame())


async def _authenticate(request: web.Request, ws: web.WebSocketResponse) -> VerifiedToken | None:
    """Read the `auth` frame; return what its token says, or close the socket and return
    None. The user id only ever comes from the token, never from a frame's field."""
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
        return request.app[TOKENS].verify_claims(frame.token)
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


async def _serve(
    request: web.Request, ws: web.WebSocketResponse, user: UserRecord, token: VerifiedToken
) -> None:
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
        # A revocation applied between the storage check and the Attach above closed the
        # sockets the actor held, not this one yet: this node remembers it for this check.
        if request.app[REVOCATIONS].token_recently_revoked(user.id, token.issued_at_ms):
            connection.close_soon(CloseCode.TOKEN_REVOKED, TOKEN_REVOKED_REASON)
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
    max_frame = request.app[CONFIG].limits.ws_max_frame_bytes  # bigger: closed with 1009
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=max_frame)
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    sockets.add(ws)
    try:
        token = await _authenticate(request, ws)
        if token is None:
            return ws
        try:
            found = await request.app[STORAGE].get_user_and_token_cutoff(token.user_id)
        except StorageError:
            await ws.close(
                code=CloseCode.RECONNECT, message=b"storage unavailable: reconnect later"
            )
            return ws
        if found is None:
            await ws.close(code=CloseCode.USER_UNKNOWN, message=b"user does not exist")
            return ws
        user, tokens_revoked_before = found
        if token.issued_at_ms <= tokens_revoked_before:
            await ws.close(code=CloseCode.TOKEN_REVOKED, message=TOKEN_REVOKED_REASON.encode())
            return ws
        quota = request.app[LIMITS].sockets
        if not quota.acquire(user.id):
            reason = f"this user already has {quota.per_user} sockets open on this node"
            await ws.close(code=CloseCode.TOO_MANY_CONNECTIONS, message=reason.encode())
            return ws
        try:
            await _serve(request, ws, user, token)
        finally:
            quota.release(user.id)
    finally:
        sockets.discard(ws)
    return ws
