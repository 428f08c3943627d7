"""A clock a test moves by hand, for the senders' injected `clock`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class FakeClock:
    """Starts at the real time (so that JWTs it dates are valid for a real verifier) and
    moves only when the test says."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
