"""
End to end: one client's odd request cannot switch caching off for the others.
A lone surrogate escape in the model name (valid JSON) once made the whole
group commit fail: answers reported stored were lost, and every miss was
BYPASS for a minute after.
"""

from __future__ import annotations

import json
import threading

from tests.daemon import Daemon
from tests.fake_upstream import FakeUpstream

HEADERS = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}
CLIENTS = 30


def test_a_lone_surrogate_in_one_request_loses_no_one_elses_answer(
    daemon: Daemon, upstream: FakeUpstream
) -> None:
    bodies = [
        json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": str(n)}]})
        for n in range(CLIENTS - 1)
    ] + ['{"model": "\\ud800", "messages": []}']
    answers: list[tuple[int, dict[str, str]]] = []

    def send(body: str) -> None:
        status, headers, _ = daemon.request("POST", "/v1/chat/completions", body.encode(), HEADERS)
        answers.append((status, headers))

    threads = [threading.Thread(target=send, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == CLIENTS
    assert all(status == 200 for status, _ in answers)
    assert all(headers["cache-status"].endswith("; stored") for _, headers in answers)
    assert daemon.get_json("/stats")["totalEntries"] == CLIENTS
    # Caching is still on for everyone, the odd request included.
    for body in (bodies[0], bodies[-1]):
        status, headers, _ = daemon.request("POST", "/v1/chat/completions", body.encode(), HEADERS)
        assert (status, headers["x-stasis-status"]) == (200, "HIT")
    status, headers, _ = daemon.request(
        "POST",
        "/v1/chat/completions",
        json.dumps(
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "new"}]}
        ).encode(),
        HEADERS,
    )
    assert headers["x-stasis-status"] == "MISS"
    assert len(upstream.calls()) == CLIENTS + 1
