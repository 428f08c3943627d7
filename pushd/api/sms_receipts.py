"""`POST /api/channels/sms/{provider}/status`: an SMS provider's delivery receipts (Twilio's
status callbacks; docs/channels.md, "Delivery receipts").

No API key: the provider's request signature is the proof. `X-Twilio-Signature` is
checked with the provider's auth token over the URL Twilio called, which is the public
one (`status_callback_url`, else `channels.public_url` + this path): behind a reverse
proxy, the URL the request arrives at differs from what Twilio signed. An unsigned or
wrongly signed callback is a 403 and spends its source's budget of failed
authentications; an unknown provider is a 404.

`delivered` marks the delivery delivered; `undelivered` and `failed` mark it failed
with Twilio's error code; the other statuses (queued, sent, ...) say nothing new.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web
from multidict import MultiDict

from pushd.access.audit_fields import AUDIT_ACTOR, AUDIT_DETAIL
from pushd.api.errors import ApiError, ErrorCode, validation_error
from pushd.api.public_proofs import spend_failed_proof
from pushd.api.route import Reply, Route
from pushd.appkeys import CONFIG, STORAGE
from pushd.channels.sms_twilio import (
    SIGNATURE_HEADER,
    STATUS_CALLBACK_PATH,
    TwilioStatusCallback,
    parse_twilio_status_callback,
    verify_twilio_signature,
    with_status_callback,
)
from pushd.config.settings import ChannelsConfig, TwilioSmsProvider
from pushd.ids import now_ms

RECEIPT_STATUSES: Final = {"delivered": "delivered", "undelivered": "failed", "failed": "failed"}
"""Twilio's final statuses -> the delivery's."""

# Twilio's error codes of undelivered messages (its "Error and Warning Dictionary").
_ERROR_MEANINGS: Final = {
    "30003": "the handset is unreachable (off, or out of coverage)",
    "30004": "the message was blocked (the number blocks it, or is on a blocklist)",
    "30005": "the number is unknown or no longer in service",
    "30006": "the number is a landline or its carrier cannot take SMS",
    "30007": "the carrier filtered the message (looks like spam)",
    "30008": "the carrier reported an unknown error",
}


def _provider(channels: ChannelsConfig, name: str) -> TwilioSmsProvider:
    for provider in channels.sms:
        if isinstance(provider, TwilioSmsProvider) and provider.name == name:
            return provider
    raise ApiError(
        ErrorCode.NOT_FOUND,
        f"no Twilio SMS provider named {name!r} is configured ([[channels.sms]] with "
        'kind = "twilio"); the status callback URL names the provider',
        field="provider",
    )


def _error(callback: TwilioStatusCallback) -> str:
    code = callback.error_code
    if code is None:
        return f"Twilio reported the message {callback.status}"
    meaning = _ERROR_MEANINGS.get(code, "see Twilio's error dictionary")
    return f"Twilio reported the message {callback.status} (error {code}: {meaning})"


async def sms_status_callback(request: web.Request, _body: None, _query: None) -> Reply:
    channels = request.app[CONFIG].channels
    provider = _provider(channels, request.match_info["provider"])
    url = with_status_callback(provider, channels.public_url).status_callback_url
    if not url:
        raise ApiError(
            ErrorCode.NOT_FOUND,
            f"receipts of provider {provider.name!r} are off: set channels.public_url (or "
            "the provider's status_callback_url), the URL Twilio signs",
            field="provider",
        )
    # Every value of a repeated name counts in the signature; a file part is no field.
    form = await request.post()
    fields = MultiDict((name, value) for name, value in form.items() if isinstance(value, str))
    signature = request.headers.get(SIGNATURE_HEADER, "")
    if not signature or not verify_twilio_signature(provider.auth_token, url, fields, signature):
        await spend_failed_proof(request, "signatures")
        raise ApiError(
            ErrorCode.FORBIDDEN,
            f"{SIGNATURE_HEADER} is missing or does not match: the callback was not signed "
            f"by provider {provider.name!r} for {url} (check its auth_token, and that "
            "channels.public_url is the URL Twilio calls)",
        )
    request[AUDIT_ACTOR] = f"provider:sms:{provider.name}"
    try:
        callback = parse_twilio_status_callback(fields)
    except ValueError as exc:
        raise validation_error(str(exc), "MessageStatus") from None
    status = RECEIPT_STATUSES.get(callback.status)
    matched = False
    if status is not None:
        matched = await request.app[STORAGE].record_delivery_receipt(
            provider=provider.name,
            provider_message_id=callback.message_sid,
            status=status,
            at=now_ms(),
            error=None if status == "delivered" else _error(callback),
        )
    request[AUDIT_DETAIL] = {"status": callback.status, "matched": matched}
    return Reply(204)


ROUTES = [
    Route(
        "POST",
        STATUS_CALLBACK_PATH,
        sms_status_callback,
        "An SMS provider's delivery receipt (Twilio status callback)",
        {204: None},
        public=True,
        description="Form-encoded as Twilio sends it (MessageSid, MessageStatus, "
        "ErrorCode, ...). No API key: `X-Twilio-Signature` must sign it with the "
        "provider's auth token over the public URL of this route. `delivered`, "
        "`undelivered` and `failed` update the delivery; other statuses are accepted "
        "and change nothing.",
        errors={
            403: "X-Twilio-Signature is missing or wrong",
            404: "No Twilio provider of that name, or receipts are off",
        },
        headers={SIGNATURE_HEADER: "Twilio's signature of the request"},
        tag="channels",
        action="delivery.receipt",
    ),
]
