"""Users and their devices."""

from __future__ import annotations

import msgspec
from aiohttp import web

from pushd.access.audit_fields import AUDIT_TARGET
from pushd.api.errors import ApiError, ErrorCode, validation_error
from pushd.api.pagination import PageLimit, fetch_page
from pushd.api.route import Reply, Route
from pushd.api.schemas import (
    MAX_ATTRIBUTES_BYTES,
    CreateDevice,
    CreateUser,
    Device,
    DeviceList,
    UpdateUser,
    User,
    UserPage,
    WebPushDevice,
    device_address_and_details,
    is_known_timezone,
)
from pushd.appkeys import CONFIG, STORAGE
from pushd.channels.outbound_url import OutboundUrlError, ResolveFailedError, check_outbound_url
from pushd.ids import new_id, now_ms
from storage import ConflictError, Storage, UnknownUserError
from storage.records import AttributeValue, NewDevice, NewUser, UserLabels, UserRecord

_attributes_size = msgspec.json.Encoder()


class PageQuery(msgspec.Struct):
    limit: PageLimit = 50
    cursor: str | None = None


async def load_user(storage: Storage, user_id: str) -> UserRecord:
    """The user or a 404 naming the id."""
    user = await storage.get_user(user_id)
    if user is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no user with id {user_id!r}", field="userId")
    return user


def _tag_set(tags: list[str] | None) -> tuple[str, ...] | None:
    """Tags are a set: repeats dropped, sorted so that equal sets are stored alike."""
    return None if tags is None else tuple(sorted(set(tags)))


def _checked_attributes(
    attributes: dict[str, AttributeValue] | None,
) -> dict[str, AttributeValue] | None:
    """The attributes, or a 422 naming `attributes` when they are too large as JSON."""
    if attributes is not None and len(_attributes_size.encode(attributes)) > MAX_ATTRIBUTES_BYTES:
        raise validation_error(
            f"attributes are larger than {MAX_ATTRIBUTES_BYTES} bytes as JSON: keep "
            "bulky data in your own database and store only what targeting needs",
            "attributes",
        )
    return attributes


async def create_user(request: web.Request, body: CreateUser, _query: None) -> Reply:
    if body.timezone is not None and not is_known_timezone(body.timezone):
        raise validation_error(
            f"unknown time zone {body.timezone!r}: use an IANA name such as Europe/Paris",
            "timezone",
        )
    new_user = NewUser(
        id=new_id("usr"),
        external_id=body.external_id,
        name=body.name,
        email=body.email,
        phone=body.phone,
        locale=body.locale,
        timezone=body.timezone,
        created_at=now_ms(),
        tags=_tag_set(body.tags) or (),
        attributes=_checked_attributes(body.attributes) or {},
    )
    try:
        user = await request.app[STORAGE].create_user(new_user)
    except ConflictError as exc:
        raise ApiError(
            ErrorCode.CONFLICT,
            f"a user with this {exc.field} already exists: choose another one",
            field=exc.field,
        ) from None
    request[AUDIT_TARGET] = f"user:{user.id}"
    return Reply(201, User.of(user), {"Location": f"/api/users/{user.id}"})


async def list_users(request: web.Request, _body: None, query: PageQuery) -> Reply:
    storage = request.app[STORAGE]
    page = await fetch_page(
        lambda limit: storage.list_users(after_id=query.cursor, limit=limit),
        query.limit,
        key=lambda user: user.id,
    )
    return Reply(200, UserPage([User.of(u) for u in page.items], page.next_cursor))


async def get_user(request: web.Request, _body: None, _query: None) -> Reply:
    user = await load_user(request.app[STORAGE], request.match_info["userId"])
    return Reply(200, User.of(user))


async def update_user(request: web.Request, body: UpdateUser, _query: None) -> Reply:
    user_id = request.match_info["userId"]
    labels = UserLabels(tags=_tag_set(body.tags), attributes=_checked_attributes(body.attributes))
    user = await request.app[STORAGE].update_user_labels(user_id, labels)
    if user is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no user with id {user_id!r}", field="userId")
    request[AUDIT_TARGET] = f"user:{user.id}"
    return Reply(200, User.of(user))


async def add_device(request: web.Request, body: CreateDevice, _query: None) -> Reply:
    storage = request.app[STORAGE]
    user_id = request.match_info["userId"]
    address, details = device_address_and_details(body)
    if isinstance(body, WebPushDevice):
        await _check_endpoint(request, body.endpoint)
    kind = msgspec.inspect.type_info(type(body))
    assert isinstance(kind, msgspec.inspect.StructType)
    device = NewDevice(
        id=new_id("dev"),
        user_id=user_id,
        kind=str(kind.tag),
        address=address,
        details=details,
        created_at=now_ms(),
    )
    try:
        record, created = await storage.upsert_device(device)
    except UnknownUserError:
        raise ApiError(
            ErrorCode.NOT_FOUND, f"no user with id {user_id!r}", field="userId"
        ) from None
    location = {"Location": f"/api/users/{user_id}/devices/{record.id}"}
    return Reply(201 if created else 200, Device.of(record), location)


async def _check_endpoint(request: web.Request, endpoint: str) -> None:
    """422 naming `endpoint` for a URL pushd must not send to (pushd/channels/outbound_url.py);
    the channel sender checks it again before each request."""
    try:
        await check_outbound_url(endpoint, allow_private=request.app[CONFIG].outbound.allow_private)
    except OutboundUrlError as exc:
        raise validation_error(f"endpoint refused: {exc}", "endpoint") from None
    except ResolveFailedError as exc:
        raise validation_error(f"endpoint not checked: {exc}; retry later", "endpoint") from None


async def list_devices(request: web.Request, _body: None, _query: None) -> Reply:
    storage = request.app[STORAGE]
    user = await load_user(storage, request.match_info["userId"])
    return Reply(200, DeviceList([Device.of(d) for d in await storage.list_devices(user.id)]))


async def delete_device(request: web.Request, _body: None, _query: None) -> Reply:
    user_id, device_id = request.match_info["userId"], request.match_info["deviceId"]
    if not await request.app[STORAGE].delete_device(user_id, device_id):
        raise ApiError(
            ErrorCode.NOT_FOUND,
            f"user {user_id!r} has no device {device_id!r}",
            field="deviceId",
        )
    return Reply(204)


ROUTES = [
    Route(
        "POST",
        "/api/users",
        create_user,
        "Create a user",
        {201: User},
        body=CreateUser,
        errors={409: "A user with this external_id exists"},
        tag="users",
        action="user.create",
    ),
    Route(
        "GET",
        "/api/users",
        list_users,
        "List users (oldest first)",
        {200: UserPage},
        query=PageQuery,
        tag="users",
    ),
    Route("GET", "/api/users/{userId}", get_user, "Get a user", {200: User}, tag="users"),
    Route(
        "PATCH",
        "/api/users/{userId}",
        update_user,
        "Replace a user's tags, attributes, or both (a field left out is kept)",
        {200: User},
        body=UpdateUser,
        tag="users",
        action="user.update",
    ),
    Route(
        "POST",
        "/api/users/{userId}/devices",
        add_device,
        "Register a device (201 new, 200 already registered)",
        {201: Device, 200: Device},
        body=CreateDevice,
        tag="devices",
        action="device.register",
    ),
    Route(
        "GET",
        "/api/users/{userId}/devices",
        list_devices,
        "List a user's devices",
        {200: DeviceList},
        tag="devices",
    ),
    Route(
        "DELETE",
        "/api/users/{userId}/devices/{deviceId}",
        delete_device,
        "Remove a device",
        {204: None},
        tag="devices",
        action="device.delete",
    ),
]
