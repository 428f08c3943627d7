"""The one URL scheme -> backend mapping that storage, bus and state share."""

from __future__ import annotations

import sys

import pytest

from storage.backend_urls import backend_class, scheme_of

BACKENDS = {"memory": "collections:OrderedDict", "lazy": "tests.storage._lazy_backend:Backend"}


class WrongUrlError(Exception):
    """Stands for the caller's own error type (BusError, StateError, ...)."""


def test_the_scheme_is_read_case_insensitively() -> None:
    assert scheme_of("PostgreSQL://user@host/db") == "postgresql"
    assert backend_class("MEMORY://", BACKENDS, setting="x.url", error=WrongUrlError).__name__ == (
        "OrderedDict"
    )


def test_an_unknown_scheme_raises_the_callers_error_naming_the_setting_and_every_scheme() -> None:
    with pytest.raises(WrongUrlError) as raised:
        backend_class("etcd://host", BACKENDS, setting="bus.url", error=WrongUrlError)
    assert str(raised.value) == (
        "bus.url 'etcd://host' has scheme 'etcd'; supported schemes are: lazy, memory"
    )


def test_a_backend_module_is_imported_only_when_its_scheme_is_used() -> None:
    """A deployment that never names `postgresql://` must not need asyncpg installed."""
    sys.modules.pop("tests.storage._lazy_backend", None)
    backend_class("memory://", BACKENDS, setting="x.url", error=WrongUrlError)
    assert "tests.storage._lazy_backend" not in sys.modules
    with pytest.raises(ModuleNotFoundError, match="_lazy_backend"):
        backend_class("lazy://", BACKENDS, setting="x.url", error=WrongUrlError)
