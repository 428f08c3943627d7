"""storage/jsondepth.py: the nesting depth of JSON text, measured without recursion, is
what a recursive decoder would reach (issue #10, item 5)."""

from __future__ import annotations

import json
import random
from typing import Any

import msgspec
import pytest

from storage.jsondepth import deepest_member, within_depth

# Strings full of what the scan must skip: brackets, quotes, escapes, unbalanced runs.
TRICKY = ['a[{"}', "x\\", '\\"[', '"', "", "é[[[", '\\\\"{{', "]]]", '""', "}"]


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


def random_value(rng: random.Random, levels: int) -> Any:
    if levels == 0 or rng.random() < 0.3:
        return rng.choice([1, None, *TRICKY])
    if rng.random() < 0.5:
        return [random_value(rng, levels - 1) for _ in range(rng.randint(0, 3))]
    return {
        rng.choice(TRICKY) + str(i): random_value(rng, levels - 1) for i in range(rng.randint(0, 3))
    }


def test_agrees_with_the_real_depth_of_random_documents() -> None:
    rng = random.Random(10)
    for _ in range(1500):
        value = random_value(rng, rng.randint(0, 12))
        depth = depth_of(value)
        for text in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
            for max_depth in range(14):
                assert within_depth(text, max_depth) == (depth <= max_depth), (text, max_depth)
                assert within_depth(text.encode(), max_depth) == (depth <= max_depth)


@pytest.mark.parametrize(
    ("text", "max_depth", "within"),
    [
        ("[" * 5000, 32, False),  # never closed: a decoder descends all the same
        ("[" * 32, 32, True),
        ('{"a":' * 40, 32, False),
        ("]]]" + "[" * 33, 32, False),
        ('"' + "[" * 100, 32, True),  # inside an unterminated string: no descent
        ('{"s": "' + "[" * 100 + '"}', 1, True),
        ("[[]" * 50, 32, False),  # zigzag: 50 levels, no run longer than 2
    ],
)
def test_text_that_is_not_json_never_passes_for_shallower(
    text: str, max_depth: int, within: bool
) -> None:
    assert within_depth(text, max_depth) is within


def test_what_it_lets_through_msgspec_decodes_without_recursion_error() -> None:
    for levels in (1, 31, 32, 33, 1000, 100_000):
        text = "[" * levels + "]" * levels
        if within_depth(text, 32):
            assert levels <= 32
            msgspec.json.decode(text)


def test_deepest_member_names_the_top_level_field() -> None:
    deep = "[" * 40 + "]" * 40
    text = '{"ti[tle": "x:\\"", "data": {"a": ' + deep + "}}"
    assert deepest_member(text, 32) == "data"
    assert deepest_member(deep, 32) is None  # not in a member
    assert deepest_member('{"ok": []}', 32) is None  # not too deep at all
