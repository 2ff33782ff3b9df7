"""
Cache policy in the engine, with a fake clock: expiry and the request's
freshness directives, stale-if-error, samples, collapsed requests.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.logger import formatEvent, globalLogPublisher

from stasis.cache_status import CacheOutcome, Status
from stasis.errors import UpstreamTimeout, UpstreamUnreachable
from stasis.modes import Mode, parse_directives
from tests.test_proxy_resource import CHAT, Harness, header


def status(response: Any) -> str | None:
    return header(response, "x-stasis-status")


def n(body: bytes) -> int:
    return int(json.loads(body)["n"])


# Expiry


def test_the_default_ttl_expires_entries_and_x_stasis_ttl_overrides_it() -> None:
    harness = Harness(policy={"default_ttl": 60.0})
    harness.call()
    (entry,) = harness.store.entries.values()
    assert entry.expires_at == harness.clock.seconds() + 60
    harness.clock.advance(59)
    assert status(harness.call()[0]) == "HIT"
    harness.clock.advance(2)
    response, body = harness.call()
    assert (status(response), n(body)) == ("MISS", 2)  # refetched and replaced
    (entry,) = harness.store.entries.values()
    assert entry.expires_at == harness.clock.seconds() + 60
    harness.call(body={"x": 1}, **{"X-Stasis-TTL": "5"})
    longer = [e for e in harness.store.entries.values() if e.expires_at != entry.expires_at]
    assert [e.expires_at for e in longer] == [harness.clock.seconds() + 5]


@pytest.mark.parametrize(
    ("cache_control", "age", "served"),
    [
        ("max-age=10", 9, True),
        ("max-age=10", 11, False),
        ("max-age=0", 0, False),  # max-age=0 always refetches
        ("max-age=zero", 0, False),  # unreadable: as max-age=0
        ("min-fresh=30", 65, True),  # 35 s of its 100 left
        ("min-fresh=30", 75, False),  # 25 s left
        ("max-stale=20", 110, True),  # expired 10 s ago
        ("max-stale=20", 130, False),  # expired 30 s ago
        ("max-stale", 10_000, True),  # any staleness
        ("no-transform", 110, False),  # expired, nothing asked
    ],
)
def test_the_requests_freshness_directives(cache_control: str, age: int, served: bool) -> None:
    harness = Harness(policy={"default_ttl": 100.0})
    harness.call()
    harness.clock.advance(age)
    response, body = harness.call(**{"Cache-Control": cache_control})
    assert (status(response), n(body)) == (("HIT", 1) if served else ("MISS", 2))


def test_freshness_directives_are_not_bypassed_by_the_byte_identical_fast_path() -> None:
    harness = Harness()
    ask = {"Cache-Control": "max-age=5"}
    harness.call(**ask)
    assert status(harness.call(**ask)[0]) == "HIT"
    assert status(harness.call(**ask)[0]) == "HIT"
    harness.clock.advance(6)
    response, body = harness.call(**ask)
    assert (status(response), n(body)) == ("MISS", 2)


def test_cache_control_is_read_as_rfc_9111_says() -> None:
    directives = parse_directives(
        {"cache-control": 'Max-Age="30", max-age=5, min-fresh=x, max-stale=7'}, Mode.CACHE
    )
    assert (directives.max_age, directives.min_fresh, directives.max_stale) == (30, None, 7.0)


# Stale if error


def _expired(**policy: Any) -> Harness:
    harness = Harness(policy={"default_ttl": 60.0, "stale_if_error": 3600.0, **policy})
    harness.call()
    harness.clock.advance(120)  # expired a minute ago
    return harness


@pytest.mark.parametrize(
    "failure",
    [
        UpstreamUnreachable("connection refused", upstream="http://upstream.test"),
        UpstreamUnreachable("connection reset", upstream="http://upstream.test"),
        UpstreamTimeout("no response within 600s"),
    ],
    ids=["refused", "reset", "timeout"],
)
def test_an_expired_answer_is_served_stale_when_the_upstream_fails(failure: Exception) -> None:
    harness = _expired()
    harness.failure = failure
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        response, body = harness.call()
    finally:
        globalLogPublisher.removeObserver(events.append)
    logged = [formatEvent(event) for event in events]
    assert (response.code, status(response), n(body)) == (200, "STALE", 1)
    assert header(response, "cache-status") == "stasis; fwd=stale; detail=stale-if-error"
    assert header(response, "age") == "120"
    assert harness.counters.stale == 1
    assert any("served a stale answer" in line and "expired 60s ago" in line for line in logged)


@pytest.mark.parametrize("code", [500, 502, 503, 429])
def test_an_upstream_error_status_is_replaced_by_the_stale_answer(code: int) -> None:
    harness = _expired()
    harness.api.status = code
    response, body = harness.call()
    assert (response.code, status(response), n(body)) == (200, "STALE", 1)
    assert header(response, "cache-status") == (
        f"stasis; fwd=stale; fwd-status={code}; detail=stale-if-error"
    )
    assert len(harness.api.seen) == 2  # it was asked, and its answer set aside


def test_an_upstream_that_answers_replaces_the_expired_entry() -> None:
    harness = _expired()
    response, body = harness.call()
    assert (status(response), n(body)) == ("MISS", 2)
    (entry,) = harness.store.entries.values()
    assert entry.expires_at == harness.clock.seconds() + 60


def test_no_stale_answer_beyond_the_window_or_without_the_option() -> None:
    harness = _expired(stale_if_error=30.0)  # expired 60 s ago: too long
    harness.api.status = 503
    response, _ = harness.call()
    assert (response.code, status(response)) == (503, "MISS")
    plain = Harness(policy={"default_ttl": 60.0})
    plain.call()
    plain.clock.advance(120)
    plain.failure = UpstreamUnreachable("refused", upstream="http://upstream.test")
    response, _ = plain.call()
    assert response.code == 502
    # A 4xx other than 429 is the upstream's answer, not a failure.
    client_error = _expired()
    client_error.api.status = 400
    assert client_error.call()[0].code == 400


# Samples


def test_samples_are_fetched_then_replayed_in_turn() -> None:
    harness = Harness()
    three = {"X-Stasis-Samples": "3"}
    seen = [n(harness.call(**three)[1]) for _ in range(7)]
    assert seen == [1, 2, 3, 1, 2, 3, 1]
    assert len(harness.api.seen) == 3
    entries = sorted(harness.store.entries.values(), key=lambda entry: entry.sample)
    assert [entry.sample for entry in entries] == [0, 1, 2]
    assert len({entry.key for entry in entries}) == 3
    assert len({entry.shared_key for entry in entries}) == 3


def test_a_restarted_daemon_replays_the_samples_in_the_same_order() -> None:
    first = Harness(policy={"samples": 3})
    recorded = [n(first.call()[1]) for _ in range(3)]
    for mode in (Mode.CACHE, Mode.REPLAY):
        again = Harness(shared_store=first.store, mode=mode, policy={"samples": 3})
        assert [n(again.call()[1]) for _ in range(6)] == recorded * 2
        assert again.api.seen == []


def test_replay_with_fewer_samples_recorded_than_asked_serves_the_last_one_there_is() -> None:
    first = Harness()
    first.call()  # one answer, sample 0
    replay = Harness(shared_store=first.store, mode=Mode.REPLAY)
    answers = [n(replay.call(**{"X-Stasis-Samples": "3"})[1]) for _ in range(3)]
    assert answers == [1, 1, 1]


def test_one_sample_is_the_cache_as_ever() -> None:
    harness = Harness()
    harness.call()
    (entry,) = harness.store.entries.values()
    assert (entry.sample, entry.key) == (0, entry.key)
    assert status(harness.call(**{"X-Stasis-Samples": "1"})[0]) == "HIT"


# Collapsed


def test_a_collapsed_outcome_never_says_hit() -> None:
    collapsed = CacheOutcome(Status.HIT, forward=b"uri-miss", forward_status=200, collapsed=True)
    assert collapsed.cache_status() == b"stasis; fwd=uri-miss; fwd-status=200; collapsed"


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("X-Stasis-Samples", "0", "X-Stasis-Samples: '0' is not a whole number from 1 to 100"),
        ("X-Stasis-Samples", "many", "is not a whole number from 1 to 100"),
        ("X-Stasis-Samples", "101", "is not a whole number from 1 to 100"),
        ("X-Stasis-Ignore", "messages[x]", "X-Stasis-Ignore: 'messages[x]': expected [N], [*]"),
        ("X-Stasis-Ignore", "a..b", "expected a member name at position 2"),
    ],
)
def test_a_bad_policy_header_is_a_400_naming_it(name: str, value: str, says: str) -> None:
    harness = Harness()
    response, body = harness.call(**{name: value})
    assert response.code == 400
    error = json.loads(body)["error"]
    assert (error["type"], error["header"]) == ("stasis_bad_request", name)
    assert says in error["message"]
    assert harness.api.seen == []


def test_an_ignore_rule_may_name_a_field_in_utf8() -> None:
    harness = Harness()
    rule = '["é"]'  # sent as UTF-8
    first, _ = harness.call(body={**CHAT, "é": 1}, **{"X-Stasis-Ignore": rule})
    second, _ = harness.call(body={**CHAT, "é": 2}, **{"X-Stasis-Ignore": rule})
    assert (status(first), status(second)) == ("MISS", "HIT")
