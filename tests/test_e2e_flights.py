"""
End to end: identical requests that arrive while one is being fetched.

Through a real daemon and a fake upstream that holds its answer until the
test lets it go, so the followers are known (from the daemon's debug log) to
be waiting before the leader's answer arrives.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import pytest

from tests.daemon import Daemon, poll_until
from tests.fake_upstream import FakeUpstream, Received, Reply

CHAT = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
HEADERS = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}
#: The issue's figure: 50 concurrent identical misses make one upstream call.
FOLLOWERS = 49
#: What the daemon logs at debug level for each follower.
WAITING = "waits for the identical request in flight"


def _concurrently(daemon: Daemon, count: int) -> tuple[list[threading.Thread], list[tuple]]:
    results: list[tuple] = []

    def call() -> None:
        results.append(daemon.request("POST", "/v1/chat/completions", CHAT.encode(), HEADERS))

    threads = [threading.Thread(target=call) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads, results


def _held(upstream: FakeUpstream, status: int, gate: threading.Event) -> None:
    def answer(received: Received) -> Reply:
        if not gate.wait(20):
            raise AssertionError("the test never let the upstream answer")
        if status == 0:
            return Reply(status=0, headers=[], body=b"")
        body = json.dumps({"error": {"message": "slow down", "serial": received.serial}})
        return Reply(status, [("Content-Type", "application/json")], body.encode())

    upstream.handler = answer


@pytest.mark.parametrize("status", [429, 0])
def test_followers_of_a_failed_leader_get_its_answer_and_make_no_call(
    start: Callable[..., Daemon], upstream: FakeUpstream, status: int
) -> None:
    gate = threading.Event()
    _held(upstream, status, gate)
    daemon = start("-l", "debug")
    threads, results = _concurrently(daemon, 1 + FOLLOWERS)
    try:
        # The leader is at the upstream and every follower is waiting for it.
        poll_until(lambda: daemon.log.count(WAITING) == FOLLOWERS and len(upstream.calls()) == 1)
    finally:
        gate.set()
        for thread in threads:
            thread.join(30)
    assert len(results) == 1 + FOLLOWERS
    assert len(upstream.calls()) == 1
    if status == 429:
        assert {code for code, _, _ in results} == {429}
        assert {json.loads(body)["error"]["serial"] for _, _, body in results} == {1}
    else:
        assert {code for code, _, _ in results} == {502}
        assert {json.loads(body)["error"]["type"] for _, _, body in results} == {
            "stasis_upstream_unreachable"
        }
    stats = daemon.get_json("/stats")
    assert (stats["totalEntries"], stats["coalesced"]) == (0, FOLLOWERS)


def test_fifty_identical_requests_make_one_call_and_forty_nine_say_collapsed(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    gate = threading.Event()

    def answer(received: Received) -> Reply:
        if not gate.wait(20):
            raise AssertionError("the test never let the upstream answer")
        return upstream.default_reply(received)

    upstream.handler = answer
    daemon = start("-l", "debug")
    threads, results = _concurrently(daemon, 1 + FOLLOWERS)
    try:
        poll_until(lambda: daemon.log.count(WAITING) == FOLLOWERS and len(upstream.calls()) == 1)
    finally:
        gate.set()
        for thread in threads:
            thread.join(30)
    assert len(upstream.calls()) == 1
    assert {code for code, _, _ in results} == {200}
    assert len({body for _, _, body in results}) == 1
    statuses = sorted((h["x-stasis-status"], h["cache-status"]) for _, h, _ in results)
    assert statuses == [
        ("HIT", "stasis; fwd=uri-miss; fwd-status=200; collapsed"),
    ] * FOLLOWERS + [("MISS", "stasis; fwd=uri-miss; fwd-status=200; stored")]
    stats = daemon.get_json("/stats")
    assert (stats["hits"], stats["misses"], stats["totalEntries"]) == (FOLLOWERS, 1, 1)
    assert stats["coalesced"] == FOLLOWERS
