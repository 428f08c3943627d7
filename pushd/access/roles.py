"""The roles of API keys (docs/security.md), defined here once.

A role is a set of routes, listed per route in the route table (`Route.roles`,
pushd/api/route.py), not a hierarchy checked in handlers. The API's schemas, the CLI and
the generated roles table all read this module.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Role = Literal["admin", "publisher", "reader"]
"""An API key's role, as the API and the CLI spell it."""

ADMIN: Final = "admin"
PUBLISHER: Final = "publisher"
READER: Final = "reader"
ROLES: Final[tuple[str, ...]] = get_args(Role)
"""Every role, in the order of the documentation's columns."""
assert ROLES == (ADMIN, PUBLISHER, READER)

EVERY_ROLE: Final = frozenset(ROLES)
WRITERS: Final = frozenset({ADMIN, PUBLISHER})
ADMIN_ONLY: Final = frozenset({ADMIN})
