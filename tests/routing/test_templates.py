"""Choosing a template's locale and rendering it (pushd/routing/templates.py): the
fallback chain, escaping only the email's HTML, missing variables named, declared
defaults, the sandbox, and the size and time bounds that stop a runaway template."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from pushd.routing.templates import (
    MissingVariableError,
    RenderLimitError,
    TemplateLimits,
    TemplateRenderer,
    TemplateRenderError,
    TemplateSourceError,
    choose_locale,
    locale_chain,
    user_variables,
)
from storage.records import TemplateLocales, TemplateRecord, UserRecord

_versions = itertools.count(1)


def template(
    locales: TemplateLocales, *, default: str = "en", variables: dict[str, Any] | None = None
) -> TemplateRecord:
    # A new version each time: the renderer caches by (id, version, locale).
    return TemplateRecord(
        id="t",
        version=next(_versions),
        description="",
        default_locale=default,
        variables=variables or {},
        locales=locales,
        created_at=0,
    )


def body_of(source: str, renderer: TemplateRenderer | None = None, **data: Any) -> str | None:
    rendered = (renderer or TemplateRenderer()).render(
        template({"en": {"inapp": {"body": source}}}), locale=None, data=data, user={}
    )
    return rendered.body


LOCALES: TemplateLocales = {
    "en": {"inapp": {"title": "Hello"}},
    "fr": {"inapp": {"title": "Bonjour"}},
    "fr-CA": {"inapp": {"title": "Allô"}},
    "pt-BR": {"inapp": {"title": "Olá"}},
}


@pytest.mark.parametrize(
    ("wanted", "chosen"),
    [
        ("fr-CA", "fr-CA"),
        ("fr-BE", "fr"),  # fr-BE -> fr
        ("fr", "fr"),
        ("fr_ca", "fr-CA"),  # case and separator do not matter
        ("pt", "en"),  # a shorter form is tried, never a longer one
        ("de-DE", "en"),  # -> the template's default
        (None, "en"),
        ("", "en"),
    ],
)
def test_the_locale_falls_back_to_shorter_forms_then_the_default(
    wanted: str | None, chosen: str
) -> None:
    assert choose_locale(LOCALES, wanted, "en") == chosen
    rendered = TemplateRenderer().render(template(LOCALES), locale=wanted, data={}, user={})
    assert rendered.locale == chosen
    assert rendered.title == LOCALES[chosen]["inapp"]["title"]


def test_the_chain_drops_one_subtag_at_a_time() -> None:
    assert locale_chain("zh-Hant-TW", "en") == ["zh-Hant-TW", "zh-Hant", "zh", "en"]
    assert locale_chain(None, "fr") == ["fr"]


def test_the_whole_content_comes_from_the_chosen_locale() -> None:
    """A channel the chosen locale lacks is not taken from another locale: one message,
    one language (it is derived from the in-app title and body downstream)."""
    locales: TemplateLocales = {
        "en": {"inapp": {"title": "Hi"}, "sms": {"text": "Hi by SMS"}},
        "fr": {"inapp": {"title": "Salut"}},
    }
    rendered = TemplateRenderer().render(template(locales), locale="fr", data={}, user={})
    assert rendered.parts == {"inapp": {"title": "Salut"}}
    assert rendered.channel_content() is None


def test_only_the_email_html_part_is_escaped() -> None:
    locales: TemplateLocales = {
        "en": {
            "inapp": {"title": "{{ name }}", "body": "{{ name }}"},
            "email": {"subject": "{{ name }}", "html": "<p>{{ name }}</p>", "text": "{{ name }}"},
            "push": {"title": "{{ name }}"},
            "sms": {"text": "{{ name }}"},
        }
    }
    name = "<b>Tom & Jerry</b>"
    rendered = TemplateRenderer().render(
        template(locales), locale=None, data={"name": name}, user={}
    )
    assert rendered.parts["email"]["html"] == "<p>&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;</p>"
    assert rendered.title == rendered.body == name
    assert rendered.channel_content() == {
        "email": {
            "subject": name,
            "html": "<p>&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;</p>",
            "text": name,
        },
        "push": {"title": name},
        "sms": {"text": name},
    }


def test_a_missing_variable_is_named() -> None:
    with pytest.raises(MissingVariableError) as raised:
        body_of("Order {{ order_id }} shipped", carrier="x")
    assert raised.value.name == "order_id"
    assert raised.value.field == "data.order_id"
    assert "locales.en.inapp.body" in str(raised.value)


def test_a_declared_default_fills_a_missing_variable_and_data_wins_over_it() -> None:
    record = template(
        {"en": {"inapp": {"title": "Hi {{ name }}, {{ count }} new"}}},
        variables={"name": "friend", "count": 0},
    )
    renderer = TemplateRenderer()
    assert renderer.render(record, locale=None, data={}, user={}).title == "Hi friend, 0 new"
    rendered = renderer.render(record, locale=None, data={"name": "Ada"}, user={})
    assert rendered.title == "Hi Ada, 0 new"


def test_user_fields_without_a_value_are_missing_so_default_applies() -> None:
    user = UserRecord(
        id="usr_1",
        external_id=None,
        name=None,
        email="ada@example.com",
        phone=None,
        locale="fr",
        timezone=None,
        created_at=0,
        last_seq=0,
        ack_seq=0,
        tags=("vip",),
    )
    profile = user_variables(user)
    assert profile == {
        "id": "usr_1",
        "email": "ada@example.com",
        "locale": "fr",
        "tags": ["vip"],
        "attributes": {},
    }
    record = template(
        {"en": {"inapp": {"title": "Hi {{ user.name | default('there') }} ({{ user.locale }})"}}}
    )
    assert TemplateRenderer().render(record, locale=None, data={}, user=profile).title == (
        "Hi there (fr)"
    )


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ items.append(1) }}",  # immutable sandbox: inputs are not modified
        "{{ items.pop() }}",
    ],
)
def test_the_sandbox_blocks_internals_and_mutation(source: str) -> None:
    with pytest.raises(TemplateRenderError, match=r"not allowed|unsafe"):
        body_of(source, items=[1, 2])


def test_data_never_becomes_template_code() -> None:
    assert body_of("{{ note }}", note="{{ ''.__class__ }}") == "{{ ''.__class__ }}"


def test_a_syntax_error_names_the_part_and_the_line() -> None:
    locales: TemplateLocales = {
        "en": {"inapp": {"title": "ok"}},
        "fr": {"inapp": {"title": "ok"}, "email": {"html": "<p>\n{{ name }\n</p>"}},
    }
    with pytest.raises(TemplateSourceError) as raised:
        TemplateRenderer().check(locales, "en")
    assert raised.value.field == "locales.fr.email.html"
    assert "line 2" in str(raised.value)


def test_saving_checks_the_default_locale_the_in_app_part_and_the_source_size() -> None:
    renderer = TemplateRenderer(TemplateLimits(max_source_bytes=10))
    with pytest.raises(TemplateSourceError) as raised:
        renderer.check({"en": {"inapp": {"title": "ok"}}}, "fr")
    assert raised.value.field == "default_locale"
    with pytest.raises(TemplateSourceError) as raised:
        renderer.check({"en": {"inapp": {}, "sms": {"text": "ok"}}}, "en")
    assert raised.value.field == "locales.en.inapp"
    with pytest.raises(TemplateSourceError, match="max_source_bytes") as raised:
        renderer.check({"en": {"inapp": {"title": "é" * 6}}}, "en")  # 12 bytes
    assert raised.value.field == "locales.en.inapp.title"


def test_the_output_bound_stops_a_large_output() -> None:
    renderer = TemplateRenderer(TemplateLimits(max_output_bytes=1000))
    assert body_of("{% for i in range(99) %}x{% endfor %}", renderer) == "x" * 99
    with pytest.raises(RenderLimitError, match="max_output_bytes"):
        body_of("{% for i in range(2000) %}x{% endfor %}", renderer)


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 10**9 }}",  # refused before the string is built
        "{% set s = 'ab' %}" + "{% set s = s ~ s %}" * 40 + "{{ s | length }}",
        "{% set s = 'ab' %}" + "{% set s = s + s %}" * 40 + "{{ s | length }}",
        "{{ 'x' | center(100000) }}",
        "{{ 2 ** 100000 }}",
    ],
)
def test_the_output_bound_stops_values_built_in_memory(source: str) -> None:
    """Guards against values that are never printed whole: counting the output alone
    would let these grow without bound (40 doublings is a terabyte)."""
    renderer = TemplateRenderer(TemplateLimits(max_output_bytes=10_000))
    with pytest.raises(RenderLimitError):
        body_of(source, renderer)


@pytest.mark.parametrize(
    "source",
    [
        # No output at all: a check between output chunks alone would never run.
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}",
        # Exponential recursion, output kept inside the macro until it returns.
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
        "{{ f(40) }}",
    ],
)
def test_the_time_bound_stops_a_runaway_template(source: str) -> None:
    renderer = TemplateRenderer(TemplateLimits(render_timeout=0.05, max_output_bytes=10**9))
    started = time.perf_counter()
    with pytest.raises(RenderLimitError, match="render_timeout"):
        body_of(source, renderer)
    assert time.perf_counter() - started < 1.0


def test_the_time_bound_stops_nested_loops_that_call_nothing() -> None:
    """Guards the check at every loop iteration: these loops print nothing and call
    nothing (no `range()` per inner loop), so neither the output nor a call would ever
    give the bound a chance to run; 10^9 iterations take minutes."""
    renderer = TemplateRenderer(TemplateLimits(render_timeout=0.05))
    source = (
        "{% for i in items %}{% for j in items %}{% for k in items %}"
        "{% endfor %}{% endfor %}{% endfor %}"
    )
    started = time.perf_counter()
    with pytest.raises(RenderLimitError, match="render_timeout"):
        body_of(source, renderer, items=list(range(1000)))
    assert time.perf_counter() - started < 1.0


def test_the_sandbox_caps_range() -> None:
    with pytest.raises(TemplateRenderError, match="Range too big"):
        body_of("{% for i in range(10**9) %}{% endfor %}")


def test_template_mistakes_are_render_errors() -> None:
    with pytest.raises(TemplateRenderError, match="division by zero"):
        body_of("{{ 1 / 0 }}")
    # A time bound far above what reaching the recursion limit takes, even on a busy
    # machine (it took over the default 50 ms once, and the time bound answered first).
    patient = TemplateRenderer(TemplateLimits(render_timeout=30.0))
    with pytest.raises(TemplateRenderError, match="too deeply"):
        body_of("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", patient)


def test_compiled_templates_are_cached_per_version_and_the_cache_is_bounded() -> None:
    renderer = TemplateRenderer(TemplateLimits(cache_size=2))
    first = template({"en": {"inapp": {"title": "a"}}, "fr": {"inapp": {"title": "b"}}})
    renderer.render(first, locale="en", data={}, user={})
    compiled = renderer._compiled[(first.id, first.version, "en")]
    renderer.render(first, locale="en", data={}, user={})
    assert renderer._compiled[(first.id, first.version, "en")] is compiled  # not recompiled
    renderer.render(first, locale="fr", data={}, user={})
    renderer.render(template({"en": {"inapp": {"title": "c"}}}), locale="en", data={}, user={})
    assert len(renderer._compiled) == 2
    assert (first.id, first.version, "en") not in renderer._compiled  # least recently used


def test_a_loop_still_works_with_its_loop_variable_and_else() -> None:
    source = (
        "{% for x in items %}{{ loop.index }}/{{ loop.length }}{% if not loop.last %},"
        "{% endif %}{% else %}none{% endfor %}"
    )
    assert body_of(source, items=["a", "b", "c"]) == "1/3,2/3,3/3"
    assert body_of(source, items=[]) == "none"


def test_a_source_nested_too_deeply_is_a_source_error() -> None:
    source = "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}"
    with pytest.raises(TemplateSourceError, match="too deeply") as raised:
        TemplateRenderer().check({"en": {"inapp": {"title": source}}}, "en")
    assert raised.value.field == "locales.en.inapp.title"


async def test_compiling_off_the_loop_fills_the_cache_render_uses() -> None:
    renderer = TemplateRenderer()
    record = template({"en": {"inapp": {"title": "a"}}, "fr": {"inapp": {"title": "b"}}})
    await renderer.compile_off_loop(record, "fr-CA")
    assert list(renderer._compiled) == [(record.id, record.version, "fr")]
    compiled = renderer._compiled[(record.id, record.version, "fr")]
    assert renderer.render(record, locale="fr-CA", data={}, user={}).title == "b"
    assert renderer._compiled[(record.id, record.version, "fr")] is compiled
