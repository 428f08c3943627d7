"""`GET /ws`: the native WebSocket endpoint (protocol 1.2, docs/protocol.md).

One socket = one `Connection` owned by the user's mailbox actor; the connection keeps the
socket's stream position and catches up from storage (`StoredBacklog`). The socket's reader is
this handler; its writer is a task the connection starts only while it has something to
write (`Connection.write_on_demand`), so that an idle socket keeps no task but aiohttp's.
When the reader ends the connection is closed and its writer awaited; when the writer
closes the socket the reader ends; either way the actor forgets the connection.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass

import msgspec
from aiohttp import WSMsgType, web

from actors.connection import Connection
from actors.runtime import ActorSystemStoppedError
from actors.transport import CloseCode
from actors.user_mailbox import Attach, Detach
from pushd.access.user_tokens import TokenError, TokenExpiredError, VerifiedToken
from pushd.appkeys import (
    BUS,
    CONFIG,
    CURSORS,
    LIMITS,
    MAILBOXES,
    METRICS,
    SOCKETS,
    STORAGE,
    TOKENS,
)
from pushd.bus import BusError
from pushd.ids import from_ms, new_id, now_ms
from pushd.realtime.backlog import StoredBacklog
from pushd.realtime.categories import frame_filter, speaks_edits
from pushd.realtime.expiry import TokenLifetime
from pushd.realtime.frames import (
    AckFrame,
    AuthFrame,
    ErrorFrame,
    FrameTooDeepError,
    PingFrame,
    PongFrame,
    ReadFrame,
    RefreshedFrame,
    RefreshFrame,
    ResumedFrame,
    ResumeFrame,
    WelcomeFrame,
    decode_client_frame,
    frame_encoder,
)
from pushd.realtime.readsync import publish_read
from pushd.realtime.sockets import WebSocketTransport
from storage import Storage, StorageError
from storage.records import UserRecord

log = logging.getLogger("pushd.ws")

PONG = frame_encoder.encode(PongFrame())


async def _authenticate(
    request: web.Request, ws: web.WebSocketResponse
) -> tuple[VerifiedToken, AuthFrame] | None:
    """Read the `auth` frame; return what its token says and the frame (its `since` and
    `protocol`), or close the socket and return None. The user id only ever comes from
    the token, never from a frame's field."""
    timeout = request.app[CONFIG].auth.ws_auth_timeout
    try:
        message = await ws.receive(timeout=timeout)
    except TimeoutError:
        await _close(ws, CloseCode.AUTH_TIMEOUT)
        return None
    if message.type != WSMsgType.TEXT:
        await _close(ws, CloseCode.PROTOCOL_ERROR, "first frame must be a text auth frame")
        return None
    try:
        frame = decode_client_frame(message.data, request.app[CONFIG].limits.json_max_depth)
    except msgspec.DecodeError:  # FrameTooDeepError too: 4500 below
        frame = None
    if not isinstance(frame, AuthFrame):
        await _close(ws, CloseCode.PROTOCOL_ERROR, "first frame must be {type: auth, token}")
        return None
    try:
        return request.app[TOKENS].verify_claims(frame.token), frame
    except TokenExpiredError:
        await _close(ws, CloseCode.TOKEN_EXPIRED)
    except TokenError:
        await _close(ws, CloseCode.INVALID_TOKEN)
    return None


async def _close(ws: web.WebSocketResponse, code: CloseCode, cause: str | None = None) -> None:
    """Close a socket that has no `Connection` (yet) with `code` and its reason."""
    await ws.close(code=code, message=code.reason(cause).encode())


def _error(code: str, message: str) -> bytes:
    return frame_encoder.encode(ErrorFrame(code, message))


async def _read_frames(request: web.Request, ws: web.WebSocketResponse, stream: _Stream) -> None:
    """Handle client frames until the socket closes."""
    connection, user_id = stream.connection, stream.user_id
    max_depth = request.app[CONFIG].limits.json_max_depth
    async for message in ws:
        if message.type != WSMsgType.TEXT:
            connection.close_soon(CloseCode.PROTOCOL_ERROR, "only JSON text frames are accepted")
            return
        try:
            frame = decode_client_frame(message.data, max_depth)
        except FrameTooDeepError as exc:
            connection.close_soon(CloseCode.PROTOCOL_ERROR, str(exc))
            return
        except msgspec.DecodeError as exc:
            connection.offer(_error("invalid_frame", str(exc)))
            continue
        match frame:
            case AckFrame(seq=seq):
                # Never past what this socket was given: an ack cannot claim delivery of
                # notifications the client has not seen.
                cursors = request.app[CURSORS]
                cursors.acked(user_id, min(seq, connection.cursor), stream.categories)
            case PingFrame():
                connection.offer(PONG)
            case ResumeFrame(since=since):
                since = min(since, connection.known_last_seq)
                connection.resume(since, frame_encoder.encode(ResumedFrame(since)))
            case ReadFrame(ids=ids):
                await _mark_read(request, connection, user_id, ids, stream.categories)
            case RefreshFrame(token=token):
                await _refresh(request, stream, token)
            case AuthFrame():
                connection.offer(_error("already_authenticated", "auth is sent once"))


async def _mark_read(
    request: web.Request,
    connection: Connection,
    user_id: str,
    ids: list[str],
    categories: tuple[str, ...] | None,
) -> None:
    try:
        marked = await request.app[STORAGE].mark_read(user_id, ids, now_ms(), categories=categories)
    except StorageError:
        connection.offer(_error("storage_unavailable", "read state not stored: send it again"))
        return
    if marked:
        await publish_read(request.app[BUS], user_id, marked)


async def _refresh(request: web.Request, stream: _Stream, token: str) -> None:
    """Move the socket's expiry to a fresh token's. A token that `auth` would refuse, or
    one of another user, is answered with an error frame and the current token stays."""
    connection = stream.connection
    try:
        fresh = request.app[TOKENS].verify_claims(token)
    except TokenExpiredError:
        connection.offer(_error("token_expired", "this token has expired: get a new one"))
        return
    except TokenError as exc:
        connection.offer(_error("invalid_token", str(exc)))
        return
    mismatch = _refresh_mismatch(stream, fresh)
    if mismatch is not None:
        connection.offer(_error("invalid_token", mismatch))
        return
    try:
        found = await request.app[STORAGE].get_user_and_token_cutoff(stream.user_id)
    except StorageError:
        connection.offer(_error("storage_unavailable", "token not checked: send it again"))
        return
    if found is None:
        connection.close_soon(CloseCode.USER_UNKNOWN)
        return
    if fresh.issued_at_ms <= found[1]:
        connection.offer(_error("token_revoked", CloseCode.TOKEN_REVOKED.reason()))
        return
    stream.lifetime.renew(fresh.expires_at_ms)
    connection.offer(frame_encoder.encode(RefreshedFrame(from_ms(fresh.expires_at_ms))))


def _refresh_mismatch(stream: _Stream, fresh: VerifiedToken) -> str | None:
    """Why `fresh` cannot replace the socket's token, or None if it can."""
    if fresh.user_id != stream.user_id:
        return "the token is for another user"
    if fresh.categories != stream.categories:
        # The socket's filter is its first token's: a token of other categories could
        # otherwise keep a wider socket alive past its own token.
        return "the token is for other categories"
    return None


@dataclass(slots=True)
class _Stream:
    """One authenticated socket: its user, its connection and its token's lifetime."""

    user_id: str
    connection: Connection
    lifetime: TokenLifetime
    categories: tuple[str, ...] | None = None
    """Those of a token limited to categories (pushd/realtime/categories.py)."""


def stored_backlog(app: web.Application, token: VerifiedToken) -> StoredBacklog:
    """What a connection of `token`'s user replays from: the user's stored notifications
    within the mailbox bounds and the token's categories (the socket and SSE alike)."""
    config = app[CONFIG]
    return StoredBacklog(
        app[STORAGE],
        token.user_id,
        max_count=config.mailbox.backlog_max_count,
        max_age_seconds=config.mailbox.backlog_max_age,
        page_size=config.mailbox.replay_page_size,
        categories=token.categories,
        observer=app[METRICS].replay_page,
    )


async def _serve(
    request: web.Request, ws: web.WebSocketResponse, token: VerifiedToken, auth: AuthFrame
) -> None:
    """Attach the socket to the user's mailbox actor, start its stream after the auth
    frame's `since` (default: the ack cursor) and run its reader and writer."""
    app, user_id = request.app, token.user_id
    config, metrics, storage = app[CONFIG], app[METRICS], app[STORAGE]
    connection = Connection(
        WebSocketTransport(ws, request.protocol, on_sent=metrics.delivery_observer()),
        queue_size=config.actors.socket_queue_size,
        connection_id=new_id("con"),
        backlog=stored_backlog(app, token),
        on_sent=functools.partial(app[CURSORS].sent, user_id, within=token.categories),
        since=None,  # started below, once the user's cursors are read
        visible=frame_filter(token.categories, sees_edits=speaks_edits(auth.protocol)),
    )
    bus, mailboxes = app[BUS], app[MAILBOXES]
    try:
        await bus.watch_user(user_id)
    except BusError:
        await _close(ws, CloseCode.RECONNECT, "bus unavailable")
        return
    metrics.connections.inc({})
    try:
        # Attached (and subscribed) BEFORE the user is read: a notification committed
        # after the read reaches this connection live, and one committed before is
        # below the last_seq read, so the catch-up covers it. The same holds for a token
        # revocation: stored before the read, it is seen here; stored after, its CloseAll
        # reaches the actor behind this Attach. Nothing falls in between.
        await mailboxes.tell(user_id, Attach(connection))
        try:
            found = await read_user(storage, user_id, token.categories)
        except StorageError:
            await _close(ws, CloseCode.RECONNECT, "storage unavailable")
            return
        if found is None:
            await _close(ws, CloseCode.USER_UNKNOWN)
            return
        user, tokens_revoked_before, newest_visible = found
        if token.issued_at_ms <= tokens_revoked_before:
            await _close(ws, CloseCode.TOKEN_REVOKED)
            return
        start_stream(connection, user, auth.since, token.expires_at_ms, newest_visible)
        lifetime = TokenLifetime(connection, token.expires_at_ms)
        lifetime.start()
        connection.write_on_demand()
        try:
            stream = _Stream(user_id, connection, lifetime, token.categories)
            await _read_frames(request, ws, stream)
            connection.close_soon(CloseCode.NORMAL)
            await connection.wait_closed()
        finally:
            lifetime.stop()
            await connection.stop_writing()
    except ActorSystemStoppedError:
        await _close(ws, CloseCode.GOING_AWAY)
    finally:
        metrics.connections.dec({})
        metrics.stream_closed("websocket", connection.close_code)
        connection.close_soon(CloseCode.NORMAL)
        # During shutdown the actor system may already be stopped; its on_stop has
        # then closed this connection anyway.
        with contextlib.suppress(ActorSystemStoppedError):
            await mailboxes.tell(user_id, Detach(connection))
        await bus.unwatch_user(user_id)


async def read_user(
    storage: Storage, user_id: str, categories: tuple[str, ...] | None
) -> tuple[UserRecord, int, int] | None:
    """The user, its token cutoff and the newest seq the token may see: `last_seq`, or
    for a token limited to categories the newest of those (`last_seq` counts the
    notifications of every category, which such a token must not learn)."""
    found = await storage.get_user_and_token_cutoff(user_id)
    if found is None:
        return None
    user, tokens_revoked_before = found
    if categories is None:
        return user, tokens_revoked_before, user.last_seq
    newest = await storage.list_notifications(
        user_id, before_seq=user.last_seq + 1, limit=1, categories=categories
    )
    return user, tokens_revoked_before, newest[0].seq if newest else 0


def start_stream(
    connection: Connection,
    user: UserRecord,
    since: int | None,
    token_expires_at_ms: int,
    newest_visible: int,
) -> None:
    """Welcome first, then the replay after `since` (default: the ack cursor). The
    welcome's figures stop at `newest_visible` (see `read_user`)."""
    start = user.ack_seq if since is None else since
    ahead = start > user.last_seq
    start = min(start, newest_visible)
    welcome = WelcomeFrame(
        user_id=user.id,
        connection_id=connection.connection_id,
        last_seq=newest_visible,
        ack_seq=min(user.ack_seq, newest_visible),
        since=start,
        token_expires_at=from_ms(token_expires_at_ms),
    )
    connection.offer(frame_encoder.encode(welcome))
    if ahead:
        message = f"since is above the newest seq {newest_visible}: the stream starts there"
        connection.offer(_error("since_ahead", message))
    connection.start(start, user.last_seq)


async def websocket(request: web.Request) -> web.StreamResponse:
    """Upgrade, authenticate, then stream the user's notifications until either side closes."""
    max_frame = request.app[CONFIG].limits.ws_max_frame_bytes  # bigger: closed with 1009
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=max_frame)
    await ws.prepare(request)
    sockets = request.app[SOCKETS]
    sockets.add(ws, request.protocol)
    # One frame fewer than a helper coroutine would cost: this one lives as long as the
    # socket, and an idle socket's memory is mostly such frames.
    quota = request.app[LIMITS].sockets
    try:
        authenticated = await _authenticate(request, ws)
        if authenticated is None:
            return ws
        token, auth = authenticated
        # Refuse a socket over the user's quota on this node; serve the others.
        if not quota.acquire(token.user_id):
            cause = f"this user already has {quota.per_user} sockets open on this node"
            await _close(ws, CloseCode.TOO_MANY_CONNECTIONS, cause)
            return ws
        try:
            await _serve(request, ws, token, auth)
        finally:
            quota.release(token.user_id)
    finally:
        sockets.discard(ws)
    return ws
