"""`/unsubscribe`: the target of the `List-Unsubscribe` link every email of a category
carries (RFC 8058 one-click unsubscribe; pushd/channels/unsubscribe.py signs the links).

- A mail client's one-click button POSTs `List-Unsubscribe=One-Click` to the link: the
  user's preference "email off" for that category is stored (the same switch as the
  preferences API's, storage/areas/preferences.py), and the answer is a plain 200 at
  once (no API key, no cookie, no redirect, as RFC 8058 requires). A category of
  `routing.mandatory_categories` cannot be opted out of: the page says so and nothing
  is stored.
- A person who opens the link gets a page that says what it does, with a button that
  sends the same POST: a GET never unsubscribes, so a mail scanner that follows links
  cannot unsubscribe anyone.

The signed token is the proof: a forged or altered one is a 400 that says so, and
spends its source's budget of failed authentications (pushd/api/public_proofs.py).
Later plans skip email for that user and category (reason `preference`).
"""

from __future__ import annotations

import contextlib
import html
from typing import Annotated, Final

import msgspec
from aiohttp import web

from pushd.access.audit_fields import AUDIT_ACTOR, AUDIT_DETAIL, AUDIT_TARGET
from pushd.api.errors import ApiError, ErrorCode
from pushd.api.public_proofs import spend_failed_proof
from pushd.api.route import Route
from pushd.appkeys import PLANNER, STORAGE, UNSUBSCRIBE_LINKS
from pushd.channels.registry import UNSUBSCRIBE_PATH
from pushd.channels.unsubscribe import InvalidUnsubscribeTokenError, Unsubscription
from pushd.ids import now_ms
from storage import UnknownUserError
from storage.records import PreferencesChange

CHANNEL: Final = "email"
ONE_CLICK_FIELD: Final = "List-Unsubscribe"
ONE_CLICK_VALUE: Final = "One-Click"
# The pages load nothing and run nothing; their one form posts back to this origin.
PAGE_CSP: Final = "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"


class UnsubscribeQuery(msgspec.Struct):
    token: (
        Annotated[
            str,
            msgspec.Meta(max_length=2048, description="The signed token of the email's link."),
        ]
        | None
    ) = None


def _page(status: int, title: str, *paragraphs: str, form: str = "") -> web.Response:
    body = "".join(f"<p>{html.escape(text)}</p>" for text in paragraphs)
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}{form}</body></html>"
    )
    return web.Response(
        status=status,
        text=document,
        content_type="text/html",
        headers={"Content-Security-Policy": PAGE_CSP},
    )


def _about(category: str) -> str:
    return f"emails about “{category}”" if category else "these emails"


async def _verified(request: web.Request, token: str | None) -> Unsubscription:
    """What the link asks for; `ApiError` 404 (links are off) or 400 (a bad link)."""
    links = request.app[UNSUBSCRIBE_LINKS]
    if links is None:
        raise ApiError(
            ErrorCode.NOT_FOUND,
            "unsubscribe links are not enabled on this server (channels.public_url is empty)",
        )
    if not token:
        raise ApiError(
            ErrorCode.INVALID_QUERY,
            "the unsubscribe link has no token: open the whole link from the email",
            field="token",
        )
    try:
        return links.verify(token)
    except InvalidUnsubscribeTokenError as exc:
        await spend_failed_proof(request, "unsubscribe links")
        raise ApiError(ErrorCode.INVALID_QUERY, str(exc), field="token") from None


async def unsubscribe_page(
    request: web.Request, _body: None, query: UnsubscribeQuery
) -> web.StreamResponse:
    try:
        wanted = await _verified(request, query.token)
    except ApiError as exc:
        return _page(exc.kind.status, "This unsubscribe link does not work", exc.message)
    action = html.escape(f"?{request.query_string}", quote=True)
    form = (
        f'<form method="post" action="{action}">'
        f'<input type="hidden" name="{ONE_CLICK_FIELD}" value="{ONE_CLICK_VALUE}">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return _page(
        200,
        "Unsubscribe",
        f"Stop receiving {_about(wanted.category)}? Other notifications are not affected.",
        form=form,
    )


async def unsubscribe(request: web.Request, _body: None, query: UnsubscribeQuery) -> web.Response:
    wanted = await _verified(request, query.token)
    form = await request.post()
    if form.get(ONE_CLICK_FIELD) != ONE_CLICK_VALUE:
        raise ApiError(
            ErrorCode.VALIDATION_FAILED,
            f"the body must be {ONE_CLICK_FIELD}={ONE_CLICK_VALUE} (RFC 8058 one-click "
            "unsubscribe), form-encoded",
            field=ONE_CLICK_FIELD,
        )
    request[AUDIT_ACTOR] = request[AUDIT_TARGET] = f"user:{wanted.user_id}"
    request[AUDIT_DETAIL] = {"channel": CHANNEL, "category": wanted.category}
    if request.app[PLANNER].policy.is_mandatory(wanted.category):
        return _page(
            200,
            "These emails cannot be turned off",
            f"You receive {_about(wanted.category)} whatever your preferences: they are "
            "about your account's security or obligations.",
        )
    change = PreferencesChange(channels={wanted.category: {CHANNEL: False}})
    # A user erased since the email was sent gets nothing anyway.
    with contextlib.suppress(UnknownUserError):
        await request.app[STORAGE].change_preferences(wanted.user_id, change, at=now_ms())
    return _page(
        200, "You are unsubscribed", f"You will no longer receive {_about(wanted.category)}."
    )


_ERRORS = {
    400: "The token is missing, altered or not signed by this server",
    404: "Unsubscribe links are not enabled (channels.public_url is empty)",
}

ROUTES = [
    Route(
        "GET",
        UNSUBSCRIBE_PATH,
        unsubscribe_page,
        "The page of an email's unsubscribe link: what it does, and a button to confirm",
        {200: None},
        query=UnsubscribeQuery,
        public=True,
        media_type="text/html",
        description="Never unsubscribes by itself (mail scanners follow links): the "
        "button sends the one-click POST.",
        errors=_ERRORS,
        html_errors=True,
        tag="channels",
    ),
    Route(
        "POST",
        UNSUBSCRIBE_PATH,
        unsubscribe,
        "One-click unsubscribe (RFC 8058): the user no longer gets emails of the link's category",
        {200: None},
        query=UnsubscribeQuery,
        public=True,
        media_type="text/html",
        description="What mail clients send for `List-Unsubscribe-Post: "
        "List-Unsubscribe=One-Click`: a form-encoded body `List-Unsubscribe=One-Click`, "
        "no credentials. Idempotent.",
        errors={**_ERRORS, 422: "The body is not List-Unsubscribe=One-Click"},
        tag="channels",
        action="user.unsubscribe",
    ),
]
