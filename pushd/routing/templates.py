"""Notification templates: choosing a template's locale for a recipient and rendering its
parts with Jinja2's sandbox (docs/routing.md, "Templates").

A template holds, per locale, per channel, the Jinja2 source of each part:

    inapp: title, body        (the notification's own title and body)
    email: subject, html, text
    push:  title, body
    sms:   text

The locale is the first of the recipient's locale, its shorter forms and the template's
default that the template has (`fr-CA` -> `fr` -> default); the whole content comes from
that one locale, so a message never mixes languages. A channel the locale leaves out is
derived from the in-app title and body, as for a send without a template.

Rendering is CPU work done in the request, on the event loop, so it is bounded:

- sources: `max_source_bytes` per part, checked (and compiled) when a template is saved;
- output: `max_output_bytes` per part, counted while `generate()` yields, and for every
  value an operator, filter or call builds (a string doubled in a loop is stopped when
  it passes the limit, not when it is printed);
- time: `render_timeout` for a whole render, checked between output chunks, at every
  loop iteration, call and intercepted operator (an empty loop prints nothing, so
  checking between chunks alone would not stop it). The sandbox also refuses
  `range()` of more than 100,000 items.

These bounds are against mistakes; templates are written by admins. The sandbox
(`ImmutableSandboxedEnvironment`) is against data: values from a request never become
template code, and no template reaches Python internals (`''.__class__`) or mutates its
inputs. Missing variables raise (`StrictUndefined`) unless the template declares a
default for them, so a send never goes out with a hole in it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from storage.records import TemplateLocales, TemplateRecord, UserRecord

CHANNEL_PARTS: Final[Mapping[str, tuple[str, ...]]] = {
    "inapp": ("title", "body"),
    "email": ("subject", "html", "text"),
    "push": ("title", "body"),
    "sms": ("text",),
}
"""Every channel of a template and its parts."""

TEMPLATE_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
"""A template's id: a lower-case slug, 1-64 characters."""

# Well above any real template's needs; also keeps `**` from building huge integers.
_MAX_EXPONENT: Final = 1024


@dataclass(frozen=True, slots=True)
class TemplateLimits:
    """The bounds of `[templates]` (config.toml)."""

    max_source_bytes: int = 65_536
    max_output_bytes: int = 262_144
    render_timeout: float = 0.05
    """Seconds one render (all parts of one recipient's message) may take."""
    cache_size: int = 256
    """Compiled (template, version, locale) kept, least recently used dropped first."""


class TemplateProblemError(ValueError):
    """A template cannot be saved or rendered; `field` names where (a part's path, or a
    variable)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class TemplateSourceError(TemplateProblemError):
    """A part does not compile, or is over `max_source_bytes` (found when saving)."""


class TemplateRenderError(TemplateProblemError):
    """Rendering failed: the template's expressions, or a bound."""


class MissingVariableError(TemplateRenderError):
    """A variable the template uses is neither in the data nor declared with a default."""

    def __init__(self, name: str, part: str) -> None:
        super().__init__(
            f"template variable {name!r} (used in {part}) is missing: give it in `data`, "
            "or declare a default for it in the template's `variables`",
            field=f"data.{name}",
        )
        self.name = name


class RenderLimitError(TemplateRenderError):
    """A render went past `max_output_bytes` or `render_timeout`."""


# Bounds of the render in progress: rendering is synchronous, so a context variable set
# around it is seen by every hook below, and never by another render.
@dataclass(frozen=True, slots=True)
class _Bounds:
    deadline: float
    max_output: int
    timeout: float


_BOUNDS: contextvars.ContextVar[_Bounds | None] = contextvars.ContextVar(
    "template_bounds", default=None
)


def _check_time() -> None:
    bounds = _BOUNDS.get()
    if bounds is not None and time.perf_counter() > bounds.deadline:
        raise RenderLimitError(
            f"rendering took longer than {bounds.timeout} s (setting "
            "templates.render_timeout): look for a loop that runs too long",
            field="template",
        )


def _check_size(value: object) -> object:
    bounds = _BOUNDS.get()
    sized = isinstance(value, str | list | tuple | dict)
    if bounds is not None and sized and len(value) > bounds.max_output:  # type: ignore[arg-type]
        raise _too_big(bounds.max_output)
    return value


def _too_big(limit: int) -> RenderLimitError:
    return RenderLimitError(
        f"the template built a value or an output over {limit} bytes (setting "
        "templates.max_output_bytes)",
        field="template",
    )


class _MissingVariableError(UndefinedError):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class _StrictUndefined(StrictUndefined):
    """`StrictUndefined` whose error for a missing top-level variable carries its name."""

    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[Exception] = UndefinedError,
    ) -> None:
        if exc is UndefinedError and obj is missing and hint is None and name is not None:
            # Jinja raises `exc(message)`: a partial carries the name along.
            exc = functools.partial(_MissingVariableError, name)  # type: ignore[assignment]
        super().__init__(hint, obj, name, exc)  # type: ignore[arg-type]


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with the time and size checks at every call and operator."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's signature
        _check_time()
        return _check_size(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_time()
        bounds = _BOUNDS.get()
        if bounds is not None:
            if operator == "*":
                _check_repeat(left, right, bounds.max_output)
            if operator == "**" and isinstance(right, int) and right > _MAX_EXPONENT:
                raise RenderLimitError(
                    f"exponent {right} is over {_MAX_EXPONENT}", field="template"
                )
        return _check_size(super().call_binop(context, operator, left, right))


def _check_repeat(left: Any, right: Any, limit: int) -> None:
    """Refuse `'x' * 10**9` before building it."""
    for sequence, count in ((left, right), (right, left)):
        repeated = isinstance(sequence, str | list | tuple) and isinstance(count, int)
        if repeated and len(sequence) * count > limit:
            raise _too_big(limit)


def _guarded_iteration(iterable: Iterable[Any]) -> Iterator[Any]:
    """Every `{% for %}` loop iterates through this (see `_guard_loops`)."""
    for item in iterable:
        _check_time()
        yield item


def _sized(filter_function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter whose result is checked against the output bound (`center(10**6)`)."""

    @functools.wraps(filter_function)  # keeps Jinja's pass_context marks
    def checked(*args: Any, **kwargs: Any) -> Any:
        _check_time()
        return _check_size(filter_function(*args, **kwargs))

    return checked


_LOOP_GUARD = "pushd_loop_guard"
_SIZE_GUARD = "pushd_size_guard"


def _environment(*, autoescape: bool) -> _BoundedEnvironment:
    environment = _BoundedEnvironment(
        undefined=_StrictUndefined,
        autoescape=autoescape,
        # Block tags on their own lines leave no blank lines in text parts.
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters = {name: _sized(f) for name, f in environment.filters.items()}
    environment.filters[_LOOP_GUARD] = _guarded_iteration
    environment.filters[_SIZE_GUARD] = _check_size
    return environment


def _guard_loops(tree: nodes.Template) -> nodes.Template:
    """Route every loop's iterable through the time check and every `~` concatenation
    through the size check, in the parsed template before it is compiled: neither a
    loop nor `~` goes through a call or an intercepted operator. One pass over the
    nodes (Jinja nodes have no parent links: each concatenation is replaced in the
    field of its parent that holds it)."""
    for parent in [tree, *tree.find_all(nodes.Node)]:  # listed first: the walk adds nodes
        if isinstance(parent, nodes.For):
            parent.iter = _filtered(parent.iter, _LOOP_GUARD)
        for field_name in parent.fields:
            value = getattr(parent, field_name, None)
            if isinstance(value, nodes.Concat):
                setattr(parent, field_name, _filtered(value, _SIZE_GUARD))
            elif isinstance(value, list):
                value[:] = [
                    _filtered(item, _SIZE_GUARD) if isinstance(item, nodes.Concat) else item
                    for item in value
                ]
    return tree


def _filtered(node: nodes.Node, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


_TEXT = _environment(autoescape=False)
# Only an email's html part is HTML; escaping a text part would show `&amp;` to people.
_HTML = _environment(autoescape=True)

CompiledLocale = dict[str, dict[str, Any]]
"""channel -> part -> compiled `jinja2.Template`."""


def _compile(source: str, *, html: bool, field: str, max_bytes: int) -> Any:
    size = len(source.encode())
    if size > max_bytes:
        raise TemplateSourceError(
            f"{field} is {size} bytes; the limit is {max_bytes} (setting "
            "templates.max_source_bytes)",
            field=field,
        )
    environment = _HTML if html else _TEXT
    try:
        tree = _guard_loops(environment.parse(source))
        tree.set_environment(environment)  # the nodes added have none yet
        return environment.from_string(tree)
    except TemplateSyntaxError as exc:
        raise TemplateSourceError(
            f"{field}, line {exc.lineno}: {exc.message}", field=field
        ) from None
    except RecursionError:  # thousands of nested brackets: the parser recurses
        raise TemplateSourceError(f"{field} nests expressions too deeply", field=field) from None


def locale_chain(wanted: str | None, default: str) -> list[str]:
    """The locales to try for a recipient, in order: `fr-CA` gives `fr-CA`, `fr`, then
    the template's default. Written in the template's spelling is found case- and
    separator-insensitively (`fr_ca` finds `fr-CA`) by `choose_locale`."""
    chain: list[str] = []
    if wanted:
        subtags = wanted.replace("_", "-").split("-")
        chain = ["-".join(subtags[:n]) for n in range(len(subtags), 0, -1)]
    chain.append(default)
    return chain


def choose_locale(available: Iterable[str], wanted: str | None, default: str) -> str:
    """The first locale of `locale_chain` that the template has, in its spelling."""
    by_key = {locale.replace("_", "-").lower(): locale for locale in available}
    for candidate in locale_chain(wanted, default):
        found = by_key.get(candidate.lower())
        if found is not None:
            return found
    return default


@dataclass(frozen=True, slots=True)
class RenderedTemplate:
    """A template rendered for one recipient."""

    template_id: str
    version: int
    locale: str
    """The locale chosen (`choose_locale`)."""
    parts: dict[str, dict[str, str]]
    """channel -> part -> text; parts that rendered empty are left out."""

    @property
    def title(self) -> str | None:
        return self.parts.get("inapp", {}).get("title")

    @property
    def body(self) -> str | None:
        return self.parts.get("inapp", {}).get("body")

    def channel_content(self) -> dict[str, dict[str, str]] | None:
        """`NewNotification.channel_content`: the email, push and sms parts (the
        in-app part is the notification's title and body); None when there is none."""
        content = {channel: parts for channel, parts in self.parts.items() if channel != "inapp"}
        return content or None


def user_variables(user: UserRecord) -> dict[str, Any]:
    """The recipient's profile as the template's `user`. Fields the user has no value
    for are left out, so `{{ user.name }}` fails like a missing variable and
    `{{ user.name | default("there") }}` works."""
    profile: dict[str, Any] = {
        "id": user.id,
        "external_id": user.external_id,
        "name": user.name,
        "email": user.email,
        "phone": user.phone,
        "locale": user.locale,
        "timezone": user.timezone,
        "tags": list(user.tags),
        "attributes": dict(user.attributes),
    }
    return {key: value for key, value in profile.items() if value is not None}


class TemplateRenderer:
    """Compiles and renders templates within `TemplateLimits`; keeps the compiled
    templates of the last `cache_size` (id, version, locale) so that a send does not
    recompile. Synchronous and cheap per call: it runs in the request."""

    def __init__(self, limits: TemplateLimits | None = None) -> None:
        self.limits = limits or TemplateLimits()
        self._compiled: OrderedDict[tuple[str, int, str], CompiledLocale] = OrderedDict()

    def check(self, locales: TemplateLocales, default_locale: str) -> None:
        """Raise `TemplateSourceError` naming the first part (`locales.fr.email.html`)
        that is too big or does not compile (with its line), or the locale whose in-app
        part renders neither title nor body."""
        if default_locale not in locales:
            raise TemplateSourceError(
                f"default_locale {default_locale!r} is not one of the template's locales "
                f"({', '.join(sorted(locales))})",
                field="default_locale",
            )
        for locale, channels in locales.items():
            if not any(channels.get("inapp", {}).values()):
                raise TemplateSourceError(
                    f"locale {locale!r} has no in-app title or body: every locale needs "
                    "at least one (it is the notification's own title and body)",
                    field=f"locales.{locale}.inapp",
                )
            self._compile_locale(locale, channels)

    def render(
        self,
        template: TemplateRecord,
        *,
        locale: str | None,
        data: Mapping[str, Any],
        user: Mapping[str, Any],
    ) -> RenderedTemplate:
        """Render every part of the locale chosen for `locale` with the template's
        declared defaults, overridden by `data`, and `user` (the recipient's profile).
        Raises `MissingVariableError`, `RenderLimitError` or `TemplateRenderError`."""
        chosen = choose_locale(template.locales, locale, template.default_locale)
        compiled = self._compiled_locale(template, chosen)
        variables = {**template.variables, **data, "user": user}
        limits = self.limits
        bounds = _Bounds(
            deadline=time.perf_counter() + limits.render_timeout,
            max_output=limits.max_output_bytes,
            timeout=limits.render_timeout,
        )
        token = _BOUNDS.set(bounds)
        try:
            parts: dict[str, dict[str, str]] = {}
            for channel, sources in compiled.items():
                for part, jinja_template in sources.items():
                    field = f"locales.{chosen}.{channel}.{part}"
                    text = _render_part(jinja_template, variables, field, bounds)
                    if text:
                        parts.setdefault(channel, {})[part] = text
        finally:
            _BOUNDS.reset(token)
        return RenderedTemplate(template.id, template.version, chosen, parts)

    async def check_off_loop(self, locales: TemplateLocales, default_locale: str) -> None:
        """`check` in a worker thread: compiling is pure CPU, about 1 s for a 64 KB
        source with thousands of expressions, which must not hold the event loop."""
        await asyncio.to_thread(self.check, locales, default_locale)

    async def compile_off_loop(self, template: TemplateRecord, locale: str | None) -> None:
        """Compile the parts of the locale chosen for `locale` in a worker thread unless
        they are cached, so that `render` finds them compiled (a hit costs nothing)."""
        chosen = choose_locale(template.locales, locale, template.default_locale)
        key = (template.id, template.version, chosen)
        if key not in self._compiled:
            # The cache itself is only touched here, on the loop; two misses of one
            # key compile twice and keep one.
            compiled = await asyncio.to_thread(self._compile_stored, template, chosen)
            self._remember(key, compiled)

    def _compiled_locale(self, template: TemplateRecord, locale: str) -> CompiledLocale:
        key = (template.id, template.version, locale)
        found = self._compiled.get(key)
        if found is not None:
            self._compiled.move_to_end(key)
            return found
        compiled = self._compile_stored(template, locale)
        self._remember(key, compiled)
        return compiled

    def _compile_stored(self, template: TemplateRecord, locale: str) -> CompiledLocale:
        try:
            return self._compile_locale(locale, template.locales.get(locale, {}))
        except TemplateSourceError as exc:
            # Saved under other limits (or by other code): the template's fault, not data's.
            raise TemplateRenderError(str(exc), field="template") from None

    def _remember(self, key: tuple[str, int, str], compiled: CompiledLocale) -> None:
        self._compiled[key] = compiled
        self._compiled.move_to_end(key)
        if len(self._compiled) > self.limits.cache_size:
            self._compiled.popitem(last=False)

    def _compile_locale(
        self, locale: str, channels: Mapping[str, Mapping[str, str]]
    ) -> CompiledLocale:
        compiled: CompiledLocale = {}
        for channel, parts in channels.items():
            for part, source in parts.items():
                field = f"locales.{locale}.{channel}.{part}"
                compiled.setdefault(channel, {})[part] = _compile(
                    source,
                    html=(channel, part) == ("email", "html"),
                    field=field,
                    max_bytes=self.limits.max_source_bytes,
                )
        return compiled


def _render_part(
    jinja_template: Any, variables: Mapping[str, Any], field: str, bounds: _Bounds
) -> str:
    """One part's text, the output counted chunk by chunk as `generate()` yields it."""
    chunks: list[str] = []
    size = 0
    try:
        for chunk in jinja_template.generate(variables):
            size += len(chunk.encode())
            if size > bounds.max_output:
                raise _too_big(bounds.max_output)
            _check_time()
            chunks.append(chunk)
    except _MissingVariableError as exc:
        raise MissingVariableError(exc.name, field) from None
    except TemplateProblemError:
        raise
    except SecurityError as exc:
        raise TemplateRenderError(
            f"{field}: not allowed in a template: {exc}", field="template"
        ) from None
    except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError) as exc:
        # The template's own mistakes (`{{ 1 / 0 }}`, `{{ 'a' + 1 }}`, `range(10**9)`).
        raise TemplateRenderError(f"{field}: {exc}", field="template") from None
    except RecursionError:
        raise TemplateRenderError(
            f"{field}: a macro calls itself too deeply", field="template"
        ) from None
    except Exception as exc:  # what a template's code raises is its fault, never a 500
        raise TemplateRenderError(
            f"{field}: {type(exc).__name__}: {exc}", field="template"
        ) from None
    return "".join(chunks)
