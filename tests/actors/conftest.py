"""Fixtures of the actor tests."""

from __future__ import annotations

from tests.actors.doubles import writer_mode  # noqa: F401  (the fixture, used by name)
