"""A user's preferences (README "Preferences", "Quiet hours"): the global mute, per
category x channel on/off, and the user's own quiet hours.

Two doors to the same preferences: `/api/users/{userId}/preferences` for the
application's backend (API key), and `/api/me/preferences` for the user's own browser or
app (`Authorization: Bearer <user token>`, CORS as `http.cors_origins` allows). A
category-limited credential (an API key with categories, or a user token with the `cats`
claim it issued) sees and changes only the switches of its categories: the mute and the
quiet hours are user-wide, so it may read them but not change them, and it cannot PUT.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec
from aiohttp import web

from pushd.access.api_keys import API_KEY
from pushd.access.audit_fields import AUDIT_DETAIL, AUDIT_TARGET
from pushd.access.user_token_auth import authenticate_user_token
from pushd.api.errors import ApiError, ErrorCode, validation_error
from pushd.api.route import Reply, Route
from pushd.api.users import load_user
from pushd.appkeys import PLANNER, STORAGE
from pushd.ids import now_ms, opt_from_ms
from pushd.routing.preferences import (
    PreferenceChannel,
    RoutingPolicy,
    stored_quiet_hours,
    user_quiet_hours,
)
from pushd.routing.quiet_hours import QuietHours
from storage import UnknownUserError
from storage.records import PreferencesChange, PreferencesRecord

Meta = msgspec.Meta

MAX_CATEGORIES: Final = 256
CategoryName = Annotated[str, Meta(max_length=64)]
QuietHoursSetting = Annotated[
    QuietHours | Literal["off"] | None,
    Meta(
        description='The user\'s own quiet hours: a window, "off" (none, whatever the '
        "server's default), or null (the server's `routing.quiet_hours`). Read in the "
        "user's `timezone` (else `routing.default_timezone`)."
    ),
]
_CATEGORIES_DOC: Final = (
    'category ("" for notifications without one) -> channel -> on/off. `push` covers '
    "web push, FCM and APNs. A channel not listed is on."
)


class Preferences(msgspec.Struct, kw_only=True):
    muted: Annotated[
        bool,
        Meta(
            description="Global mute: no email, push or SMS at all (but in mandatory "
            "categories). In-app notifications are still stored and delivered."
        ),
    ]
    categories: Annotated[
        dict[str, dict[PreferenceChannel, bool]], Meta(description=_CATEGORIES_DOC)
    ]
    quiet_hours: QuietHoursSetting
    mandatory_categories: Annotated[
        list[str],
        Meta(
            description="Categories that ignore the mute and the switches "
            "(`routing.mandatory_categories`, and categories defined with `opt_out` false)."
        ),
    ]
    updated_at: datetime | None


class ReplacePreferences(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    muted: bool = False
    categories: Annotated[
        dict[CategoryName, dict[PreferenceChannel, bool]],
        Meta(max_length=MAX_CATEGORIES, description=_CATEGORIES_DOC),
    ] = msgspec.field(default_factory=dict)
    quiet_hours: QuietHoursSetting = None


class ChangePreferences(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    muted: bool | msgspec.UnsetType = msgspec.UNSET
    categories: Annotated[
        dict[CategoryName, dict[PreferenceChannel, bool | None]],
        Meta(
            max_length=MAX_CATEGORIES,
            description="The switches to change; null puts one back to its default (on). "
            "Switches not named are kept.",
        ),
    ] = msgspec.field(default_factory=dict)
    quiet_hours: QuietHoursSetting | msgspec.UnsetType = msgspec.UNSET


# Views and checks --------------------------------------------------------------------


def preferences_view(
    record: PreferencesRecord, policy: RoutingPolicy, limited: Limit
) -> Preferences:
    """The API's view of stored preferences; only `limited`'s categories when given."""
    categories = {
        category: dict(switches)
        for category, switches in record.channels.items()
        if limited is None or category in limited
    }
    return Preferences(
        muted=record.muted,
        categories=categories,  # type: ignore[arg-type]  # stored keys are channels
        quiet_hours=user_quiet_hours(record.quiet_hours),
        mandatory_categories=policy.mandatory(),
        updated_at=opt_from_ms(record.updated_at),
    )


Limit = tuple[str, ...] | None
"""The categories a credential is limited to; None: every one."""


def _check(change: PreferencesChange, policy: RoutingPolicy, limited: Limit) -> None:
    """A 403 for what a limited credential may not change, a 422 for turning off a
    channel of a mandatory category."""
    if limited is not None:
        if change.replace_channels:
            raise _limited("may not replace all preferences: PATCH its categories instead")
        if change.muted is not msgspec.UNSET or change.quiet_hours is not msgspec.UNSET:
            raise _limited("may not change the user-wide mute or quiet hours")
        for category in change.channels:
            if category not in limited:
                listed = ", ".join(limited)
                raise _limited(f"may not change category {category!r}, only: {listed}")
    for category, switches in change.channels.items():
        if policy.is_mandatory(category) and False in switches.values():
            raise validation_error(
                f"category {category!r} cannot be turned off (routing.mandatory_categories, "
                "or a category defined with opt_out = false): "
                "users receive it whatever their preferences",
                f"categories.{category}",
            )


def _limited(what: str) -> ApiError:
    return ApiError(
        ErrorCode.FORBIDDEN, f"a category-limited credential {what}", field="categories"
    )


async def _apply(
    request: web.Request, user_id: str, change: PreferencesChange, limited: Limit
) -> Reply:
    policy = request.app[PLANNER].policy
    _check(change, policy, limited)
    request[AUDIT_TARGET] = f"user:{user_id}"
    request[AUDIT_DETAIL] = {"categories": sorted(change.channels)}
    try:
        record = await request.app[STORAGE].change_preferences(user_id, change, at=now_ms())
    except UnknownUserError:
        raise ApiError(
            ErrorCode.NOT_FOUND, f"no user with id {user_id!r}", field="userId"
        ) from None
    return Reply(200, preferences_view(record, policy, limited))


async def _read(request: web.Request, user_id: str, limited: Limit) -> Reply:
    record = await request.app[STORAGE].get_preferences(user_id)
    if record is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no user with id {user_id!r}", field="userId")
    return Reply(200, preferences_view(record, request.app[PLANNER].policy, limited))


def _replacement(body: ReplacePreferences) -> PreferencesChange:
    return PreferencesChange(
        muted=body.muted,
        quiet_hours=stored_quiet_hours(body.quiet_hours),
        channels=dict(body.categories),  # type: ignore[arg-type]  # bool is bool | None
        replace_channels=True,
    )


def _change(body: ChangePreferences) -> PreferencesChange:
    quiet = body.quiet_hours
    return PreferencesChange(
        muted=body.muted,
        quiet_hours=msgspec.UNSET if quiet is msgspec.UNSET else stored_quiet_hours(quiet),
        channels=dict(body.categories),  # type: ignore[arg-type]  # keys are channels
    )


# With an API key ------------------------------------------------------------------------


async def get_user_preferences(request: web.Request, _body: None, _query: None) -> Reply:
    user = await load_user(request.app[STORAGE], request.match_info["userId"])
    return await _read(request, user.id, request[API_KEY].categories)


async def replace_user_preferences(
    request: web.Request, body: ReplacePreferences, _query: None
) -> Reply:
    user_id = request.match_info["userId"]
    return await _apply(request, user_id, _replacement(body), request[API_KEY].categories)


async def change_user_preferences(
    request: web.Request, body: ChangePreferences, _query: None
) -> Reply:
    user_id = request.match_info["userId"]
    return await _apply(request, user_id, _change(body), request[API_KEY].categories)


# With the user's own token ---------------------------------------------------------------


async def _token_holder(request: web.Request) -> tuple[str, Limit]:
    verified = await authenticate_user_token(request)
    return verified.user_id, verified.categories


async def get_my_preferences(request: web.Request, _body: None, _query: None) -> Reply:
    user_id, limited = await _token_holder(request)
    return await _read(request, user_id, limited)


async def change_my_preferences(
    request: web.Request, body: ChangePreferences, _query: None
) -> Reply:
    user_id, limited = await _token_holder(request)
    return await _apply(request, user_id, _change(body), limited)


_MINE_ERRORS = {
    401: "No user token, or one that is invalid, expired or revoked",
    403: "A category-limited token names another category, the mute or the quiet hours",
    429: "Too many invalid user tokens from this address: retry after Retry-After seconds",
}
_LIMITED_ERRORS = {
    403: "A category-limited API key names another category, the mute or the quiet hours (or PUTs)",
}
_MINE = (
    "With the user's own token (`Authorization: Bearer <user token>`), no API key: for "
    "an application's settings page in the browser (CORS: `http.cors_origins`)."
)

ROUTES = [
    Route(
        "GET",
        "/api/users/{userId}/preferences",
        get_user_preferences,
        "A user's preferences: the mute, the switches per category and channel, the quiet hours",
        {200: Preferences},
        description="A category-limited key sees only its categories' switches.",
        tag="preferences",
    ),
    Route(
        "PUT",
        "/api/users/{userId}/preferences",
        replace_user_preferences,
        "Replace a user's preferences (a switch not given goes back to its default, on)",
        {200: Preferences},
        body=ReplacePreferences,
        errors={**_LIMITED_ERRORS, 422: "A channel of a mandatory category turned off"},
        tag="preferences",
        action="preferences.replace",
    ),
    Route(
        "PATCH",
        "/api/users/{userId}/preferences",
        change_user_preferences,
        "Change some of a user's preferences (a field or switch left out is kept)",
        {200: Preferences},
        body=ChangePreferences,
        errors={**_LIMITED_ERRORS, 422: "A channel of a mandatory category turned off"},
        tag="preferences",
        action="preferences.update",
    ),
    Route(
        "GET",
        "/api/me/preferences",
        get_my_preferences,
        "The preferences of the user whose token is sent",
        {200: Preferences},
        description=_MINE + " A token limited to categories (`cats`) sees only theirs.",
        errors=_MINE_ERRORS,
        public=True,
        user_token=True,
        tag="preferences",
    ),
    Route(
        "PATCH",
        "/api/me/preferences",
        change_my_preferences,
        "Change some of the preferences of the user whose token is sent",
        {200: Preferences},
        body=ChangePreferences,
        description=_MINE + " A token limited to categories (`cats`) changes only theirs.",
        errors={**_MINE_ERRORS, 422: "A channel of a mandatory category turned off"},
        public=True,
        user_token=True,
        tag="preferences",
        action="preferences.update",
    ),
]
