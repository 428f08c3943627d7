"""How deeply a JSON text nests, measured without recursion (docs/security.md).

msgspec decodes nested arrays and objects recursively: about 1,000 levels exhaust the
interpreter's recursion limit and raise `RecursionError`, and a few levels less are
accepted but then fail wherever the value is decoded again from a deeper stack. So every
boundary (request bodies, WebSocket frames, JSON read back from storage) measures the
raw text first, and hands it to a decoder only when it nests at most a given depth.

Here because storage is the lowest layer: the HTTP and WebSocket edges (pushd/) use the
same check as the row mapping (storage/sql/notifications.py).
"""

from __future__ import annotations

import re

CEILING = 128
"""The deepest JSON pushd stores may nest: the highest `limits.json_max_depth` accepts,
and the depth a stored value is read back with (a deeper one, stored before the limit
existed, is not decoded: storage/sql/notifications.py). Far below the ~1,000 levels of Python's
recursion limit, whatever the stack the decoder runs on."""

# Opening brackets as `(`, closing ones as `)`.
_AS_PARENS = bytes.maketrans(b"[{]}", b"(())")
_NOT_MARKS = bytes(sorted(set(range(256)) - set(b'"[]{}')))
# For `deepest_member` only: strings whole, then brackets and punctuation.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}:,]')


def within_depth(text: bytes | str, max_depth: int) -> bool:
    """Whether the JSON `text` nests at most `max_depth` arrays and objects (a top-level
    object is level 1, a scalar level 0).

    Text that is not JSON gets an answer too, never "within" for one a recursive decoder
    would descend deeper into: unbalanced openings count as levels.

    Cost, measured on a 2 KB notification body: 1.4 µs with at most `max_depth` opening
    brackets (two `bytes.count`; most bodies, every valid client frame), 5 µs with 50
    (about what msgspec takes to decode it). Linear in the size times the depth reached,
    in C: 0.25 ms for a 60 KB frame of 30,000 levels, 5 ms for the worst 64 KB frame
    (a thousand nests of exactly 32 levels).
    """
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if raw.count(b"[") + raw.count(b"{") <= max_depth:
        return True
    brackets = _brackets_outside_strings(raw).translate(_AS_PARENS)
    if b"(" * (max_depth + 1) in brackets:
        return False  # the usual attack, `[[[[...`, found at memchr speed
    # Each round removes the innermost pair of every nest (all adjacent `()` at once), so
    # the rounds needed to remove every pair are the depth of the deepest nest.
    rounds = 0
    while rounds <= max_depth:
        shorter = brackets.replace(b"()", b"")
        if len(shorter) == len(brackets):
            break
        brackets, rounds = shorter, rounds + 1
    # What stays unpaired (`))((`, not JSON) was entered by a decoder before it failed:
    # its openings add to the depth (an upper bound).
    return rounds + brackets.count(b"(") <= max_depth


def _brackets_outside_strings(raw: bytes) -> bytes:
    """The brackets of `raw` that are not inside a string, in order.

    Escapes go first, left to right as a decoder reads them: `\\\\` (an escaped
    backslash), then `\\"` (an escaped quote); every quote left opens or closes a string.
    Then only quotes and brackets are kept, and adjacent quotes dropped in pairs (strings
    without brackets): that keeps every other mark inside or outside a string as it was,
    and leaves few quotes to split on.
    """
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = raw.translate(None, _NOT_MARKS).replace(b'""', b"")
    if b'"' in marks:
        marks = b"".join(marks.split(b'"')[::2])
    return marks


def deepest_member(text: bytes | str, max_depth: int) -> str | None:
    """The name of the top-level object's member in which `text` first nests deeper
    than `max_depth`, for an error naming the field; None when that is not inside a
    member (the top level is an array, or the text is not JSON). Slower than
    `within_depth`: call it only once that said no."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    depth, member, last_string = 0, None, None
    for match in _TOKEN.finditer(raw):
        token = match[0]
        if token in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                return member if depth > 1 else None
        elif token in (b"]", b"}"):
            depth -= 1
        elif token == b":" and depth == 1 and last_string is not None:
            member = last_string[1:-1].decode("utf-8", "replace")
        last_string = token if token.startswith(b'"') else None
    return None
