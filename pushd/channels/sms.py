"""What every SMS provider shares: the recipient's number (E.164), the text of a
message, and how many segments that text costs (GSM 03.38 / 3GPP TS 23.038).

The providers are pushd/channels/sms_twilio.py (Twilio's Messages API) and
pushd/channels/sms_http.py (a generic JSON-over-HTTP API). Each records
`SmsSegments.detail()` on the delivery, since a provider bills per segment, not per
message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from actors.channel_sender import ChannelMessage, PermanentSendError

CHANNEL: Final = "sms"

# E.164 ---------------------------------------------------------------------------

E164_MIN_DIGITS: Final = 8
E164_MAX_DIGITS: Final = 15
_ASCII_DIGITS = re.compile(r"[0-9]+")


def validate_e164(number: str) -> str:
    """Return `number` when it is an E.164 phone number: `+`, then the country code
    (not starting with 0) and subscriber number, 8 to 15 ASCII digits in all, nothing
    else. Raise ValueError naming the problem otherwise.

    The message never repeats the number (it is personal data and ends up in logs and
    delivery histories); it says what to fix.
    """
    if not number:
        raise ValueError("the phone number is empty")
    if not number.startswith("+"):
        raise ValueError(
            "the phone number must start with + and the country code (E.164, e.g. "
            "+14155550123); a national form such as 0612345678 is ambiguous"
        )
    digits = number[1:]
    if not _ASCII_DIGITS.fullmatch(digits):
        raise ValueError(
            "the phone number may hold only the digits 0-9 after the + (no spaces, "
            "dashes, dots or brackets)"
        )
    if digits[0] == "0":
        raise ValueError("the phone number's country code cannot start with 0 (E.164)")
    if not E164_MIN_DIGITS <= len(digits) <= E164_MAX_DIGITS:
        raise ValueError(
            f"the phone number has {len(digits)} digits after the +; E.164 numbers have "
            f"{E164_MIN_DIGITS} to {E164_MAX_DIGITS}"
        )
    return number


# Segments ------------------------------------------------------------------------

GSM7_BASIC: Final = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "\u0394_\u03a6\u0393\u039b\u03a9\u03a0\u03a8\u03a3\u0398\u039eÆæßÉ"  # 0x1B (escape) left out
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
"""The GSM 03.38 default alphabet, one septet each, in table order. The escape code
(0x1B) is no character of its own, so a text holding U+001B is not GSM-7."""

GSM7_EXTENSION: Final = "\f^{}\\[]~|€"
"""The extension table: each costs two septets (escape + code)."""

GSM7_SINGLE_SEGMENT: Final = 160
GSM7_CONCATENATED_SEGMENT: Final = 153
"""160 septets less the 6-byte concatenation header (UDH), rounded down to septets."""
UCS2_SINGLE_SEGMENT: Final = 70
UCS2_CONCATENATED_SEGMENT: Final = 67
"""70 UTF-16 code units less the 6-byte UDH."""

_GSM7_COST = dict.fromkeys(GSM7_BASIC, 1) | dict.fromkeys(GSM7_EXTENSION, 2)

SmsEncoding = Literal["GSM-7", "UCS-2"]


@dataclass(frozen=True, slots=True)
class SmsSegments:
    """How a text goes out: its encoding and the number of SMS it takes."""

    encoding: SmsEncoding
    segments: int
    units: int
    """Septets (GSM-7) or UTF-16 code units (UCS-2) of the whole text."""

    def detail(self) -> dict[str, Any]:
        """What the delivery records (`SendReceipt.detail`)."""
        return {"encoding": self.encoding, "segments": self.segments}


def count_segments(text: str) -> SmsSegments:
    """The encoding and segment count of `text`, as a handset or an SMS gateway
    splits it.

    GSM-7 when every character is in the default alphabet or its extension table
    (which costs two septets), otherwise UCS-2, where a character outside the Basic
    Multilingual Plane (an emoji) is a surrogate pair of two code units. One SMS holds
    160 septets or 70 code units; a longer text is sent in parts of 153 or 67. A part
    never ends between an escape and its character or between the two halves of a
    surrogate pair (3GPP TS 23.040 §9.2.3.24.1), so such a character starts the next
    part. An empty text is one (empty) SMS.
    """
    costs = [_GSM7_COST.get(char) for char in text]
    if all(cost is not None for cost in costs):
        septets = [cost for cost in costs if cost is not None]
        return _split("GSM-7", septets, GSM7_SINGLE_SEGMENT, GSM7_CONCATENATED_SEGMENT)
    code_units = [2 if ord(char) > 0xFFFF else 1 for char in text]
    return _split("UCS-2", code_units, UCS2_SINGLE_SEGMENT, UCS2_CONCATENATED_SEGMENT)


def _split(encoding: SmsEncoding, costs: list[int], single: int, part: int) -> SmsSegments:
    units = sum(costs)
    if units <= single:
        return SmsSegments(encoding, 1, units)
    segments, used = 1, 0
    for cost in costs:
        if used + cost > part:
            segments, used = segments + 1, 0
        used += cost
    return SmsSegments(encoding, segments, units)


# From a ChannelMessage -----------------------------------------------------------


def recipient_number(message: ChannelMessage) -> str:
    """The E.164 number the message goes to (`address["phone"]`); a missing or
    malformed one is a `PermanentSendError`: no provider can reach it."""
    try:
        return validate_e164(message.address.get("phone", ""))
    except ValueError as error:
        raise PermanentSendError(
            f"delivery {message.delivery_id}: {error}; fix the phone on the user's profile",
            provider_code="invalid-number",
        ) from None


def sms_text(message: ChannelMessage) -> str:
    """The text to send: the notification's own SMS content when it gives one, else
    its title and body on two lines. Empty text is a `PermanentSendError` (providers
    refuse an empty SMS)."""
    text = message.content.get("text")
    if text is None:
        text = "\n".join(part for part in (message.title, message.body) if part)
    if not text.strip():
        raise PermanentSendError(
            f"delivery {message.delivery_id}: the notification has no SMS text (no "
            "`text` in its SMS content, and no title or body)",
            provider_code="empty-text",
        )
    return text
