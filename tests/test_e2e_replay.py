"""
End to end, with the official SDKs and a real daemon: replay misses that fail
at once and explain themselves, and credential scopes that let a recording
made with one key replay with another or none.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anthropic
import openai
import pytest

from tests.daemon import Daemon
from tests.fake_upstream import FakeUpstream

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
KEY_A = "sk-key-A-SENTINEL-0123456789abcdef"
KEY_B = "sk-key-B-other-fedcba9876543210"


def openai_client(daemon: Daemon, api_key: str, **kwargs: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=daemon.url + "/v1", api_key=api_key, **kwargs)  # type: ignore[arg-type]


def ask(c: openai.OpenAI, temperature: float = 0.2) -> str | None:
    completion = c.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, temperature=temperature
    )  # type: ignore[call-overload]
    return completion.choices[0].message.content  # type: ignore[no-any-return]


def test_an_openai_replay_miss_fails_after_one_request_and_says_what_differs(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    daemon = start()
    ask(openai_client(daemon, KEY_A), temperature=0.2)
    # The SDK's defaults: two retries with back-off, unless told not to.
    c = openai_client(daemon, KEY_A, default_headers={"X-Stasis-Mode": "replay"})
    began = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        ask(c, temperature=0.3)
    elapsed = time.monotonic() - began
    assert caught.value.status_code == 504
    assert "temperature: 0.2 → 0.3" in caught.value.message
    assert caught.value.response.headers["x-should-retry"] == "false"
    stats = daemon.get_json("/stats")
    assert (stats["misses"], stats["replayMisses"]) == (2, 1)  # the recording, and one try
    assert len(upstream.calls()) == 1
    assert elapsed < 5, "the SDK waited for retries"


def test_an_anthropic_replay_miss_fails_after_one_request(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    daemon = start("--mode", "replay")
    c = anthropic.Anthropic(base_url=daemon.url, api_key=KEY_A)
    with pytest.raises(anthropic.APIStatusError) as caught:
        c.messages.create(model="claude-3-5-haiku-latest", max_tokens=10, messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 504
    assert "no cached answer" in caught.value.message
    assert daemon.get_json("/stats")["replayMisses"] == 1
    assert upstream.calls() == []


def test_a_shared_scope_recording_replays_with_any_key_or_none(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    recorder = start("--credential-scope", "shared")
    recorded = ask(openai_client(recorder, KEY_A))
    recorder.stop()
    replayer = start("--mode", "replay", db=recorder.db)
    for key in (KEY_B, "dummy"):
        assert ask(openai_client(replayer, key)) == recorded
    # No key at all: a raw request with no Authorization.
    status, headers, _ = replayer.request(
        "POST",
        "/v1/chat/completions",
        body=(
            b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": '
            b'"What is the capital of France?"}], "temperature": 0.2}'
        ),
        headers={"Content-Type": "application/json"},
    )
    assert (status, headers["x-stasis-status"]) == (200, "HIT")
    assert len(upstream.calls()) == 1


def test_the_caller_scope_keeps_keys_apart(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    daemon = start()
    ask(openai_client(daemon, KEY_A))
    replaying = openai_client(
        daemon, KEY_B, default_headers={"X-Stasis-Mode": "replay"}, max_retries=0
    )
    with pytest.raises(openai.APIStatusError) as caught:
        ask(replaying)
    # Another key's recording is neither served nor shown.
    assert caught.value.status_code == 504
    assert "nothing recorded" in caught.value.message
