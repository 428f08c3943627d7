"""A real SMTP server on loopback (aiosmtpd), for the email tests and benchmark; nothing
leaves the machine.

It runs on the caller's event loop (not aiosmtpd's `Controller`, which runs a loop in a
thread), speaks STARTTLS or implicit TLS when given a certificate, takes AUTH PLAIN and
LOGIN against one username and password, and records every message it accepts with the
facts a test checks: envelope, whether the session authenticated and used TLS, and the
message parsed with the standard library's `policy.default`.

`refuse(command, reply)` makes it answer the next MAIL, RCPT or DATA with `reply`
instead; `connections` and `quits` count sessions opened and QUITs received; `restart()`
drops every session and listens again on the same port, as a restarted relay would.

Bench mode (`python -m tests.channels.smtp_server --bench`): accepts every message
without parsing it, prints {"port": N}, answers each line on stdin with
{"received": N, "connections": N} and serves until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
from collections import defaultdict, deque
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

_PARSER = BytesParser(policy=policy.default)


@dataclass(frozen=True)
class Received:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    authenticated: bool
    tls: bool

    def parsed(self) -> EmailMessage:
        """The message as a mail client reads it."""
        message = _PARSER.parsebytes(self.content)
        assert isinstance(message, EmailMessage)
        return message


class RecordingHandler:
    """aiosmtpd handler: records messages, counts QUITs, refuses on demand."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.quits = 0
        self._refusals: defaultdict[str, deque[str]] = defaultdict(deque)
        self.in_data = asyncio.Event()
        """Set when a DATA command arrives, for tests that act in the middle of one."""
        self.hold_data: asyncio.Event | None = None
        """When set to an event, DATA waits for it before answering."""
        self.drop_after_data = False
        """Record the message, then drop the connection instead of answering 250."""

    def refuse(self, command: str, reply: str, times: int = 1) -> None:
        """Answer the next `times` `command`s ("MAIL", "RCPT", "DATA") with `reply`."""
        self._refusals[command].extend([reply] * times)

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self._refusals["MAIL"]:
            return self._refusals["MAIL"].popleft()
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self._refusals["RCPT"]:
            return self._refusals["RCPT"].popleft()
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.in_data.set()
        if self.hold_data is not None:
            await self.hold_data.wait()
        if self._refusals["DATA"]:
            return self._refusals["DATA"].popleft()
        assert isinstance(envelope.content, bytes)
        assert envelope.mail_from is not None
        self.received.append(
            Received(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                content=envelope.content,
                authenticated=bool(session.authenticated),
                tls=_encrypted(server, session),
            )
        )
        if self.drop_after_data:
            assert isinstance(server.transport, asyncio.WriteTransport)
            server.transport.abort()
        return "250 Message accepted"

    async def handle_QUIT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.quits += 1
        return "221 Bye"


def _encrypted(server: SMTP, session: Session) -> bool:
    if session.ssl is not None:  # upgraded with STARTTLS
        return True
    transport = server.transport
    return transport is not None and transport.get_extra_info("sslcontext") is not None


class LocalSmtpServer:
    """aiosmtpd listening on 127.0.0.1 on the running loop.

    `implicit_tls` makes every connection TLS from the first byte (port 465 style);
    `starttls` offers STARTTLS; `credentials` enables AUTH, offered only on an encrypted
    session unless `plain_auth` (acceptable on loopback).
    """

    def __init__(
        self,
        handler: RecordingHandler,
        *,
        implicit_tls: ssl.SSLContext | None = None,
        starttls: ssl.SSLContext | None = None,
        credentials: tuple[str, str] | None = None,
        plain_auth: bool = False,
    ) -> None:
        self.handler = handler
        self.connections = 0
        self.port = 0
        self._implicit_tls = implicit_tls
        self._starttls = starttls
        self._credentials = credentials
        self._plain_auth = plain_auth
        self._server: asyncio.Server | None = None
        self._sessions: set[SMTP] = set()

    async def start(self) -> None:
        """Listen, on the same port as before if there was one."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._session, "127.0.0.1", self.port, ssl=self._implicit_tls
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every session, as a crashed relay would."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for session in list(self._sessions):
            if isinstance(session.transport, asyncio.WriteTransport):
                session.transport.abort()
        # Let the sessions' handler tasks see the lost connections and end.
        for _ in range(3):
            await asyncio.sleep(0)

    async def restart(self) -> None:
        """Drop every session and listen again on the same port."""
        await self.stop()
        await self.start()

    def _session(self) -> SMTP:
        self.connections += 1
        session = _TrackedSMTP(
            self.handler,
            hostname="smtp.pushd.test",
            loop=asyncio.get_running_loop(),
            tls_context=self._starttls,
            require_starttls=self._starttls is not None,
            authenticator=self._authenticate if self._credentials else None,
            # With implicit TLS aiosmtpd cannot tell the session is encrypted; it is.
            auth_require_tls=self._implicit_tls is None and not self._plain_auth,
        )
        session.sessions = self._sessions
        return session

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self._credentials is not None
        username, password = self._credentials
        valid = isinstance(data, LoginPassword) and data == (username.encode(), password.encode())
        return AuthResult(success=valid, handled=False)  # aiosmtpd answers 235 or 535


class _TrackedSMTP(SMTP):
    """An aiosmtpd session that keeps itself in its server's set while connected."""

    sessions: set[SMTP]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self.sessions.discard(self)
        super().connection_lost(error)


async def _bench() -> None:
    handler = _CountingHandler()
    loop = asyncio.get_running_loop()

    def session() -> SMTP:
        handler.connections += 1
        return SMTP(handler, hostname="smtp.pushd.test", loop=loop)

    server = await loop.create_server(session, "127.0.0.1", 0)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.readline():  # any line asks for the counts; EOF: the bench is done
        counts = {"received": handler.received, "connections": handler.connections}
        print(json.dumps(counts), flush=True)
    server.close()


class _CountingHandler:
    def __init__(self) -> None:
        self.received = 0
        self.connections = 0

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.received += 1
        return "250 Message accepted"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bench", action="store_true", required=True)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    options = parser.parse_args()
    if options.uvloop:
        import uvloop

        uvloop.run(_bench())
    else:
        asyncio.run(_bench())


if __name__ == "__main__":
    main()
