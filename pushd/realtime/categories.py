"""What the socket of a token limited to categories may see (docs/security.md, "Keys
limited to categories").

A token issued by a category-limited API key carries the key's categories (`cats`).
Its socket is given only `notification` frames of those categories, and only the `read`
frames about them; every other frame (welcome, pong, errors, gaps, ...) passes. A
hidden notification still moves the socket's stream past its seq: the client sees
increasing seqs with holes, never a `gap` for it (docs/protocol.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

FrameFilter = Callable[[bytes], bool]
"""Whether a socket may be given this server frame."""


class _About(msgspec.Struct):
    """The fields of a server frame that say which notifications it is about."""

    type: str
    category: str | msgspec.UnsetType | None = msgspec.UNSET
    ids: list[str] = msgspec.field(default_factory=list)


_about_decoder = msgspec.json.Decoder(_About)


def frame_filter(categories: Sequence[str] | None) -> FrameFilter | None:
    """The filter of a socket whose token is limited to `categories`; None (every frame
    passes) for a token without a limit."""
    if categories is None:
        return None
    allowed = frozenset(categories)

    def visible(frame: bytes) -> bool:
        about = _about_decoder.decode(frame)
        if about.type == "notification":
            return about.category in allowed
        if about.type == "read":
            if about.category is msgspec.UNSET:
                # A read-all of every category names only a seq; ids without a
                # category (from a node before this rule) could be anybody's.
                return not about.ids
            return about.category in allowed
        return True

    return visible
