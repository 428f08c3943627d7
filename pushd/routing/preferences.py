"""Preferences (DESIGN.md §4b, second and third decisions): what a recipient's stored
preferences and the server's routing settings make of one notification's channel steps.

- Preference channels are `email`, `push` and `sms`. `push` stands for web push, FCM and
  APNs together: a person decides about "notifications on my devices", not about the
  provider behind each device.
- The in-app delivery (the socket and the inbox) is not a preference channel: it is the
  notification's record and the application's inbox, so it is stored and delivered even
  when the user is muted. The mute silences every channel beyond it.
- A switch turned off, or the global mute, skips a step (reason `preference`), except in
  the categories of `routing.mandatory_categories` and the categories defined with
  `opt_out = false` (pushd/routing/categories.py), which ignore both.
- A channel the user never switched takes its category's default (`channels` of the
  category's definition), else on.
- Quiet hours are the user's own when set (a window, or "off"), else the server's
  `routing.quiet_hours`; they are read in the user's `timezone`, else in
  `routing.default_timezone`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from pushd.routing.quiet_hours import QuietHours
from storage.records import PreferencesRecord

_UTC: Final = ZoneInfo("UTC")
PreferenceChannel = Literal["email", "push", "sms"]
PREFERENCE_CHANNELS: Final = ("email", "push", "sms")
_PUSH_KINDS: Final = frozenset({"push", "webpush", "fcm", "apns"})
QUIET_HOURS_OFF: Final = "off"
"""A user's quiet hours turned off (whatever the server's default)."""

UserQuietHours = QuietHours | Literal["off"] | None
"""A user's own setting: a window, "off", or None (the server's default)."""


def preference_channel(channel: str) -> str:
    """The preference channel of a delivery or step channel (`fcm` -> `push`)."""
    return "push" if channel in _PUSH_KINDS else channel


def stored_quiet_hours(setting: UserQuietHours) -> dict[str, Any] | None:
    """A user's quiet-hours setting as `PreferencesRecord.quiet_hours` holds it."""
    if setting is None:
        return None
    if setting == QUIET_HOURS_OFF:
        return {"off": True}
    return msgspec.to_builtins(setting)  # type: ignore[no-any-return]


def user_quiet_hours(stored: dict[str, Any] | None) -> UserQuietHours:
    """The setting behind `stored_quiet_hours`."""
    if stored is None:
        return None
    if stored.get("off"):
        return QUIET_HOURS_OFF
    return msgspec.convert(stored, QuietHours)


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class RecipientRouting:
    """What one recipient's preferences decide for one notification."""

    switched_off: frozenset[str] = frozenset()
    """Preference channels whose steps are skipped (reason `preference`)."""
    quiet_hours: QuietHours | None = None
    zone: ZoneInfo = _UTC

    def turned_off(self, channel: str) -> bool:
        """Whether the user turned off `channel` (a delivery or step channel)."""
        return preference_channel(channel) in self.switched_off

    def holds(self, channel: str) -> bool:
        """Whether quiet hours (if any) hold back `channel`."""
        return self.quiet_hours is not None and self.quiet_hours.holds(preference_channel(channel))


NO_PREFERENCES: Final = RecipientRouting()


@dataclass(frozen=True, slots=True)
class CategoryRules:
    """What a defined category decides about preferences (pushd/routing/categories.py)."""

    opt_out: bool = True
    """False: users may not turn its channels off, and the mute does not silence it."""
    channel_defaults: Mapping[str, bool] = field(default_factory=dict)
    """Preference channel -> on/off for a user who never switched it; missing: on."""


class CategoryRulebook(Protocol):
    """The defined categories' rules, in memory (pushd/routing/categories.py,
    `CategoryRegistry`): asked per recipient, so no I/O."""

    def rules_of(self, category: str) -> CategoryRules | None:
        """The category's rules, None for a category nobody defined."""
        ...

    def slugs(self) -> list[str]:
        """Every defined category."""
        ...


class RoutingPolicy:
    """The server's routing settings (`[routing]`), applied to a user's preferences."""

    def __init__(
        self,
        *,
        mandatory_categories: Collection[str] = (),
        quiet_hours: QuietHours | Literal["off"] | None = None,
        default_timezone: str = "UTC",
        categories: CategoryRulebook | None = None,
    ) -> None:
        self.mandatory_categories = frozenset(mandatory_categories)
        self._categories = categories
        # "off" (the config's default) and None: no server-wide quiet hours.
        self._quiet_hours = quiet_hours if isinstance(quiet_hours, QuietHours) else None
        zone = _zone(default_timezone)
        if zone is None:
            raise ValueError(f"unknown time zone {default_timezone!r}")
        self._zone = zone

    def is_mandatory(self, category: str | None) -> bool:
        """Whether users may not opt out of `category`: listed in
        `routing.mandatory_categories`, or defined with `opt_out = false`."""
        if not category:
            return False
        if category in self.mandatory_categories:
            return True
        rules = self.rules_of(category)
        return rules is not None and not rules.opt_out

    def rules_of(self, category: str | None) -> CategoryRules | None:
        """The defined category's rules, None for an undefined one (or none)."""
        if not category or self._categories is None:
            return None
        return self._categories.rules_of(category)

    def mandatory(self) -> list[str]:
        """Every category users may not opt out of (see `is_mandatory`), sorted."""
        defined = self._categories.slugs() if self._categories is not None else []
        return sorted(self.mandatory_categories.union(filter(self.is_mandatory, defined)))

    def effective_switches(
        self, preferences: PreferencesRecord | None, category: str | None
    ) -> dict[str, bool]:
        """Every preference channel -> whether a notification of `category` reaches the
        user on it, as far as preferences decide (what the preference center shows)."""
        off = self._switched_off(preferences, category)
        return {channel: channel not in off for channel in PREFERENCE_CHANNELS}

    def for_recipient(
        self, preferences: PreferencesRecord | None, category: str | None, timezone: str | None
    ) -> RecipientRouting:
        """What `preferences` (None: the user set nothing) decide for a notification of
        `category` to a user in `timezone` (None, or a zone this machine does not know:
        `routing.default_timezone`)."""
        zone = (_zone(timezone) if timezone else None) or self._zone
        if preferences is None:
            return RecipientRouting(
                switched_off=self._switched_off(None, category),
                quiet_hours=self._quiet_hours,
                zone=zone,
            )
        own = user_quiet_hours(preferences.quiet_hours)
        quiet = self._quiet_hours if own is None else None if own == QUIET_HOURS_OFF else own
        return RecipientRouting(
            switched_off=self._switched_off(preferences, category),
            quiet_hours=quiet if isinstance(quiet, QuietHours) else None,
            zone=zone,
        )

    def _switched_off(
        self, preferences: PreferencesRecord | None, category: str | None
    ) -> frozenset[str]:
        if self.is_mandatory(category):
            return frozenset()
        if preferences is not None and preferences.muted:
            return frozenset(PREFERENCE_CHANNELS)
        rules = self.rules_of(category)
        # The user's own switch wins over the category's default.
        switches = {
            **(rules.channel_defaults if rules is not None else {}),
            **(preferences.channels.get(category or "", {}) if preferences is not None else {}),
        }
        return frozenset(channel for channel, enabled in switches.items() if not enabled)
