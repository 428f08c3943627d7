"""What the socket of a token limited to categories may see (docs/security.md, "Keys
limited to categories").

A token issued by a category-limited API key carries the key's categories (`cats`).
Its socket is given only `notification` frames of those categories, and only the `read`
frames about them, and `updated`/`retracted` frames of those categories; every other
frame (welcome, pong, errors, gaps, ...) passes. The same filter holds back the
`updated`/`retracted` frames from a client that did not announce protocol 1.3. A
hidden notification still moves the socket's stream past its seq: the client sees
increasing seqs with holes, never a `gap` for it (docs/protocol.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from pushd.realtime.frames import EDIT_FRAME_TYPES

FrameFilter = Callable[[bytes], bool]
"""Whether a socket may be given this server frame."""


class _About(msgspec.Struct):
    """The fields of a server frame that say which notifications it is about."""

    type: str
    category: str | msgspec.UnsetType | None = msgspec.UNSET
    ids: list[str] = msgspec.field(default_factory=list)


_about_decoder = msgspec.json.Decoder(_About)


# msgspec writes the tag first: an edit frame is told by its first bytes, without
# decoding every frame of every socket of a client older than 1.3.
_EDIT_FRAME_PREFIXES = tuple(
    f'{{"type":"{frame_type}"'.encode() for frame_type in sorted(EDIT_FRAME_TYPES)
)


def speaks_edits(protocol: str | None) -> bool:
    """Whether a client that announced `protocol` in `auth` understands `updated` and
    `retracted` (1.3 and later; absent or unreadable: older)."""
    if protocol is None:
        return False
    try:
        major, minor = (int(part) for part in protocol.split(".", 1))
    except ValueError:
        return False
    return (major, minor) >= (1, 3)


def frame_filter(
    categories: Sequence[str] | None, *, sees_edits: bool = True
) -> FrameFilter | None:
    """The filter of a socket whose token is limited to `categories`, and of a client
    that does not speak 1.3 (`sees_edits` False: no `updated`/`retracted` frames, which
    an older client was never told to ignore); None (every frame passes) otherwise."""
    if categories is None:
        if sees_edits:
            return None
        return lambda frame: not frame.startswith(_EDIT_FRAME_PREFIXES)
    allowed = frozenset(categories)

    def visible(frame: bytes) -> bool:
        about = _about_decoder.decode(frame)
        if about.type in EDIT_FRAME_TYPES:
            return sees_edits and about.category in allowed
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
