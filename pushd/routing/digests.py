"""Digests (issue #13, point 6): a category with a digest window gathers a user's
notifications on its digest channels into one message per window.

Planning (`DigestRule.apply`, from `ChannelPlanner.expand`): a step of a digest category
on one of its `digest_channels` (email by default) becomes a row with reason `digest`,
due `digest_window` seconds after its notification. In-app delivery is never digested,
nor a `critical` notification, nor a row skipped at once.

Sending (actors/channel_dispatch.py, storage `lease_due_digests`): the digest of a
(user, channel, category) is due when its oldest unsent row is: the window opens with
the first notification and closes `digest_window` seconds later. One lease takes every
unsent row of the digest, one message lists them (`digest_delivery`, rendered here from
built-in templates with a loop over the items), and its outcome is recorded on every
row. A notification committed after that lease is not in it: it opens the next window,
so each notification is in exactly one digest.

Reading a notification before its digest goes out cancels its row (like any
`unless_read` step): reading all of them cancels the digest, reading some leaves the
others in it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import jinja2
import msgspec

from storage.records import LeasedDelivery

DigestChannel = Literal["email", "sms"]
DIGEST_CHANNELS: Final = ("email", "sms")
"""The channels a digest can go out on: one address per user (push rows are one per
device, and a push lists nothing)."""
DEFAULT_DIGEST_CHANNELS: Final[tuple[DigestChannel, ...]] = ("email",)

DIGEST_REASON: Final = "digest"
"""`reason` of a row waiting for its digest (storage/sql/digests.py reads the same)."""

MAX_LISTED: Final = 50
"""Items a digest lists at most; the others are counted ("and 12 more"), so that one
message stays readable and bounded however busy the window was."""


@dataclass(frozen=True, slots=True)
class DigestRule:
    """A category's digest: its window and the channels it gathers."""

    window_ms: int
    channels: frozenset[str]

    def apply(
        self, channel: str, planned: tuple[int, str, str | None], *, created_at: int
    ) -> tuple[int, str, str | None]:
        """(due time, status, reason) of a row of this category: a row on a digest
        channel that will be sent waits for the end of its window (or later, when its
        step or the user's quiet hours said later); any other row is left as planned."""
        due_at, status, _reason = planned
        if channel not in self.channels or status not in ("scheduled", "queued"):
            return planned
        return max(due_at, created_at + self.window_ms), "scheduled", DIGEST_REASON


def digest_rule(window_seconds: float, channels: Sequence[str]) -> DigestRule | None:
    """The rule of a category definition; None without a window (no digest)."""
    if window_seconds <= 0 or not channels:
        return None
    return DigestRule(round(window_seconds * 1000), frozenset(channels))


# Rendering ----------------------------------------------------------------------------

# Our own sources, not a user's: a plain environment; HTML autoescaped, so a title with
# markup shows as text.
_HTML = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
# The text part and the subject are plain text, never HTML: nothing to escape.
_TEXT = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined)  # noqa: S701

_SUBJECT = _TEXT.from_string("{{ count }} new notification{{ 's' if count != 1 }} in {{ name }}")
_TEXT_BODY = _TEXT.from_string(
    "{{ subject }}\n"
    "{% for item in items %}\n- {{ item.title }}{% if item.body %}\n  {{ item.body }}{% endif %}"
    "{% endfor %}"
    "{% if more %}\n\n... and {{ more }} more{% endif %}\n"
)
_HTML_BODY = _HTML.from_string(
    '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{{ subject }}</title></head>\n'
    "<body>\n<h1>{{ subject }}</h1>\n<ul>\n"
    "{% for item in items %}<li><strong>{{ item.title }}</strong>"
    "{% if item.body %}<br>\n{{ item.body }}{% endif %}</li>\n{% endfor %}"
    "</ul>\n{% if more %}<p>... and {{ more }} more</p>\n{% endif %}</body></html>\n"
)


class DigestItem(msgspec.Struct, frozen=True):
    """One notification as its digest lists it."""

    notification_id: str
    title: str
    body: str


def digest_items(members: Sequence[LeasedDelivery]) -> list[DigestItem]:
    """The notifications of a digest as listed, oldest first; a notification's own
    content for the channel wins over its title and body, as when sent alone."""
    items = []
    for member in members:
        content = member.content or {}
        title = content.get("subject") or member.title or ""
        body = content.get("text") or member.body or ""
        items.append(DigestItem(member.notification_id, " ".join(title.split()), body.strip()))
    return items


def render_digest(
    channel: str, members: Sequence[LeasedDelivery], category_name: str
) -> dict[str, str]:
    """The digest's content for `channel`: email {"subject", "text", "html"}, sms
    {"text"}."""
    items = digest_items(members)
    listed, more = items[:MAX_LISTED], max(0, len(items) - MAX_LISTED)
    subject = _SUBJECT.render(count=len(items), name=category_name)
    variables = {"subject": subject, "items": listed, "more": more}
    text = _TEXT_BODY.render(variables)
    if channel == "email":
        return {"subject": subject, "text": text, "html": _HTML_BODY.render(variables)}
    return {"text": text}


def digest_delivery(members: Sequence[LeasedDelivery], category_name: str) -> LeasedDelivery:
    """The one message sent for a digest (its rows, oldest first): the first row's
    identity and address, the rendered list as its content. Its outcome is recorded on
    every row (actors/channel_dispatch.py)."""
    first = members[0]
    content = render_digest(first.channel, members, category_name)
    return msgspec.structs.replace(
        first,
        title=content.get("subject"),
        body=content["text"],
        content=content,
        data={"digest": [member.notification_id for member in members]},
        expires_at=None,
        # The most urgent of the list: a provider may treat the message by it.
        priority=max((m.priority for m in members), key=lambda p: _PRIORITY_RANK.get(p, 0)),
    )


_PRIORITY_RANK: Final = {"low": 0, "normal": 1, "high": 2, "critical": 3}


class DigestComposer:
    """The dispatcher's digest messages (`actors.channel_dispatch.DigestComposer`), with
    the category's name from `category_names` (the registry's `name_of`)."""

    channels: Sequence[str] = DIGEST_CHANNELS

    def __init__(self, category_names: Callable[[str], str | None]) -> None:
        self._category_names = category_names

    def compose(self, members: Sequence[LeasedDelivery]) -> LeasedDelivery:
        """See `digest_delivery`; a category undefined since is named by its slug."""
        slug = members[0].category
        name = self._category_names(slug) if slug is not None else None
        return digest_delivery(members, name or slug or "notifications")
