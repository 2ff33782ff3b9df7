"""
End to end, with the official SDKs and a real daemon: replay misses that fail
at once and explain themselves, and credential scopes that let a recording
made with one key replay with another or none.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.daemon import Daemon
from tests.fake_upstream import FakeUpstream, Received, Reply

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


#: What the real APIs send that says whose account answered.
ACCOUNT_HEADERS = [
    ("openai-organization", "org-Zq8xSNTLwK3v"),
    ("openai-project", "proj_Kx3tSNTLp9Qm"),
    ("anthropic-organization-id", "a7f3c1e2-5d4b-4b9d-8e0f-0c2d5b6a9e11"),
    ("request-id", "req_Vb6ySNTLr2Jd"),
    ("set-cookie", "__cf_bm=Pq9uSNTLc4Hs"),
]


def _with_account_headers(fake: FakeUpstream) -> FakeUpstream:
    def reply(received: Received) -> Reply:
        answer = fake.default_reply(received)
        answer.headers = [*answer.headers, *ACCOUNT_HEADERS]
        return answer

    fake.handler = reply
    return fake


def _stasis(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(
        [sys.executable, "-m", "stasis", *args], cwd=cwd, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done


def _calls(daemon: Daemon, key: str | None) -> list[Any]:
    """
    The suite's calls through the official SDKs: a chat, a stream, an Anthropic
    message. With no ``key``, the SDKs send no credential at all.
    """
    omit = {"Authorization": openai.Omit()} if key is None else {}
    c = openai_client(daemon, key or "unused", organization="org-Zq8xSNTLwK3v", max_retries=0)
    chat = c.chat.completions.create(  # type: ignore[call-overload]
        model="gpt-4o-mini", messages=MESSAGES, temperature=0.2, extra_headers=omit
    )
    stream = c.chat.completions.create(  # type: ignore[call-overload]
        model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers=omit
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    a = anthropic.Anthropic(
        base_url=daemon.url,
        api_key=key,
        max_retries=0,
        default_headers={"Authorization": anthropic.Omit()} if key is None else {},
    )
    message = a.messages.create(model="claude-3-5-haiku-latest", max_tokens=10, messages=MESSAGES)  # type: ignore[arg-type]
    return [chat.choices[0].message.content, text, message.content[0].text]  # type: ignore[union-attr]


def test_record_with_one_key_export_import_and_replay_with_another_or_none(
    start: Callable[..., Daemon], make_upstream: Callable[..., FakeUpstream], tmp_path: Path
) -> None:
    upstream = _with_account_headers(make_upstream())
    recorder = start(db=tmp_path / "dev.db", upstream_url=upstream.url)  # the caller scope
    recorded = _calls(recorder, KEY_A)
    assert len(upstream.calls()) == 3

    _stasis("export", "cassettes", "-d", str(recorder.db), cwd=tmp_path)
    exported = b"".join(path.read_bytes() for path in sorted((tmp_path / "cassettes").iterdir()))
    sentinels = [KEY_A] + [value.partition("=")[2] or value for _, value in ACCOUNT_HEADERS]
    for sentinel in sentinels:
        for start_at in range(len(sentinel) - 7):
            assert sentinel[start_at : start_at + 8].encode() not in exported, sentinel

    # CI: a fresh cache, an upstream that must not be called.
    _stasis("import", "cassettes", "-d", str(tmp_path / "ci.db"), cwd=tmp_path)
    ci_upstream = make_upstream()
    replayer = start("--mode", "replay", db=tmp_path / "ci.db", upstream_url=ci_upstream.url)
    assert _calls(replayer, KEY_B) == recorded
    assert _calls(replayer, None) == recorded
    stats = replayer.get_json("/stats")
    assert (stats["hits"], stats["misses"]) == (6, 0)
    assert ci_upstream.calls() == []

    # export -> import -> export is byte-identical.
    _stasis("export", "again", "-d", str(replayer.db), cwd=tmp_path)
    again = b"".join(path.read_bytes() for path in sorted((tmp_path / "again").iterdir()))
    assert again == exported
