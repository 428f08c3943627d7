"""`/api/categories`: notification categories as admin objects (pushd/routing/categories.py).

Any key lists and reads them; only admin keys define, change and delete them. A category
defined in config.toml (`[routing.categories.<slug>]`) is shown with `source: "config"`
and is read-only here (409): the file is the operator's, and a change made here would
be undone at the next start. A change here takes effect on this node at once and on the
other nodes of a cluster within `routing.categories_refresh_interval` seconds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import msgspec
from aiohttp import web

from pushd.access.audit_fields import AUDIT_TARGET
from pushd.access.roles import ADMIN_ONLY
from pushd.api.errors import ApiError, ErrorCode, validation_error
from pushd.api.route import Reply, Route
from pushd.appkeys import CATEGORIES, STORAGE
from pushd.ids import from_ms, now_ms
from pushd.routing.categories import (
    Category,
    CategoryDefinition,
    ChannelOrder,
    SendWindow,
    Source,
    slug_problem,
    stored_definition,
)
from pushd.routing.digests import DEFAULT_DIGEST_CHANNELS, DigestChannel
from pushd.routing.plan import PlanStep
from pushd.routing.preferences import PreferenceChannel

MAX_CATEGORIES: Final = 500
"""Categories are held in memory on every node and listed on one page of the
preference center: a bound, not a target."""


class CategoryView(msgspec.Struct, kw_only=True):
    """A defined category, as the API shows it."""

    slug: str
    name: str
    opt_out: bool
    channels: dict[PreferenceChannel, bool]
    plan: list[PlanStep] | None
    retention: float | None
    digest_window: float
    source: Source
    digest_channels: list[DigestChannel] = msgspec.field(
        default_factory=lambda: list(DEFAULT_DIGEST_CHANNELS)
    )
    updated_at: datetime | None
    channel_order: ChannelOrder = "plan"
    send_window: SendWindow | None = None

    @classmethod
    def of(cls, category: Category) -> CategoryView:
        definition = category.definition
        return cls(
            slug=category.slug,
            name=definition.name,
            opt_out=definition.opt_out,
            channels=definition.channels,
            plan=definition.plan,
            retention=definition.retention,
            digest_window=definition.digest_window,
            digest_channels=definition.digest_channels,
            source=category.source,
            updated_at=None if category.updated_at is None else from_ms(category.updated_at),
            channel_order=definition.channel_order,
            send_window=definition.send_window,
        )


class CategoryList(msgspec.Struct):
    items: list[CategoryView]


def _new_slug(request: web.Request) -> str:
    """The slug of a category being defined: 422 when it cannot be one. (Reading or
    deleting a slug that cannot be one is simply a 404.)"""
    slug = request.match_info["slug"]
    problem = slug_problem(slug)
    if problem is not None:
        raise validation_error(problem, "slug")
    return slug


def _writable(request: web.Request, slug: str) -> None:
    request[AUDIT_TARGET] = f"category:{slug}"
    if request.app[CATEGORIES].is_configured(slug):
        raise ApiError(
            ErrorCode.CONFLICT,
            f"category {slug!r} is defined in config.toml ([routing.categories.{slug}]): "
            "change it there, or remove it there to manage it through the API",
            field="slug",
        )


async def put_category(request: web.Request, body: CategoryDefinition, _query: None) -> Reply:
    slug = _new_slug(request)
    _writable(request, slug)
    problem = body.problem()
    if problem is not None:
        raise validation_error(*problem)
    registry = request.app[CATEGORIES]
    created = registry.get(slug) is None
    if created and len(registry.all()) >= MAX_CATEGORIES:
        raise ApiError(
            ErrorCode.CONFLICT,
            f"{MAX_CATEGORIES} categories are defined, the most a server holds: delete "
            "unused ones first",
            field="slug",
        )
    await request.app[STORAGE].put_category(slug, stored_definition(body), at=now_ms())
    await registry.refresh()
    found = registry.get(slug)
    assert found is not None  # just stored, and not shadowed by config (checked above)
    return Reply(201 if created else 200, CategoryView.of(found))


async def list_categories(request: web.Request, _body: None, _query: None) -> Reply:
    return Reply(200, CategoryList([CategoryView.of(c) for c in request.app[CATEGORIES].all()]))


async def get_category(request: web.Request, _body: None, _query: None) -> Reply:
    slug = request.match_info["slug"]
    found = request.app[CATEGORIES].get(slug)
    if found is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no category {slug!r}", field="slug")
    return Reply(200, CategoryView.of(found))


async def delete_category(request: web.Request, _body: None, _query: None) -> Reply:
    slug = request.match_info["slug"]
    _writable(request, slug)
    if not await request.app[STORAGE].delete_category(slug):
        raise ApiError(ErrorCode.NOT_FOUND, f"no category {slug!r}", field="slug")
    await request.app[CATEGORIES].refresh()
    return Reply(204)


_READ_ONLY = "The category is defined in config.toml (read-only through the API)"

ROUTES = [
    Route(
        "PUT",
        "/api/categories/{slug}",
        put_category,
        "Define a category, or replace its definition (201 new, 200 replaced)",
        {201: CategoryView, 200: CategoryView},
        body=CategoryDefinition,
        roles=ADMIN_ONLY,
        description="Its plan, opt-out and per-channel defaults apply to the sends that "
        "follow (on other nodes within `routing.categories_refresh_interval` seconds). "
        "With a `digest_window`, its notifications on `digest_channels` (email by "
        "default) go out as one digest per user and window.",
        errors={409: f"{_READ_ONLY}, or {MAX_CATEGORIES} categories exist already"},
        tag="categories",
        action="category.put",
    ),
    Route(
        "GET",
        "/api/categories",
        list_categories,
        "List the defined categories (config.toml's and the API's), by slug",
        {200: CategoryList},
        tag="categories",
    ),
    Route(
        "GET",
        "/api/categories/{slug}",
        get_category,
        "Read a category",
        {200: CategoryView},
        errors={404: "No such category"},
        tag="categories",
    ),
    Route(
        "DELETE",
        "/api/categories/{slug}",
        delete_category,
        "Delete a category defined through the API",
        {204: None},
        roles=ADMIN_ONLY,
        description="Users' switches of the category are kept. With "
        "`routing.allow_unknown_categories` off, sends of it are refused from then on.",
        errors={404: "No such category", 409: _READ_ONLY},
        tag="categories",
        action="category.delete",
    ),
]
