"""`GET /api/audit`: the audit trail, newest first, with filters (admin only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from aiohttp import web

from pushd.access.roles import ADMIN_ONLY
from pushd.api.pagination import NumericCursor, PageLimit, fetch_page, numeric_cursor
from pushd.api.route import Reply, Route
from pushd.appkeys import AUDIT, STORAGE
from pushd.ids import from_ms
from storage.records import AuditRecord

Meta = msgspec.Meta

Instant = Annotated[datetime, Meta(tz=True, description="RFC 3339 with a time zone offset.")]


class AuditQuery(msgspec.Struct, kw_only=True):
    actor: Annotated[str, Meta(max_length=200, description="`key:<id>`, `cli`, ...")] | None = None
    action: Annotated[str, Meta(max_length=100, description="e.g. `key.revoke`")] | None = None
    target: Annotated[str, Meta(max_length=200, description="e.g. `user:<id>`")] | None = None
    since: Instant | None = None
    """Only records at or after this instant."""
    until: Instant | None = None
    """Only records before this instant."""
    limit: PageLimit = 50
    cursor: NumericCursor | None = None


class AuditEntry(msgspec.Struct, kw_only=True):
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    source: str | None
    result: Annotated[str, Meta(description="HTTP status, or `ok`/`error` for the CLI.")]
    detail: dict[str, Any] | None

    @classmethod
    def of(cls, record: AuditRecord) -> AuditEntry:
        return cls(
            id=record.id,
            at=from_ms(record.at),
            actor=record.actor,
            action=record.action,
            target=record.target,
            source=record.source,
            result=record.result,
            detail=record.detail,
        )


class AuditPage(msgspec.Struct):
    items: list[AuditEntry]
    next_cursor: Annotated[
        str | None, Meta(description="Pass as `cursor` for the next (older) page; null at the end.")
    ]


def _ms(instant: datetime | None) -> int | None:
    return None if instant is None else int(instant.timestamp() * 1000)


async def list_audit(request: web.Request, _body: None, query: AuditQuery) -> Reply:
    # Read-your-writes on this node: what this node already queued is in the answer.
    await request.app[AUDIT].flush()
    storage = request.app[STORAGE]
    page = await fetch_page(
        lambda limit: storage.list_audit(
            actor=query.actor,
            action=query.action,
            target=query.target,
            since=_ms(query.since),
            until=_ms(query.until),
            before_id=numeric_cursor(query.cursor),
            limit=limit,
        ),
        query.limit,
        key=lambda record: record.id,
    )
    return Reply(200, AuditPage([AuditEntry.of(r) for r in page.items], page.next_cursor))


ROUTES = [
    Route(
        "GET",
        "/api/audit",
        list_audit,
        "The audit trail, newest first (filters: actor, action, target, since, until)",
        {200: AuditPage},
        query=AuditQuery,
        tag="audit",
        roles=ADMIN_ONLY,
    ),
]
