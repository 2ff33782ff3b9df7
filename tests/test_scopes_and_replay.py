"""
Credential scopes, the stored request, the directive prefix and replay-miss
diagnostics, through the proxy resource in memory (see test_proxy_resource).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stasis.differences import differences, json_path
from stasis.errors import SignatureUnverifiable
from stasis.keys import CredentialScope
from stasis.modes import Mode
from tests.test_proxy_resource import CHAT, Harness, header

KEY_A = {"Authorization": "Bearer sk-key-a-0123456789"}
KEY_B = {"Authorization": "Bearer sk-key-b-9876543210"}
NO_KEY = {"Authorization": ""}


def status(response: Any) -> str | None:
    return header(response, "x-stasis-status")


def error_of(body: bytes) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(body)["error"]
    return error


# Credential scopes


def test_the_caller_scope_partitions_by_key_and_stores_the_shared_key_beside() -> None:
    harness = Harness()
    first, _ = harness.call(**KEY_A)
    other, _ = harness.call(**KEY_B)
    assert (status(first), status(other)) == ("MISS", "MISS")
    assert len(harness.api.seen) == 2
    a, b = harness.store.entries.values()
    # Two keys, two entries, one request: the same key in the shared scope.
    assert a.key != b.key
    assert a.shared_key == b.shared_key
    assert a.shared_key not in (a.key, b.key)
    assert header(first, "x-stasis-key") == a.key


def test_a_lookup_falls_back_to_the_shared_scope() -> None:
    shared = Harness(credential_scope=CredentialScope.SHARED)
    recorded, _ = shared.call(**KEY_A)
    (entry,) = shared.store.entries.values()
    assert entry.key == entry.shared_key == header(recorded, "x-stasis-key")

    caller = Harness(shared_store=shared.store)
    for credential in (KEY_B, NO_KEY, KEY_A):
        response, body = caller.call(**credential)
        assert status(response) == "HIT", credential
        assert json.loads(body)["n"] == 1
    assert caller.api.seen == []


def test_an_answer_under_the_callers_own_key_wins_over_the_shared_one() -> None:
    shared = Harness(credential_scope=CredentialScope.SHARED)
    shared.call(**KEY_A)
    caller = Harness(shared_store=shared.store)
    fresh, _ = caller.call(**KEY_A, **{"X-Stasis-Mode": "fresh"})
    assert status(fresh) == "MISS"
    for _ in range(2):  # the second time by the byte-identical fast path
        response, body = caller.call(**KEY_A)
        assert (status(response), json.loads(body)["n"]) == ("HIT", 1)
        assert header(response, "x-stasis-key") == header(fresh, "x-stasis-key")
    response, body = caller.call(**KEY_B)
    assert header(response, "x-stasis-key") != header(fresh, "x-stasis-key")


def test_the_shared_scope_answers_every_key_but_no_key_reads_another_keys_caller_entry() -> None:
    caller = Harness()
    caller.call(**KEY_A)
    replaying = Harness(shared_store=caller.store, mode=Mode.REPLAY)
    response, _ = replaying.call(**KEY_B)
    assert response.code == 504
    response, _ = replaying.call(**NO_KEY)
    assert response.code == 504
    assert status(replaying.call(**KEY_A)[0]) == "HIT"


def test_the_stored_request_keeps_no_credential() -> None:
    harness = Harness()
    harness.call(
        path="/v1beta/models/gemini-2.0-flash:generateContent?alt=json&key=AIzaSECRETSECRET",
        body={"contents": [{"parts": [{"text": "hi"}]}]},
        **{
            "x-goog-api-key": "AIzaOTHERSECRET",
            "anthropic-version": "2023-06-01",
            "Accept": "text/event-stream",
        },
    )
    (entry,) = harness.store.entries.values()
    assert entry.request is not None
    assert entry.request.query == "alt=json"
    assert ("accept", "text/event-stream") in entry.request.headers
    stored = repr(entry.request)
    for secret in ("AIzaSECRETSECRET", "AIzaOTHERSECRET", "sk-test"):
        assert secret not in stored
    assert json.loads(entry.request.body) == {"contents": [{"parts": [{"text": "hi"}]}]}


class _Unverifiable:
    """A signer that holds another access key (or none): it cannot verify anyone."""

    def __init__(self) -> None:
        self.signed = 0

    async def verify(self, *args: Any) -> None:
        raise SignatureUnverifiable("signed with access key AKIDCLIENT, stasis holds AKIDOTHER")

    async def sign(self, *args: Any) -> Any:  # pragma: no cover - must never be reached
        self.signed += 1
        raise AssertionError("an unverified request was re-signed")


SIGNED = {
    "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDCLIENT/20261205/us-east-1/bedrock/"
    "aws4_request, SignedHeaders=host;x-amz-date, Signature=" + "ab" * 32,
    "X-Amz-Date": "20261205T120000Z",
}
INVOKE = "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke"


def test_an_unverifiable_sigv4_identity_reads_only_the_shared_scope() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    recorder = Harness()
    recorder.call(path=INVOKE, body=body, **NO_KEY)  # no credential: the shared scope
    signer = _Unverifiable()
    client = Harness(shared_store=recorder.store, signer=signer)
    response, answer = client.call(path=INVOKE, body=body, **SIGNED)
    assert (status(response), json.loads(answer)["n"]) == ("HIT", 1)

    missed, error = client.call(path=INVOKE, body={**body, "max_tokens": 11}, **SIGNED)
    assert missed.code == 403
    assert error_of(error)["type"] == "stasis_signature_rejected"
    assert header(missed, "x-should-retry") == "false"
    assert client.api.seen == [] and signer.signed == 0
    assert len(recorder.store.entries) == 1


# The directive prefix


def test_the_directive_prefix_applies_directives_and_is_not_forwarded() -> None:
    harness = Harness()
    prefix = "/_stasis/with/namespace=suite%20%C3%A0;ttl=60"
    response, _ = harness.call(path=prefix + "/v1/chat/completions")
    assert status(response) == "MISS"
    (_method, uri, _headers) = harness.api.seen[0]
    assert uri == b"/v1/chat/completions"
    (entry,) = harness.store.entries.values()
    assert (entry.namespace, entry.path) == ("suite à", "/v1/chat/completions")
    assert entry.expires_at == pytest.approx(harness.clock.seconds() + 60)
    # Another namespace is another partition; the same one is a hit.
    assert status(harness.call()[0]) == "MISS"
    assert status(harness.call(path=prefix + "/v1/chat/completions")[0]) == "HIT"
    replay = harness.call(path="/_stasis/with/mode=replay/v1/chat/completions", body={"x": 1})
    assert replay[0].code == 504
    # A header sent with the request says more than the base URL.
    header_wins = harness.call(
        path="/_stasis/with/mode=replay/v1/chat/completions",
        body={"x": 2},
        **{"X-Stasis-Mode": "cache"},
    )
    assert status(header_wins[0]) == "MISS"


@pytest.mark.parametrize(
    "prefix",
    [
        "/_stasis/with/mode=sometimes",
        "/_stasis/with/colour=red",
        "/_stasis/with/mode",
        "/_stasis/with/mode=cache;mode=replay",
        "/_stasis/with/namespace=%FF",
    ],
)
def test_a_bad_directive_prefix_is_a_400_that_says_why(prefix: str) -> None:
    harness = Harness()
    response, body = harness.call(path=prefix + "/v1/chat/completions")
    assert response.code == 400
    error = error_of(body)
    assert error["type"] == "stasis_bad_request"
    assert "/_stasis/with/" in error["message"] or "X-Stasis-Mode" in error["message"]
    assert header(response, "x-should-retry") == "false"
    assert harness.api.seen == []


# Replay-miss diagnostics


def _record(harness: Harness, **fields: Any) -> None:
    response, _ = harness.call(body={**CHAT, **fields})
    assert status(response) == "MISS"


def test_a_replay_miss_names_the_nearest_recorded_request_and_where_it_differs() -> None:
    harness = Harness()
    _record(harness, temperature=0.2)
    _record(harness, temperature=0.2, messages=[{"role": "user", "content": "other"}])
    _record(harness, model="gpt-4o", temperature=0.3)
    response, body = harness.call(body={**CHAT, "temperature": 0.3}, **{"X-Stasis-Mode": "replay"})
    assert response.code == 504
    assert header(response, "x-should-retry") == "false"
    error = error_of(body)
    assert error["type"] == "stasis_replay_miss"
    assert error["key"] == header(response, "x-stasis-key")
    assert error["nearest"]["differences"] == ["temperature: 0.2 → 0.3"]
    first = min(harness.store.entries.values(), key=lambda entry: entry.created_at)
    assert error["nearest"]["key"] == first.shared_key
    assert "temperature: 0.2 → 0.3" in error["message"]
    assert harness.counters.replay_misses == 1


def test_the_diagnostics_name_paths_inside_messages_and_the_namespace() -> None:
    harness = Harness()
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    _record(harness, messages=messages)
    changed = [messages[0], {"role": "assistant", "content": "c"}, {"role": "user", "content": "d"}]
    _response, body = harness.call(
        body={**CHAT, "messages": changed},
        **{"X-Stasis-Mode": "replay", "X-Stasis-Namespace": "ci"},
    )
    assert error_of(body)["nearest"]["differences"] == [
        'X-Stasis-Namespace: "" → "ci"',
        'messages[1].content: "b" → "c"',
        'messages[2]: (absent) → {"role": "user", "content": "d"}',
    ]


def test_numbers_that_mean_the_same_are_not_a_difference() -> None:
    harness = Harness()
    _record(harness, max_tokens=10)
    _response, body = harness.call(
        body={**CHAT, "max_tokens": 10.0, "n": 1}, **{"X-Stasis-Mode": "replay"}
    )
    assert error_of(body)["nearest"]["differences"] == ["n: (absent) → 1"]


def test_the_diagnostics_never_show_another_keys_request() -> None:
    harness = Harness()
    _record(harness, temperature=0.2)  # with the harness's default key, in its scope
    _, body = harness.call(
        body={**CHAT, "temperature": 0.3}, **KEY_B, **{"X-Stasis-Mode": "replay"}
    )
    error = error_of(body)
    assert "nearest" not in error
    assert "0.2" not in body.decode()
    # The key that recorded it is shown its own request.
    _response, body = harness.call(body={**CHAT, "temperature": 0.3}, **{"X-Stasis-Mode": "replay"})
    assert error_of(body)["nearest"]["differences"] == ["temperature: 0.2 → 0.3"]


def test_a_replay_miss_with_nothing_recorded_says_so() -> None:
    harness = Harness(mode=Mode.REPLAY)
    _response, body = harness.call()
    message = error_of(body)["message"]
    assert "nothing recorded for the same provider and path" in message
    assert "record it first with mode 'cache'" in message


def test_an_expired_recording_is_named_as_expired() -> None:
    harness = Harness()
    harness.call(**{"X-Stasis-TTL": "5"})
    harness.clock.advance(10)
    _response, body = harness.call(**{"X-Stasis-Mode": "replay"})
    assert "but expired" in error_of(body)["message"]


# The differences themselves

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=12,
)


@given(_json)
def test_a_document_does_not_differ_from_itself(document: Any) -> None:
    assert differences(document, json.loads(json.dumps(document))) == []


@given(st.dictionaries(st.text(min_size=1, max_size=4), _json, min_size=1), st.data())
def test_a_changed_member_is_named_by_its_path(document: dict[str, Any], data: Any) -> None:
    name = data.draw(st.sampled_from(sorted(document)))
    # A value of another kind, so that the difference is the member itself.
    value = {"changed": document[name]} if isinstance(document[name], list) else [document[name]]
    (difference,) = differences(document, {**document, name: value})
    assert difference.path == json_path((name,))
    assert (difference.recorded, difference.requested) == (document[name], value)


def test_paths_quote_names_that_are_not_plain() -> None:
    assert json_path(("messages", 2, "content")) == "messages[2].content"
    assert json_path(("a b", 0, "x.y")) == '["a b"][0]["x.y"]'


def test_account_headers_are_part_of_the_identity_never_stored_nor_in_the_shared_key() -> None:
    harness = Harness()
    org = {"OpenAI-Organization": "org-SENTINELorg0123", "OpenAI-Project": "proj_SENTINEL"}
    harness.call(**org)
    harness.call(**{**org, "OpenAI-Organization": "org-other"})
    harness.call()
    a, b, plain = harness.store.entries.values()
    assert len({a.key, b.key, plain.key}) == 3  # another account, another answer
    assert a.shared_key == b.shared_key == plain.shared_key
    assert a.request is not None
    assert "SENTINEL" not in repr(a.request)
