"""The close-code table of docs/protocol.md lists exactly the codes a client can get."""

from __future__ import annotations

import re
from pathlib import Path

from actors.transport import CloseCode

PROTOCOL_DOC = Path(__file__).parents[2] / "docs" / "protocol.md"

SENT_BY_THE_WEBSOCKET_LIBRARY = {
    1002: "not WebSocket framing (e.g. reserved bits set, an unmasked client frame)",
    1007: "a text frame that is not valid UTF-8",
    1009: "a frame over limits.ws_max_frame_bytes",
}
"""Codes aiohttp closes with by itself, before a frame reaches pushd's code."""


def documented_close_codes() -> list[int]:
    section = PROTOCOL_DOC.read_text().split("## 4. Close codes", 1)[1].split("\n## ", 1)[0]
    return [int(code) for code in re.findall(r"^\| (\d{4}) \|", section, flags=re.MULTILINE)]


def test_the_close_code_table_lists_every_code_a_client_can_get() -> None:
    """Guards issue #10 item 11: 1002 and 1007 could be sent but were not documented."""
    documented = documented_close_codes()
    assert len(documented) == len(set(documented)), "a code is listed twice"
    assert set(documented) == {int(code) for code in CloseCode} | set(SENT_BY_THE_WEBSOCKET_LIBRARY)
    assert documented == sorted(documented)


def test_range_rule_matches_the_codes() -> None:
    """4000-4499: reconnect later; 4500-4999: not with the same credentials. A token
    that expired on an open socket is fixed by a new token, so it reconnects."""
    assert 4000 <= CloseCode.SESSION_EXPIRED < 4500
    assert 4500 <= CloseCode.TOKEN_EXPIRED < 5000
