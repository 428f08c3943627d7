"""`POST /api/notifications` with `topic`: one notification to each subscriber.

Each subscriber gets a notification of their own (their own seq, acks, replay, tracking
and channel plan), exactly as if it had been sent to them alone.

A topic send is a durable send job, as a broadcast is: the request writes ONE `sends` row
(audience `{"kind": "topic", "topic": <slug>}`, content sealed) and answers 202 with the
send's id (`SendAccepted`, `Location: /api/sends/{id}`); pushd/audiences/fanout.py then
walks the subscribers in chunks, resumes after a crash, and `GET /api/sends/{id}` shows
the progress. The permission stays a topic send's (any key that may send), not the
broadcast one: the topic's subscribers chose to hear from it.

With a `template`, the send is stored with the template's version of the moment it was
accepted, and the fan-out renders that version for each subscriber (their locale and
profile), as a single send would.

Who receives it: the subscribers of each page as that page is read. A user subscribing
during the send is included if their id sorts after the page being read; nobody is
reached twice.
"""

from __future__ import annotations

from aiohttp import web

from pushd.api.errors import validation_error
from pushd.api.notifications import IDEMPOTENCY_HEADER
from pushd.api.route import Reply
from pushd.api.schemas import SendNotification
from pushd.api.sends import store_send
from pushd.api.topics import load_topic
from pushd.appkeys import STORAGE


async def send_to_topic(request: web.Request, body: SendNotification, *, now: int) -> Reply:
    """Store a send to the subscribers of `body.topic` (checked by the caller like a
    single send: content, size, category, channel plan) and answer 202 with its id."""
    assert body.topic is not None
    if body.user_id is not None or body.external_id is not None:
        raise validation_error("give one of user_id, external_id and topic", "topic")
    if IDEMPOTENCY_HEADER in request.headers:
        raise validation_error(
            "Idempotency-Key is not supported with topic: a topic send is many notifications",
            IDEMPOTENCY_HEADER,
        )
    topic = await load_topic(request.app[STORAGE], body.topic)  # 404 before anything is written
    return await store_send(request, body, {"kind": "topic", "topic": topic.slug}, now=now)
