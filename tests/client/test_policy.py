"""The reconnect policy of the Python client, code by code (docs/clients.md's table)."""

from __future__ import annotations

import pytest

from actors.transport import CloseCode
from pushd.client import Advice, advice_for


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        (None, Advice.RECONNECT),  # the connection broke or never opened
        (1000, Advice.RECONNECT),
        (1001, Advice.RECONNECT),
        (1006, Advice.RECONNECT),
        (1011, Advice.RECONNECT),
        (4000, Advice.RECONNECT),
        (4001, Advice.RECONNECT),
        (4008, Advice.RECONNECT),
        (4009, Advice.RECONNECT),
        (4504, Advice.RECONNECT),  # what servers before 1.2 sent instead of 4009
        (4499, Advice.RECONNECT),
        (4002, Advice.NEW_TOKEN),
        (4501, Advice.NEW_TOKEN),
        (4502, Advice.NEW_TOKEN),
        (4505, Advice.NEW_TOKEN),
        (1002, Advice.STOP),
        (1007, Advice.STOP),
        (1009, Advice.STOP),
        (4500, Advice.STOP),
        (4503, Advice.STOP),
        (4999, Advice.STOP),
    ],
)
def test_each_close_code_has_its_advice(code: int | None, advice: Advice) -> None:
    assert advice_for(code) is advice


def test_the_policy_agrees_with_the_ranges_of_the_close_code_table() -> None:
    """A code the server says to reconnect on is never a stop, and a do-not-reconnect
    code never reconnects with the same token."""
    for code in CloseCode:
        if code.reconnects:
            assert advice_for(code) is not Advice.STOP, code
        else:
            assert advice_for(code) is not Advice.RECONNECT, code
