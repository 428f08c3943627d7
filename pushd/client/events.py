"""The events a `PushdClient` hands to the application: one class per server frame it
passes on, plus the client's own state changes. Each keeps the frame as the server sent
it (`frame`), so that fields added by later protocol versions are not lost."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Frame = dict[str, Any]

StateName = Literal["connecting", "open", "closed", "stopped"]


@dataclass(frozen=True, slots=True)
class Notification:
    """A notification, delivered exactly once and in seq order (docs/protocol.md §2)."""

    seq: int
    id: str
    frame: Frame = field(repr=False)

    @property
    def title(self) -> str | None:
        title: str | None = self.frame.get("title")
        return title

    @property
    def body(self) -> str | None:
        body: str | None = self.frame.get("body")
        return body

    @property
    def data(self) -> Any:
        return self.frame.get("data")


@dataclass(frozen=True, slots=True)
class Gap:
    """The seqs `from_seq`..`to_seq` exist but will not be delivered (`reason`)."""

    from_seq: int
    to_seq: int
    reason: str
    frame: Frame = field(repr=False)


@dataclass(frozen=True, slots=True)
class Read:
    """Notifications were marked read (`ids`, or everything up to `through_seq`)."""

    ids: list[str]
    through_seq: int | None
    frame: Frame = field(repr=False)


@dataclass(frozen=True, slots=True)
class Updated:
    """A notification the user holds was edited: its whole current content (1.3)."""

    id: str
    version: int
    frame: Frame = field(repr=False)


@dataclass(frozen=True, slots=True)
class Retracted:
    """A notification the user holds was retracted: remove it from the view (1.3)."""

    id: str
    version: int
    frame: Frame = field(repr=False)


@dataclass(frozen=True, slots=True)
class State:
    """The client's connection state changed. `closed`: a socket closed (`code`, None
    when the connection broke, and its `reason`); `stopped`: it will not reconnect, and
    `reason` says why (the close code and reason, or the token getter's failure)."""

    state: StateName
    reason: str | None = None
    code: int | None = None


Event = Notification | Gap | Read | Updated | Retracted | State
