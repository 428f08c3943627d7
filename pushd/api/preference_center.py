"""The hosted preference center: a page a person opens from a signed per-user link (an
email's footer, or one the application hands out) to choose what they receive, with no
account and no API key.

- `GET /preferences` serves a static page (pushd/api/static/preference_center.html) and
  `GET /preferences/preference_center.js` its script. The link is
  `<channels.public_url>/preferences#token=<signed token>`: browsers never send the
  fragment, so the token stays out of access logs, proxies and `Referer`. The script
  reads it, removes it from the address bar and sends it in the BODY of its two calls.
- `POST /api/preference-center` answers the categories (the defined ones,
  pushd/routing/categories.py) x channels with the user's effective values;
  `PUT /api/preference-center` saves changes into the same preferences store as the
  preferences API and the one-click unsubscribe link (storage/areas/preferences.py).
- The token is the credential (pushd/channels/unsubscribe.py, `PreferenceLinks`); no
  cookie is involved, so another site cannot make a browser act with it (no CSRF). A
  forged or altered token spends its source's budget of failed authentications.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Final

import msgspec
from aiohttp import web

from pushd.access.audit_fields import AUDIT_ACTOR, AUDIT_DETAIL, AUDIT_TARGET
from pushd.api.errors import ApiError, ErrorCode, validation_error
from pushd.api.public_proofs import spend_failed_proof
from pushd.api.route import Reply, Route
from pushd.appkeys import CATEGORIES, PLANNER, PREFERENCE_LINKS, STORAGE
from pushd.channels.registry import PREFERENCES_PATH
from pushd.channels.unsubscribe import InvalidPreferenceLinkError
from pushd.ids import now_ms
from pushd.routing.preferences import PREFERENCE_CHANNELS, PreferenceChannel
from storage import UnknownUserError
from storage.records import PreferencesChange, PreferencesRecord

_STATIC = resources.files("pushd.api").joinpath("static")
_PAGE = _STATIC.joinpath("preference_center.html").read_bytes()
_SCRIPT = _STATIC.joinpath("preference_center.js").read_bytes()
SCRIPT_PATH: Final = PREFERENCES_PATH + "/preference_center.js"
# The page runs only its own script (served from this origin, no inline code) and
# calls only this origin; nothing may frame it.
PAGE_CSP: Final = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

Token = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=2048,
        description="The signed token of the preference center's link (after `#token=`).",
    ),
]


class OpenCenter(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    token: Token


class SaveCenter(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    token: Token
    muted: Annotated[
        bool | None, msgspec.Meta(description="Pause every channel beyond in-app.")
    ] = None
    categories: Annotated[
        dict[str, dict[PreferenceChannel, bool]],
        msgspec.Meta(description="category -> channel -> on/off; only the switches changed."),
    ] = msgspec.field(default_factory=dict)


class CenterCategory(msgspec.Struct, kw_only=True):
    slug: str
    name: str
    opt_out: Annotated[bool, msgspec.Meta(description="False: its channels stay on.")]
    channels: Annotated[
        dict[str, bool],
        msgspec.Meta(description="channel -> whether it reaches the user (mute aside)."),
    ]


class PreferenceCenter(msgspec.Struct, kw_only=True):
    muted: bool
    channels: list[str]
    categories: list[CenterCategory]


def _view(request: web.Request, preferences: PreferencesRecord) -> PreferenceCenter:
    policy = request.app[PLANNER].policy
    # The switches as they are once unmuted: the mute is shown as its own switch.
    unmuted = msgspec.structs.replace(preferences, muted=False)
    return PreferenceCenter(
        muted=preferences.muted,
        channels=list(PREFERENCE_CHANNELS),
        categories=[
            CenterCategory(
                slug=category.slug,
                name=category.definition.name,
                opt_out=not policy.is_mandatory(category.slug),
                channels=policy.effective_switches(unmuted, category.slug),
            )
            for category in request.app[CATEGORIES].all()
        ],
    )


async def _user_of(request: web.Request, token: str) -> str:
    """The user the link is for; `ApiError` 404 (no links here) or 403 (a bad link)."""
    links = request.app[PREFERENCE_LINKS]
    if links is None:
        raise ApiError(
            ErrorCode.NOT_FOUND,
            "the preference center is not enabled on this server (channels.public_url is empty)",
        )
    try:
        user_id = links.verify(token)
    except InvalidPreferenceLinkError as exc:
        await spend_failed_proof(request, "preference links")
        raise ApiError(ErrorCode.FORBIDDEN, str(exc), field="token") from None
    request[AUDIT_ACTOR] = request[AUDIT_TARGET] = f"user:{user_id}"
    return user_id


def _gone(user_id: str) -> ApiError:
    return ApiError(
        ErrorCode.NOT_FOUND, f"user {user_id!r} no longer exists (erased)", field="token"
    )


async def preference_center_page(request: web.Request, _body: None, _query: None) -> web.Response:
    """The page; it needs no token to load (the token is in the fragment)."""
    return web.Response(
        body=_PAGE, content_type="text/html", headers={"Content-Security-Policy": PAGE_CSP}
    )


async def preference_center_script(request: web.Request, _body: None, _query: None) -> web.Response:
    return web.Response(body=_SCRIPT, content_type="text/javascript")


async def open_preference_center(request: web.Request, body: OpenCenter, _query: None) -> Reply:
    user_id = await _user_of(request, body.token)
    preferences = await request.app[STORAGE].get_preferences(user_id)
    if preferences is None:
        raise _gone(user_id)
    return Reply(200, _view(request, preferences))


def _change(request: web.Request, body: SaveCenter) -> PreferencesChange:
    registry, policy = request.app[CATEGORIES], request.app[PLANNER].policy
    channels: dict[str, dict[str, bool | None]] = {}
    for slug, switches in body.categories.items():
        if registry.get(slug) is None:
            raise validation_error(f"no category {slug!r}", f"categories.{slug}")
        for channel, enabled in switches.items():
            if not enabled and policy.is_mandatory(slug):
                raise validation_error(
                    f"{slug!r} cannot be turned off: users may not opt out of it",
                    f"categories.{slug}.{channel}",
                )
        channels[slug] = {str(channel): on for channel, on in switches.items()}
    if body.muted is None:
        return PreferencesChange(channels=channels)
    return PreferencesChange(muted=body.muted, channels=channels)


async def save_preference_center(request: web.Request, body: SaveCenter, _query: None) -> Reply:
    user_id = await _user_of(request, body.token)
    change = _change(request, body)
    request[AUDIT_DETAIL] = {"categories": sorted(body.categories), "muted": body.muted}
    try:
        saved = await request.app[STORAGE].change_preferences(user_id, change, at=now_ms())
    except UnknownUserError:
        raise _gone(user_id) from None
    return Reply(200, _view(request, saved))


_ERRORS = {
    403: "The token is altered, expired or not signed by this server",
    404: "The preference center is off (channels.public_url is empty), or the user was erased",
    429: "Too many invalid links from this address (limits.unauthenticated_rate)",
}

ROUTES = [
    Route(
        "GET",
        PREFERENCES_PATH,
        preference_center_page,
        "The preference center: a page to choose what you receive, opened from a signed link",
        {200: str},
        public=True,
        media_type="text/html",
        description="A static page; the signed token is in the link's fragment "
        "(`#token=...`), which its script sends to POST and PUT /api/preference-center.",
        tag="preferences",
    ),
    Route(
        "GET",
        SCRIPT_PATH,
        preference_center_script,
        "The preference center page's script",
        {200: str},
        public=True,
        media_type="text/javascript",
        tag="preferences",
    ),
    Route(
        "POST",
        "/api/preference-center",
        open_preference_center,
        "The categories and channels of the link's user, with their current values",
        {200: PreferenceCenter},
        body=OpenCenter,
        public=True,
        description="The token is the credential, sent in the body (never a cookie).",
        errors=_ERRORS,
        tag="preferences",
        action="preferences.open_center",
    ),
    Route(
        "PUT",
        "/api/preference-center",
        save_preference_center,
        "Save the changes made in the preference center",
        {200: PreferenceCenter},
        body=SaveCenter,
        public=True,
        description="The same switches as the preferences API; a category users may "
        "not opt out of refuses `false` (422).",
        errors={**_ERRORS, 422: "An unknown category, or one users may not opt out of"},
        tag="preferences",
        action="preferences.save_center",
    ),
]
