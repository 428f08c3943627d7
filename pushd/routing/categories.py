"""Notification categories (DESIGN.md §4b, the first decision): what an admin says about a
kind of notification, and the in-memory registry that routing reads per send.

A category is defined in config.toml (`[categories.<slug>]`) or through the API
(`PUT /api/categories/{slug}`, stored: storage/areas/categories.py). A slug defined in
config.toml is read-only through the API: the file is the operator's, and a change
through the API would be undone at the next start.

What a definition decides, and where:

- `plan`: the category's channel plan, winning over `[channels.plans]` (pushd/routing/plan.py);
- `opt_out = false`: users cannot turn its channels off and the mute does not silence it,
  as for `routing.mandatory_categories` (pushd/routing/preferences.py);
- `channels`: on/off per preference channel for a user who never switched it;
- `retention`: how long its notifications are kept, winning over
  `retention.per_category` (pushd/ops/retention.py);
- `digest_window` and `digest_channels`: gather its notifications on those channels into
  one message per window (pushd/routing/digests.py).
- `channel_order = "engagement"` and `send_window`: delivery optimisation
  (pushd/routing/engagement.py): the plan's steps ordered by the channel the user reads
  fastest on, and the hours a `deliver_at_local: "best"` send may choose from.

The registry is held in memory, so a send reads no storage for its category. A change
through the API refreshes the registry of the node that made it at once; every node
also re-reads the stored categories every `routing.categories_refresh_interval` seconds,
which bounds how long another node of a cluster plans with the old definition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Final, Literal

import msgspec

from pushd.routing.digests import DEFAULT_DIGEST_CHANNELS, DigestChannel, DigestRule, digest_rule
from pushd.routing.plan import PlanStep
from pushd.routing.preferences import PREFERENCE_CHANNELS, CategoryRules, PreferenceChannel
from pushd.routing.quiet_hours import ClockTime
from storage import StorageError
from storage.areas.categories import Categories, CategoryRecord

log = logging.getLogger("pushd.routing.categories")

Meta = msgspec.Meta

CATEGORY_SLUG: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
"""A category's slug: what notifications carry in `category`."""
RESERVED_SLUGS: Final = frozenset({"default"})
"""`default` names the plan of notifications without a plan of their own
(`[channels.plans]`): not a category."""
MAX_DIGEST_WINDOW: Final = 604_800
"""A week: a longer digest is a newsletter."""

Source = Literal["config", "api"]
ChannelOrder = Literal["plan", "engagement"]


class SendWindow(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The hours of the user's wall clock a `deliver_at_local: "best"` send may choose:
    [start, end), crossing midnight when start is later than end."""

    start: ClockTime
    end: ClockTime


class CategoryDefinition(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What an admin says about a category (config.toml and the API take the same)."""

    name: Annotated[
        str, Meta(min_length=1, max_length=200, description="Shown to users (preference center).")
    ]
    opt_out: Annotated[
        bool,
        Meta(
            description="Whether users may turn the category's channels off. False (e.g. "
            "`security`): switches and the global mute are ignored."
        ),
    ] = True
    channels: Annotated[
        dict[PreferenceChannel, bool],
        Meta(
            description="On/off per preference channel for a user who never switched it "
            "(missing: on). With `opt_out` false every channel must be on: leave a "
            "channel out of the plan instead."
        ),
    ] = msgspec.field(default_factory=dict)
    plan: Annotated[
        list[PlanStep] | None,
        Meta(description="The category's channel plan; wins over `[channels.plans]`."),
    ] = None
    retention: (
        Annotated[
            float,
            Meta(
                ge=0,
                description="Seconds its notifications are kept (0: forever); wins over "
                "`retention.per_category`. Missing or null: the server's retention.",
            ),
        ]
        | None
    ) = None
    digest_window: Annotated[
        float,
        Meta(
            ge=0,
            le=MAX_DIGEST_WINDOW,
            description="Seconds to gather a user's notifications on `digest_channels` "
            "into one message (0: no digest). The window opens at the first notification "
            "and closes this long after.",
        ),
    ] = 0.0
    digest_channels: Annotated[
        list[DigestChannel],
        Meta(
            min_length=1,
            description="The channels a digest gathers (with a `digest_window`); the "
            "category's other channels, and in-app delivery, send each notification.",
        ),
    ] = msgspec.field(default_factory=lambda: list(DEFAULT_DIGEST_CHANNELS))
    channel_order: Annotated[
        ChannelOrder,
        Meta(
            description="`engagement`: the plan's steps go fastest-read channel first, "
            "from the user's recent reads (each position keeps its delay); `plan`: as "
            "written."
        ),
    ] = "plan"
    send_window: Annotated[
        SendWindow | None,
        Meta(
            description='The hours `deliver_at_local: "best"` may choose from, on the '
            "user's wall clock; null: any hour."
        ),
    ] = None

    def problem(self) -> tuple[str, str] | None:
        """(message, field) of what contradicts itself in the definition, or None."""
        if not self.opt_out:
            for channel in PREFERENCE_CHANNELS:
                if not self.channels.get(channel, True):
                    return (
                        f"a category users may not opt out of cannot have {channel} off by "
                        f"default: nobody could turn it on; leave {channel} out of its plan",
                        f"channels.{channel}",
                    )
        return None


def slug_problem(slug: str) -> str | None:
    """Why `slug` cannot name a category, or None."""
    if not CATEGORY_SLUG.match(slug):
        return (
            f"{slug!r} is not a category slug: 1 to 64 of a-z, 0-9, `_`, `.` and `-`, "
            "starting with a letter or digit"
        )
    if slug in RESERVED_SLUGS:
        return f"{slug!r} is reserved: it names the plan of notifications without one"
    return None


@dataclass(frozen=True, slots=True)
class Category:
    """A defined category, with where it was defined."""

    slug: str
    definition: CategoryDefinition
    source: Source
    updated_at: int | None = None
    """When it was last written through the API (Unix ms); None for config."""

    @property
    def rules(self) -> CategoryRules:
        """What it decides about preferences."""
        defaults = {str(channel): on for channel, on in self.definition.channels.items()}
        return CategoryRules(opt_out=self.definition.opt_out, channel_defaults=defaults)


def stored_definition(definition: CategoryDefinition) -> dict[str, object]:
    """The definition as `Categories.put_category` stores it."""
    built: dict[str, object] = msgspec.to_builtins(definition)
    return built


_from_stored = msgspec.convert


def category_from_record(record: CategoryRecord) -> Category | None:
    """The stored category, or None (logged) when its definition no longer decodes."""
    try:
        definition = _from_stored(record.definition, CategoryDefinition)
    except msgspec.ValidationError as exc:
        log.warning("category %r: stored definition ignored: %s", record.slug, exc)
        return None
    return Category(record.slug, definition, "api", record.updated_at)


class CategoryRegistry:
    """Every defined category, in memory: config.toml's, then the stored ones (a stored
    slug that config also defines is ignored: config wins).

    `refresh` re-reads storage; `start` runs it every `refresh_interval` seconds in a task
    owned here (`close` cancels and awaits it).
    """

    def __init__(
        self,
        configured: Mapping[str, CategoryDefinition],
        storage: Categories,
        *,
        refresh_interval: float,
    ) -> None:
        self._configured = {
            slug: Category(slug, definition, "config") for slug, definition in configured.items()
        }
        self._storage = storage
        self._refresh_interval = refresh_interval
        self._categories: dict[str, Category] = dict(self._configured)
        self._task: asyncio.Task[None] | None = None

    def get(self, slug: str) -> Category | None:
        """The category, or None when it is not defined."""
        return self._categories.get(slug)

    def all(self) -> list[Category]:
        """Every defined category, by slug."""
        return [self._categories[slug] for slug in sorted(self._categories)]

    def is_configured(self, slug: str) -> bool:
        """Whether config.toml defines it (then the API may not change it)."""
        return slug in self._configured

    def is_defined(self, category: str) -> bool:
        """See `CategoryCatalogue.is_defined` (pushd/routing/plan.py)."""
        return category in self._categories

    def plan_of(self, category: str) -> Sequence[PlanStep] | None:
        """See `CategoryCatalogue.plan_of`."""
        found = self._categories.get(category)
        return None if found is None else found.definition.plan

    def name_of(self, category: str) -> str | None:
        """The category's name for people (a digest's subject), None when not defined."""
        found = self._categories.get(category)
        return None if found is None else found.definition.name

    def digest_of(self, category: str) -> DigestRule | None:
        """See `CategoryCatalogue.digest_of`."""
        found = self._categories.get(category)
        if found is None:
            return None
        return digest_rule(found.definition.digest_window, found.definition.digest_channels)

    def slugs(self) -> list[str]:
        """See `CategoryRulebook.slugs` (pushd/routing/preferences.py)."""
        return sorted(self._categories)

    def rules_of(self, category: str) -> CategoryRules | None:
        """See `CategoryRulebook.rules_of` (pushd/routing/preferences.py)."""
        found = self._categories.get(category)
        return None if found is None else found.rules

    def retention_overrides(self) -> dict[str, float]:
        """category -> seconds kept (0: forever), for the categories that set one."""
        return {
            slug: category.definition.retention
            for slug, category in self._categories.items()
            if category.definition.retention is not None
        }

    async def refresh(self) -> None:
        """Re-read the stored categories (raises `StorageError`, keeping the old ones)."""
        stored = await self._storage.list_categories()
        merged = dict(self._configured)
        for record in stored:
            if record.slug in merged:
                continue  # config wins; the API refuses to write such a slug anyway
            category = category_from_record(record)
            if category is not None:
                merged[record.slug] = category
        self._categories = merged

    async def start(self) -> None:
        """Read the stored categories, then keep re-reading them in an owned task."""
        await self.refresh()
        self._task = asyncio.create_task(self._refresh_loop(), name="pushd-categories")

    async def close(self) -> None:
        """Stop the refresh task. Idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_interval)
            try:
                await self.refresh()
            except StorageError as exc:
                # The categories in memory stay in force until storage answers again.
                log.warning("categories: refresh failed, keeping the last known: %s", exc)
