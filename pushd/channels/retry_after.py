"""The `Retry-After` header of a provider's answer, as seconds to wait.

Every HTTP provider (web push services, FCM, APNs, SMS APIs, webhook endpoints) may send
one with a 429 or a 503; the worker never retries sooner (actors/retry.py).
"""

from __future__ import annotations

import time
from datetime import UTC
from email.utils import parsedate_to_datetime


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from `now` (default: the wall clock) until the provider accepts a retry.

    RFC 9110 §10.2.3 allows delay-seconds ("120") or an HTTP-date; a date in the past
    gives 0. None when the header is absent or unreadable: the worker's own backoff
    then applies.
    """
    if value is None or not (text := value.strip()):
        return None
    if text.isascii() and text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" parses as naive; HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
