"""Notification templates: the admin routes (save a version, list, read, delete), the
preview, and what a send with `template` renders for its recipient (used by
pushd/api/notifications.py for single and batch sends, and by the fan-out of broadcast,
segment and topic sends, pushd/audiences/fanout.py). Rendering itself is
pushd/routing/templates.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import msgspec
from aiohttp import web

from pushd.access.audit_fields import AUDIT_DETAIL, AUDIT_TARGET
from pushd.access.roles import ADMIN_ONLY
from pushd.api.errors import ApiError, ErrorCode, validation_error
from pushd.api.pagination import PageLimit, fetch_page
from pushd.api.route import Reply, Route
from pushd.api.schemas import ExternalId, SendNotification
from pushd.appkeys import LIMITS, STORAGE, TEMPLATES
from pushd.config.settings import LimitsConfig
from pushd.ids import from_ms, now_ms
from pushd.routing.plan import ChannelContent
from pushd.routing.templates import (
    TEMPLATE_ID_PATTERN,
    RenderedTemplate,
    TemplateProblemError,
    TemplateRenderer,
    TemplateRenderError,
    user_variables,
)
from storage.records import NewTemplateVersion, TemplateRecord, UserRecord

Meta = msgspec.Meta

TemplateId = Annotated[
    str,
    Meta(
        pattern=TEMPLATE_ID_PATTERN,
        description="Lower-case slug, 1-64 chars: the template's id in URLs and sends.",
    ),
]
Locale = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z]{2,8}([-_][A-Za-z0-9]{1,8}){0,4}$",
        description="A BCP 47 language tag (`fr`, `fr-CA`, `zh-Hant-TW`).",
    ),
]
# The configured limit (`templates.max_source_bytes`) is checked on top of this one.
Source = Annotated[
    str, Meta(min_length=1, max_length=262_144, description="Jinja2 source (sandboxed).")
]
VariableName = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
_VERSION = Annotated[int, Meta(ge=1, le=2_147_483_647)]


class InAppParts(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    title: Source | None = None
    body: Source | None = None


class EmailParts(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    subject: Source | None = None
    html: Annotated[
        Source | None, Meta(description="HTML: the only part whose values are HTML-escaped.")
    ] = None
    text: Source | None = None


class PushParts(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    title: Source | None = None
    body: Source | None = None


class SmsParts(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    text: Source


class TemplateContent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """One locale's parts. `inapp` (the notification's title and body) is required; a
    channel left out is derived from it, as for a send without a template."""

    inapp: InAppParts
    email: EmailParts | None = None
    push: PushParts | None = None
    sms: SmsParts | None = None


class PutTemplate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A template's new version: replaces the latest for sends that name no version."""

    description: Annotated[str, Meta(max_length=500)] = ""
    default_locale: Annotated[
        Locale,
        Meta(description="The locale used when the recipient's (and its shorter forms) is absent."),
    ] = "en"
    variables: Annotated[
        dict[VariableName, Any],
        Meta(
            max_length=200,
            description="Declared defaults: used for a variable a send's `data` leaves out.",
        ),
    ] = msgspec.field(default_factory=dict)
    locales: Annotated[dict[Locale, TemplateContent], Meta(min_length=1, max_length=100)]


class Template(msgspec.Struct, kw_only=True):
    id: str
    version: int
    description: str
    default_locale: str
    variables: dict[str, Any]
    locales: dict[str, TemplateContent]
    created_at: Annotated[datetime, Meta(description="When this version was saved.")]

    @classmethod
    def of(cls, record: TemplateRecord) -> Template:
        return cls(
            id=record.id,
            version=record.version,
            description=record.description,
            default_locale=record.default_locale,
            variables=record.variables,
            locales=msgspec.convert(record.locales, dict[str, TemplateContent]),
            created_at=from_ms(record.created_at),
        )


class TemplateSummary(msgspec.Struct, kw_only=True):
    id: str
    version: Annotated[int, Meta(description="The latest version.")]
    description: str
    default_locale: str
    locales: list[str]
    updated_at: datetime


class TemplatePage(msgspec.Struct):
    items: list[TemplateSummary]
    next_cursor: str | None


class TemplatesPageQuery(msgspec.Struct):
    limit: PageLimit = 50
    cursor: Annotated[str, Meta(max_length=255)] | None = None


class TemplateQuery(msgspec.Struct):
    version: Annotated[_VERSION | None, Meta(description="An older version (default: latest).")] = (
        None
    )


class PreviewTemplate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Render for one user (exactly one of `user_id` and `external_id`); nothing is sent."""

    user_id: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    external_id: ExternalId | None = None
    data: dict[str, Any] | None = None
    locale: Annotated[Locale | None, Meta(description="Instead of the user's own `locale`.")] = None
    version: Annotated[_VERSION | None, Meta(description="Default: the latest.")] = None


class TemplatePreview(msgspec.Struct, kw_only=True):
    template: str
    version: int
    locale: Annotated[
        str, Meta(description="The locale chosen: the user's, a shorter form, or the default.")
    ]
    parts: Annotated[
        dict[str, dict[str, str]],
        Meta(
            description="channel (inapp, email, push, sms) -> part -> rendered text; "
            "parts that rendered empty are left out."
        ),
    ]


# sending with a template ------------------------------------------------------------


class RecipientGoneError(ApiError):
    """The recipient a template is rendered for does not exist (or was erased): a 404,
    which a topic send takes as "skip this subscriber"."""

    def __init__(self, user_id: str, field: str) -> None:
        super().__init__(ErrorCode.NOT_FOUND, f"no user with id {user_id!r}", field=field)


@dataclass(frozen=True, slots=True)
class SentContent:
    """What a notification says: the request's, or its template's rendered for the
    recipient."""

    title: str | None
    body: str | None
    channel_content: dict[str, dict[str, str]] | None


# Templates read by this request: a batch send reads each one once, and all of its
# recipients get the same version even if a new one is saved meanwhile.
_TEMPLATES_READ: web.RequestKey[dict[tuple[str, int | None], TemplateRecord]] = web.RequestKey(
    "templates_read", dict
)


def check_content_source(body: SendNotification) -> None:
    """422 unless the send gives a title or body (and maybe `content`), or a template
    instead of them."""
    if body.template is None:
        if body.template_version is not None:
            raise validation_error("template_version needs a template", "template_version")
        if body.title is None and body.body is None:
            raise validation_error("give a title, a body, or both (or a template)", "title")
        return
    for name, value in (("title", body.title), ("body", body.body), ("content", body.content)):
        if value is not None:
            raise validation_error(
                f"give a template or {name}, not both: the template makes the title, body "
                "and per-channel content",
                name,
            )
    if body.data is not None and "user" in body.data:
        raise validation_error(
            "with a template, `user` is the recipient's profile: rename this data key",
            "data.user",
        )


async def sent_content(
    request: web.Request, body: SendNotification, user_id: str, *, user: UserRecord | None = None
) -> SentContent:
    """The notification's title, body and channel content for `user_id`: the request's,
    or its template's rendered for the user (`user` when the caller has read the row
    already, else one user read, only with a template)."""
    if body.template is None:
        content = None if body.content is None else body.content.as_stored()
        return SentContent(body.title, body.body, content)
    template = await _template_for(request, body.template, body.template_version)
    if user is None:
        user = await request.app[STORAGE].get_user(user_id)
    if user is None:
        raise RecipientGoneError(user_id, "user_id" if body.user_id is not None else "external_id")
    rendered = await _render(request, template, user, body.data or {}, locale=user.locale)
    return SentContent(rendered.title, rendered.body, rendered.channel_content())


async def _template_for(
    request: web.Request, template_id: str, version: int | None
) -> TemplateRecord:
    read = request.get(_TEMPLATES_READ)
    if read is None:
        read = request[_TEMPLATES_READ] = {}
    key = (template_id, version)
    if key not in read:
        found = await load_template(request, template_id, version, field="template")
        read.setdefault(key, found)  # concurrent items of one batch keep the first read
    return read[key]


async def _render(
    request: web.Request,
    template: TemplateRecord,
    user: UserRecord,
    data: dict[str, Any],
    *,
    locale: str | None,
) -> RenderedTemplate:
    """The template rendered for `user`, its output within the notification's limits;
    422 naming the variable or the template otherwise."""
    try:
        return await render_for(
            request.app[TEMPLATES],
            request.app[LIMITS].config,
            template,
            user,
            data,
            locale=locale,
        )
    except TemplateProblemError as exc:
        raise validation_error(str(exc), exc.field) from None


async def render_for(
    renderer: TemplateRenderer,
    limits: LimitsConfig,
    template: TemplateRecord,
    user: UserRecord,
    data: dict[str, Any],
    *,
    locale: str | None,
) -> RenderedTemplate:
    """The template rendered for `user`, its output within the notification's limits:
    what every send with a template renders, in a request or in the fan-out. Raises
    `TemplateProblemError` naming the variable or the template otherwise."""
    await renderer.compile_off_loop(template, locale)
    rendered = renderer.render(template, locale=locale, data=data, user=user_variables(user))
    _check_output(limits, rendered)
    return rendered


def _check_output(limits: LimitsConfig, rendered: RenderedTemplate) -> None:
    where = f"template {rendered.template_id!r} version {rendered.version} ({rendered.locale})"
    if rendered.title is None and rendered.body is None:
        raise TemplateRenderError(f"{where} rendered neither a title nor a body", field="template")
    for part, text, most in (
        ("title", rendered.title, limits.title_max_chars),
        ("body", rendered.body, limits.body_max_chars),
    ):
        if text is not None and len(text) > most:
            raise TemplateRenderError(
                f"{where} rendered a {part} of {len(text)} characters; the limit is {most} "
                f"(setting limits.{part}_max_chars)",
                field="template",
            )
    try:
        msgspec.convert(rendered.channel_content() or {}, ChannelContent)
    except msgspec.ValidationError as exc:
        raise TemplateRenderError(f"{where} rendered too much: {exc}", field="template") from None


async def pin_template_version(request: web.Request, body: SendNotification) -> SendNotification:
    """`body` with `template_version` set to the version it names (the latest when it
    names none), for a send carried out later by the fan-out: every chunk renders that
    version even if a new one is saved mid-send. 404 naming `template` or 422 if that
    version's parts for its default locale do not compile here, before anything is
    written; `body` unchanged without a template."""
    if body.template is None:
        return body
    template = await load_template(request, body.template, body.template_version, field="template")
    try:
        await request.app[TEMPLATES].compile_off_loop(template, template.default_locale)
    except TemplateProblemError as exc:
        raise validation_error(str(exc), exc.field) from None
    return msgspec.structs.replace(body, template_version=template.version)


async def load_template(
    request: web.Request, template_id: str, version: int | None, *, field: str
) -> TemplateRecord:
    """The template (that version, else the latest) or a 404 naming `field`."""
    found = await request.app[STORAGE].get_template(template_id, version)
    if found is None:
        which = f"no version {version} of template" if version is not None else "no template"
        raise ApiError(ErrorCode.NOT_FOUND, f"{which} {template_id!r}", field=field)
    return found


# routes ------------------------------------------------------------------------------


def _path_id(request: web.Request) -> str:
    template_id = request.match_info["templateId"]
    try:
        return msgspec.convert(template_id, TemplateId)
    except msgspec.ValidationError:
        raise validation_error(
            f"template id {template_id!r} is not a lower-case slug of 1-64 characters "
            "(a-z, 0-9, then also _ . -)",
            "templateId",
        ) from None


async def put_template(request: web.Request, body: PutTemplate, _query: None) -> Reply:
    template_id = _path_id(request)
    locales = {
        locale: {
            channel: parts
            for channel, parts in msgspec.to_builtins(content).items()
            if parts  # an empty channel is no channel
        }
        for locale, content in body.locales.items()
    }
    if "user" in body.variables:
        raise validation_error(
            "`user` is the recipient's profile, not a variable", "variables.user"
        )
    try:
        await request.app[TEMPLATES].check_off_loop(locales, body.default_locale)
    except TemplateProblemError as exc:
        raise validation_error(str(exc), exc.field) from None
    saved = await request.app[STORAGE].save_template(
        NewTemplateVersion(
            id=template_id,
            description=body.description,
            default_locale=body.default_locale,
            variables=body.variables,
            locales=locales,
            created_at=now_ms(),
        )
    )
    request[AUDIT_TARGET] = f"template:{template_id}"
    request[AUDIT_DETAIL] = {"version": saved.version}
    return Reply(200, Template.of(saved), {"Location": f"/api/templates/{template_id}"})


async def list_templates(request: web.Request, _body: None, query: TemplatesPageQuery) -> Reply:
    storage = request.app[STORAGE]
    page = await fetch_page(
        lambda limit: storage.list_templates(after_id=query.cursor, limit=limit),
        query.limit,
        key=lambda template: template.id,
    )
    items = [
        TemplateSummary(
            id=t.id,
            version=t.version,
            description=t.description,
            default_locale=t.default_locale,
            locales=sorted(t.locales),
            updated_at=from_ms(t.created_at),
        )
        for t in page.items
    ]
    return Reply(200, TemplatePage(items, page.next_cursor))


async def get_template(request: web.Request, _body: None, query: TemplateQuery) -> Reply:
    template_id = _path_id(request)
    found = await load_template(request, template_id, query.version, field="templateId")
    return Reply(200, Template.of(found))


async def delete_template(request: web.Request, _body: None, _query: None) -> Reply:
    template_id = _path_id(request)
    request[AUDIT_TARGET] = f"template:{template_id}"
    if not await request.app[STORAGE].delete_template(template_id):
        raise ApiError(ErrorCode.NOT_FOUND, f"no template {template_id!r}", field="templateId")
    return Reply(204)


async def preview_template(request: web.Request, body: PreviewTemplate, _query: None) -> Reply:
    template_id = _path_id(request)
    if (body.user_id is None) == (body.external_id is None):
        raise validation_error(
            "name the user with exactly one of user_id and external_id", "user_id"
        )
    storage = request.app[STORAGE]
    if body.user_id is not None:
        user, field = await storage.get_user(body.user_id), "user_id"
    else:
        assert body.external_id is not None
        user, field = await storage.get_user_by_external_id(body.external_id), "external_id"
    if user is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no user with this {field}", field=field)
    if body.data is not None and "user" in body.data:
        raise validation_error(
            "`user` is the recipient's profile: rename this data key", "data.user"
        )
    template = await load_template(request, template_id, body.version, field="templateId")
    rendered = await _render(
        request, template, user, body.data or {}, locale=body.locale or user.locale
    )
    return Reply(
        200,
        TemplatePreview(
            template=template.id,
            version=template.version,
            locale=rendered.locale,
            parts=rendered.parts,
        ),
    )


_ID_ERROR = {
    404: "No such template (or no such version of it)",
    422: "The template id is not a lower-case slug of 1-64 characters",
}

ROUTES = [
    Route(
        "PUT",
        "/api/templates/{templateId}",
        put_template,
        "Save a template: its first version, or a new one (older versions stay readable)",
        {200: Template},
        body=PutTemplate,
        description="Every part is compiled: a syntax error is a 422 whose `field` names the "
        "part (`locales.fr.email.html`) and whose message gives the line. Sources are "
        "Jinja2, rendered in its sandbox; only `email.html` is HTML-escaped. Variables: "
        "the send's `data`, the declared `variables` defaults, and `user` (the recipient's "
        "id, external_id, name, email, phone, locale, timezone, tags, attributes; those "
        "without a value are left out).",
        tag="templates",
        roles=ADMIN_ONLY,
        action="template.save",
    ),
    Route(
        "GET",
        "/api/templates",
        list_templates,
        "List templates (by id), each at its latest version",
        {200: TemplatePage},
        query=TemplatesPageQuery,
        tag="templates",
    ),
    Route(
        "GET",
        "/api/templates/{templateId}",
        get_template,
        "Get a template: its latest version, or `version`",
        {200: Template},
        query=TemplateQuery,
        errors=_ID_ERROR,
        tag="templates",
    ),
    Route(
        "DELETE",
        "/api/templates/{templateId}",
        delete_template,
        "Delete a template and all its versions (a later save continues its numbering)",
        {204: None},
        errors={404: "No such template", 422: _ID_ERROR[422]},
        tag="templates",
        roles=ADMIN_ONLY,
        action="template.delete",
    ),
    Route(
        "POST",
        "/api/templates/{templateId}/preview",
        preview_template,
        "Render a template for a user and data, without sending anything",
        {200: TemplatePreview},
        body=PreviewTemplate,
        description="The locale is `locale` if given, else the user's: the first of it, its "
        "shorter forms (`fr-CA` -> `fr`) and the template's `default_locale` that the "
        "template has. A missing variable is a 422 naming it (`data.order_id`).",
        errors={404: "No such template, version or user"},
        tag="templates",
        action="template.preview",
    ),
]
