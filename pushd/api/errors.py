"""The one catalogue of API errors. Every error a client can see has a stable `code`,
an HTTP status, a message that says what to fix and, for bad input, the `field` path.

Body: `{"error": {"code": "...", "message": "...", "field": "..."}}`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from enum import Enum

import msgspec
from aiohttp import web

from pushd.access.rate_limits import RateLimitedError
from pushd.config.validation_errors import ValidationFailure
from storage import StorageUnavailableError

log = logging.getLogger("pushd.api")


class ErrorCode(Enum):
    """(status, code). The code strings are API: never rename one."""

    INVALID_JSON = (400, "invalid_json")
    INVALID_QUERY = (400, "invalid_query")
    BAD_REQUEST = (400, "bad_request")  # not HTTP/1.1 at all: refused by the parser
    UNAUTHORIZED = (401, "unauthorized")
    FORBIDDEN = (403, "forbidden")
    NOT_FOUND = (404, "not_found")
    ROUTE_NOT_FOUND = (404, "route_not_found")
    METHOD_NOT_ALLOWED = (405, "method_not_allowed")
    CONFLICT = (409, "conflict")
    IDEMPOTENCY_KEY_IN_USE = (409, "idempotency_key_in_use")
    ALREADY_SENT = (409, "already_sent")  # a scheduled send cancelled after its release
    RETRACTED = (409, "retracted")  # an edit of a retracted notification
    PAYLOAD_TOO_LARGE = (413, "payload_too_large")
    UNSUPPORTED_MEDIA_TYPE = (415, "unsupported_media_type")
    VALIDATION_FAILED = (422, "validation_failed")
    IDEMPOTENCY_KEY_REUSED = (422, "idempotency_key_reused")
    RATE_LIMITED = (429, "rate_limited")
    STORAGE_UNAVAILABLE = (503, "storage_unavailable")
    INTERNAL = (500, "internal_error")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def code(self) -> str:
        return self.value[1]


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    field: str | None = None


class ErrorBody(msgspec.Struct):
    """What every non-2xx response of the API carries."""

    error: ErrorDetail


class ApiError(Exception):
    """Raised by handlers; turned into an `ErrorBody` response by the middleware."""

    def __init__(
        self,
        kind: ErrorCode,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.field = field
        self.headers = headers or {}


def validation_error(message: str, field: str) -> ApiError:
    """A 422 for one bad field."""
    return ApiError(ErrorCode.VALIDATION_FAILED, message, field=field)


def from_msgspec(error: msgspec.ValidationError) -> ApiError:
    """Turn msgspec's "Expected `int`, got `str` - at `$.items[0].x`" into a 422 whose
    `field` is `items[0].x`."""
    failure = ValidationFailure.of(error)
    match failure.field_problem:
        case "unknown":
            message = f"unknown field `{failure.field}`: remove it (see /api/openapi.json)"
            return validation_error(message, failure.field_path)
        case "missing":
            message = f"missing required field `{failure.field}`"
            return validation_error(message, failure.field_path)
        case None:
            return validation_error(failure.what, failure.path or "$")


def error_response(error: ApiError) -> web.Response:
    body = ErrorBody(ErrorDetail(error.kind.code, error.message, error.field))
    return web.Response(
        status=error.kind.status,
        body=msgspec.json.encode(body),
        content_type="application/json",
        headers=error.headers,
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_EXCEPTIONS: dict[int, tuple[ErrorCode, str]] = {
    404: (ErrorCode.ROUTE_NOT_FOUND, "no such route: see /api/openapi.json for the API"),
    405: (ErrorCode.METHOD_NOT_ALLOWED, "this route does not accept that method"),
    413: (ErrorCode.PAYLOAD_TOO_LARGE, "request body too large"),
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as a JSON `ErrorBody`; bad input is never a 500."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except RateLimitedError as exc:
        return error_response(
            ApiError(
                ErrorCode.RATE_LIMITED,
                exc.message,
                field=exc.field,
                headers={"Retry-After": str(exc.retry_after)},
            )
        )
    except StorageUnavailableError as exc:
        log.warning("storage unavailable during %s %s: %s", request.method, request.path, exc)
        return error_response(
            ApiError(
                ErrorCode.STORAGE_UNAVAILABLE,
                "storage is unavailable; nothing was changed. Retry later.",
                headers={"Retry-After": "5"},
            )
        )
    except web.HTTPException as exc:
        if exc.status in _HTTP_EXCEPTIONS:
            kind, message = _HTTP_EXCEPTIONS[exc.status]
            if exc.status == 413:
                message = f"{message}: {exc.text} (setting server.max_body_bytes)"
            allow = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
            return error_response(ApiError(kind, message, headers=allow))
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(
            ApiError(ErrorCode.INTERNAL, "internal error; the server log has the details")
        )
