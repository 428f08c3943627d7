"""The segment grammar: a small JSON filter language over users (docs/audiences.md).

    filter := {"all": [filter, ...]}      every part holds
            | {"any": [filter, ...]}      at least one part holds
            | {"not": filter}             the part does not hold
            | {"tag": "pro"}              the user has this tag
            | {"locale": "de"}            locale `de`, or `de-...` (`de-AT`)
            | {"timezone": "Europe/Berlin"}
            | {"created_after": "2026-01-01T00:00:00Z"}    created at or after
            | {"created_before": "2026-01-01T00:00:00Z"}   created before
            | {"attribute": "plan", "eq": "pro"}           attribute equals the value
            | {"attribute": "plan", "exists": true}        the user has the attribute

Each node is an object with one operator (`attribute` takes `eq` or `exists` beside
it), checked by msgspec; a filter is at most `MAX_DEPTH` levels deep and `MAX_NODES`
nodes in all, each list at most `MAX_PARTS` long. `parse` turns it into a
`storage.records.UserFilter`, which storage compiles into a WHERE clause with
placeholders (storage/sql/segments.py), and `matches` tests one user in Python: the
fan-out uses it for attribute tests, which SQL cannot read (attributes are sealed).
A bad node raises `SegmentError` naming its path (`segment.all[2].tag`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import msgspec

from pushd.config.validation_errors import ValidationFailure
from storage.records import (
    AllOf,
    AnyOf,
    AttributeIs,
    AttributeValue,
    CreatedBetween,
    HasTag,
    LocaleIs,
    NoneOf,
    TimezoneIs,
    UserFilter,
    UserRecord,
)

MAX_DEPTH = 8
MAX_NODES = 64
MAX_PARTS = 32

Meta = msgspec.Meta
_Text = Annotated[str, Meta(min_length=1, max_length=64)]
_Instant = Annotated[datetime, Meta(tz=True)]
_Parts = Annotated[list[Any], Meta(min_length=1, max_length=MAX_PARTS)]


class SegmentError(ValueError):
    """A filter that is not in the grammar; `path` names the bad node or field."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class _All(msgspec.Struct, forbid_unknown_fields=True):
    all: _Parts


class _Any(msgspec.Struct, forbid_unknown_fields=True):
    any: _Parts


class _Not(msgspec.Struct, forbid_unknown_fields=True):
    not_: Any = msgspec.field(name="not")


class _Tag(msgspec.Struct, forbid_unknown_fields=True):
    tag: Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]


class _Locale(msgspec.Struct, forbid_unknown_fields=True):
    locale: Annotated[str, Meta(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$", max_length=35)]


class _Timezone(msgspec.Struct, forbid_unknown_fields=True):
    timezone: _Text


class _CreatedAfter(msgspec.Struct, forbid_unknown_fields=True):
    created_after: _Instant


class _CreatedBefore(msgspec.Struct, forbid_unknown_fields=True):
    created_before: _Instant


class _Attribute(msgspec.Struct, forbid_unknown_fields=True):
    attribute: _Text
    eq: AttributeValue | None = None
    exists: bool | None = None


_SHAPES: dict[str, type[msgspec.Struct]] = {
    "all": _All,
    "any": _Any,
    "not": _Not,
    "tag": _Tag,
    "locale": _Locale,
    "timezone": _Timezone,
    "created_after": _CreatedAfter,
    "created_before": _CreatedBefore,
    "attribute": _Attribute,
}
_OPERATORS = ", ".join(_SHAPES)


def _ms(instant: datetime) -> int:
    return int(instant.timestamp() * 1000)


class _Parser:
    def __init__(self) -> None:
        self.nodes = 0

    def parse(self, node: object, path: str, depth: int) -> UserFilter:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise SegmentError(f"a filter holds at most {MAX_NODES} nodes", path)
        if depth > MAX_DEPTH:
            raise SegmentError(f"a filter nests at most {MAX_DEPTH} levels", path)
        if not isinstance(node, dict):
            raise SegmentError(f"a filter node is an object with one of: {_OPERATORS}", path)
        found = [key for key in node if key in _SHAPES]
        if len(found) != 1:
            raise SegmentError(
                f"a filter node has exactly one operator of: {_OPERATORS}; got {sorted(node)}",
                path,
            )
        shape = _convert(node, _SHAPES[found[0]], path)
        return self._node(shape, path, depth)

    def _node(self, shape: msgspec.Struct, path: str, depth: int) -> UserFilter:
        match shape:
            case _All(all=parts):
                return AllOf(parts=self._parts(parts, f"{path}.all", depth))
            case _Any(any=parts):
                return AnyOf(parts=self._parts(parts, f"{path}.any", depth))
            case _Not(not_=part):
                return NoneOf(part=self.parse(part, f"{path}.not", depth + 1))
            case _Attribute():
                return _attribute(shape, path)
        return _leaf(shape)

    def _parts(self, parts: list[Any], path: str, depth: int) -> tuple[UserFilter, ...]:
        return tuple(self.parse(p, f"{path}[{i}]", depth + 1) for i, p in enumerate(parts))


def _leaf(shape: msgspec.Struct) -> UserFilter:
    match shape:
        case _Tag(tag=tag):
            return HasTag(tag=tag)
        case _Locale(locale=locale):
            return LocaleIs(locale=locale)
        case _Timezone(timezone=timezone):
            return TimezoneIs(timezone=timezone)
        case _CreatedAfter(created_after=instant):
            return CreatedBetween(after=_ms(instant))
        case _CreatedBefore(created_before=instant):
            return CreatedBetween(before=_ms(instant))
    raise AssertionError(f"no filter for {shape!r}")


def _attribute(shape: _Attribute, path: str) -> AttributeIs:
    if (shape.eq is None) == (shape.exists is None):
        raise SegmentError("an attribute test takes exactly one of eq and exists", path)
    if shape.exists is False:
        raise SegmentError(
            'write {"not": {"attribute": ..., "exists": true}} for a missing attribute',
            f"{path}.exists",
        )
    return AttributeIs(key=shape.attribute, value=shape.eq)


def _convert(node: dict[str, Any], shape: type[msgspec.Struct], path: str) -> msgspec.Struct:
    try:
        return msgspec.convert(node, shape, strict=True)
    except msgspec.ValidationError as exc:
        failure = ValidationFailure.of(exc)
        where = failure.field_path if failure.field_problem else failure.path
        raise SegmentError(failure.what, f"{path}.{where}" if where else path) from None


def parse(document: object, path: str = "segment") -> UserFilter:
    """The `UserFilter` of a filter in the grammar (JSON as decoded: dicts and lists).
    Raises `SegmentError` naming the bad node's path under `path`."""
    return _Parser().parse(document, path, 1)


def names_attributes(where: UserFilter) -> bool:
    """Whether `where` tests an attribute: storage then selects a superset, and every
    user it gives must be tested with `matches`."""
    match where:
        case AttributeIs():
            return True
        case AllOf(parts=parts) | AnyOf(parts=parts):
            return any(names_attributes(p) for p in parts)
        case NoneOf(part=part):
            return names_attributes(part)
    return False


def matches(user: UserRecord, where: UserFilter) -> bool:
    """Whether `user` is in the audience `where`, tested in Python: the same meaning as
    storage's SQL (storage/sql/segments.py), attributes included."""
    test = _TESTS.get(type(where))
    if test is None:
        raise TypeError(f"not a UserFilter: {where!r}")
    return test(user, where)


def _locale_is(user: UserRecord, where: Any) -> bool:
    locale = user.locale
    return locale is not None and (locale == where.locale or locale.startswith(where.locale + "-"))


def _created_between(user: UserRecord, where: Any) -> bool:
    return (where.after is None or user.created_at >= where.after) and (
        where.before is None or user.created_at < where.before
    )


def _attribute_is(user: UserRecord, where: Any) -> bool:
    if where.key not in user.attributes:
        return False
    value = user.attributes[where.key]
    # bool is an int in Python: `true` must not equal 1.
    return where.value is None or (type(value) is type(where.value) and value == where.value)


_TESTS: dict[type, Callable[[UserRecord, Any], bool]] = {
    HasTag: lambda user, where: where.tag in user.tags,
    LocaleIs: _locale_is,
    TimezoneIs: lambda user, where: user.timezone == where.timezone,
    CreatedBetween: _created_between,
    AttributeIs: _attribute_is,
    AllOf: lambda user, where: all(matches(user, p) for p in where.parts),
    AnyOf: lambda user, where: any(matches(user, p) for p in where.parts),
    NoneOf: lambda user, where: not matches(user, where.part),
}
