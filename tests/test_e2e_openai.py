"""
End to end: the official ``openai`` SDK -> a real ``twistd -n stasis`` -> a fake upstream.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from tests.daemon import Daemon, poll_until
from tests.fake_upstream import FakeUpstream, Received, Reply

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
KEY = "sk-test-SECRET-0123456789abcdef"


def client(daemon: Daemon, api_key: str = KEY, **kwargs: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=daemon.url + "/v1", api_key=api_key, **kwargs)  # type: ignore[arg-type]


def chat(c: openai.OpenAI, **kwargs: object) -> openai._legacy_response.LegacyAPIResponse:  # type: ignore[name-defined]
    params: dict[str, object] = {"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0}
    params.update(kwargs)
    return c.chat.completions.with_raw_response.create(**params)  # type: ignore[call-overload]


def test_same_call_twice_is_miss_then_hit(daemon: Daemon, upstream: FakeUpstream) -> None:
    c = client(daemon)
    first = chat(c)
    second = chat(c)
    assert first.headers["x-stasis-status"] == "MISS"
    assert second.headers["x-stasis-status"] == "HIT"
    assert len(upstream.calls("/v1/chat/completions")) == 1
    assert first.parse().model_dump() == second.parse().model_dump()
    assert first.content == second.content
    assert first.headers["x-stasis-key"] == second.headers["x-stasis-key"]
    assert len(first.headers["x-stasis-key"]) == 64
    assert first.headers["cache-status"] == "stasis; fwd=uri-miss; fwd-status=200; stored"
    assert second.headers["cache-status"] == "stasis; hit"
    assert int(second.headers["age"]) >= 0
    assert "age" not in first.headers
    # The upstream's own headers come back on a hit too.
    assert second.headers["x-request-id"] == "req_fake"
    assert second.headers["content-type"] == "application/json"


def test_the_upstream_sees_the_request_as_sent(daemon: Daemon, upstream: FakeUpstream) -> None:
    chat(client(daemon), extra_headers={"X-Stasis-Namespace": "suite-a"})
    (seen,) = upstream.calls()
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.headers["host"] == upstream.url.removeprefix("http://")
    assert seen.json()["messages"] == MESSAGES
    assert not any(name.startswith("x-stasis-") for name in seen.headers)


def test_sdk_noise_does_not_change_the_key(daemon: Daemon, upstream: FakeUpstream) -> None:
    chat(client(daemon, max_retries=5, timeout=30))
    again = chat(
        client(daemon, max_retries=0, timeout=7, default_headers={"User-Agent": "other/1.0"})
    )
    assert again.headers["x-stasis-status"] == "HIT"
    assert len(upstream.calls()) == 1


def test_key_order_and_spacing_do_not_change_the_key(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    one = {"model": "gpt-4o-mini", "messages": MESSAGES, "temperature": 0}
    other = {"temperature": 0.0, "messages": MESSAGES, "model": "gpt-4o-mini"}
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    first = daemon.request("POST", "/v1/chat/completions", json.dumps(one).encode(), headers)
    second = daemon.request(
        "POST", "/v1/chat/completions", json.dumps(other, indent=4).encode(), headers
    )
    assert (first[1]["x-stasis-status"], second[1]["x-stasis-status"]) == ("MISS", "HIT")
    assert first[2] == second[2]


def test_another_api_key_is_a_miss(daemon: Daemon, upstream: FakeUpstream) -> None:
    chat(client(daemon))
    other = chat(client(daemon, api_key="sk-test-OTHER-KEY"))
    assert other.headers["x-stasis-status"] == "MISS"
    assert len(upstream.calls()) == 2
    assert other.parse().choices[0].message.content.startswith("echo #2")


def test_a_changed_parameter_is_a_miss(daemon: Daemon, upstream: FakeUpstream) -> None:
    c = client(daemon)
    chat(c)
    assert chat(c, temperature=0.5).headers["x-stasis-status"] == "MISS"
    assert chat(c, model="gpt-4o").headers["x-stasis-status"] == "MISS"
    assert len(upstream.calls()) == 3


def test_fresh_fetches_and_overwrites(daemon: Daemon, upstream: FakeUpstream) -> None:
    c = client(daemon)
    chat(c)
    fresh = chat(c, extra_headers={"X-Stasis-Mode": "fresh"})
    assert fresh.headers["x-stasis-status"] == "MISS"
    assert fresh.headers["cache-status"] == "stasis; fwd=request; fwd-status=200; stored"
    assert len(upstream.calls()) == 2
    # The next ordinary call is served the refreshed answer.
    hit = chat(c)
    assert hit.headers["x-stasis-status"] == "HIT"
    assert hit.parse().choices[0].message.content.startswith("echo #2")
    assert daemon.get_json("/stats")["totalEntries"] == 1


def test_cache_control_no_cache_means_fresh(daemon: Daemon, upstream: FakeUpstream) -> None:
    c = client(daemon)
    chat(c)
    again = chat(c, extra_headers={"Cache-Control": "no-cache"})
    assert again.headers["x-stasis-status"] == "MISS"
    assert len(upstream.calls()) == 2


@pytest.mark.parametrize("headers", [{"X-Stasis-Mode": "bypass"}, {"Cache-Control": "no-store"}])
def test_bypass_neither_reads_nor_writes(
    daemon: Daemon, upstream: FakeUpstream, headers: dict[str, str]
) -> None:
    c = client(daemon)
    chat(c)
    first = chat(c, extra_headers=headers)
    second = chat(c, extra_headers=headers)
    assert first.headers["x-stasis-status"] == second.headers["x-stasis-status"] == "BYPASS"
    assert "stored" not in first.headers["cache-status"]
    assert len(upstream.calls()) == 3
    assert daemon.get_json("/stats")["totalEntries"] == 1
    # The stored entry is the first answer still.
    assert chat(c).parse().choices[0].message.content.startswith("echo #1")


@pytest.mark.parametrize(
    "headers", [{"X-Stasis-Mode": "replay"}, {"Cache-Control": "only-if-cached"}]
)
def test_replay_serves_hits_and_never_calls_upstream(
    daemon: Daemon, upstream: FakeUpstream, headers: dict[str, str]
) -> None:
    c = client(daemon, max_retries=0)
    chat(c)
    hit = chat(c, extra_headers=headers)
    assert hit.headers["x-stasis-status"] == "HIT"
    with pytest.raises(openai.APIStatusError) as caught:
        chat(c, extra_headers=headers, model="gpt-4o")
    assert caught.value.status_code == 504
    error = caught.value.response.json()["error"]
    assert error["type"] == "stasis_replay_miss"
    assert error["key"] == caught.value.response.headers["x-stasis-key"]
    assert caught.value.response.headers["x-stasis-status"] == "MISS"
    assert len(upstream.calls()) == 1


def test_server_replay_mode_fails_loudly_on_a_miss(
    start: Callable[..., Daemon], upstream: FakeUpstream, tmp_path: Path
) -> None:
    recorder = start()
    chat(client(recorder))
    recorder.stop()
    ci = start("--mode", "replay")
    assert chat(client(ci)).headers["x-stasis-status"] == "HIT"
    with pytest.raises(openai.APIStatusError) as caught:
        chat(client(ci, max_retries=0), messages=[{"role": "user", "content": "new"}])
    assert caught.value.status_code == 504
    assert "replay" in caught.value.message
    # A request may still ask for the cache explicitly.
    explicit = chat(client(ci), extra_headers={"X-Stasis-Mode": "cache"}, model="gpt-4.1")
    assert explicit.headers["x-stasis-status"] == "MISS"
    assert len(upstream.calls()) == 2


def test_unknown_mode_is_a_400_naming_the_allowed_values(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        chat(client(daemon), extra_headers={"X-Stasis-Mode": "sometimes"})
    error = caught.value.response.json()["error"]
    assert error["type"] == "stasis_bad_request"
    for mode in ("cache", "fresh", "bypass", "replay"):
        assert mode in error["message"]
    assert upstream.calls() == []


def test_a_500_is_passed_through_and_not_stored(daemon: Daemon, upstream: FakeUpstream) -> None:
    upstream.handler = lambda r: Reply(
        500, [("Content-Type", "application/json")], b'{"error": {"message": "boom"}}'
    )
    c = client(daemon, max_retries=0)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as caught:
            chat(c)
        assert caught.value.response.headers["x-stasis-status"] == "MISS"
        assert "stored" not in caught.value.response.headers["cache-status"]
        assert caught.value.response.json() == {"error": {"message": "boom"}}
    assert len(upstream.calls()) == 2
    assert daemon.get_json("/stats")["totalEntries"] == 0


def test_credentials_are_stored_and_logged_nowhere(daemon: Daemon, upstream: FakeUpstream) -> None:
    c = client(daemon)
    chat(c)
    chat(c)
    daemon.stop()
    needle = KEY.encode()
    files = sorted(daemon.db.parent.glob(daemon.db.name + "*"))
    assert files
    for path in files:
        assert needle not in path.read_bytes(), path
        assert KEY[-12:].encode() not in path.read_bytes(), path
    assert KEY[-12:] not in daemon.log
    assert "POST /v1/chat/completions 200 MISS" in daemon.log
    assert "POST /v1/chat/completions 200 HIT" in daemon.log


def test_gzip_from_the_upstream_is_decoded_and_stored_decoded(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    upstream.gzip = True
    c = client(daemon)
    first = chat(c)
    second = chat(c)
    assert "content-encoding" not in first.headers
    assert first.content == second.content
    assert json.loads(first.content)["object"] == "chat.completion"
    assert upstream.calls()[0].headers["accept-encoding"] == "gzip"


def test_stats_and_health_count_tokens_and_hits(daemon: Daemon, upstream: FakeUpstream) -> None:
    c = client(daemon)
    for _ in range(3):
        chat(c)
    stats = daemon.get_json("/stats")
    assert stats["totalEntries"] == 1
    assert (stats["hits"], stats["misses"], stats["bypasses"]) == (2, 1, 0)
    assert stats["hitRate"] == pytest.approx(2 / 3, abs=1e-3)
    assert stats["oldestEntry"].endswith("Z")
    health = daemon.get_json("/health")
    assert health["status"] == "healthy"
    assert health["cache"]["entries"] == 1
    assert health["cache"]["dbSizeBytes"] > 0
    # Hit counters reach the database within a second (batched); 18 tokens per call.
    poll_until(lambda: daemon.get_json("/health")["cache"]["tokensSaved"] == 36, deadline=3)


def test_concurrent_identical_misses_make_one_upstream_call(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    daemon = start("-l", "debug")
    gate = threading.Event()

    def slow(received: Received) -> Reply:
        gate.wait(10)
        return upstream.default_reply(received)

    upstream.handler = slow
    results: list[str] = []

    def call() -> None:
        results.append(chat(client(daemon)).headers["x-stasis-status"])

    threads = [threading.Thread(target=call) for _ in range(4)]
    threads[0].start()
    poll_until(lambda: len(upstream.calls()) == 1)
    for thread in threads[1:]:
        thread.start()
    # Open the gate only once all three followers are waiting inside the daemon.
    poll_until(lambda: daemon.log.count("waits for the identical request in flight") == 3)
    gate.set()
    for thread in threads:
        thread.join(20)
    assert len(upstream.calls()) == 1
    assert sorted(results) == ["HIT", "HIT", "HIT", "MISS"]
