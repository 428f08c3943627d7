"""What an HTTP provider's answer means for the channel contract
(actors/channel_sender.py): the one classification every HTTP provider uses (web push
services, FCM and its OAuth token endpoint, APNs, the SMS APIs, webhook endpoints).

The providers agree on the frame: a 2xx is accepted (each reads its own message id from
the answer); 429 and every 5xx are transient, retried no sooner than the answer's
`Retry-After` (seconds or an HTTP date, pushd/channels/retry_after.py); any other status
is permanent. What differs per provider is which answers mean the address itself is dead
(`AddressGoneError`, which removes a device) and what the error tells an operator to do:
a provider states those in its `RefusalHints`, and reads its own error body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from actors.channel_sender import (
    AddressGoneError,
    PermanentSendError,
    SendError,
    TransientSendError,
)
from pushd.channels.retry_after import parse_retry_after

MAX_QUOTED_BYTES = 200
"""How much of an answer's body an error quotes."""


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """A provider's answer: its status, its headers (case-insensitive) and its body,
    or the start of it (pushd/channels/http_client.py bounds what it reads)."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def accepted(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300

    def retry_after(self, now: float | None = None) -> float | None:
        """Seconds from `now` (default: the wall clock) the provider asks to wait."""
        return parse_retry_after(self.headers.get("Retry-After"), now=now)


def is_transient_status(status: int) -> bool:
    """429 (rate-limited) and every 5xx: the provider may take the same request later."""
    return status == 429 or status >= 500


def answered(who: str, answer: HttpAnswer) -> str:
    """ "<who> answered <status>: <start of the body>". The body is where a provider
    explains a refusal; it is quoted short and on one line, as it comes from a server
    pushd does not control."""
    quoted = " ".join(answer.body[:MAX_QUOTED_BYTES].decode("utf-8", "replace").split())
    return f"{who} answered {answer.status}" + (f": {quoted}" if quoted else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class RefusalHints:
    """What one provider's errors tell an operator, after what the provider answered.

    A hint left None does not apply to the provider: its answers fall to `refused`
    (e.g. an SMS provider has no `gone`: a phone number belongs to the user's profile,
    which a failed send must not remove).
    """

    transient: str
    """For 429 and 5xx."""
    refused: str
    """For any other refusal that no more specific hint covers."""
    gone: str | None = None
    """For an answer that says the address is dead: a status in `gone_statuses`, or
    what the provider's body says (`refusal_error(gone=True)`)."""
    gone_statuses: frozenset[int] = frozenset()
    by_status: Mapping[int, str] = field(default_factory=dict)
    """For particular permanent statuses (413 payload too large, ...)."""
    redirect: str | None = None
    """For 3xx: pushd never follows a redirect."""
    credentials: str | None = None
    """For 401 and 403."""

    def permanent(self, status: int, hint: str | None) -> str:
        """The hint of a permanent refusal: the status's own, else the caller's
        `hint` (from the provider's error body), else `refused`."""
        if status in self.by_status:
            return self.by_status[status]
        if self.redirect is not None and 300 <= status < 400:
            return self.redirect
        if self.credentials is not None and status in (401, 403):
            return self.credentials
        return hint or self.refused


def refusal_error(
    answer: HttpAnswer,
    said: str,
    hints: RefusalHints,
    *,
    now: float | None = None,
    provider_code: str | None = None,
    gone: bool = False,
    transient: bool = False,
    hint: str | None = None,
) -> SendError:
    """The `SendError` for an answer the provider did not accept: "<said>; <hint>".

    `said` is what the provider answered (`answered` words it for a provider whose body
    is free text); `provider_code` defaults to the status. `gone` and `transient` add
    what the provider's error body says to what the status says; `hint` is the body's
    own hint for a permanent refusal. `now` dates a Retry-After given as seconds.
    """
    code = provider_code or str(answer.status)
    if hints.gone is not None and (gone or answer.status in hints.gone_statuses):
        return AddressGoneError(f"{said}; {hints.gone}", provider_code=code)
    if transient or is_transient_status(answer.status):
        return TransientSendError(
            f"{said}; {hints.transient}", provider_code=code, retry_after=answer.retry_after(now)
        )
    return PermanentSendError(f"{said}; {hints.permanent(answer.status, hint)}", provider_code=code)
