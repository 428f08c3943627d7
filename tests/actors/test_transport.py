"""The close-code table of docs/protocol.md lists exactly the codes a client can get, with
the reasons actors/transport.py sends, in the range that says what the client should do."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import pytest

from actors.transport import CLOSE_REASONS, MAX_REASON_BYTES, CloseCode

PROTOCOL_DOC = Path(__file__).parents[2] / "docs" / "protocol.md"

SENT_BY_THE_WEBSOCKET_LIBRARY = {
    1002: "not WebSocket framing (e.g. reserved bits set, an unmasked client frame)",
    1007: "a text frame that is not valid UTF-8",
    1009: "a frame over limits.ws_max_frame_bytes",
}
"""Codes aiohttp closes with by itself, before a frame reaches pushd's code."""


class DocumentedCode(NamedTuple):
    code: int
    reason: str
    """As the table shows it: `text`, "(empty)", or "—" for the library's codes."""
    advice: str
    """The "what the client should do" column."""


def documented_close_codes() -> list[DocumentedCode]:
    section = PROTOCOL_DOC.read_text().split("## 4. Close codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d{4}) \| [^|]+ \| ([^|]+) \| (.+) \|$", section, flags=re.MULTILINE)
    return [DocumentedCode(int(code), reason, advice) for code, reason, advice in rows]


def says_reconnect(advice: str) -> bool:
    """Whether a piece of advice tells the client to reconnect as it is."""
    return "reconnect" in advice and "do not" not in advice


def test_the_close_code_table_lists_every_code_a_client_can_get() -> None:
    """Guards issue #10 item 11: 1002 and 1007 could be sent but were not documented."""
    documented = [row.code for row in documented_close_codes()]
    assert len(documented) == len(set(documented)), "a code is listed twice"
    assert set(documented) == {int(code) for code in CloseCode} | set(SENT_BY_THE_WEBSOCKET_LIBRARY)
    assert documented == sorted(documented)


def test_every_code_has_its_reason_and_the_doc_shows_it() -> None:
    assert set(CLOSE_REASONS) == set(CloseCode)
    shown = {row.code: row.reason for row in documented_close_codes()}
    for code in CloseCode:
        reason = code.reason()
        assert shown[code] == (f"`{reason}`" if reason else "(empty)"), code.name
    for library_code in SENT_BY_THE_WEBSOCKET_LIBRARY:
        assert shown[library_code] == "—"


@pytest.mark.parametrize("code", [c for c in CloseCode if c != CloseCode.NORMAL], ids=str)
def test_the_advice_agrees_with_the_range(code: CloseCode) -> None:
    """4000-4499 (and 1001): reconnect later; 4500-4999: not with the same credentials.
    Guards issue #11: 4504 sat in the "do not reconnect" range while its reason and its
    documentation told the client to try again."""
    assert code.reconnects == (code < 4500)
    assert says_reconnect(CLOSE_REASONS[code].advice) == code.reconnects
    documented = {row.code: row.advice for row in documented_close_codes()}
    assert says_reconnect(documented[code]) == code.reconnects, documented[code]


def test_range_rule_matches_the_codes() -> None:
    """A token that expired on an open socket is fixed by a new token, so it reconnects;
    a socket over the per-user cap is fine once another one closes."""
    assert 4000 <= CloseCode.SESSION_EXPIRED < 4500
    assert 4000 <= CloseCode.TOO_MANY_CONNECTIONS < 4500
    assert 4500 <= CloseCode.TOKEN_EXPIRED < 5000


def test_a_precise_cause_replaces_the_usual_one_and_keeps_the_advice() -> None:
    assert CloseCode.RECONNECT.reason("storage unavailable") == (
        "storage unavailable: reconnect later and resume"
    )
    assert CloseCode.NORMAL.reason() == ""


def test_a_long_cause_is_cut_to_fit_a_close_frame_and_keeps_the_advice() -> None:
    """RFC 6455 allows 123 bytes of reason; a longer one makes some clients fail the
    connection instead of reading the code. A character is never cut in half."""
    reason = CloseCode.PROTOCOL_ERROR.reason("é" * 200)
    assert len(reason.encode()) <= MAX_REASON_BYTES
    assert reason.endswith(": fix the client")
    assert reason.encode().decode() == reason
