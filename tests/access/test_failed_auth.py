"""The tally of failed authentications (pushd/access/failed_auth.py): one audit record per
actor, source and result per window, bounded however many sources there are."""

from __future__ import annotations

from pushd.access import failed_auth
from pushd.access.failed_auth import ANONYMOUS_ACTOR, FAILED_AUTH_ACTION, FailedAuthTally


def test_failures_of_one_source_become_one_record_with_a_count() -> None:
    tally = FailedAuthTally()
    for at, action in ((10, "user.create"), (12, "user.create"), (15, "token.issue")):
        tally.add(key_id=None, source="10.0.0.1", action=action, result="401", at=at)
    tally.add(key_id=None, source="10.0.0.1", action="user.create", result="429", at=16)
    tally.add(key_id="key_1", source="10.0.0.1", action="user.create", result="401", at=17)
    tally.add(key_id=None, source="10.0.0.2", action="user.create", result="401", at=18)
    records = tally.drain()
    assert len(tally) == 0
    assert tally.drain() == []
    summary = {(r.actor, r.source, r.result): (r.at, r.detail) for r in records}
    assert summary == {
        (ANONYMOUS_ACTOR, "10.0.0.1", "401"): (
            10,
            {"count": 3, "last_at": 15, "actions": {"user.create": 2, "token.issue": 1}},
        ),
        (ANONYMOUS_ACTOR, "10.0.0.1", "429"): (
            16,
            {"count": 1, "last_at": 16, "actions": {"user.create": 1}},
        ),
        ("key:key_1", "10.0.0.1", "401"): (
            17,
            {"count": 1, "last_at": 17, "actions": {"user.create": 1}, "key_revoked": True},
        ),
        (ANONYMOUS_ACTOR, "10.0.0.2", "401"): (
            18,
            {"count": 1, "last_at": 18, "actions": {"user.create": 1}},
        ),
    }
    assert {(r.action, r.target) for r in records} == {(FAILED_AUTH_ACTION, None)}


def test_sources_beyond_the_bound_share_one_record_without_a_source() -> None:
    """Guards memory and rows growing with the number of addresses an attacker has:
    past `max_sources` in one window, failures of further sources are counted together."""
    tally = FailedAuthTally(max_sources=3)
    for n in range(10):
        tally.add(key_id=None, source=f"10.0.0.{n}", action="user.create", result="401", at=n)
    tally.add(key_id=None, source="10.0.0.1", action="user.create", result="401", at=20)
    counts = {r.source: (r.detail or {})["count"] for r in tally.drain()}
    assert counts == {"10.0.0.0": 1, "10.0.0.1": 2, "10.0.0.2": 1, None: 7}
    assert failed_auth.MAX_SOURCES >= 1000
