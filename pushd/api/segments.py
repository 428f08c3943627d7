"""`/api/segments`: saved audience filters (docs/audiences.md), and how many users match.

A segment is a name and a filter in the grammar of pushd/audiences/segments.py. It is
checked when saved (422 naming the bad node's path under `filter`) and stored as given;
`POST /api/notifications` with `segment` names it, and the send copies the filter, so
changing the segments later does not change a send in progress.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from aiohttp import web

from pushd.access.audit_fields import AUDIT_TARGET
from pushd.access.roles import ADMIN_ONLY
from pushd.api.errors import ApiError, ErrorCode, validation_error
from pushd.api.pagination import PageLimit, fetch_page
from pushd.api.route import Reply, Route
from pushd.appkeys import CONFIG, STORAGE
from pushd.audiences.segments import SegmentError, matches, names_attributes, parse
from pushd.ids import from_ms, new_id, now_ms
from storage import Storage
from storage.records import NewSegment, SegmentRecord, UserFilter

Meta = msgspec.Meta

SegmentId = Annotated[str, Meta(min_length=1, max_length=64)]


class CreateSegment(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    filter: Annotated[
        dict[str, Any],
        Meta(
            description="A filter in the segment grammar (docs/audiences.md), e.g. "
            '`{"all": [{"tag": "pro"}, {"locale": "de"}]}`.'
        ),
    ]


class Segment(msgspec.Struct, kw_only=True):
    id: str
    name: str
    filter: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, record: SegmentRecord) -> Segment:
        return cls(
            id=record.id,
            name=record.name,
            filter=record.filter,
            created_at=from_ms(record.created_at),
        )


class SegmentPage(msgspec.Struct):
    items: list[Segment]
    next_cursor: str | None


class SegmentsPageQuery(msgspec.Struct):
    limit: PageLimit = 50
    cursor: Annotated[str, Meta(max_length=255)] | None = None


class SegmentCount(msgspec.Struct, kw_only=True):
    matching: Annotated[int, Meta(description="Users the segment holds now.")]
    at_least: Annotated[
        bool,
        Meta(description="true: counting stopped at `audiences.count_max`; there may be more."),
    ]


def parse_filter(document: object, field: str) -> UserFilter:
    """The filter of a request, or a 422 naming the bad node (`filter.all[2].tag`)."""
    try:
        return parse(document, field)
    except SegmentError as exc:
        raise validation_error(exc.message, exc.path) from None


async def load_segment(
    storage: Storage, segment_id: str, field: str = "segmentId"
) -> SegmentRecord:
    """The segment or a 404 naming `field`."""
    segment = await storage.get_segment(segment_id)
    if segment is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no segment with id {segment_id!r}", field=field)
    return segment


async def create_segment(request: web.Request, body: CreateSegment, _query: None) -> Reply:
    parse_filter(body.filter, "filter")
    segment = NewSegment(id=new_id("seg"), name=body.name, filter=body.filter, created_at=now_ms())
    record = await request.app[STORAGE].create_segment(segment)
    request[AUDIT_TARGET] = f"segment:{record.id}"
    return Reply(201, Segment.of(record), {"Location": f"/api/segments/{record.id}"})


async def list_segments(request: web.Request, _body: None, query: SegmentsPageQuery) -> Reply:
    storage = request.app[STORAGE]
    page = await fetch_page(
        lambda limit: storage.list_segments(after_id=query.cursor, limit=limit),
        query.limit,
        key=lambda segment: segment.id,
    )
    return Reply(200, SegmentPage([Segment.of(s) for s in page.items], page.next_cursor))


async def get_segment(request: web.Request, _body: None, _query: None) -> Reply:
    storage = request.app[STORAGE]
    return Reply(200, Segment.of(await load_segment(storage, request.match_info["segmentId"])))


async def delete_segment(request: web.Request, _body: None, _query: None) -> Reply:
    segment_id = request.match_info["segmentId"]
    if not await request.app[STORAGE].delete_segment(segment_id):
        raise ApiError(ErrorCode.NOT_FOUND, f"no segment with id {segment_id!r}", field="segmentId")
    request[AUDIT_TARGET] = f"segment:{segment_id}"
    return Reply(204)


async def count_segment(request: web.Request, _body: None, _query: None) -> Reply:
    storage = request.app[STORAGE]
    segment = await load_segment(storage, request.match_info["segmentId"])
    where = parse_filter(segment.filter, "filter")
    most = request.app[CONFIG].audiences.count_max
    if not names_attributes(where):
        counted = await storage.count_matching(where, at_most=most + 1)
        return Reply(200, SegmentCount(matching=min(counted, most), at_least=counted > most))
    # Attributes are sealed: walk the superset storage selects and test each user, in
    # pages, no further than `most` users read.
    matching = read = 0
    after: str | None = None
    page_size = request.app[CONFIG].audiences.chunk_size
    while read < most:
        users = await storage.users_matching(
            where, after_id=after, limit=min(page_size, most - read)
        )
        if not users:
            return Reply(200, SegmentCount(matching=matching, at_least=False))
        read += len(users)
        matching += sum(1 for user in users if matches(user, where))
        after = users[-1].id
    more = await storage.users_matching(where, after_id=after, limit=1)
    return Reply(200, SegmentCount(matching=matching, at_least=bool(more)))


ROUTES = [
    Route(
        "POST",
        "/api/segments",
        create_segment,
        "Save a segment: a name and a filter over users' tags, attributes, locale, time "
        "zone and creation time (docs/audiences.md)",
        {201: Segment},
        body=CreateSegment,
        roles=ADMIN_ONLY,
        tag="audiences",
        action="segment.create",
    ),
    Route(
        "GET",
        "/api/segments",
        list_segments,
        "List saved segments (by id)",
        {200: SegmentPage},
        query=SegmentsPageQuery,
        tag="audiences",
    ),
    Route(
        "GET",
        "/api/segments/{segmentId}",
        get_segment,
        "Get a saved segment",
        {200: Segment},
        tag="audiences",
    ),
    Route(
        "DELETE",
        "/api/segments/{segmentId}",
        delete_segment,
        "Delete a saved segment (sends already accepted keep their copy of its filter)",
        {204: None},
        roles=ADMIN_ONLY,
        tag="audiences",
        action="segment.delete",
    ),
    Route(
        "GET",
        "/api/segments/{segmentId}/count",
        count_segment,
        "How many users the segment holds now (at most `audiences.count_max` counted)",
        {200: SegmentCount},
        tag="audiences",
    ),
]
