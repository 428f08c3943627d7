"""URL scheme -> backend class, for every seam that a URL configures (storage, bus,
state).

The backend's module is imported only when its scheme is used, so a deployment that
never names `postgresql://` or `amqp://` does not need (or load) asyncpg or aiormq. It
lives in `storage/` because `pushd -> actors -> storage` is the import direction: this is
the one place all three seams may import it from.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def scheme_of(url: str) -> str:
    """The URL's scheme, lower-cased (`"postgresql"` for `postgresql://...`)."""
    return url.split(":", 1)[0].lower()


def backend_class(
    url: str,
    backends: Mapping[str, str],
    *,
    setting: str,
    error: Callable[[str], Exception],
) -> Any:
    """The class that `backends` (scheme -> `"module:Class"`) names for `url`'s scheme.

    An unknown scheme raises `error(message)`, the caller's own exception type, with a
    message naming `setting` (e.g. `"bus.url"`) and every supported scheme.
    """
    scheme = scheme_of(url)
    target = backends.get(scheme)
    if target is None:
        known = ", ".join(sorted(backends))
        raise error(f"{setting} {url!r} has scheme {scheme!r}; supported schemes are: {known}")
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)
