"""What FCM and APNs derive alike from a `ChannelMessage`: the text shown on the device,
and the APNs headers, which the APNs sender sends itself and the FCM sender passes in
its `apns` override (FCM forwards them to Apple for iOS devices)."""

from __future__ import annotations

import hashlib
from typing import Any

from actors.channel_sender import ChannelMessage

URGENT_PRIORITIES = frozenset({"high", "critical"})

APNS_COLLAPSE_ID_MAX_BYTES = 64
"""Apple refuses a longer apns-collapse-id with 400 BadCollapseId."""


def alert_text(message: ChannelMessage) -> tuple[str | None, str | None]:
    """The title and body to show: the push content given with the notification wins
    over its title/body."""
    return (
        message.content.get("title", message.title),
        message.content.get("body", message.body),
    )


def is_alert(message: ChannelMessage) -> bool:
    """Whether the device shows something; without title or body the push is a silent
    (background) one that only wakes the app with its data."""
    return any(alert_text(message))


def apns_collapse_id(collapse_key: str) -> str:
    """`collapse_key` as an apns-collapse-id: itself when it fits in 64 bytes, else its
    SHA-256 in hex (64 bytes), so that equal keys still collapse and different ones do not.
    """
    if len(collapse_key.encode()) <= APNS_COLLAPSE_ID_MAX_BYTES:
        return collapse_key
    return hashlib.sha256(collapse_key.encode()).hexdigest()


def apns_headers(message: ChannelMessage, *, now: float) -> dict[str, str]:
    """The apns-push-type, apns-priority, apns-expiration and apns-collapse-id headers.

    Priority 10 (deliver at once) for high and critical alerts, 5 (when the device's
    power allows) otherwise; Apple refuses 10 for a background push. apns-expiration is
    a UNIX time; 0 asks APNs to try once and not store the message.
    """
    alert = is_alert(message)
    urgent = alert and message.priority in URGENT_PRIORITIES
    headers = {
        "apns-push-type": "alert" if alert else "background",
        "apns-priority": "10" if urgent else "5",
    }
    if message.ttl_seconds is not None:
        ttl = max(0, message.ttl_seconds)
        headers["apns-expiration"] = str(int(now) + ttl) if ttl else "0"
    if message.collapse_key:
        headers["apns-collapse-id"] = apns_collapse_id(message.collapse_key)
    return headers


def apns_aps(message: ChannelMessage) -> dict[str, Any]:
    """The `aps` dictionary of an APNs payload: the alert (with the default sound for a
    critical one), or content-available for a background push."""
    if not is_alert(message):
        return {"content-available": 1}
    title, body = alert_text(message)
    alert = {key: value for key, value in (("title", title), ("body", body)) if value is not None}
    aps: dict[str, Any] = {"alert": alert}
    if message.priority == "critical":
        aps["sound"] = "default"
    return aps
