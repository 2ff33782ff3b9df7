"""
End to end: daemons sharing one PostgreSQL database, and what they do when it
goes away. Real ``twistd -n stasis`` processes on real sockets, a real server
(one of the test's own where it is stopped and started), the fake upstream
counting the calls that reach it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.daemon import Daemon, _environment, command, poll_until
from tests.fake_upstream import FakeUpstream
from tests.postgres_support import Cluster, fresh_database

pytest.importorskip("psycopg")

HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-test-shared"}
#: What a daemon logs at debug level for a request waiting for another's fetch:
#: one of its own (a follower in memory), or another daemon's (through a claim).
WAITING = r"waits for the identical request"
CONCURRENT = 20


def body(text: str = "hi") -> bytes:
    return json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    ).encode()


def call(daemon: Daemon, text: str = "hi") -> tuple[int, dict[str, str]]:
    status, headers, _ = daemon.request("POST", "/v1/chat/completions", body(text), dict(HEADERS))
    return status, headers


def waiting(*daemons: Daemon) -> int:
    return sum(line.count(WAITING) for daemon in daemons for line in list(daemon.lines))


def test_identical_misses_spread_over_two_daemons_make_one_upstream_call(
    start: Callable[..., Daemon], upstream: FakeUpstream, postgres_url: str
) -> None:
    first = start("-l", "debug", db=postgres_url)
    second = start("-l", "debug", db=postgres_url)
    gate = threading.Event()
    upstream.hold_until(gate)
    answers: list[tuple[int, dict[str, str]]] = []

    def send(daemon: Daemon) -> None:
        answers.append(call(daemon))

    threads = [
        threading.Thread(target=send, args=(first if n % 2 else second,)) for n in range(CONCURRENT)
    ]
    try:
        for thread in threads:
            thread.start()
        # One request fetches; every other one is known to be waiting before it answers.
        try:
            poll_until(lambda: waiting(first, second) >= CONCURRENT - 1, 20.0)
        except AssertionError:
            raise AssertionError(
                f"{waiting(first, second)} requests waiting, {len(upstream.calls())} upstream "
                f"calls:\n{first.log}\n{second.log}"
            ) from None
    finally:
        gate.set()
    for thread in threads:
        thread.join(30)
    assert len(answers) == CONCURRENT
    assert len(upstream.calls()) == 1
    statuses = sorted(headers["x-stasis-status"] for _, headers in answers)
    assert statuses == ["HIT"] * (CONCURRENT - 1) + ["MISS"]
    assert {status for status, _ in answers} == {200}
    # The daemon that did not fetch waited through the database, not in memory.
    assert "another process fetches" in first.log + second.log
    assert first.get_json("/stats")["totalEntries"] == 1


@pytest.fixture
def cluster_database(own_cluster: Cluster) -> Iterator[str]:
    with fresh_database(own_cluster.url) as url:
        yield url


def test_a_database_stopped_and_restarted_under_a_running_daemon(
    start: Callable[..., Daemon],
    upstream: FakeUpstream,
    own_cluster: Cluster,
    cluster_database: str,
) -> None:
    daemon = start(db=cluster_database)
    assert call(daemon, "stored before")[1]["x-stasis-status"] == "MISS"
    assert call(daemon, "stored before")[1]["x-stasis-status"] == "HIT"

    own_cluster.stop()
    # Hits from memory; misses answered by the upstream, not stored.
    status, headers = call(daemon, "stored before")
    assert (status, headers["x-stasis-status"]) == (200, "HIT")
    for text in ("while down 1", "while down 2"):
        status, headers = call(daemon, text)
        assert status == 200
        assert "stored" not in headers["cache-status"]
    assert headers["x-stasis-status"] == "BYPASS"
    daemon.wait_for_log(r"#warn\].*cannot write the cache database")
    status, _, health = daemon.request("GET", "/health")
    assert (status, json.loads(health)["error"]["type"]) == (503, "stasis_store_unavailable")

    own_cluster.start()
    # Without a restart: the next misses are stored again within seconds.
    poll_until(lambda: "stored" in call(daemon, "after")[1]["cache-status"], 20.0)
    assert call(daemon, "after")[1]["x-stasis-status"] == "HIT"
    daemon.wait_for_log(r"takes writes again")
    calls_before = len(upstream.calls())
    assert call(daemon, "stored before")[1]["x-stasis-status"] == "HIT"
    assert len(upstream.calls()) == calls_before


def test_a_database_unreachable_at_start_is_one_line_and_a_failed_exit(
    tmp_path: Path, closed_port: int
) -> None:
    url = f"postgresql://stasis:hunter2-secret@127.0.0.1:{closed_port}/stasis"
    done = subprocess.run(
        [*command("twistd"), "--listen", "tcp:0:interface=127.0.0.1", "--db", url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, done.stderr
    assert "cannot connect to the cache database" in errors[0]
    assert f"postgresql://stasis@127.0.0.1:{closed_port}/stasis" in errors[0]
    assert "hunter2" not in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    "argv",
    [
        [*command("twistd"), "--listen", "tcp:0:interface=127.0.0.1"],
        [*command("stasis"), "--listen", "tcp:0:interface=127.0.0.1"],
        [*command("twistd"), "--listen", "tcp:0:interface=127.0.0.1", "--workers", "2"],
        [sys.executable, "-m", "stasis", "ls"],
    ],
    ids=["twistd", "stasis-start", "workers", "stasis-ls"],
)
def test_a_postgresql_url_without_psycopg_is_one_line_saying_what_to_install(
    tmp_path: Path, argv: list[str]
) -> None:
    shadow = tmp_path / "shadow" / "psycopg"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('psycopg is not installed here')\n")
    env = _environment()
    env["PYTHONPATH"] = os.pathsep.join(
        [str(shadow.parent), *filter(None, [env.get("PYTHONPATH")])]
    )
    url = "postgresql://stasis:hunter2-secret@127.0.0.1:5432/stasis"
    done = subprocess.run(
        [*argv, "--db", url], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, done.stderr
    assert "pip install 'stasis[postgres]'" in errors[0]
    assert "hunter2" not in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
