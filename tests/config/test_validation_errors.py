"""msgspec's validation errors taken apart once, for config and the HTTP API
(pushd/config/validation_errors.py)."""

from __future__ import annotations

import msgspec
import pytest

from pushd.config.validation_errors import ValidationFailure


class Item(msgspec.Struct, forbid_unknown_fields=True):
    x: int


class Body(msgspec.Struct, forbid_unknown_fields=True):
    items: list[Item]
    name: str = ""


def failure_of(document: object) -> ValidationFailure:
    with pytest.raises(msgspec.ValidationError) as raised:
        msgspec.convert(document, Body)
    return ValidationFailure.of(raised.value)


def test_a_wrong_type_deep_inside_names_its_path() -> None:
    failure = failure_of({"items": [{"x": 1}, {"x": "2"}]})
    assert (failure.what, failure.path) == ("Expected `int`, got `str`", "items[1].x")
    assert failure.field_problem is None


def test_an_unknown_field_is_named_with_its_full_path() -> None:
    failure = failure_of({"items": [{"x": 1, "colour": "red"}]})
    assert (failure.field_problem, failure.field) == ("unknown", "colour")
    assert failure.field_path == "items[0].colour"


def test_a_missing_field_at_the_top_has_no_leading_dot() -> None:
    failure = failure_of({"name": "n"})
    assert (failure.field_problem, failure.field_path, failure.path) == ("missing", "items", "")


def test_a_message_without_a_location_is_kept_whole() -> None:
    failure = failure_of([1, 2])
    assert failure.path == ""
    assert failure.what == "Expected `object`, got `array`"
