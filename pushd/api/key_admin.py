"""`/api/keys`: create, list, get and revoke API keys (admin only; docs/security.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from aiohttp import web

from pushd.access.api_keys import generate_key, key_record
from pushd.access.audit_fields import AUDIT_DETAIL, AUDIT_TARGET
from pushd.access.roles import ADMIN, ADMIN_ONLY, READER, Role
from pushd.api.errors import ApiError, ErrorCode, validation_error
from pushd.api.route import Reply, Route
from pushd.api.schemas import Category
from pushd.appkeys import REVOCATIONS, STORAGE
from pushd.ids import from_ms, now_ms
from storage import LastAdminKeyError
from storage.records import ApiKeyRecord

Meta = msgspec.Meta


class CreateApiKey(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A new API key. `categories` limits a publisher or reader key to notifications of
    those categories (admin keys cannot be limited)."""

    name: Annotated[str, Meta(min_length=1, max_length=200, description="What the key is for.")]
    role: Role
    categories: (
        Annotated[list[Category], Meta(min_length=1, max_length=100, description="Limit.")] | None
    ) = None
    broadcast: Annotated[
        bool,
        Meta(
            description="A publisher key that may send to every user (`broadcast`) or a "
            "`segment` (admin keys always may)."
        ),
    ] = False


class ApiKey(msgspec.Struct, kw_only=True):
    """An API key's record; the secret itself is never shown again after creation."""

    id: str
    name: str
    role: Role
    categories: list[str] | None
    broadcast: bool
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, record: ApiKeyRecord) -> ApiKey:
        role: Any = record.role
        return cls(
            id=record.id,
            name=record.name,
            role=role,
            categories=None if record.categories is None else list(record.categories),
            broadcast=record.role == ADMIN or record.may_broadcast,
            created_at=from_ms(record.created_at),
            revoked_at=None if record.revoked_at is None else from_ms(record.revoked_at),
        )


class ApiKeyCreated(msgspec.Struct, kw_only=True):
    key: Annotated[str, Meta(description="The secret key: shown this once, stored only as a hash.")]
    api_key: ApiKey


class ApiKeyList(msgspec.Struct):
    items: list[ApiKey]


async def create_api_key(request: web.Request, body: CreateApiKey, _query: None) -> Reply:
    if body.role == ADMIN and body.categories is not None:
        raise validation_error(
            "admin keys cannot be limited to categories: give role publisher or reader",
            "categories",
        )
    if body.role == READER and body.broadcast:
        raise validation_error("reader keys cannot send: give role publisher", "broadcast")
    key = generate_key()
    record = key_record(
        key,
        name=body.name,
        role=body.role,
        categories=body.categories,
        may_broadcast=body.broadcast,
    )
    await request.app[STORAGE].create_api_key(record)
    request[AUDIT_TARGET] = f"key:{record.id}"
    request[AUDIT_DETAIL] = {
        "role": record.role,
        "categories": body.categories,
        "broadcast": body.broadcast,
    }
    return Reply(
        201,
        ApiKeyCreated(key=key, api_key=ApiKey.of(record)),
        {"Location": f"/api/keys/{record.id}"},
    )


async def list_api_keys(request: web.Request, _body: None, _query: None) -> Reply:
    keys = await request.app[STORAGE].list_api_keys()
    return Reply(200, ApiKeyList([ApiKey.of(key) for key in keys]))


def _not_found(key_id: str) -> ApiError:
    return ApiError(ErrorCode.NOT_FOUND, f"no API key with id {key_id!r}", field="keyId")


async def get_api_key(request: web.Request, _body: None, _query: None) -> Reply:
    key_id = request.match_info["keyId"]
    record = await request.app[STORAGE].get_api_key(key_id)
    if record is None:
        raise _not_found(key_id)
    return Reply(200, ApiKey.of(record))


async def revoke_api_key(request: web.Request, _body: None, _query: None) -> Reply:
    key_id = request.match_info["keyId"]
    request[AUDIT_TARGET] = f"key:{key_id}"
    try:
        record = await request.app[STORAGE].revoke_api_key(key_id, at=now_ms())
    except LastAdminKeyError as exc:
        raise ApiError(ErrorCode.CONFLICT, str(exc), field="keyId") from None
    if record is None:
        raise _not_found(key_id)
    # Also when it was already revoked: a retry repairs a broadcast that failed before.
    await request.app[REVOCATIONS].api_key_revoked(key_id)
    return Reply(200, ApiKey.of(record))


ROUTES = [
    Route(
        "POST",
        "/api/keys",
        create_api_key,
        "Create an API key (the key is in this answer only)",
        {201: ApiKeyCreated},
        body=CreateApiKey,
        tag="keys",
        roles=ADMIN_ONLY,
        action="key.create",
    ),
    Route(
        "GET",
        "/api/keys",
        list_api_keys,
        "List API keys, revoked ones included (never their secrets)",
        {200: ApiKeyList},
        tag="keys",
        roles=ADMIN_ONLY,
    ),
    Route(
        "GET",
        "/api/keys/{keyId}",
        get_api_key,
        "Get an API key's record",
        {200: ApiKey},
        tag="keys",
        roles=ADMIN_ONLY,
    ),
    Route(
        "DELETE",
        "/api/keys/{keyId}",
        revoke_api_key,
        "Revoke an API key, on every node at once (idempotent)",
        {200: ApiKey},
        errors={409: "It is the last live admin key"},
        tag="keys",
        roles=ADMIN_ONLY,
        action="key.revoke",
    ),
]
