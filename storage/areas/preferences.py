"""User preferences (issue #13): the global mute, per category x channel on/off and the
user's own quiet hours. The one store of them: the preferences API and an email's
one-click unsubscribe link (RFC 8058) both write here, and the plan expansion reads it
(pushd/routing/)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from storage.records import DeviceRecord, PreferencesChange, PreferencesRecord, UserRecord

PlanContext = tuple[UserRecord, list[DeviceRecord], PreferencesRecord]
"""What expanding a channel plan reads of its recipient: the user, the devices, the
preferences (`UserPreferences.plan_context`)."""


class UserPreferences(Protocol):
    """Preferences keyed by user; switches keyed by (user, category, channel), the
    category matched exactly ("" for notifications without one). Storage gives the values
    no meaning beyond that: which channels exist and what quiet hours hold is routing's.
    Erased with the user."""

    async def get_preferences(self, user_id: str) -> PreferencesRecord | None:
        """The user's preferences (defaults for a user who never set any: not muted, no
        switch, no quiet hours, `updated_at` None), or None for an unknown user. Switches
        are listed by category, then channel."""
        ...

    async def plan_context(self, user_id: str, *, devices: bool) -> PlanContext | None:
        """The user (as `get_user`), the devices (as `list_devices`; left unread and
        empty unless `devices`) and the preferences (as `get_preferences`) in ONE storage
        call: one worker job and one read transaction on SQLite, one pooled connection on
        PostgreSQL. None for an unknown user. The plan expansion asks it once per
        notification whose plan has steps."""
        ...

    async def plan_contexts(
        self, user_ids: Sequence[str], *, devices: bool
    ) -> dict[str, PlanContext]:
        """`plan_context` for many users in ONE storage call of three set-based reads
        (users, preferences, devices), whatever their number: the plans of the requests
        that arrive together are read together (pushd/routing/plan_reads.py). Unknown
        users are absent from the answer; a user named twice is read once."""
        ...

    async def change_preferences(
        self, user_id: str, change: PreferencesChange, *, at: int
    ) -> PreferencesRecord:
        """Apply `change` in ONE transaction (concurrent changes of different switches
        both hold) and return the preferences as read after it. Idempotent: applying the
        same change twice leaves what once did (a mail client that POSTs an unsubscribe
        link twice changes nothing the second time). Raises `UnknownUserError` when the
        user does not exist (or was erased meanwhile), having changed nothing."""
        ...
