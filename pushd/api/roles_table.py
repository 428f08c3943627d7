"""The roles table of docs/security.md, generated from the route table (`Route.roles`).

`python -m pushd.api.roles_table` prints it; tests/api/test_roles.py checks that the document
holds exactly this text, then calls every route as the document says.
"""

from __future__ import annotations

from collections.abc import Sequence

from pushd.access.roles import ROLES
from pushd.api.route import Route

ALLOWED = "✓"
REFUSED = "403"
PUBLIC = "no key needed"
END_USER = "user token, no key"
"""The cell of a route end users call with their user token instead of an API key."""


def render_roles_table(routes: Sequence[Route]) -> str:
    """A Markdown table: one row per route, one column per role."""
    lines = [
        "| method | path | " + " | ".join(ROLES) + " |",
        "|---|---|" + "---|" * len(ROLES),
    ]
    for route in routes:
        if route.websocket or route.user_token:
            cells = [END_USER] * len(ROLES)
        elif route.public:
            cells = [PUBLIC] * len(ROLES)
        else:
            cells = [ALLOWED if role in route.roles else REFUSED for role in ROLES]
        lines.append(f"| {route.method} | `{route.path}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from pushd.api import ROUTES

    print(render_roles_table(ROUTES), end="")
