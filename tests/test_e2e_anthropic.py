"""
End to end: the official ``anthropic`` SDK -> a real ``twistd -n stasis`` -> a fake upstream.
"""

from __future__ import annotations

import json

import anthropic

from tests.daemon import Daemon
from tests.fake_upstream import FakeUpstream, Reply

KEY = "sk-ant-test-SECRET-abcdef0123456789"
MESSAGES = [{"role": "user", "content": "Hello, Claude"}]


def test_messages_are_cached(daemon: Daemon, upstream: FakeUpstream) -> None:
    client = anthropic.Anthropic(base_url=daemon.url, api_key=KEY)
    first = client.messages.with_raw_response.create(
        model="claude-test-1", max_tokens=64, messages=MESSAGES
    )
    second = client.messages.with_raw_response.create(
        model="claude-test-1", max_tokens=64, messages=MESSAGES
    )
    assert (first.headers["x-stasis-status"], second.headers["x-stasis-status"]) == ("MISS", "HIT")
    assert first.parse().model_dump() == second.parse().model_dump()
    assert second.parse().content[0].text == "hello #1"
    (seen,) = upstream.calls()
    assert seen.path == "/v1/messages"
    # Current SDKs send the key as a Bearer token; older ones as x-api-key.
    assert KEY in (seen.headers.get("x-api-key"), seen.headers.get("authorization", "")[7:])
    assert "anthropic-version" in seen.headers
    # 12 input + 5 output tokens, saved once.
    stats = daemon.get_json("/stats")
    assert (stats["totalEntries"], stats["hits"]) == (1, 1)


def test_the_key_as_bearer_token_is_the_same_credential(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    body = json.dumps({"model": "claude-test-1", "max_tokens": 64, "messages": MESSAGES}).encode()
    version = {"anthropic-version": "2023-06-01", "content-type": "application/json"}
    statuses = [
        daemon.request("POST", "/v1/messages", body, {**version, **auth})[1]["x-stasis-status"]
        for auth in (
            {"x-api-key": KEY},
            {"Authorization": f"Bearer {KEY}"},
            {"x-api-key": KEY + "-other"},
        )
    ]
    assert statuses == ["MISS", "HIT", "MISS"]
    assert len(upstream.calls()) == 2


def test_anthropic_version_and_beta_change_the_key(daemon: Daemon, upstream: FakeUpstream) -> None:
    client = anthropic.Anthropic(base_url=daemon.url, api_key=KEY)
    client.messages.create(model="claude-test-1", max_tokens=64, messages=MESSAGES)
    beta = client.messages.with_raw_response.create(
        model="claude-test-1",
        max_tokens=64,
        messages=MESSAGES,
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    )
    assert beta.headers["x-stasis-status"] == "MISS"
    assert len(upstream.calls()) == 2


def test_count_tokens_is_cached(daemon: Daemon, upstream: FakeUpstream) -> None:
    upstream.handler = lambda r: Reply(
        200, [("Content-Type", "application/json")], b'{"input_tokens": 9}'
    )
    statuses = []
    for _ in range(2):
        status, headers, body = daemon.request(
            "POST",
            "/v1/messages/count_tokens",
            json.dumps({"model": "claude-test-1", "messages": MESSAGES}).encode(),
            {"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        )
        statuses.append(headers["x-stasis-status"])
        assert (status, json.loads(body)) == (200, {"input_tokens": 9})
    assert statuses == ["MISS", "HIT"]
    assert len(upstream.calls()) == 1
