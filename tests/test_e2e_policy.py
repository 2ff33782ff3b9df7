"""
End to end, through real daemons: stale-if-error when the upstream is gone,
samples replayed in the same order by a restarted daemon, ignore rules.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable

from tests.daemon import Daemon
from tests.fake_upstream import FakeUpstream

HEADERS = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}


def chat(content: str = "hi", **extra: object) -> bytes:
    return json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}
    ).encode()


def ask(daemon: Daemon, body: bytes, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return daemon.request("POST", "/v1/chat/completions", body, {**HEADERS, **headers})


def test_a_daemon_whose_upstream_is_gone_serves_what_expired_as_stale(
    start: Callable[..., Daemon], upstream: FakeUpstream, closed_port: int
) -> None:
    recorder = start("--ttl", "1h")
    status, headers, recorded = ask(recorder, chat())
    assert (status, headers["x-stasis-status"]) == (200, "MISS")
    recorder.stop()
    # An hour and a minute later, as far as the entry can tell.
    with sqlite3.connect(recorder.db) as connection:
        connection.execute("UPDATE entries SET expires_at = ?", (time.time() - 60,))

    down = f"http://127.0.0.1:{closed_port}"
    plain = start(db=recorder.db, upstream_url=down)
    assert ask(plain, chat())[0] == 502
    plain.stop()
    daemon = start("--stale-if-error", "1d", db=recorder.db, upstream_url=down)
    status, headers, body = ask(daemon, chat())
    assert (status, headers["x-stasis-status"], body) == (200, "STALE", recorded)
    assert headers["cache-status"] == "stasis; fwd=stale; detail=stale-if-error"
    assert int(headers["age"]) >= 0
    daemon.wait_for_log("served a stale answer for /v1/chat/completions")
    assert daemon.get_json("/stats")["stale"] == 1


def test_samples_come_back_in_the_same_order_from_a_restarted_daemon(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    recorder = start("--samples", "3")
    first = [ask(recorder, chat(temperature=1))[2] for _ in range(6)]
    assert len(upstream.calls()) == 3
    assert first[:3] == first[3:] and len(set(first)) == 3
    recorder.stop()
    replayer = start("--mode", "replay", "--samples", "3", db=recorder.db)
    again = [ask(replayer, chat(temperature=1))[2] for _ in range(6)]
    assert again == first
    assert len(upstream.calls()) == 3


def test_ignore_rules_make_per_run_fields_hit(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    daemon = start("--ignore", "user", "--ignore", "metadata.session_id")
    runs = [chat(user=f"run-{n}", metadata={"session_id": f"s{n}", "suite": "a"}) for n in (1, 2)]
    assert ask(daemon, runs[0])[1]["x-stasis-status"] == "MISS"
    assert ask(daemon, runs[1])[1]["x-stasis-status"] == "HIT"
    other = chat(user="run-3", metadata={"session_id": "s3", "suite": "b"})
    assert ask(daemon, other)[1]["x-stasis-status"] == "MISS"
    # Per request, on top of the daemon's.
    tagged = [chat(metadata={"trace": f"t{n}"}) for n in (1, 2)]
    assert (
        ask(daemon, tagged[0], **{"X-Stasis-Ignore": "metadata.trace"})[1]["x-stasis-status"]
        == "MISS"
    )
    assert (
        ask(daemon, tagged[1], **{"X-Stasis-Ignore": "metadata.trace"})[1]["x-stasis-status"]
        == "HIT"
    )
    assert len(upstream.calls()) == 3
