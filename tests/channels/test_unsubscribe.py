"""Signed unsubscribe links (pushd/channels/unsubscribe.py)."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import pytest

from pushd.channels.unsubscribe import InvalidUnsubscribeTokenError, UnsubscribeLinks

SECRET = b"s" * 32
OTHER_SECRET = b"o" * 32
BASE = "https://push.example.test/unsubscribe"


def token_of(url: str) -> str:
    [token] = parse_qs(urlsplit(url).query)["token"]
    return token


def test_a_link_verifies_back_to_its_user_and_category() -> None:
    links = UnsubscribeLinks(SECRET, BASE)
    url = links.url("user-1", "billing")

    assert url.startswith(BASE + "?token=")
    assert links.verify(token_of(url)) == ("user-1", "billing")
    assert links.verify(token_of(url)).category == "billing"


def test_odd_user_ids_and_categories_round_trip() -> None:
    links = UnsubscribeLinks(SECRET, BASE + "?source=email")
    url = links.url('ü "quoted" & ?=/.', "cat.with.dots")

    assert "&token=" in url
    assert links.verify(token_of(url)) == ('ü "quoted" & ?=/.', "cat.with.dots")


def test_links_for_different_users_differ() -> None:
    links = UnsubscribeLinks(SECRET, BASE)
    assert links.url("user-1", "billing") != links.url("user-2", "billing")
    assert links.url("user-1", "billing") != links.url("user-1", "news")


def test_a_changed_payload_is_refused() -> None:
    links = UnsubscribeLinks(SECRET, BASE)
    _payload, signature = links.token("user-1", "billing").split(".")
    forged = base64.urlsafe_b64encode(b'["user-2","billing",1700000000]').rstrip(b"=").decode()

    with pytest.raises(InvalidUnsubscribeTokenError, match="bad signature"):
        links.verify(f"{forged}.{signature}")


def test_a_link_signed_with_another_secret_is_refused() -> None:
    token = UnsubscribeLinks(OTHER_SECRET, BASE).token("user-1", "billing")
    with pytest.raises(InvalidUnsubscribeTokenError, match="bad signature"):
        UnsubscribeLinks(SECRET, BASE).verify(token)


def test_previous_secrets_still_verify_old_links() -> None:
    token = UnsubscribeLinks(OTHER_SECRET, BASE).token("user-1", "billing")
    rotated = UnsubscribeLinks(SECRET, BASE, previous_secrets=[OTHER_SECRET])

    assert rotated.verify(token) == ("user-1", "billing")
    assert rotated.verify(rotated.token("user-1", "news")) == ("user-1", "news")


@pytest.mark.parametrize(
    "token",
    ["", "no-dot-at-all", "a.b", "!!!.???", "ü.ü", "eyJ9.", ".c2ln"],
)
def test_malformed_tokens_are_refused_with_the_clear_error(token: str) -> None:
    with pytest.raises(InvalidUnsubscribeTokenError, match="unsubscribe token"):
        UnsubscribeLinks(SECRET, BASE).verify(token)


@pytest.mark.parametrize(
    ("secret", "base_url", "problem"),
    [
        (b"short", BASE, "at least 32 bytes"),
        (SECRET, "http://push.example.test/unsubscribe", "https"),
        (SECRET, "/unsubscribe", "https"),
        (SECRET, BASE + "#fragment", "fragment"),
        (SECRET, BASE + "?a=<b>", "angle"),
    ],
)
def test_bad_configuration_is_refused(secret: bytes, base_url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        UnsubscribeLinks(secret, base_url)
