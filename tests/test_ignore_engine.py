"""
Ignore rules through the engine, in memory (see test_proxy_resource): ``--ignore``
and ``X-Stasis-Ignore`` make requests that differ only in the named fields one
entry, for every provider, and the replay-miss diagnostics count fields as the
key counts them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from stasis.ignore import parse_ignore_list
from tests.test_proxy_resource import CHAT, Harness, header
from tests.test_scopes_and_replay import KEY_A, KEY_B, error_of, status

IGNORE = "X-Stasis-Ignore"
REPLAY = {"X-Stasis-Mode": "replay"}


def body(user_id: str = "u-1", **fields: Any) -> dict[str, Any]:
    return {**CHAT, "metadata": {"user_id": user_id, "suite": "a"}, **fields}


def test_x_stasis_ignore_leaves_the_named_field_out_of_the_key() -> None:
    harness = Harness()
    first, answer = harness.call(body=body("u-1"), **{IGNORE: "metadata.user_id"})
    again, same = harness.call(body=body("u-2"), **{IGNORE: "metadata.user_id"})
    assert (status(first), status(again)) == ("MISS", "HIT")
    assert same == answer
    assert header(first, "x-stasis-key") == header(again, "x-stasis-key")
    elsewhere, _ = harness.call(body=body("u-3", temperature=1), **{IGNORE: "metadata.user_id"})
    assert status(elsewhere) == "MISS"
    assert len(harness.api.seen) == 2
    # The upstream sees the request whole, without the header.
    _method, _uri, seen = harness.api.seen[0]
    assert b"x-stasis-ignore" not in seen


def test_without_the_rule_the_field_counts() -> None:
    harness = Harness()
    harness.call(body=body("u-1"), **{IGNORE: "metadata.user_id"})
    response, _ = harness.call(body=body("u-2"))
    assert status(response) == "MISS"


def test_the_stored_request_is_whole_and_names_its_rules() -> None:
    harness = Harness(policy={"ignore": parse_ignore_list("user, messages[*].id")})
    harness.call(body=body("u-1", user="run-1"), **{IGNORE: "metadata.user_id, user"})
    (entry,) = harness.store.entries.values()
    assert entry.request is not None
    assert entry.request.ignored == ("user", "messages[*].id", "metadata.user_id")
    assert json.loads(entry.request.body) == body("u-1", user="run-1")


def test_the_daemons_rules_apply_to_every_request() -> None:
    harness = Harness(policy={"ignore": parse_ignore_list("user")})
    first, _ = harness.call(body={**CHAT, "user": "run-1"})
    again, _ = harness.call(body={**CHAT, "user": "run-2"})
    assert (status(first), status(again)) == ("MISS", "HIT")


def test_a_rule_added_to_the_daemon_keeps_the_entries_it_names_nothing_in() -> None:
    before = Harness()
    before.call()
    after = Harness(
        shared_store=before.store, policy={"ignore": parse_ignore_list("metadata.user_id, user")}
    )
    response, _ = after.call()
    assert status(response) == "HIT"
    assert after.api.seen == []


def test_the_directive_prefix_carries_rules_too() -> None:
    harness = Harness()
    path = "/_stasis/with/ignore=metadata.user_id%2Cuser/v1/chat/completions"
    first, _ = harness.call(body=body("u-1", user="a"), path=path)
    again, _ = harness.call(body=body("u-2", user="b"), path=path)
    assert (status(first), status(again)) == ("MISS", "HIT")
    (_method, uri, _headers) = harness.api.seen[0]
    assert uri == b"/v1/chat/completions"


@pytest.mark.parametrize("value", ["messages[x]", "a..b", '["unterminated'])
def test_a_bad_rule_is_a_400_naming_the_header(value: str) -> None:
    harness = Harness()
    response, answer = harness.call(**{IGNORE: value})
    assert response.code == 400
    error = error_of(answer)
    assert error["type"] == "stasis_bad_request"
    assert error["header"] == "X-Stasis-Ignore"
    assert error["message"].startswith("X-Stasis-Ignore: ")
    assert harness.api.seen == []


GEMINI = "/v1beta/models/gemini-2.0-flash:generateContent"


@pytest.mark.parametrize(
    ("path", "request_body", "headers"),
    [
        ("/v1/chat/completions", CHAT, {}),
        ("/v1/responses", {"model": "gpt-4o-mini", "input": "hi"}, {}),
        (
            "/v1/messages",
            {"model": "claude-sonnet-4-5", "max_tokens": 9, "messages": CHAT["messages"]},
            {"anthropic-version": "2023-06-01"},
        ),
        (GEMINI, {"contents": [{"parts": [{"text": "hi"}]}]}, {"x-goog-api-key": "AIza-k"}),
        (
            "/model/anthropic.claude-3-haiku-20240307-v1:0/converse",
            {"messages": [{"role": "user", "content": [{"text": "hi"}]}]},
            {},
        ),
    ],
)
def test_rules_apply_to_every_provider(
    path: str, request_body: dict[str, Any], headers: dict[str, str]
) -> None:
    harness = Harness(policy={"ignore": parse_ignore_list("metadata.user_id")})
    first, _ = harness.call(
        body={**request_body, "metadata": {"user_id": "a"}}, path=path, **headers
    )
    again, _ = harness.call(
        body={**request_body, "metadata": {"user_id": "b"}}, path=path, **headers
    )
    (entry,) = harness.store.entries.values()
    assert (status(first), status(again)) == ("MISS", "HIT"), entry.provider


def test_a_request_that_is_not_cached_is_passed_whatever_its_rules() -> None:
    harness = Harness()
    response, _ = harness.call(path="/v1/files", **{IGNORE: "user"})
    assert status(response) == "BYPASS"


# Replay-miss diagnostics


def _differences(harness: Harness, sent: dict[str, Any], **headers: str) -> list[str]:
    response, answer = harness.call(body=sent, **REPLAY, **headers)
    assert response.code == 504
    found: list[str] = error_of(answer)["nearest"]["differences"]
    return found


def test_a_difference_inside_an_ignored_field_is_not_named() -> None:
    harness = Harness()
    harness.call(body=body("u-1", temperature=0.2), **{IGNORE: "metadata.user_id"})
    assert _differences(harness, body("u-2", temperature=0.3), **{IGNORE: "metadata.user_id"}) == [
        "temperature: 0.2 → 0.3"
    ]


def test_the_recordings_rules_count_even_when_the_request_has_none() -> None:
    harness = Harness()
    harness.call(body=body("u-1", user="a", temperature=0.2), **{IGNORE: "user"})
    # Its key left user out; this request's holds it: that rule is why they differ.
    assert _differences(harness, body("u-1", user="b", temperature=0.2)) == [
        'ignored: "user" → (absent)'
    ]


def test_a_rule_only_the_request_has_is_named_when_it_leaves_something_out() -> None:
    harness = Harness()
    harness.call(body=body("u-1", temperature=0.2))
    assert _differences(
        harness, body("u-2", temperature=0.3), **{IGNORE: "metadata.user_id, user"}
    ) == ['ignored: (absent) → "metadata.user_id"', "temperature: 0.2 → 0.3"]


def test_a_rule_that_changes_no_key_is_not_named() -> None:
    harness = Harness()
    harness.call(body=body("u-1", temperature=0.2), **{IGNORE: "user, messages[*].id"})
    assert _differences(harness, body("u-1", temperature=0.3), **{IGNORE: "seed"}) == [
        "temperature: 0.2 → 0.3"
    ]


def test_an_ignored_array_element_is_no_difference() -> None:
    harness = Harness()
    messages = [{"role": "system", "content": "run 1"}, {"role": "user", "content": "hi"}]
    harness.call(body={**CHAT, "messages": messages, "n": 1}, **{IGNORE: "messages[0]"})
    changed = [{"role": "system", "content": "run 2"}, messages[1]]
    assert _differences(
        harness, {**CHAT, "messages": changed, "n": 2}, **{IGNORE: "messages[0]"}
    ) == ["n: 1 → 2"]


def test_the_caller_is_shown_its_own_entry_recorded_with_rules() -> None:
    # Ownership is proven by making the entry's key again: with its rules.
    harness = Harness()
    harness.call(body=body("u-1", temperature=0.2), **KEY_A, **{IGNORE: "metadata.user_id"})
    sent = body("u-2", temperature=0.3)
    assert _differences(harness, sent, **KEY_A, **{IGNORE: "metadata.user_id"}) == [
        "temperature: 0.2 → 0.3"
    ]
    _response, answer = harness.call(body=sent, **KEY_B, **REPLAY, **{IGNORE: "metadata.user_id"})
    assert "nearest" not in error_of(answer)
