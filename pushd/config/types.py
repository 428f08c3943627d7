"""The value types and the error that every configuration struct shares: the sections of
pushd/config/settings.py and the providers' own structs (pushd/channels/), which `Config`
composes. They live apart from config.py so that a provider can use them while config.py
imports the provider, without an import cycle."""

from __future__ import annotations

from typing import Annotated

import msgspec

Positive = Annotated[int, msgspec.Meta(gt=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and what is expected."""
