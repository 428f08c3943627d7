"""The OpenAPI 3.1 document, generated from the route table and the msgspec types."""

from __future__ import annotations

import types as pytypes
from collections.abc import Sequence
from typing import Any, get_args

import msgspec

from pushd.api.errors import ErrorBody
from pushd.api.route import Route

_ERRORS_BY_CONDITION = {
    "auth": {
        401: "Missing, unknown or revoked API key",
        429: "Too many requests for this API key, or without a valid key from this "
        "address: retry after `Retry-After` seconds",
    },
    "body": {
        400: "Body is not JSON",
        413: "Body too large",
        415: "Not JSON",
        422: "A field is invalid",
    },
    "query": {400: "A query parameter is invalid"},
    "path": {404: "Not found"},
    "always": {503: "Storage unavailable: retry after `Retry-After` seconds"},
}


# The handshake of RFC 6455 that turns a GET into a WebSocket (`Route.websocket`).
_UPGRADE_HEADERS = {
    "Upgrade": {"type": "string", "enum": ["websocket"]},
    "Connection": {"type": "string", "description": "Must contain `Upgrade`."},
    "Sec-WebSocket-Key": {"type": "string"},
    "Sec-WebSocket-Version": {"type": "string", "enum": ["13"]},
}


def _conditions(route: Route) -> list[str]:
    # The upgrade answers before anything reaches storage.
    conditions = [] if route.websocket else ["always"]
    if not route.public:
        conditions.append("auth")
    if route.body is not None:
        conditions.append("body")
    if route.query is not None:
        conditions.append("query")
    if route.path_params:
        conditions.append("path")
    return conditions


def _parameters(route: Route, components: dict[str, Any]) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in route.path_params
    ]
    if route.query is not None:
        query_schema = components[route.query.__name__]
        required = set(query_schema.get("required", []))
        parameters += [
            {"name": name, "in": "query", "required": name in required, "schema": schema}
            for name, schema in query_schema["properties"].items()
        ]
    parameters += [
        {
            "name": name,
            "in": "header",
            "required": False,
            "description": description,
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        }
        for name, description in route.headers.items()
    ]
    if route.websocket:
        parameters += [
            {"name": name, "in": "header", "required": True, "schema": schema}
            for name, schema in _UPGRADE_HEADERS.items()
        ]
    return parameters


def _operation(route: Route, by_type: dict[Any, Any], components: dict[str, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": _parameters(route, components),
        "responses": {},
    }
    if route.description is not None:
        operation["description"] = route.description
    if route.body is not None:
        operation["requestBody"] = {
            "required": route.body_required,
            "content": {"application/json": {"schema": by_type[route.body]}},
        }
    for status, body_type in route.responses.items():
        response: dict[str, Any] = {"description": route.summary}
        if body_type is not None:
            schema = _schema_of(body_type, by_type)
            response["content"] = {route.media_type: {"schema": schema}}
        operation["responses"][str(status)] = response
    error_content = {"application/json": {"schema": by_type[ErrorBody]}}
    route_error_content = (
        {**error_content, "text/html": {"schema": {"type": "string"}}}
        if route.html_errors
        else error_content
    )
    for status, description in route.errors.items():
        error: dict[str, Any] = {"description": description}
        if not route.websocket:  # a refused upgrade is aiohttp's plain text
            error["content"] = route_error_content
        operation["responses"][str(status)] = error
    for condition in _conditions(route):
        for status, description in _ERRORS_BY_CONDITION[condition].items():
            operation["responses"].setdefault(
                str(status), {"description": description, "content": error_content}
            )
    if route.public:
        operation["security"] = []
    else:
        # Roles (docs/security.md): who may call it, and the 403 every other key gets.
        roles = ", ".join(sorted(route.roles))
        operation["x-roles"] = sorted(route.roles)
        allowed = f"API key roles allowed: {roles}."
        operation["description"] = " ".join(filter(None, [operation.get("description"), allowed]))
        operation["responses"].setdefault(
            "403",
            {
                "description": f"The API key's role is not one of: {roles}",
                "content": error_content,
            },
        )
    return operation


def _refine(
    types: Sequence[Any], components: dict[str, Any], *, token_max_ttl: int, timezones: list[str]
) -> None:
    """Rules the handlers check beyond the msgspec types, stated in the document too, so
    that a request valid for the document is valid for the server: a type's own
    `__openapi_extra__`, and the two limits that come from this machine and its config."""
    for type_ in types:
        extra = getattr(type_, "__openapi_extra__", None)
        if extra is not None:
            components[type_.__name__].update(extra)
    timezone = components["CreateUser"]["properties"]["timezone"]
    for option in timezone.get("anyOf", [timezone]):
        if option.get("type") == "string":
            option["enum"] = timezones
    ttl = components["IssueToken"]["properties"]["ttl"]
    for option in ttl.get("anyOf", [ttl]):
        if option.get("type") in ("integer", "number"):
            option["maximum"] = token_max_ttl


def _alternatives(response_type: Any) -> list[Any]:
    """The types a response body may be: `A | B` is either (msgspec cannot describe a
    union of untagged structs itself, so each is described on its own)."""
    if response_type is None:
        return []
    if isinstance(response_type, pytypes.UnionType):
        return list(get_args(response_type))
    return [response_type]


def _schema_of(response_type: Any, by_type: dict[Any, Any]) -> dict[str, Any]:
    alternatives = _alternatives(response_type)
    if len(alternatives) == 1:
        schema: dict[str, Any] = by_type[alternatives[0]]
        return schema
    return {"oneOf": [by_type[t] for t in alternatives]}


def build_openapi(
    routes: Sequence[Route], *, version: str, token_max_ttl: int, timezones: list[str]
) -> dict[str, Any]:
    """Describe every route: parameters, request body, success and error responses."""
    types: list[Any] = [ErrorBody]
    for route in routes:
        types.extend(t for t in (route.body, route.query) if t is not None)
        for response_type in route.responses.values():
            types.extend(_alternatives(response_type))
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    by_type = dict(zip(types, schemas, strict=True))
    _refine(types, components, token_max_ttl=token_max_ttl, timezones=timezones)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(
            route, by_type, components
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "pushd",
            "version": version,
            "description": "Self-hosted notification server. Real-time delivery is over the "
            "WebSocket at /ws, described in docs/protocol.md.",
        },
        "servers": [{"url": "/"}],
        "security": [{"apiKey": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
    }
