"""The SMTP provider (pushd/channels/smtp.py) against a real SMTP server, aiosmtpd on
loopback (tests/channels/smtp_server.py): the message is checked as a mail client parses
it, not as a string."""

from __future__ import annotations

import asyncio
import datetime
import html
import re
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest

from actors.channel_sender import (
    ChannelMessage,
    ChannelSender,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from pushd.channels.smtp import SmtpProviderConfig, SmtpSender
from pushd.channels.unsubscribe import PreferenceLinks, UnsubscribeLinks
from pushd.config.settings import ConfigError
from tests.channels.harness import TlsFiles, self_signed_tls
from tests.channels.smtp_server import LocalSmtpServer, RecordingHandler

USERNAME = "pushd-relay"
PASSWORD = "correct horse battery staple"
LINKS = UnsubscribeLinks(b"unsubscribe-secret-for-tests-0123456789", "https://pushd.test/u")
PREFERENCE_LINKS = PreferenceLinks(
    b"unsubscribe-secret-for-tests-0123456789", "https://pushd.test/preferences"
)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return self_signed_tls(tmp_path_factory.mktemp("smtp-tls"), "pushd test relay")


@pytest.fixture
def server_tls(certificate: TlsFiles) -> ssl.SSLContext:
    return certificate.server_context()  # loads files: a sync fixture, off the loop


@pytest.fixture
async def servers() -> AsyncIterator[Callable[..., Any]]:
    """Starts local SMTP servers; stops them all at the end."""
    started: list[LocalSmtpServer] = []

    async def start(**options: Any) -> LocalSmtpServer:
        server = LocalSmtpServer(RecordingHandler(), **options)
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def server(servers: Callable[..., Any]) -> LocalSmtpServer:
    started: LocalSmtpServer = await servers()
    return started


@pytest.fixture
async def senders() -> AsyncIterator[Callable[..., SmtpSender]]:
    """Makes senders for a server; closes them all at the end."""
    async with AsyncExitStack() as stack:

        def make(
            server: LocalSmtpServer,
            unsubscribe_url: Callable[[str, str], str] | None = LINKS.url,
            preferences_url: Callable[[str], str] | None = None,
            **overrides: Any,
        ) -> SmtpSender:
            config = SmtpProviderConfig(
                name="test-relay",
                host="127.0.0.1",
                port=server.port,
                security="none",
                from_address="alerts@pushd.test",
                from_name="Pushd Alerts",
                reply_to="Support <help@pushd.test>",
                timeout=5.0,
                pool_size=2,
            )
            sender = SmtpSender(
                msgspec.structs.replace(config, **overrides),
                unsubscribe_url=unsubscribe_url,
                preferences_url=preferences_url,
            )
            stack.push_async_callback(sender.aclose)
            return sender

        yield make


def mail(**overrides: Any) -> ChannelMessage:
    message = ChannelMessage(
        delivery_id="delivery-1",
        notification_id="notification-1",
        user_id="user-42",
        channel="email",
        address={"email": "ada@example.test"},
        title="Build #7 finished",
        body="Your build passed.\nAll 132 tests green.\n\nSee you soon <3 & bye",
        category="builds",
    )
    return replace(message, **overrides)


def test_the_sender_is_a_channel_sender(
    server: LocalSmtpServer, senders: Callable[..., SmtpSender]
) -> None:
    sender: ChannelSender = senders(server)
    assert (sender.channel, sender.provider) == ("email", "test-relay")


# The message


async def test_message_is_multipart_alternative_with_every_header(
    server: LocalSmtpServer, senders: Callable[..., SmtpSender]
) -> None:
    receipt = await senders(server).send(mail())

    [received] = server.handler.received
    assert received.mail_from == "alerts@pushd.test"
    assert received.rcpt_tos == ["ada@example.test"]
    parsed = received.parsed()
    assert parsed.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in parsed.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    assert parsed["Subject"] == "Build #7 finished"
    assert parsed["From"].addresses[0].display_name == "Pushd Alerts"
    assert parsed["From"].addresses[0].addr_spec == "alerts@pushd.test"
    assert str(parsed["Reply-To"]) == "Support <help@pushd.test>"
    assert str(parsed["To"]) == "ada@example.test"
    assert parsed["Message-ID"] == receipt.provider_message_id
    assert receipt.provider_message_id is not None
    assert receipt.provider_message_id.endswith("@pushd.test>")
    sent_at = parsedate_to_datetime(parsed["Date"])
    assert abs(sent_at - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(minutes=1)
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert not parsed.defects


async def test_list_unsubscribe_link_verifies_back_to_user_and_category(
    server: LocalSmtpServer, senders: Callable[..., SmtpSender]
) -> None:
    """The URL is one unbroken header value: refolded by the stock policy it would turn
    into RFC 2047 encoded words, which no mail client reads as a link."""
    await senders(server).send(mail(user_id="user-with-a-rather-long-identifier-0123456789"))

    received = server.handler.received[0]
    header = str(received.parsed()["List-Unsubscribe"])
    assert header.startswith("<https://pushd.test/u?token=")
    assert header.endswith(">")
    # Python's parser would decode encoded words back to the URL; mail clients do not.
    assert f"List-Unsubscribe: {header}\r\n".encode() in received.content
    [token] = parse_qs(urlsplit(header[1:-1]).query)["token"]
    assert LINKS.verify(token) == ("user-with-a-rather-long-identifier-0123456789", "builds")


@pytest.mark.parametrize(
    ("category", "with_links"),
    [pytest.param(None, True, id="no-category"), pytest.param("builds", False, id="no-links")],
)
async def test_no_list_unsubscribe_without_category_or_links(
    server: LocalSmtpServer,
    senders: Callable[..., SmtpSender],
    category: str | None,
    with_links: bool,
) -> None:
    sender = senders(server, unsubscribe_url=LINKS.url if with_links else None)
    await sender.send(mail(category=category))

    parsed = server.handler.received[0].parsed()
    assert "List-Unsubscribe" not in parsed
    assert "List-Unsubscribe-Post" not in parsed


def body_of(message: EmailMessage, subtype: str) -> str:
    part = message.get_body((subtype,))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


async def test_footer_links_the_users_preference_center_in_both_parts(
    server: LocalSmtpServer, senders: Callable[..., SmtpSender]
) -> None:
    given_page = "<html><body><p>Hello</p></body></html>"
    sender = senders(server, preferences_url=PREFERENCE_LINKS.url)
    await sender.send(mail())
    await sender.send(mail(content={"html": given_page, "text": "Hello"}))

    for received in server.handler.received:
        parsed = received.parsed()
        text = body_of(parsed, "plain")
        page = body_of(parsed, "html")
        [text_url] = re.findall(r"Manage notification preferences: (\S+)", text)
        [page_url] = re.findall(r'<a href="([^"]+)">Manage notification preferences</a>', page)
        assert text_url == html.unescape(page_url)
        assert text_url.startswith("https://pushd.test/preferences#token=")
        assert PREFERENCE_LINKS.verify(text_url.partition("#token=")[2]) == "user-42"
        # Inside the page's body, not after the document.
        assert page.rstrip().endswith("</html>")


async def test_no_footer_link_without_preference_links(
    server: LocalSmtpServer, senders: Callable[..., SmtpSender]
) -> None:
    await senders(server).send(mail())

    parsed = server.handler.received[0].parsed()
    assert "Manage notification preferences" not in body_of(parsed, "plain")
    assert "Manage notification preferences" not in body_of(parsed, "html")


async def test_text_and_html_derive_from_title_and_body(
    server: LocalSmtpServer, senders: Callable[..., SmtpSender]
) -> None:
    message = mail()
    await senders(server).send(message)

    parsed = server.handler.received[0].parsed()
    assert body_of(parsed, "plain").replace("\r\n", "\n") == message.body
    page = body_of(parsed, "html").replace("\r\n", "\n")
    assert "<title>Build #7 finished</title>" in page
    assert "<p>Your build passed.<br>\nAll 132 tests green.</p>" in page
    assert "<p>See you soon &lt;3 &amp; bye</p>" in page


async def test_given_email_content_wins_and_non_ascii_survives(
    server: LocalSmtpServer, senders: Callable[..., SmtpSender]
) -> None:
    content = {
        "subject": "Votre reçu — 12 € ✓",
        "text": "Merci ! Reçu n° 12.",
        "html": "<p>Merci&nbsp;! <b>Reçu</b> n° 12 — 日本語</p>",
    }
    await senders(server, from_name="Équipe Pushd").send(mail(content=content))

    received = server.handler.received[0]
    assert received.content.isascii(), "the message must not need 8BITMIME"
    parsed = received.parsed()
    assert parsed["Subject"] == content["subject"]
    assert parsed["From"].addresses[0].display_name == "Équipe Pushd"
    assert body_of(parsed, "plain").rstrip("\r\n") == content["text"]
    assert body_of(parsed, "html").rstrip("\r\n") == content["html"]


async def test_long_lines_and_leading_dots_arrive_intact(
    server: LocalSmtpServer, senders: Callable[..., SmtpSender]
) -> None:
    """Quoted-printable soft line breaks and SMTP dot-stuffing must both be undone."""
    body = "x" * 500 + "\n.\n..hidden line\n.leading dot\ntrailing space \nend"
    title = "multi\nline\r\n title " + "and a subject too long for one header line " * 3
    await senders(server).send(mail(body=body, title=title))

    parsed = server.handler.received[0].parsed()
    assert body_of(parsed, "plain").replace("\r\n", "\n").rstrip("\n") == body
    assert parsed["Subject"] == " ".join(title.split())
    assert all(len(line) <= 998 for line in server.handler.received[0].content.split(b"\r\n"))


async def test_every_message_has_its_own_message_id(
    server: LocalSmtpServer, senders: Callable[..., SmtpSender]
) -> None:
    sender = senders(server, message_id_domain="mail.pushd.test")
    receipts = [await sender.send(mail()) for _ in range(3)]

    ids = [received.parsed()["Message-ID"] for received in server.handler.received]
    assert ids == [receipt.provider_message_id for receipt in receipts]
    assert len(set(ids)) == 3
    assert all(message_id.endswith("@mail.pushd.test>") for message_id in ids)


@pytest.mark.parametrize(
    "address",
    [
        pytest.param({}, id="missing"),
        pytest.param({"email": "  "}, id="blank"),
        pytest.param({"email": "not-an-address"}, id="no-domain"),
        pytest.param({"email": "ada@example.test, eve@example.test"}, id="two"),
        pytest.param({"email": "ada@example.test\r\nBcc: eve@example.test"}, id="header-injection"),
        pytest.param({"email": "ada@exämple.test"}, id="non-ascii"),
    ],
)
async def test_missing_or_malformed_address_is_permanent(
    server: LocalSmtpServer, senders: Callable[..., SmtpSender], address: dict[str, str]
) -> None:
    with pytest.raises(PermanentSendError):
        await senders(server).send(mail(address=address))
    assert server.connections == 0


# TLS and AUTH


async def test_starttls_then_auth(
    servers: Callable[..., Any],
    senders: Callable[..., SmtpSender],
    server_tls: ssl.SSLContext,
    certificate: TlsFiles,
) -> None:
    """The relay offers AUTH only after STARTTLS (aiosmtpd's auth_require_tls)."""
    relay: LocalSmtpServer = await servers(starttls=server_tls, credentials=(USERNAME, PASSWORD))
    sender = senders(
        relay,
        security="starttls",
        ca_file=str(certificate.cert),
        username=USERNAME,
        password=PASSWORD,
    )
    await sender.send(mail())

    [received] = relay.handler.received
    assert (received.tls, received.authenticated) == (True, True)


async def test_implicit_tls_then_auth(
    servers: Callable[..., Any],
    senders: Callable[..., SmtpSender],
    server_tls: ssl.SSLContext,
    certificate: TlsFiles,
) -> None:
    relay: LocalSmtpServer = await servers(
        implicit_tls=server_tls, credentials=(USERNAME, PASSWORD)
    )
    sender = senders(
        relay,
        security="tls",
        ca_file=str(certificate.cert),
        username=USERNAME,
        password=PASSWORD,
    )
    await sender.send(mail())

    [received] = relay.handler.received
    assert (received.tls, received.authenticated) == (True, True)


async def test_plain_auth_on_loopback(
    servers: Callable[..., Any], senders: Callable[..., SmtpSender]
) -> None:
    relay: LocalSmtpServer = await servers(credentials=(USERNAME, PASSWORD), plain_auth=True)
    await senders(relay, username=USERNAME, password=PASSWORD).send(mail())

    [received] = relay.handler.received
    assert (received.tls, received.authenticated) == (False, True)


async def test_wrong_password_is_permanent_and_names_the_configuration(
    servers: Callable[..., Any], senders: Callable[..., SmtpSender]
) -> None:
    relay: LocalSmtpServer = await servers(credentials=(USERNAME, PASSWORD), plain_auth=True)
    sender = senders(relay, username=USERNAME, password="wrong")

    with pytest.raises(PermanentSendError, match="username or password") as caught:
        await sender.send(mail())
    assert caught.value.provider_code == "535"
    assert relay.handler.received == []


async def test_untrusted_certificate_is_transient_and_names_ca_file(
    servers: Callable[..., Any], senders: Callable[..., SmtpSender], server_tls: ssl.SSLContext
) -> None:
    relay: LocalSmtpServer = await servers(starttls=server_tls)

    with pytest.raises(TransientSendError, match="ca_file"):
        await senders(relay, security="starttls").send(mail())
    assert relay.handler.received == []


async def test_unvalidated_certificate_when_configured_so(
    servers: Callable[..., Any], senders: Callable[..., SmtpSender], server_tls: ssl.SSLContext
) -> None:
    relay: LocalSmtpServer = await servers(implicit_tls=server_tls)
    await senders(relay, security="tls", validate_certs=False).send(mail())

    [received] = relay.handler.received
    assert received.tls


async def test_starttls_required_but_not_offered_is_permanent(
    server: LocalSmtpServer, senders: Callable[..., SmtpSender]
) -> None:
    """security=starttls never falls back to plain text."""
    with pytest.raises(PermanentSendError, match="STARTTLS"):
        await senders(server, security="starttls").send(mail())
    assert server.handler.received == []


# Refusals and failures


@pytest.mark.parametrize(
    ("command", "reply", "error"),
    [
        ("MAIL", "451 4.3.0 Try again later", TransientSendError),
        ("RCPT", "450 4.2.0 Greylisted, come back in 5 minutes", TransientSendError),
        ("DATA", "451 4.7.1 Local error in processing", TransientSendError),
        ("RCPT", "550 5.1.1 Mailbox unavailable", PermanentSendError),
        ("RCPT", "553 5.1.3 Bad destination mailbox address syntax", PermanentSendError),
        ("MAIL", "550 5.7.1 Sender not allowed", PermanentSendError),
        ("DATA", "554 5.7.1 Message rejected as spam", PermanentSendError),
    ],
)
async def test_reply_codes_classify_and_the_session_survives(
    server: LocalSmtpServer,
    senders: Callable[..., SmtpSender],
    command: str,
    reply: str,
    error: type[SendError],
) -> None:
    sender = senders(server)
    server.handler.refuse(command, reply)

    with pytest.raises(SendError) as caught:
        await sender.send(mail())
    assert type(caught.value) is error
    assert caught.value.provider_code == reply[:3]
    assert reply[4:] in str(caught.value)

    await sender.send(mail())
    assert len(server.handler.received) == 1
    assert server.connections == 1, "a refusal resets the transaction, not the session"


async def test_421_on_a_fresh_session_is_transient(
    server: LocalSmtpServer, senders: Callable[..., SmtpSender]
) -> None:
    server.handler.refuse("MAIL", "421 4.3.2 Service shutting down")

    with pytest.raises(TransientSendError) as caught:
        await senders(server).send(mail())
    assert caught.value.provider_code == "421"


async def test_connection_refused_is_transient(
    servers: Callable[..., Any], senders: Callable[..., SmtpSender]
) -> None:
    relay: LocalSmtpServer = await servers()
    await relay.stop()

    with pytest.raises(TransientSendError, match="test-relay"):
        await senders(relay).send(mail())


async def test_silent_server_is_a_transient_timeout(senders: Callable[..., SmtpSender]) -> None:
    """A server that accepts the connection and never greets."""
    loop = asyncio.get_running_loop()
    silent = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    relay = LocalSmtpServer(RecordingHandler())
    relay.port = silent.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TransientSendError, match=r"no answer within 0\.3 s"):
            await senders(relay, timeout=0.3).send(mail())
    finally:
        silent.close()
        await silent.wait_closed()


# Connection reuse


async def test_sends_reuse_few_sessions(
    server: LocalSmtpServer, senders: Callable[..., SmtpSender]
) -> None:
    sender = senders(server, pool_size=3)
    for _ in range(10):
        await sender.send(mail())
    assert server.connections == 1

    async with asyncio.TaskGroup() as group:
        for index in range(60):
            group.create_task(sender.send(mail(address={"email": f"user{index}@example.test"})))

    assert len(server.handler.received) == 70
    assert server.connections <= 3
    recipients = {received.rcpt_tos[0] for received in server.handler.received}
    assert recipients >= {f"user{index}@example.test" for index in range(60)}


async def test_reconnects_after_the_server_restarts(
    server: LocalSmtpServer, senders: Callable[..., SmtpSender]
) -> None:
    sender = senders(server)
    await sender.send(mail())
    await server.restart()

    await sender.send(mail())
    await server.restart()
    await asyncio.sleep(0.05)  # this time the client sees the close before the next send
    await sender.send(mail())

    assert len(server.handler.received) == 3
    assert server.connections == 3


async def test_a_session_closed_while_idle_is_replaced_before_data(
    server: LocalSmtpServer, senders: Callable[..., SmtpSender]
) -> None:
    """A relay that ends a session with 421 (idle timeout, too many messages) refused
    nothing: the message goes out on a new session instead of failing."""
    sender = senders(server)
    await sender.send(mail())
    server.handler.refuse("MAIL", "421 4.4.2 Idle timeout, closing connection")

    receipt = await sender.send(mail())

    assert [received.parsed()["Message-ID"] for received in server.handler.received][1] == (
        receipt.provider_message_id
    )
    assert server.connections == 2


async def test_a_connection_lost_after_data_is_not_retried(
    server: LocalSmtpServer, senders: Callable[..., SmtpSender]
) -> None:
    """The relay may have the message already: retrying here would send it twice."""
    sender = senders(server)
    await sender.send(mail())
    server.handler.drop_after_data = True

    with pytest.raises(TransientSendError):
        await sender.send(mail())

    assert len(server.handler.received) == 2


async def test_a_cancelled_send_frees_its_slot_and_closes_its_session(
    server: LocalSmtpServer, senders: Callable[..., SmtpSender]
) -> None:
    """A session cancelled mid-DATA has a reply in flight; reused, it would pair that
    reply with the next command."""
    sender = senders(server, pool_size=1)
    server.handler.hold_data = asyncio.Event()
    sending = asyncio.create_task(sender.send(mail(title="cancelled")))
    await server.handler.in_data.wait()
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    server.handler.hold_data.set()

    receipt = await asyncio.wait_for(sender.send(mail(title="after")), timeout=5)

    last = server.handler.received[-1].parsed()
    assert (last["Subject"], last["Message-ID"]) == ("after", receipt.provider_message_id)
    assert server.connections == 2


async def test_aclose_quits_every_session_and_is_idempotent(
    server: LocalSmtpServer, senders: Callable[..., SmtpSender]
) -> None:
    sender = senders(server, pool_size=2)
    async with asyncio.TaskGroup() as group:
        for _ in range(2):
            group.create_task(sender.send(mail()))
    assert server.connections == 2

    await sender.aclose()
    await sender.aclose()

    assert server.handler.quits == 2
    with pytest.raises(RuntimeError, match="closed"):
        await sender.send(mail())


# Configuration


def test_config_rejects_unknown_keys_and_defaults_the_port() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field `passwd`"):
        msgspec.convert(
            {"name": "relay", "from_address": "a@pushd.test", "passwd": "x"},
            SmtpProviderConfig,
        )
    config = msgspec.convert(
        {"name": "relay", "from_address": "a@pushd.test", "security": "tls"}, SmtpProviderConfig
    )
    assert (config.port, config.pool_size, config.validate_certs) == (0, 4, True)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"from_address": "not an address"}, "from_address"),
        ({"from_address": "alerts@exämple.test"}, "from_address must be ASCII"),
        ({"reply_to": "<<nope"}, "reply_to"),
        ({"message_id_domain": "bad domain"}, "message_id_domain"),
        ({"ca_file": "/nonexistent/ca.pem"}, "is not a file"),
        ({"ca_file": "/etc/hosts", "validate_certs": False}, "validate_certs is false"),
    ],
)
def test_config_errors_name_the_key(overrides: dict[str, Any], problem: str) -> None:
    config = SmtpProviderConfig(name="relay", from_address="alerts@pushd.test")
    with pytest.raises(ConfigError, match=f"`relay`.*{problem}"):
        SmtpSender(msgspec.structs.replace(config, **overrides))
