"""Revocations that take effect at once on every node (docs/security.md).

Storage is the truth: a revoked API key is refused by any node that asks storage, and a
user token older than the user's `tokens_revoked_before` is refused at WebSocket auth.
What storage cannot do alone is reach into each node's memory: the API key cache, and
the sockets already open. So the node that revokes also publishes the revocation on the
shared state's `revocations` channel, and every node (itself included) applies it: it
drops the key from its cache, or closes the user's sockets with 4505 "token revoked"
(or 4503 "user unknown" when the user was erased).
"""

from __future__ import annotations

import contextlib
import logging

import msgspec

from actors.runtime import ActorSystem, ActorSystemStoppedError
from actors.transport import CloseCode
from actors.user_mailbox import CloseAll, UserMessage
from pushd.access.api_keys import ApiKeyVerifier
from pushd.state import SharedState, StateError

log = logging.getLogger("pushd.access.revocations")

CHANNEL = "revocations"


class ApiKeyRevoked(msgspec.Struct, frozen=True, tag="api_key"):
    key_id: str


class UserTokensRevoked(msgspec.Struct, frozen=True, tag="user_tokens"):
    user_id: str
    before: int
    """Epoch ms: tokens issued at or before it are revoked."""


class UserErased(msgspec.Struct, frozen=True, tag="user_erased"):
    """The user was erased (GDPR): their sockets close with 4503 "user unknown"."""

    user_id: str


Revocation = ApiKeyRevoked | UserTokensRevoked | UserErased

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Revocation)


def encode_revocation(revocation: Revocation) -> bytes:
    """The message published on `CHANNEL` (also by the CLI, which runs no app)."""
    return _encoder.encode(revocation)


class Revocations:
    """Applies revocations on this node and tells every other node about them.

    Built once the key cache and the mailboxes exist, and subscribed before the shared
    state starts, so that no revocation published after start-up is missed (pushd/app.py).
    """

    def __init__(
        self,
        state: SharedState,
        *,
        api_keys: ApiKeyVerifier,
        mailboxes: ActorSystem[str, UserMessage],
    ) -> None:
        self._state = state
        self._api_keys = api_keys
        self._mailboxes = mailboxes

    def subscribe(self) -> None:
        """Listen for revocations published by any node; call before `state.start()`."""
        self._state.subscribe(CHANNEL, self._on_message)

    async def api_key_revoked(self, key_id: str) -> None:
        """The key was revoked in storage: forget it here, then on every node."""
        await self._apply(ApiKeyRevoked(key_id))
        await self._publish(ApiKeyRevoked(key_id))

    async def user_tokens_revoked(self, user_id: str, before: int) -> None:
        """The user's tokens up to `before` were revoked in storage: close the user's
        sockets here, then on every node."""
        revocation = UserTokensRevoked(user_id, before)
        await self._apply(revocation)
        await self._publish(revocation)

    async def user_erased(self, user_id: str) -> None:
        """The user was erased from storage: close the user's sockets here, then on every
        node. A socket attaching meanwhile needs nothing more: it reads the user after
        attaching (pushd/realtime/ws.py), and finds none; likewise a revoked token."""
        await self._apply(UserErased(user_id))
        await self._publish(UserErased(user_id))

    async def _publish(self, revocation: Revocation) -> None:
        try:
            await self._state.publish(CHANNEL, encode_revocation(revocation))
        except StateError as exc:
            # Storage already holds the revocation, and this node applied it. Elsewhere
            # keys expire from caches within auth.api_key_cache_ttl and new sockets are
            # refused, but sockets already open on other nodes stay open: say so loudly.
            log.warning(
                "revocation %r stored and applied on this node, but not broadcast to the "
                "other nodes (shared state unavailable: %s); sockets open on other nodes "
                "stay open until they reconnect",
                revocation,
                exc,
            )

    async def _on_message(self, message: bytes) -> None:
        try:
            revocation = _decoder.decode(message)
        except msgspec.DecodeError:
            log.warning("ignored a malformed message on the %r channel", CHANNEL)
            return
        await self._apply(revocation)

    async def _apply(self, revocation: Revocation) -> None:
        match revocation:
            case ApiKeyRevoked(key_id=key_id):
                self._api_keys.forget(key_id)
            case UserTokensRevoked(user_id=user_id):
                await self._close_sockets(user_id, CloseAll(CloseCode.TOKEN_REVOKED))
            case UserErased(user_id=user_id):
                await self._close_sockets(
                    user_id, CloseAll(CloseCode.USER_UNKNOWN, "the user was erased")
                )

    async def _close_sockets(self, user_id: str, close: CloseAll) -> None:
        # Only an actor that exists here holds sockets here; telling a missing one would
        # create an actor on every node for nothing.
        if self._mailboxes.get(user_id):
            # Shutting down: the sockets are being closed anyway.
            with contextlib.suppress(ActorSystemStoppedError):
                await self._mailboxes.tell(user_id, close)
