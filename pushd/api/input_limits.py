"""Input limits of the HTTP API that come from configuration (`[limits]`), checked by
handlers on top of the fixed ones in the request types."""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from pushd.api.errors import validation_error
from pushd.config.settings import LimitsConfig
from storage.jsondepth import deepest_member, within_depth

_encoder = msgspec.json.Encoder()


class NotificationContent(Protocol):
    """What `check_notification_size` measures: a send's content, or an edit's."""

    @property
    def title(self) -> str | None: ...
    @property
    def body(self) -> str | None: ...
    @property
    def data(self) -> dict[str, Any] | None: ...


def check_notification_size(body: NotificationContent, limits: LimitsConfig) -> None:
    """422 naming the field when the title, body or data is over its configured size."""
    if body.title is not None and len(body.title) > limits.title_max_chars:
        raise validation_error(
            f"title has {len(body.title)} characters; the limit is {limits.title_max_chars} "
            "(setting limits.title_max_chars)",
            "title",
        )
    if body.body is not None and len(body.body) > limits.body_max_chars:
        raise validation_error(
            f"body has {len(body.body)} characters; the limit is {limits.body_max_chars} "
            "(setting limits.body_max_chars)",
            "body",
        )
    if body.data is not None:
        size = len(_encoder.encode(body.data))
        if size > limits.data_max_bytes:
            raise validation_error(
                f"data is {size} bytes as JSON; the limit is {limits.data_max_bytes} "
                "(setting limits.data_max_bytes)",
                "data",
            )


def check_json_depth(raw: bytes, limits: LimitsConfig) -> None:
    """422 naming the top-level field when a JSON body nests deeper than
    `limits.json_max_depth`. Measured on the raw bytes, before a decoder recurses into
    them (about 1,000 levels raise RecursionError)."""
    max_depth = limits.json_max_depth
    if within_depth(raw, max_depth):
        return
    field = deepest_member(raw, max_depth)
    raise validation_error(
        f"{'`' + field + '`' if field else 'the body'} nests arrays and objects deeper than "
        f"{max_depth} levels, counting the body as level 1 (setting limits.json_max_depth)",
        field or "$",
    )


def document_limits(document: dict[str, Any], limits: LimitsConfig) -> dict[str, Any]:
    """State the configured notification limits in the OpenAPI document (in place), so
    that what the document allows, the server accepts."""
    properties = document["components"]["schemas"]["SendNotification"]["properties"]
    for field, configured in (("title", limits.title_max_chars), ("body", limits.body_max_chars)):
        for option in properties[field].get("anyOf", [properties[field]]):
            if option.get("type") == "string":
                option["maxLength"] = min(configured, option.get("maxLength", configured))
    data = properties["data"]
    data["description"] = (
        f"{data.get('description', '')} At most {limits.data_max_bytes} bytes once encoded "
        f"as JSON (setting limits.data_max_bytes), nesting at most {limits.json_max_depth - 1} "
        "levels of arrays and objects (setting limits.json_max_depth counts the body too)."
    ).strip()
    return document
