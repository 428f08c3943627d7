"""Email over SMTP: one `ChannelSender` per configured relay.

The SMTP client is aiosmtplib (asyncio; STARTTLS, implicit TLS, AUTH, SIZE, dot-stuffing,
RSET after a refusal); the message is built with the standard library's `email` package.

Connections: a sender keeps up to `pool_size` authenticated sessions open and runs one
transaction at a time on each, so that a message costs MAIL, RCPT and DATA, not a TCP
and TLS handshake and a login. A session the server dropped while it sat idle (a
restart, an idle timeout, a 421 "too many messages") is noticed on its next use, before
DATA, and the message goes out on a new session; a failure after DATA is never retried
here, because the server may already have taken the message.

Errors, as the worker needs them (`actors.channel_sender`):

- a 4xx reply, a lost connection, a timeout, an untrusted server certificate:
  `TransientSendError` (the circuit breaker moves traffic to the next relay meanwhile);
- a 5xx reply (550 mailbox unavailable, 553, 554), a refused recipient, a malformed or
  missing address: `PermanentSendError`;
- a refused login (535) or a server without the STARTTLS or AUTH the configuration asks
  for: `PermanentSendError` whose message says the configuration is wrong.

Speed: the general path of the `email` package (`set_content`, a header parsed on every
assignment and again on every read) costs about 1.5 ms a message, more than the SMTP
exchange. This module's message has one fixed shape, so it builds each header class once,
stores the headers it has encoded itself (and a short plain-ASCII subject) with `set_raw`,
shares part headers built once and quoted-printable-encodes the bodies with `quopri`:
about 0.3 ms.
"""

from __future__ import annotations

import asyncio
import html
import logging
import quopri
import re
import secrets
import ssl
from collections.abc import Awaitable, Callable
from email.errors import MessageError
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Literal

import aiosmtplib
import msgspec
from aiosmtplib.typing import Default

from actors.channel_sender import (
    ChannelMessage,
    PermanentSendError,
    SendError,
    SendReceipt,
    TransientSendError,
)
from pushd.config.types import ConfigError, Port, Positive, PositiveFloat

_log = logging.getLogger(__name__)

DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
QUIT_TIMEOUT_SECONDS = 2.0
"""How long `aclose` waits for each session's QUIT: shutdown must not hang on a slow relay."""
MAX_UNSUBSCRIBE_URL_LENGTH = 900
"""The URL goes unfolded on one header line, which RFC 5322 caps at 998 characters."""
SHORT_SUBJECT = 68
"""A plain ASCII subject up to this long fits on the header's first line as it is."""
_HEADER_SAFE_URL = re.compile(r"[\x21-\x3b=\x3f-\x7e]+")
"""Printable ASCII without space, `<` and `>`: what fits between the header's brackets."""
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


class SmtpProviderConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One SMTP relay."""

    name: str
    host: str = "localhost"
    port: Port = 0
    """0: the standard port of `security` (587 starttls, 465 tls, 25 none)."""
    security: Literal["starttls", "tls", "none"] = "starttls"
    """starttls: plain connection upgraded with STARTTLS, refused if the server does not
    offer it; tls: TLS from the first byte (port 465); none: no TLS (loopback relays)."""
    username: str = ""
    """Empty: no AUTH."""
    password: str = ""
    from_address: str
    from_name: str = ""
    reply_to: str = ""
    """An address, optionally with a display name (`Support <help@example.com>`)."""
    message_id_domain: str = ""
    """The right-hand side of every Message-ID; empty: the domain of `from_address`."""
    timeout: PositiveFloat = 30.0
    """Seconds for connecting and for each command's reply."""
    pool_size: Positive = 4
    """Sessions kept open; also the most transactions in flight at once."""
    validate_certs: bool = True
    ca_file: str = ""
    """PEM bundle of the CAs to trust instead of the system's (a private relay's CA)."""


class _HeaderClasses(HeaderRegistry):
    """The standard header registry, building each header class once: the stock registry
    creates a new class (a `type()` call, about 20 µs) on every lookup, many times per
    message."""

    def __init__(self) -> None:
        super().__init__()
        self._built: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        built = self._built.get(key)
        if built is None:
            built = self._built[key] = super().__getitem__(name)
        return built


# cte_type="7bit": the bodies are quoted-printable, so no server needs 8BITMIME.
# refold_source="none": the raw headers are encoded already, and refolding a long
# List-Unsubscribe URL would turn it into RFC 2047 words no mail client reads as a URL.
_POLICY = SMTP.clone(header_factory=_HeaderClasses(), cte_type="7bit", refold_source="none")
_PLAIN = _POLICY.header_factory("Content-Type", 'text/plain; charset="utf-8"')
_HTML = _POLICY.header_factory("Content-Type", 'text/html; charset="utf-8"')


class SmtpSender:
    """`ChannelSender` for one SMTP relay (channel "email").

    `unsubscribe_url(user_id, category)` (e.g. `UnsubscribeLinks.url`) gives the link put
    in `List-Unsubscribe` with RFC 8058 one-click `List-Unsubscribe-Post`; a message
    without a category, or a sender without it, carries neither header.
    `preferences_url(user_id)` (e.g. `PreferenceLinks.url`) gives the link of the footer
    "Manage notification preferences" added to the text and HTML parts. The configuration
    is checked when the sender is made (`ConfigError` names the key); sessions are opened
    on the first sends.
    """

    def __init__(
        self,
        config: SmtpProviderConfig,
        *,
        unsubscribe_url: Callable[[str, str], str] | None = None,
        preferences_url: Callable[[str], str] | None = None,
    ) -> None:
        self._config = config
        self._composer = _Composer(config, unsubscribe_url, preferences_url)
        if config.ca_file and not config.validate_certs:
            raise _config_error(config, "ca_file is set but validate_certs is false")
        if config.ca_file and not Path(config.ca_file).is_file():
            raise _config_error(config, f"ca_file {config.ca_file!r} is not a file")
        self._port = config.port or DEFAULT_PORTS[config.security]
        self._tls_context: ssl.SSLContext | None = None
        self._pool = _SessionPool(self._open_session, config.pool_size)

    @property
    def channel(self) -> str:
        """Always "email"."""
        return "email"

    @property
    def provider(self) -> str:
        """The relay's configured name."""
        return self._config.name

    async def send(self, message: ChannelMessage) -> SendReceipt:
        """Build the email for `message` and hand it to the relay; the receipt's
        `provider_message_id` is its Message-ID."""
        recipient = _recipient(message)
        message_id, raw = self._composer.compose(message, recipient)
        try:
            await self._pool.transact(self._config.from_address, recipient, raw)
        except (aiosmtplib.SMTPException, OSError) as error:
            raise _send_error(error, self._config) from error
        return SendReceipt(provider_message_id=message_id)

    async def aclose(self) -> None:
        """Say QUIT on every idle session and close it; a session still in a transaction
        is closed when the transaction ends. Idempotent."""
        await self._pool.aclose()

    async def _open_session(self) -> _Session:
        config = self._config
        session = _Session(
            hostname=config.host,
            port=self._port,
            username=config.username or None,
            password=config.password or None,
            timeout=config.timeout,
            use_tls=config.security == "tls",
            start_tls=config.security == "starttls",
            tls_context=await self._tls(),
        )
        await session.connect()
        return session

    async def _tls(self) -> ssl.SSLContext | None:
        if self._config.security == "none":
            return None
        if self._tls_context is None:
            # Loading CA files reads the disk: off the loop. Two first sends racing here
            # build two equal contexts, and one is kept.
            self._tls_context = await asyncio.to_thread(_tls_context, self._config)
        return self._tls_context


class _Session(aiosmtplib.SMTP):
    """One connection of the pool, remembering whether the current transaction reached
    DATA: one that failed before it delivered nothing, and may be retried on a new
    connection without risk of a duplicate."""

    reached_data = False

    async def data(
        self,
        message: str | bytes,
        /,
        *,
        timeout: float | Literal[Default.token] | None = Default.token,  # noqa: ASYNC109 - aiosmtplib's signature
    ) -> aiosmtplib.SMTPResponse:
        self.reached_data = True
        return await super().data(message, timeout=timeout)


_SESSION_ERRORS = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPResponseException)


class _SessionPool:
    """Up to `size` sessions, opened when needed and kept open between transactions.

    `size` bounds the sessions and the transactions in flight; a caller beyond it waits
    for a session. The idle session used last is taken first, so that in a quiet period
    the others stay unused and the server may close them. After success, or a refusal the
    server answered (aiosmtplib has sent RSET), a session goes back to the pool; after
    anything else (a lost connection, a timeout, a cancelled send) its state is unknown
    and it is closed.
    """

    def __init__(self, open_session: Callable[[], Awaitable[_Session]], size: int) -> None:
        self._open_session = open_session
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Session] = []
        self._closed = False

    async def transact(self, sender: str, recipient: str, raw: bytes) -> None:
        """Send one message, on an idle session if there is one."""
        if self._closed:
            raise RuntimeError("the SMTP sender is closed: no send may follow aclose()")
        async with self._slots:
            session = self._take_idle()
            if session is not None:
                try:
                    await self._transact_on(session, sender, recipient, raw)
                except _SESSION_ERRORS as error:
                    if session.reached_data or not _dropped(error):
                        raise
                    _log.debug("SMTP session dropped while idle (%s); using a new one", error)
                else:
                    return
            await self._transact_on(await self._open_session(), sender, recipient, raw)

    async def aclose(self) -> None:
        """Close every idle session politely; later check-ins close theirs."""
        self._closed = True
        idle, self._idle = self._idle, []
        async with asyncio.TaskGroup() as group:
            for session in idle:
                group.create_task(_quit(session))

    async def _transact_on(
        self, session: _Session, sender: str, recipient: str, raw: bytes
    ) -> None:
        session.reached_data = False
        try:
            await session.sendmail(sender, [recipient], raw)
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
            self._check_in(session)
            raise
        except BaseException:
            session.close()
            raise
        self._check_in(session)

    def _take_idle(self) -> _Session | None:
        while self._idle:
            session = self._idle.pop()
            if session.is_connected:
                return session
            session.close()
        return None

    def _check_in(self, session: _Session) -> None:
        if self._closed or not session.is_connected:
            session.close()
        else:
            self._idle.append(session)


class _Composer:
    """Builds the messages of one relay: the headers that never change are encoded once."""

    def __init__(
        self,
        config: SmtpProviderConfig,
        unsubscribe_url: Callable[[str, str], str] | None,
        preferences_url: Callable[[str], str] | None = None,
    ) -> None:
        if not config.from_address.isascii():
            raise _config_error(config, "from_address must be ASCII (no SMTPUTF8 support)")
        try:
            sender = Address(config.from_name, addr_spec=config.from_address)
        except (ValueError, IndexError, MessageError) as error:
            raise _config_error(config, f"from_address is not an email address: {error}") from None
        if config.reply_to and _POLICY.header_factory("Reply-To", config.reply_to).defects:
            raise _config_error(config, f"reply_to {config.reply_to!r} is not an address")
        self._from = _encoded("From", sender)
        self._reply_to = _encoded("Reply-To", config.reply_to) if config.reply_to else None
        self._domain = config.message_id_domain or sender.domain
        if not _DOMAIN.fullmatch(self._domain):
            raise _config_error(config, f"message_id_domain {self._domain!r} is not a domain")
        self._unsubscribe_url = unsubscribe_url
        self._preferences_url = preferences_url

    def compose(self, message: ChannelMessage, recipient: str) -> tuple[str, bytes]:
        """The Message-ID and the bytes of the email for `message`."""
        subject, text, page = _content(message)
        if self._preferences_url is not None:
            text, page = _with_footer(text, page, self._preferences_url(message.user_id))
        message_id = make_msgid(domain=self._domain)
        mail = EmailMessage(policy=_POLICY)
        if subject.isascii() and subject.isprintable() and len(subject) <= SHORT_SUBJECT:
            mail.set_raw("Subject", subject)  # nothing to encode or fold: skip the parser
        else:
            mail["Subject"] = subject
        mail.set_raw("From", self._from)
        mail.set_raw("To", recipient)
        if self._reply_to is not None:
            mail.set_raw("Reply-To", self._reply_to)
        mail.set_raw("Date", formatdate(usegmt=True))
        mail.set_raw("Message-ID", message_id)
        unsubscribe = self._unsubscribe(message)
        if unsubscribe is not None:
            mail.set_raw("List-Unsubscribe", f"<{unsubscribe}>")
            mail.set_raw("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
        mail.set_raw("MIME-Version", "1.0")
        # A random boundary: the generator would otherwise compile a regex per message
        # to find one absent from the bodies; 128 random bits are absent from any body.
        boundary = secrets.token_hex(16)
        mail["Content-Type"] = f'multipart/alternative; boundary="{boundary}"'
        mail.set_payload([_part(_PLAIN, text), _part(_HTML, page)])
        return message_id, mail.as_bytes(policy=_POLICY)

    def _unsubscribe(self, message: ChannelMessage) -> str | None:
        if self._unsubscribe_url is None or message.category is None:
            return None
        url = self._unsubscribe_url(message.user_id, message.category)
        if len(url) > MAX_UNSUBSCRIBE_URL_LENGTH or not _HEADER_SAFE_URL.fullmatch(url):
            raise PermanentSendError(
                f"unsubscribe URL {url[:100]!r} cannot go in a List-Unsubscribe header: it "
                f"must be printable ASCII without spaces or angle brackets, at most "
                f"{MAX_UNSUBSCRIBE_URL_LENGTH} characters"
            )
        return url


def _content(message: ChannelMessage) -> tuple[str, str, str]:
    """Subject, text and HTML: the email content given with the notification, each part
    it lacks derived from the title and body (the HTML from the text, escaped)."""
    subject = " ".join((message.content.get("subject") or message.title or "").split())
    text = message.content.get("text") or message.body or ""
    page = message.content.get("html") or _html_page(subject, text)
    return subject, text, page


FOOTER_LINK_TEXT = "Manage notification preferences"


def _with_footer(text: str, page: str, url: str) -> tuple[str, str]:
    """The text and HTML with the preference center's link at the end (inside the
    body of an HTML page given whole)."""
    footer = f'<p><a href="{html.escape(url, quote=True)}">{FOOTER_LINK_TEXT}</a></p>\n'
    body_end = page.lower().rfind("</body>")
    page = page + footer if body_end < 0 else page[:body_end] + footer + page[body_end:]
    return f"{text}\n\n--\n{FOOTER_LINK_TEXT}: {url}\n", page


def _html_page(subject: str, text: str) -> str:
    paragraphs = "\n".join(
        "<p>" + html.escape(paragraph.strip()).replace("\n", "<br>\n") + "</p>"
        for paragraph in re.split(r"\n\s*\n", text.replace("\r\n", "\n"))
        if paragraph.strip()
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(subject)}</title></head>\n<body>\n{paragraphs}\n</body></html>\n"
    )


def _part(content_type: BaseHeader, body: str) -> EmailMessage:
    part = EmailMessage(policy=_POLICY)
    part["Content-Type"] = content_type
    part.set_raw("Content-Transfer-Encoding", "quoted-printable")  # never read back: raw
    encoded = quopri.encodestring(body.replace("\r\n", "\n").encode("utf-8"))
    part.set_payload(encoded.decode("ascii"))
    return part


def _encoded(name: str, value: object) -> str:
    """`value` as header `name` carries it (RFC 2047 words, folded), for `set_raw`."""
    folded: str = _POLICY.fold(name, _POLICY.header_factory(name, value))
    return folded[len(name) + 2 : -len(_POLICY.linesep)]


def _recipient(message: ChannelMessage) -> str:
    address = message.address.get("email", "").strip()
    if not address:
        raise PermanentSendError(f"delivery {message.delivery_id} has no email address")
    if not address.isascii():
        raise PermanentSendError(
            f"{address!r} is not an ASCII address: internationalised addresses (SMTPUTF8) "
            "are not supported"
        )
    try:
        return Address(addr_spec=address).addr_spec
    except (ValueError, IndexError, MessageError) as error:
        raise PermanentSendError(f"{address!r} is not an email address: {error}") from None


def _tls_context(config: SmtpProviderConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=config.ca_file or None)
    if not config.validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def _quit(session: _Session) -> None:
    try:
        await session.quit(timeout=QUIT_TIMEOUT_SECONDS)
    except (aiosmtplib.SMTPException, OSError):
        pass  # the session is closed below either way; QUIT is only a courtesy
    finally:
        session.close()


def _dropped(error: Exception) -> bool:
    """Whether `error` says the server has closed the session (421: closing channel)."""
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return error.code == 421
    return isinstance(error, aiosmtplib.SMTPServerDisconnected)


_REFUSED = {
    aiosmtplib.SMTPSenderRefused: "the server refused the sender (MAIL FROM)",
    aiosmtplib.SMTPRecipientRefused: "the server refused the recipient",
    aiosmtplib.SMTPDataError: "the server refused the message",
    aiosmtplib.SMTPHeloError: "the server refused EHLO",
    aiosmtplib.SMTPConnectResponseError: "the server refused the connection",
}


def _send_error(error: Exception, config: SmtpProviderConfig) -> SendError:
    """The worker's view of what aiosmtplib raised (the rules are in the module docstring)."""
    relay = f"SMTP provider {config.name!r} ({config.host})"
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        error = error.recipients[0]  # one recipient per message
    match error:
        case aiosmtplib.SMTPAuthenticationError(code=code, message=reply) if code >= 500:
            return PermanentSendError(
                f"{relay} refused the login ({code} {reply}): the username or password "
                "in the provider's configuration is wrong",
                provider_code=str(code),
            )
        case aiosmtplib.SMTPResponseException(code=code, message=reply):
            what = _REFUSED.get(type(error), "the server refused a command")
            kind = PermanentSendError if 500 <= code < 600 else TransientSendError
            return kind(f"{relay}: {what} ({code} {reply})", provider_code=str(code))
        case TimeoutError():
            return TransientSendError(f"{relay}: no answer within {config.timeout} s ({error})")
    certificate = _certificate_error(error)
    if certificate is not None:
        return TransientSendError(
            f"{relay}: the server's TLS certificate is not trusted "
            f"({certificate.verify_message}); set ca_file to the CA that signed it, or "
            "have the relay's certificate fixed"
        )
    if isinstance(error, OSError):  # refused, reset, lost: aiosmtplib's are ConnectionErrors
        return TransientSendError(f"{relay}: {error}")
    problem = str(error).rstrip(".")
    return PermanentSendError(
        f"{relay}: {problem}; the provider's configuration asks for something this server "
        "does not offer (check security, and username for AUTH)"
    )


def _certificate_error(error: BaseException | None) -> ssl.SSLCertVerificationError | None:
    while error is not None:
        if isinstance(error, ssl.SSLCertVerificationError):
            return error
        error = error.__cause__
    return None


def _config_error(config: SmtpProviderConfig, problem: str) -> ConfigError:
    return ConfigError(f"SMTP provider `{config.name}`: {problem}")
