"""msgspec's validation errors taken apart, for the two places that explain them to a
person: the configuration (pushd/config/settings.py) and the HTTP API (pushd/api/errors.py).

msgspec says what is wrong and where in one string: "Expected `int`, got `str` - at
`$.items[0].x`", "Object contains unknown field `colour` - at `$.server`". Both
explanations need the two parts, and the name of an unknown or missing field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import msgspec

# "- at `key` in `$.x`": a map's key is wrong; the map is named, the key cannot be.
_AT_PATH = re.compile(r"^(?P<what>.*?)(?: - at (?:`key` in )?`\$\.?(?P<path>[^`]*)`)?$", re.DOTALL)
# A map's value is at `$.x[...]`: its key is not told, so the map is what is named.
_ANY_KEY = "[...]"
_UNKNOWN_FIELD = re.compile(r"Object contains unknown field `(?P<key>[^`]+)`")
_MISSING_FIELD = re.compile(r"Object missing required field `(?P<key>[^`]+)`")


@dataclass(frozen=True, slots=True)
class ValidationFailure:
    """One msgspec ValidationError: what is wrong, and where."""

    what: str
    """msgspec's message without the location, e.g. "Expected `int`, got `str`"."""
    path: str
    """Where, without the leading `$.`: `items[0].x`; "" for the document itself."""
    field_problem: Literal["unknown", "missing"] | None = None
    """Set when an object has a field its schema lacks, or lacks a required one."""
    field: str = ""
    """The name of that field (`colour`); its full path is `field_path`."""

    @classmethod
    def of(cls, error: msgspec.ValidationError) -> ValidationFailure:
        """Take `error`'s message apart."""
        match = _AT_PATH.match(str(error))
        assert match is not None  # the pattern accepts any string
        what, path = match["what"], (match["path"] or "").replace(_ANY_KEY, "")
        if found := _UNKNOWN_FIELD.match(what):
            return cls(what, path, "unknown", found["key"])
        if found := _MISSING_FIELD.match(what):
            return cls(what, path, "missing", found["key"])
        return cls(what, path)

    @property
    def field_path(self) -> str:
        """The path of the unknown or missing field: `server.colour`."""
        return f"{self.path}.{self.field}" if self.path else self.field
