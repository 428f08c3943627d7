"""Reading a provider's Retry-After (pushd/channels/retry_after.py)."""

from __future__ import annotations

import email.utils

import pytest

from pushd.channels.retry_after import parse_retry_after

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        pytest.param("120", 120.0, id="delay-seconds"),
        pytest.param(" 7 ", 7.0, id="padded"),
        pytest.param(email.utils.formatdate(NOW + 90, usegmt=True), 90.0, id="http-date"),
        pytest.param(email.utils.formatdate(NOW - 90, usegmt=True), 0.0, id="date-in-the-past"),
        pytest.param(email.utils.formatdate(NOW + 30), 30.0, id="date-with-offset"),
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
        pytest.param("-5", None, id="negative"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("١٢", None, id="non-ascii-digits"),
    ],
)
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds
