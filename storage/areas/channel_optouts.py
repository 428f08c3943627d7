"""Channel opt-outs (issue #12): a user's "do not send me this category on this channel",
stored by the one-click unsubscribe link of an email (RFC 8058) and honoured when a
notification's channel plan is expanded (the step becomes `skipped`, reason
`opted_out`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from storage.records import ChannelOptOut


class ChannelOptOuts(Protocol):
    """Opt-outs keyed by (user, channel, category). `category` is matched exactly; ""
    stands for the notifications that have no category. Erased with the user."""

    async def set_channel_optout(self, opt_out: ChannelOptOut) -> bool:
        """Store the opt-out; True if it is new, False if the user had already opted out
        of that channel and category (the first `created_at` is kept). Idempotent: a
        mail client that POSTs the link twice changes nothing the second time. Raises
        `UnknownUserError` when the user does not exist (or was erased meanwhile)."""
        ...

    async def delete_channel_optout(self, user_id: str, *, channel: str, category: str) -> bool:
        """Remove one opt-out (the user opts in again); return whether it existed."""
        ...

    async def channel_optouts_of(self, user_ids: Sequence[str]) -> list[ChannelOptOut]:
        """Every opt-out of these users, in ONE query (the plan expansion reads a whole
        batch's recipients at once), ordered by user, channel, category. Unknown users
        have none."""
        ...
