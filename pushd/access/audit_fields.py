"""What a handler adds to its request's audit record, and the actor name the CLI records
under. The recorder (pushd/access/audit_recorder.py) reads these; the writer
(pushd/access/audit_writer.py) stores the result.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

AUDIT_TARGET: web.RequestKey[str] = web.RequestKey("audit_target", str)
"""Set by a handler to name what the request acted on (`user:<id>`, `key:<id>`) when the
path does not say it (e.g. the id of a user it just created)."""
AUDIT_DETAIL: web.RequestKey[dict[str, Any]] = web.RequestKey("audit_detail", dict)
"""Set by a handler to add facts to the record (never personal data: ids go in the
target, which is what erasing a user pseudonymises)."""
AUDIT_ACTOR: web.RequestKey[str] = web.RequestKey("audit_actor", str)
"""Set by a public route that proved its caller in its own way (a signed unsubscribe
link: `user:<id>`; a provider's request signature: `provider:<channel>:<name>`). Without
it (and without an API key), a state-changing call counts as a failed authentication."""

AUDIT_ACTION: web.RequestKey[str] = web.RequestKey("audit_action", str)
"""Set by a handler whose route does two things to record which one it did, instead of
the route's `action`: one of `HANDLER_ACTIONS` (`DELETE /api/notifications/{id}`
cancels a scheduled send or retracts a released one)."""
HANDLER_ACTIONS = frozenset({"notification.retract"})
"""Every action a handler may record through `AUDIT_ACTION` (docs/security.md lists them)."""

CLI_ACTOR = "cli"
"""The actor of records written by the command line (`pushd keys`, `pushd rekey`)."""
