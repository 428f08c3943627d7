"""Recording API calls in the audit trail: the route dispatcher (pushd/api/dispatch.py)
wraps every state-changing call in `record_call`, so that no handler has to remember to.
What a record holds is docs/security.md ("Audit trail"); the writer that stores it is
pushd/access/audit_writer.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from pushd.access.api_keys import API_KEY, REVOKED_KEY
from pushd.access.audit_fields import AUDIT_ACTION, AUDIT_ACTOR, AUDIT_DETAIL, AUDIT_TARGET
from pushd.access.rate_limits import RateLimitedError, client_network
from pushd.api.errors import ApiError, ErrorCode
from pushd.appkeys import AUDIT
from pushd.ids import now_ms
from storage import StorageUnavailableError
from storage.records import NewAuditRecord


def _status_of(exc: BaseException) -> int:
    """The status error_middleware answers for an exception leaving a route."""
    if isinstance(exc, ApiError):
        return exc.kind.status
    if isinstance(exc, RateLimitedError):
        return ErrorCode.RATE_LIMITED.status
    if isinstance(exc, StorageUnavailableError):
        return ErrorCode.STORAGE_UNAVAILABLE.status
    if isinstance(exc, web.HTTPException):
        return exc.status
    return ErrorCode.INTERNAL.status


async def record_call(
    request: web.Request,
    action: str,
    serve: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """Serve the request, then queue its audit record under `action` (failed calls
    included). Cancellation is not recorded: nothing can be awaited then, and aiohttp
    only cancels handlers on a forced shutdown."""
    try:
        response = await serve(request)
    except Exception as exc:
        await _record(request, action, _status_of(exc))
        raise
    await _record(request, action, response.status)
    return response


async def _record(request: web.Request, action: str, status: int) -> None:
    key = request.get(API_KEY)
    actor = f"key:{key.id}" if key is not None else request.get(AUDIT_ACTOR)
    if actor is None:
        # Authentication failed (every audited route needs a key or, if public, a proof
        # of its own such as a signed link): tallied per source, not one record each
        # (anyone could fill storage), and no target, since the path of a caller
        # without a valid key names anything it likes.
        revoked = request.get(REVOKED_KEY)
        request.app[AUDIT].record_failed_auth(
            key_id=None if revoked is None else revoked.id,
            source=client_network(request.remote),
            action=action,
            result=str(status),
            at=now_ms(),
        )
        return
    action = request.get(AUDIT_ACTION, action)
    target = request.get(AUDIT_TARGET)
    if target is None and "userId" in request.match_info:
        target = f"user:{request.match_info['userId']}"
    await request.app[AUDIT].record(
        NewAuditRecord(
            at=now_ms(),
            actor=actor,
            action=action,
            target=target,
            source=request.remote,
            result=str(status),
            detail=request.get(AUDIT_DETAIL),
        )
    )
