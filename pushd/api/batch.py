"""Bulk send: `POST /api/notifications/batch`, many notifications for distinct users in
one request, each answered on its own.

Each item goes through the checks of `POST /api/notifications` (pushd/api/notifications.py):
content and size, the key's categories, the channel plan, the recipient's rate limit,
its Idempotency key. An item that fails one is answered with its error, whose `field`
names the item (`items[3].title`); the others are handed to the group commit together
(`NotificationIngest.submit_many`), which commits them in one transaction. The answer
comes once that transaction is committed: an item answered 202 is on disk.
"""

from __future__ import annotations

import contextlib
from typing import Annotated

import msgspec
from aiohttp import web

from pushd.access.api_keys import API_KEY, require_category
from pushd.access.audit_fields import AUDIT_DETAIL
from pushd.access.rate_limits import RateLimitedError
from pushd.api.errors import ApiError, ErrorCode, ErrorDetail, from_msgspec, validation_error
from pushd.api.input_limits import check_notification_size

# The single send's steps, shared so that an item is checked exactly as a single send is.
from pushd.api.notifications import (
    _canonical,
    _channel_plan,
    _expires_at,
    _planned_deliveries,
    _resolve_recipient,
    new_notification,
)
from pushd.api.route import Reply, Route
from pushd.api.scheduled import schedule_field
from pushd.api.schemas import NotificationAccepted, SendNotification
from pushd.api.templates import check_content_source
from pushd.appkeys import (
    CHANNELS,
    CONFIG,
    INGEST,
    LIMITS,
    METRICS,
    REQUEST_HASHER,
    STORAGE,
)
from pushd.ids import from_ms, now_ms
from pushd.ingest.eager import gather_eagerly
from pushd.ingest.group_commit import ClaimInFlightError
from storage import IdempotencyConflictError, UnknownUserError
from storage.records import IdempotencyClaim, NewNotification, NotificationRecord

IdempotencyKey = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[\x21-\x7e]{1,255}$",
        description="Makes a retry of this item safe, like the `Idempotency-Key` header of "
        "`POST /api/notifications` (same namespace: per API key).",
    ),
]


class BatchItem(SendNotification, forbid_unknown_fields=True, kw_only=True):
    """One notification of a batch: the body of `POST /api/notifications`, and its key."""

    idempotency_key: IdempotencyKey | None = None


class SendBatch(msgspec.Struct, forbid_unknown_fields=True):
    """Notifications for distinct users, each a `BatchItem` (each checked on its own)."""

    items: Annotated[
        list[msgspec.Raw],
        msgspec.Meta(
            min_length=1,
            description="Each the body of `POST /api/notifications` with an optional "
            "`idempotency_key`; at most `ingest.batch_max_items`, each for another user.",
        ),
    ]


class BatchItemResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    index: int
    status: Annotated[
        int, msgspec.Meta(description="202: committed; otherwise the status of `error`.")
    ]
    notification: NotificationAccepted | None = None
    replayed: Annotated[
        bool, msgspec.Meta(description="true: answered from the item's idempotency key.")
    ] = False
    error: ErrorDetail | None = None


class BatchResult(msgspec.Struct, kw_only=True):
    accepted: Annotated[int, msgspec.Meta(description="Items answered 202.")]
    failed: int
    results: Annotated[list[BatchItemResult], msgspec.Meta(description="One per item, in order.")]


class _ItemRefusedError(Exception):
    """An item's error, its field already prefixed with the item's place."""

    def __init__(self, result: BatchItemResult) -> None:
        super().__init__(result.error.message if result.error else "")
        self.result = result


def _refusal(index: int, error: ApiError | RateLimitedError) -> _ItemRefusedError:
    kind = error.kind if isinstance(error, ApiError) else ErrorCode.RATE_LIMITED
    field = f"items[{index}]" if error.field in (None, "$") else f"items[{index}].{error.field}"
    detail = ErrorDetail(kind.code, error.message, field)
    return _ItemRefusedError(BatchItemResult(index=index, status=kind.status, error=detail))


def _accepted(
    index: int, record_id: str, user_id: str, seq: int, at: int, *, replayed: bool
) -> BatchItemResult:
    notification = NotificationAccepted(
        id=record_id, user_id=user_id, seq=seq, created_at=from_ms(at)
    )
    return BatchItemResult(index=index, status=202, notification=notification, replayed=replayed)


_item_decoder = msgspec.json.Decoder(BatchItem)


def _decode(request: web.Request, index: int, raw: msgspec.Raw) -> BatchItem:
    """The item checked as a single send's body is before any storage read."""
    try:
        try:
            item = _item_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise from_msgspec(exc) from None
        if item.topic is not None:
            raise validation_error(
                "a batch item is for one user: send to a topic with POST /api/notifications",
                "topic",
            )
        scheduled = schedule_field(item)
        if scheduled is not None:
            # Not silently sent now: scheduling is a single send's (pushd/api/scheduled.py).
            raise validation_error(
                "a batch item is sent now: schedule it with POST /api/notifications", scheduled
            )
        check_content_source(item)  # title/body, or a template
        check_notification_size(item, request.app[LIMITS].config)
        require_category(request, item.category)
    except ApiError as exc:
        raise _refusal(index, exc) from None
    return item


class _Item:
    """One item on its way: what the single send keeps in local variables."""

    def __init__(self, index: int, body: BatchItem, user_id: str, now: int) -> None:
        self.index = index
        self.body = body
        self.user_id = user_id
        self.now = now
        self.claim: IdempotencyClaim | None = None


def _claim(request: web.Request, item: _Item) -> IdempotencyClaim | None:
    key = item.body.idempotency_key
    if key is None:
        return None
    request_hash = request.app[REQUEST_HASHER].hash(_canonical.encode(item.body))
    return IdempotencyClaim(scope=request[API_KEY].id, key=key, request_hash=request_hash)


async def _replayed(request: web.Request, item: _Item) -> BatchItemResult | None:
    """The stored answer of the item's idempotency key, or None to send it."""
    claim = item.claim
    if claim is None:
        return None
    window_ms = int(request.app[CONFIG].ingest.idempotency_window * 1000)
    stored = await request.app[STORAGE].find_idempotency(
        claim.scope, claim.key, not_before=item.now - window_ms
    )
    if stored is None:
        return None
    if not request.app[REQUEST_HASHER].same_request(
        stored.request_hash, _canonical.encode(item.body)
    ):
        raise ApiError(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "this idempotency_key was used for a different notification: use a new key "
            "for a new notification",
            field="idempotency_key",
        )
    return _accepted(
        item.index,
        stored.notification_id,
        stored.user_id,
        stored.seq,
        stored.created_at,
        replayed=True,
    )


async def _prepare(request: web.Request, item: _Item) -> NewNotification | BatchItemResult:
    """The item's notification, or its replayed answer. Raises `_ItemRefusedError`."""
    body = item.body
    try:
        replay = await _replayed(request, item)
        if replay is not None:
            return replay
        plan = _channel_plan(request, body)
        expires_at = _expires_at(body, item.now)
        await request.app[LIMITS].recipients.check(item.user_id, "inapp")
        deliveries = await _planned_deliveries(request, plan, body, (item.user_id, None), item.now)
        # Inside the try: a template that fails for this item's user refuses this item only.
        return await new_notification(
            request,
            body,
            item.user_id,
            now=item.now,
            expires_at=expires_at,
            claim=item.claim,
            deliveries=deliveries,
        )
    except (ApiError, RateLimitedError) as exc:
        raise _refusal(item.index, exc) from None


async def _recipient(request: web.Request, index: int, body: BatchItem) -> str:
    try:
        user_id, _ = await _resolve_recipient(request, body)
    except ApiError as exc:
        raise _refusal(index, exc) from None
    return user_id


def _outcome(index: int, result: object) -> BatchItemResult:
    """A `gather` result of one item turned into its answer (unexpected errors re-raised)."""
    if isinstance(result, _ItemRefusedError):
        return result.result
    if isinstance(result, BaseException):
        raise result
    assert isinstance(result, BatchItemResult)
    return result


def _committed(
    index: int, result: NotificationRecord | Exception, body: BatchItem
) -> BatchItemResult:
    if isinstance(result, NotificationRecord):
        return _accepted(
            index, result.id, result.user_id, result.seq, result.created_at, replayed=False
        )
    if isinstance(result, UnknownUserError):
        field = "user_id" if body.user_id is not None else "external_id"
        error = ApiError(ErrorCode.NOT_FOUND, f"no user with id {result.user_id!r}", field=field)
    elif isinstance(result, IdempotencyConflictError):
        error = _in_use(body)
    else:
        raise result
    return _refusal(index, error).result


def _in_use(body: BatchItem) -> ApiError:
    return ApiError(
        ErrorCode.IDEMPOTENCY_KEY_IN_USE,
        f"a request with idempotency_key {body.idempotency_key!r} is still being processed: "
        "retry shortly to get its result",
        field="idempotency_key",
    )


async def _distinct_items(
    request: web.Request, raws: list[msgspec.Raw]
) -> tuple[list[_Item], dict[int, BatchItemResult]]:
    """The items that passed the checks without storage writes, each for another user;
    and the answers of those that did not, by index."""
    answers: dict[int, BatchItemResult] = {}
    decoded: list[tuple[int, BatchItem]] = []
    for index, raw in enumerate(raws):
        try:
            decoded.append((index, _decode(request, index, raw)))
        except _ItemRefusedError as refused:
            answers[index] = refused.result
    # Eagerly: an item naming its user by id resolves without waiting, and then needs
    # no task of its own (pushd/ingest/eager.py).
    found = await gather_eagerly(_recipient(request, i, body) for i, body in decoded)
    now = now_ms()
    items: list[_Item] = []
    first_of: dict[str, int] = {}
    for (index, body), user_id in zip(decoded, found, strict=True):
        if not isinstance(user_id, str):
            answers[index] = _outcome(index, user_id)
        elif user_id in first_of:
            field = "user_id" if body.user_id is not None else "external_id"
            error = validation_error(
                f"items[{first_of[user_id]}] already sends to user {user_id!r}: a batch "
                "holds one notification per user (send the others in another request)",
                field,
            )
            answers[index] = _refusal(index, error).result
        else:
            first_of[user_id] = index
            items.append(_Item(index, body, user_id, now))
    return items, answers


async def send_batch(request: web.Request, body: SendBatch, _query: None) -> Reply:
    most = request.app[CONFIG].ingest.batch_max_items
    if len(body.items) > most:
        raise validation_error(
            f"{len(body.items)} items; at most {most} per request (setting "
            "ingest.batch_max_items): split the batch",
            "items",
        )
    items, answers = await _distinct_items(request, body.items)
    ingest = request.app[INGEST]
    with contextlib.ExitStack() as claims:
        held: list[_Item] = []
        for item in items:
            item.claim = _claim(request, item)
            if item.claim is not None:
                try:
                    claims.enter_context(ingest.claim(item.claim.scope, item.claim.key))
                except ClaimInFlightError:
                    answers[item.index] = _refusal(item.index, _in_use(item.body)).result
                    continue
            held.append(item)
        prepared = await gather_eagerly(_prepare(request, item) for item in held)
        to_send: list[tuple[_Item, NewNotification]] = []
        for item, result in zip(held, prepared, strict=True):
            if isinstance(result, NewNotification):
                to_send.append((item, result))
            else:
                answers[item.index] = _outcome(item.index, result)
        committed = await ingest.submit_many([n for _, n in to_send])
    for (item, _), outcome in zip(to_send, committed, strict=True):
        answers[item.index] = _committed(item.index, outcome, item.body)
    if any(d.status == "queued" for _, n in to_send for d in n.deliveries):
        request.app[CHANNELS].nudge()
    results = [answers[i] for i in range(len(body.items))]
    accepted = sum(1 for r in results if r.status == 202)
    sent = sum(1 for r in results if r.status == 202 and not r.replayed)
    if sent:
        request.app[METRICS].accepted.add({}, sent)
    request[AUDIT_DETAIL] = {"items": len(results), "accepted": accepted}
    return Reply(
        200, BatchResult(accepted=accepted, failed=len(results) - accepted, results=results)
    )


ROUTES = [
    Route(
        "POST",
        "/api/notifications/batch",
        send_batch,
        "Send up to `ingest.batch_max_items` notifications, each to another user, in one "
        "request; the answer has one result per item (202 committed, or its error)",
        {200: BatchResult},
        body=SendBatch,
        description="Each item is checked like the body of `POST /api/notifications`; an "
        "item's error names it (`items[3].title`) and does not stop the others. The valid "
        "items are committed in one transaction before the answer. `idempotency_key` per "
        "item makes a retry of the whole batch safe: committed items are answered again "
        "(`replayed: true`), the others sent.",
        tag="notifications",
        action="notification.send_batch",
    ),
]
