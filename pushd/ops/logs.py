"""How pushd writes its log: one line per record, as text or as JSON (`log.format`).

A JSON line carries `time` (RFC 3339, UTC, milliseconds), `level`, `logger`, `message`,
then, when known, `request_id` (the HTTP request being served: pushd/api/request_ids.py),
`notification_id` (the notification being accepted or delivered), `node_id` (this
process), and `exc` (the traceback of a logged exception).

Secrets are kept out of the log where they are handled: nothing logs request headers,
tokens, provider settings or storage/bus URLs with their credentials. `scrub` is the
backstop for what slips through anyway (an exception text quoting a URL, an access-log
line with an unsubscribe token): it masks credentials in URLs, bearer tokens, API keys,
user tokens, `token=` query parameters, e-mail addresses and phone numbers.
"""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Final, Literal

import msgspec

LogFormat = Literal["text", "json"]

request_id: ContextVar[str | None] = ContextVar("pushd_request_id", default=None)
"""The id of the HTTP request the running task serves (set by the request-id middleware;
aiohttp runs each request in a task of its own, so it never leaks to the next one)."""

notification_id: ContextVar[str | None] = ContextVar("pushd_notification_id", default=None)
"""The notification the running task is accepting; a record may also name one with
`extra={"notification_id": ...}` (the channel dispatcher does, per attempt)."""

# scheme://user:password@host -> scheme://user:***@host (storage, bus, state URLs)
_URL_PASSWORD: Final = (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@"), r"\1***@")
# The order matters: a URL's credentials go before the e-mail pattern could take
# `user:pw@host` for an address.
_SCRUBBERS: Final = (
    _URL_PASSWORD,
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 ***"),
    (re.compile(r"\bpk_[A-Za-z0-9_-]{8,}"), "pk_***"),
    # Signed user tokens and JWTs: base64url JSON header, `eyJ...`.
    (re.compile(r"\beyJ[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)+"), "<token>"),
    (re.compile(r"(?i)([?&](?:token|access_token|key|signature|sig)=)[^&\s\"']+"), r"\1***"),
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"), "<email>"),
    (re.compile(r"(?<![\w+])\+[1-9]\d{6,14}\b"), "<phone>"),
)


def without_url_password(text: str) -> str:
    """`text` with the password of every `scheme://user:password@host` masked."""
    pattern, replacement = _URL_PASSWORD
    return pattern.sub(replacement, text)


def scrub(text: str) -> str:
    """`text` with credentials, tokens, keys, e-mail addresses and phone numbers masked."""
    for pattern, replacement in _SCRUBBERS:
        text = pattern.sub(replacement, text)
    return text


class JsonLine(msgspec.Struct, omit_defaults=True):
    """One JSON log line; the optional fields are left out when unknown."""

    time: str
    level: str
    logger: str
    message: str
    request_id: str | None = None
    notification_id: str | None = None
    node_id: str | None = None
    exc: str | None = None


_encoder = msgspec.json.Encoder()


def _rfc3339(created: float) -> str:
    moment = datetime.fromtimestamp(created, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _context_id(record: logging.LogRecord, name: str, var: ContextVar[str | None]) -> str | None:
    given = getattr(record, name, None)
    return str(given) if given is not None else var.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per record (`JsonLine`), scrubbed; `node_id` on every line."""

    def __init__(self, node_id: str | None = None) -> None:
        super().__init__()
        self._node_id = node_id or None

    def format(self, record: logging.LogRecord) -> str:
        exc = None
        if record.exc_info:
            exc = scrub(self.formatException(record.exc_info))
        elif record.exc_text:
            exc = scrub(record.exc_text)
        line = JsonLine(
            time=_rfc3339(record.created),
            level=record.levelname.lower(),
            logger=record.name,
            message=scrub(record.getMessage()),
            request_id=_context_id(record, "request_id", request_id),
            notification_id=_context_id(record, "notification_id", notification_id),
            node_id=self._node_id,
            exc=exc,
        )
        return _encoder.encode(line).decode()


class TextFormatter(logging.Formatter):
    """`time level logger: message [request=… notification=…]`, scrubbed."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = [
            f"{label}={value}"
            for label, value in (
                ("request", _context_id(record, "request_id", request_id)),
                ("notification", _context_id(record, "notification_id", notification_id)),
            )
            if value is not None
        ]
        if ids:
            first, newline, rest = text.partition("\n")
            text = f"{first} [{' '.join(ids)}]{newline}{rest}"
        return scrub(text)


def formatter(log_format: LogFormat, node_id: str | None = None) -> logging.Formatter:
    """The formatter of `log.format`."""
    return JsonFormatter(node_id) if log_format == "json" else TextFormatter()


def configure(level: str, log_format: LogFormat, node_id: str | None = None) -> None:
    """Send the root logger's records to stderr in `log_format`, once, at start-up
    (replaces the handlers a previous call installed)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format, node_id))
    root = logging.getLogger()
    for previous in root.handlers[:]:
        root.removeHandler(previous)
    root.addHandler(handler)
    root.setLevel(level.upper())
