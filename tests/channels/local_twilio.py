"""A local Twilio Messages API, checking what api.twilio.com checks, and posting signed
status callbacks the way Twilio does.

`POST /2010-04-01/Accounts/{sid}/Messages.json` needs HTTP basic auth with the account
SID and auth token (else 401, code 20003), the SID in the path to be that account, a
form-encoded body with `To` in E.164, `From` or `MessagingServiceSid`, and a `Body` of
at most 1600 characters; it answers 201 with the message resource, or Twilio's error
JSON. A test scripts what a given `To` number gets back (`answers`).

The callback signature is computed here from Twilio's description, independently of
pushd's `twilio_signature`: URL, then each parameter's name and value by name, HMAC-SHA1
keyed with the auth token, base64.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from tests.channels.harness import json_answer

E164 = re.compile(r"\+[1-9][0-9]{7,14}")
MAX_BODY_CHARACTERS = 1600


@dataclass(frozen=True)
class TwilioError:
    """A Twilio refusal, worded as Twilio words it."""

    status: int
    code: int
    message: str
    retry_after: str | None = None

    def response(self) -> web.Response:
        return json_answer(
            {
                "code": self.code,
                "message": self.message,
                "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
                "status": self.status,
            },
            self.status,
            self.retry_after,
        )


UNSUBSCRIBED = TwilioError(400, 21610, "Attempt to send to unsubscribed recipient")
NOT_MOBILE = TwilioError(400, 21614, "'To' number is not a valid mobile number")
TOO_MANY_REQUESTS = TwilioError(429, 20429, "Too Many Requests", retry_after="7")
UNAVAILABLE = TwilioError(503, 20503, "Service Unavailable")


@dataclass
class LocalTwilio:
    """One Twilio account: its SID and auth token, and what it was asked to send."""

    account_sid: str
    auth_token: str
    answers: dict[str, TwilioError] = field(default_factory=dict)
    """What a `To` number gets instead of a 201."""
    sent: list[dict[str, str]] = field(default_factory=list)
    """The form of every accepted message, in order."""
    requests: int = 0
    peers: set[tuple[str, int]] = field(default_factory=set)
    """The client address and port of every request: one per connection."""
    base_url: str = ""
    """Where the API listens, once served."""
    _sids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._create_message)
        return app

    async def _create_message(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.transport is not None:
            self.peers.add(request.transport.get_extra_info("peername")[:2])
        if not self._authenticated(request):
            return TwilioError(401, 20003, "Authenticate").response()
        if request.content_type != "application/x-www-form-urlencoded":
            return TwilioError(400, 20001, "Content-Type must be form-encoded").response()
        form = {name: str(value) for name, value in (await request.post()).items()}
        refusal = self._refusal(form)
        if refusal is not None:
            return refusal.response()
        self.sent.append(form)
        sid = f"SM{next(self._sids):032x}"
        return web.json_response(
            {
                "sid": sid,
                "account_sid": self.account_sid,
                "to": form["To"],
                "from": form.get("From"),
                "messaging_service_sid": form.get("MessagingServiceSid"),
                "body": form["Body"],
                "status": "accepted" if "MessagingServiceSid" in form else "queued",
                "num_segments": "1",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
                "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
            },
            status=201,
        )

    def _authenticated(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            credentials = base64.b64decode(encoded, validate=True).decode()
        except ValueError:
            return False
        login, _, password = credentials.partition(":")
        return (
            scheme.lower() == "basic"
            and login == self.account_sid
            and hmac.compare_digest(password.encode(), self.auth_token.encode())
            and request.match_info["sid"] == self.account_sid
        )

    def _refusal(self, form: dict[str, str]) -> TwilioError | None:
        to = form.get("To", "")
        if not to:
            return TwilioError(400, 21604, "A 'To' phone number is required.")
        if not E164.fullmatch(to):
            return TwilioError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return TwilioError(400, 21603, "A 'From' phone number is required.")
        if not form.get("Body"):
            return TwilioError(400, 21602, "Message body is required.")
        if len(form["Body"]) > MAX_BODY_CHARACTERS:
            return TwilioError(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        return self.answers.get(to)

    async def post_status_callback(
        self, url: str, params: dict[str, str], *, auth_token: str | None = None
    ) -> int:
        """POST a status callback to `url` signed as Twilio signs it (with `auth_token`
        when given, to forge one); the receiver's HTTP status."""
        signed = url + "".join(f"{name}{params[name]}" for name in sorted(params))
        key = (auth_token or self.auth_token).encode()
        signature = base64.b64encode(hmac.new(key, signed.encode(), hashlib.sha1).digest())
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                url, data=params, headers={"X-Twilio-Signature": signature.decode()}
            ) as response,
        ):
            return response.status
