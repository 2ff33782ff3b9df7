"""
Ignore rules in the cache key (:mod:`stasis.keys`): what they leave out, and what they leave alone.

A rule makes two requests that differ only in the fields it names share a key;
it never makes requests that differ anywhere else share one; and a rule that
names nothing in a body leaves that body's key exactly as it was, so adding
``--ignore`` to a daemon keeps the entries it has.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from attrs import evolve
from hypothesis import assume, given
from hypothesis import strategies as st

import stasis.keys
from stasis.ignore import IgnorePath, dropped, parse_ignore, parse_ignore_list
from stasis.keys import (
    CredentialScope,
    parse_body,
    parse_json,
    scoped_keys,
    stored_key,
    stored_request,
)
from tests.test_keys import SECRET, TOKEN, chat, json_values, key, request

USER_ID = parse_ignore_list("metadata.user_id")
ids = st.text(max_size=12)


def with_metadata(body: dict[str, Any] | None = None, **metadata: Any) -> bytes:
    return json.dumps({**json.loads(chat()), **(body or {}), "metadata": metadata}).encode()


@given(ids, ids)
def test_requests_differing_only_in_an_ignored_field_share_a_key(a: str, b: str) -> None:
    one = request(body=with_metadata(user_id=a, suite="s"), ignore=USER_ID)
    other = request(body=with_metadata(user_id=b, suite="s"), ignore=USER_ID)
    assert key(one) == key(other)
    # Without the rule they are two requests.
    assume(a != b)
    assert key(evolve(one, ignore=())) != key(evolve(other, ignore=()))


@given(ids, st.text(max_size=8), st.text(max_size=8))
def test_a_difference_elsewhere_still_changes_the_key(user: str, a: str, b: str) -> None:
    assume(a != b)
    one = request(body=with_metadata(user_id=user, suite=a), ignore=USER_ID)
    other = request(body=with_metadata(user_id=user, suite=b), ignore=USER_ID)
    assert key(one) != key(other)
    assert key(request(body=chat(temperature=0.3), ignore=USER_ID)) != key(
        request(body=chat(temperature=0.4), ignore=USER_ID)
    )


def test_a_rule_that_names_nothing_leaves_the_key_as_it_was() -> None:
    plain = request()
    assert "metadata" not in json.loads(plain.body)
    ruled = evolve(plain, ignore=parse_ignore_list("metadata.user_id, user, messages[9].id"))
    assert key(ruled) == key(plain)
    assert scoped_keys(ruled, SECRET) == scoped_keys(plain, SECRET)


_names = st.sampled_from(["a", "b", "user", "*"])
_rules = st.lists(
    st.lists(_names | st.integers(0, 2), min_size=1, max_size=3).map(
        lambda steps: parse_ignore(
            "".join(f"[{s}]" if isinstance(s, int) else f"[{json.dumps(s)}]" for s in steps)
        )
    ),
    max_size=3,
)


@given(json_values, _rules)
def test_the_key_is_the_key_of_what_remains(value: Any, rules: list[IgnorePath]) -> None:
    body = json.dumps(value).encode()
    remains = json.dumps(_plain(dropped(parse_json(body), rules))).encode()
    assert parse_body(body, tuple(rules)).normalized == parse_body(remains).normalized
    # So when the rules name nothing, the key is the key without them.
    if dropped(parse_json(body), rules) == parse_json(body):
        assert key(request(body=body, ignore=tuple(rules))) == key(request(body=body))


def _plain(value: Any) -> Any:
    """A document from parse_json back to values json.dumps writes (Decimal as its text)."""
    if isinstance(value, dict):
        return {name: _plain(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, str) and type(value) is not str:  # NaN/Infinity literals
        return float(str.__str__(value))
    if value is None or isinstance(value, (bool, str)):
        return value
    return json.loads(str(value))


@pytest.mark.parametrize("body", [b"", b"not json", b'{"user": 1,', b'{"user": 1, "user": 2}'])
def test_a_body_that_is_not_json_ignores_the_rules(body: bytes) -> None:
    rules = parse_ignore_list("user, messages[*].id")
    assert key(request(body=body, ignore=rules)) == key(request(body=body))


def test_the_rules_are_applied_before_the_depth_limit() -> None:
    deep = "[" * 200 + "]" * 200
    body = json.dumps({"x": 1}).encode()[:-1] + b', "deep": ' + deep.encode() + b"}"
    assert parse_body(body).normalized.startswith(b"raw:")
    ruled = parse_body(body, parse_ignore_list("deep"))
    assert ruled.normalized == parse_body(b'{"x": 1}').normalized
    assert ruled.document is not None


def test_a_dropped_element_is_a_null_in_its_place() -> None:
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    ruled = request(body=chat(messages=messages), ignore=parse_ignore_list("messages[0]"))
    assert key(ruled) == key(request(body=chat(messages=[None, messages[1]])))
    assert key(ruled) != key(request(body=chat(messages=[messages[1]])))


def test_the_engine_parses_once_when_it_hands_over_the_parsed_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rules = parse_ignore_list("metadata.user_id")
    base = request(body=with_metadata(user_id="u1"), ignore=rules)
    expected = scoped_keys(base, SECRET)
    parsed = parse_body(base.body, rules)
    calls: list[bytes] = []
    real = stasis.keys.parse_body

    def counting(body: bytes, ignore: tuple[IgnorePath, ...] = ()) -> Any:
        calls.append(body)
        return real(body, ignore)

    monkeypatch.setattr(stasis.keys, "parse_body", counting)
    assert scoped_keys(evolve(base, parsed=parsed), SECRET) == expected
    assert calls == []
    # Parsed under other rules, it is read again under the request's own.
    assert scoped_keys(evolve(base, parsed=parse_body(base.body)), SECRET) == expected
    assert len(calls) == 1


def test_the_stored_request_keeps_the_whole_body_and_the_rules_texts() -> None:
    rules = parse_ignore_list('metadata.user_id, messages[*].id, ["x.y"]')
    body = with_metadata(user_id="u1")
    stored = stored_request(request(body=body, ignore=rules))
    assert stored.body == body
    assert stored.ignored == ("metadata.user_id", "messages[*].id", '["x.y"]')
    assert stored_request(request()).ignored == ()


@given(ids, st.sampled_from([CredentialScope.CALLER, CredentialScope.SHARED]))
def test_a_stored_request_gives_its_key_back_with_its_rules(
    user: str, scope: CredentialScope
) -> None:
    ruled = request(body=with_metadata(user_id=user), ignore=USER_ID)
    keys = scoped_keys(ruled, SECRET, scope=scope)
    stored = stored_request(ruled)
    path, method = ruled.path, ruled.method
    assert stored_key(method, path, "", stored, keys.fingerprint) == keys.own
    assert stored_key(method, path, "", stored, "") == keys.shared
    # Without its rules it would not prove anything.
    forgotten = evolve(stored, ignored=())
    assert stored_key(method, path, "", forgotten, "") != keys.shared


def test_the_credential_is_still_what_separates_callers() -> None:
    one = request(body=with_metadata(user_id="a"), ignore=USER_ID)
    other = evolve(
        request(body=with_metadata(user_id="b"), ignore=USER_ID),
        headers={"authorization": f"Bearer {TOKEN}-other"},
    )
    assert scoped_keys(one, SECRET).shared == scoped_keys(other, SECRET).shared
    assert scoped_keys(one, SECRET).own != scoped_keys(other, SECRET).own
