"""`/api/webhooks`: the endpoints applications register for pushd's events (admin only;
docs/channels.md, "Webhooks"). A secret is shown once, when it is made (registration,
rotation); pushd signs every event with the endpoint's secrets (pushd/channels/webhooks.py)
and the sweep of pushd/channels/webhook_events.py disables an endpoint that keeps failing,
with a reason shown here until it is enabled again."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from aiohttp import web

from pushd.access.audit_fields import AUDIT_DETAIL, AUDIT_TARGET
from pushd.access.roles import ADMIN_ONLY
from pushd.api.errors import ApiError, ErrorCode, validation_error
from pushd.api.pagination import PageLimit, fetch_page
from pushd.api.route import Reply, Route
from pushd.appkeys import CONFIG, OUTBOUND_URL_CHECK, STORAGE, WEBHOOKS
from pushd.channels.outbound_url import OutboundUrlError, ResolveFailedError
from pushd.channels.webhooks import new_webhook_secret
from pushd.ids import from_ms, new_id, now_ms, opt_from_ms
from storage.records import (
    NewWebhookEndpoint,
    WebhookEndpointRecord,
    WebhookSecret,
    WebhookSecretState,
)

Meta = msgspec.Meta

EventType = Literal["notification.accepted", "delivery.updated"]
WebhookCursor = Annotated[
    str,
    Meta(pattern=r"^whk_[0-9a-z]{26}$", description="`next_cursor` of the previous page."),
]


class CreateWebhook(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An endpoint to POST events to."""

    url: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=2048,
            description="https:// URL of a public host (`outbound.allow_private` allows "
            "others); checked now and again before every request.",
        ),
    ]
    event_types: Annotated[
        list[EventType],
        Meta(min_length=1, max_length=10, description="The events it receives."),
    ]
    description: Annotated[str, Meta(max_length=200)] | None = None


class WebhookSecretInfo(msgspec.Struct, kw_only=True):
    """A signing secret (never its value, which is shown once)."""

    id: str
    created_at: datetime
    expires_at: Annotated[
        datetime | None,
        Meta(description="When a rotated-out secret stops signing; null: the current one."),
    ]

    @classmethod
    def of(cls, state: WebhookSecretState) -> WebhookSecretInfo:
        return cls(
            id=state.id,
            created_at=from_ms(state.created_at),
            expires_at=opt_from_ms(state.expires_at),
        )


class Webhook(msgspec.Struct, kw_only=True):
    id: str
    url: str
    description: str | None
    event_types: list[str]
    enabled: bool
    disabled_reason: Annotated[
        str | None,
        Meta(description="Why pushd stopped sending to it (410 Gone, too many failures)."),
    ]
    disabled_at: datetime | None
    consecutive_failures: Annotated[
        int, Meta(description="Events failed for good in a row (reset by a success).")
    ]
    created_at: datetime
    updated_at: datetime
    secrets: Annotated[list[WebhookSecretInfo], Meta(description="Signing now, newest first.")]

    @classmethod
    def of(cls, record: WebhookEndpointRecord) -> Webhook:
        return cls(
            id=record.id,
            url=record.url,
            description=record.description,
            event_types=list(record.event_types),
            enabled=record.enabled,
            disabled_reason=record.disabled_reason,
            disabled_at=opt_from_ms(record.disabled_at),
            consecutive_failures=record.consecutive_failures,
            created_at=from_ms(record.created_at),
            updated_at=from_ms(record.updated_at),
            secrets=[WebhookSecretInfo.of(s) for s in record.secrets],
        )


class WebhookWithSecret(msgspec.Struct, kw_only=True):
    secret: Annotated[
        str,
        Meta(
            description="The new signing secret (`whsec_...`): shown this once, give it "
            "to the receiver."
        ),
    ]
    webhook: Webhook


class WebhookPage(msgspec.Struct):
    items: list[Webhook]
    next_cursor: Annotated[str | None, Meta(description="Pass as `cursor` for the next page.")]


class WebhookListQuery(msgspec.Struct):
    limit: PageLimit = 50
    cursor: WebhookCursor | None = None


async def _check_url(request: web.Request, url: str) -> None:
    """422 naming `url` for a URL pushd must not send to (pushd/channels/outbound_url.py):
    the check the sender makes again before each request."""
    try:
        await request.app[OUTBOUND_URL_CHECK](url)
    except OutboundUrlError as exc:
        raise validation_error(f"url refused: {exc}", "url") from None
    except ResolveFailedError as exc:
        raise validation_error(f"url not checked: {exc}; retry later", "url") from None


def _secret(at: int) -> tuple[str, WebhookSecret]:
    value = new_webhook_secret()
    return value, WebhookSecret(id=new_id("whs"), secret=value, created_at=at)


def _not_found(webhook_id: str) -> ApiError:
    return ApiError(ErrorCode.NOT_FOUND, f"no webhook with id {webhook_id!r}", field="webhookId")


async def create_webhook(request: web.Request, body: CreateWebhook, _query: None) -> Reply:
    await _check_url(request, body.url)
    now = now_ms()
    value, secret = _secret(now)
    endpoint = NewWebhookEndpoint(
        id=new_id("whk"),
        url=body.url,
        event_types=tuple(dict.fromkeys(body.event_types)),
        description=body.description,
        secret=secret,
        created_at=now,
    )
    record = await request.app[STORAGE].create_webhook_endpoint(endpoint)
    request.app[WEBHOOKS].forget()
    request[AUDIT_TARGET] = f"webhook:{record.id}"
    request[AUDIT_DETAIL] = {"event_types": list(record.event_types)}
    return Reply(
        201,
        WebhookWithSecret(secret=value, webhook=Webhook.of(record)),
        {"Location": f"/api/webhooks/{record.id}"},
    )


async def list_webhooks(request: web.Request, _body: None, query: WebhookListQuery) -> Reply:
    storage, now = request.app[STORAGE], now_ms()
    page = await fetch_page(
        lambda limit: storage.list_webhook_endpoints(after_id=query.cursor, limit=limit, now=now),
        query.limit,
        key=lambda record: record.id,
    )
    return Reply(200, WebhookPage([Webhook.of(r) for r in page.items], page.next_cursor))


async def get_webhook(request: web.Request, _body: None, _query: None) -> Reply:
    webhook_id = request.match_info["webhookId"]
    record = await request.app[STORAGE].get_webhook_endpoint(webhook_id, now=now_ms())
    if record is None:
        raise _not_found(webhook_id)
    return Reply(200, Webhook.of(record))


async def delete_webhook(request: web.Request, _body: None, _query: None) -> Reply:
    webhook_id = request.match_info["webhookId"]
    request[AUDIT_TARGET] = f"webhook:{webhook_id}"
    if not await request.app[STORAGE].delete_webhook_endpoint(webhook_id):
        raise _not_found(webhook_id)
    request.app[WEBHOOKS].forget()
    return Reply(204)


async def rotate_webhook_secret(request: web.Request, _body: None, _query: None) -> Reply:
    webhook_id = request.match_info["webhookId"]
    request[AUDIT_TARGET] = f"webhook:{webhook_id}"
    now = now_ms()
    overlap_ms = round(request.app[CONFIG].channels.webhook.secret_overlap * 1000)
    value, secret = _secret(now)
    record = await request.app[STORAGE].rotate_webhook_secret(
        webhook_id, secret, previous_valid_until=now + overlap_ms
    )
    if record is None:
        raise _not_found(webhook_id)
    return Reply(200, WebhookWithSecret(secret=value, webhook=Webhook.of(record)))


async def enable_webhook(request: web.Request, _body: None, _query: None) -> Reply:
    webhook_id = request.match_info["webhookId"]
    request[AUDIT_TARGET] = f"webhook:{webhook_id}"
    record = await request.app[STORAGE].enable_webhook_endpoint(webhook_id, at=now_ms())
    if record is None:
        raise _not_found(webhook_id)
    request.app[WEBHOOKS].forget()
    return Reply(200, Webhook.of(record))


ROUTES = [
    Route(
        "POST",
        "/api/webhooks",
        create_webhook,
        "Register a webhook endpoint (its signing secret is in this answer only)",
        {201: WebhookWithSecret},
        body=CreateWebhook,
        tag="webhooks",
        roles=ADMIN_ONLY,
        action="webhook.create",
    ),
    Route(
        "GET",
        "/api/webhooks",
        list_webhooks,
        "List webhook endpoints, disabled ones with their reason",
        {200: WebhookPage},
        query=WebhookListQuery,
        tag="webhooks",
        roles=ADMIN_ONLY,
    ),
    Route(
        "GET",
        "/api/webhooks/{webhookId}",
        get_webhook,
        "Get a webhook endpoint: its state, failures and signing secrets (not their values)",
        {200: Webhook},
        tag="webhooks",
        roles=ADMIN_ONLY,
    ),
    Route(
        "DELETE",
        "/api/webhooks/{webhookId}",
        delete_webhook,
        "Remove a webhook endpoint; its events not sent yet are dropped",
        {204: None},
        tag="webhooks",
        roles=ADMIN_ONLY,
        action="webhook.delete",
    ),
    Route(
        "POST",
        "/api/webhooks/{webhookId}/rotate-secret",
        rotate_webhook_secret,
        "Give the endpoint a new signing secret (in this answer only); the previous ones "
        "keep signing alongside it for `channels.webhook.secret_overlap` seconds",
        {200: WebhookWithSecret},
        tag="webhooks",
        roles=ADMIN_ONLY,
        action="webhook.rotate_secret",
    ),
    Route(
        "POST",
        "/api/webhooks/{webhookId}/enable",
        enable_webhook,
        "Enable a disabled endpoint again (failure count 0); events made while it was "
        "disabled are not sent",
        {200: Webhook},
        tag="webhooks",
        roles=ADMIN_ONLY,
        action="webhook.enable",
    ),
]
