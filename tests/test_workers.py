"""
End to end: ``--workers 2``, a real supervisor and two real worker processes on one socket.

A keep-alive connection stays with the worker that accepted it, so a test
reaches a chosen worker by opening connections until ``/health`` (which names
the worker under ``--workers``) says it is that one, then sends its call on
that same connection.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.daemon import Daemon, _environment, command, poll_until, run
from tests.fake_upstream import FakeUpstream, Received, Reply
from tests.test_metrics import metric_samples

HEADERS = {"Authorization": "Bearer sk-test", "Content-Type": "application/json"}
#: How twistd (and so ``stasis start``) exits once SIGTERM has stopped it cleanly, with or
#: without workers: it re-raises the signal after its shutdown, as a daemon should.
STOPPED = 0  # a clean stop, whatever signal asked for it
#: The supervisor's line once every worker serves.
SERVING = r"stasis listening on http://127\.0\.0\.1:\d+ with 2 workers"


def chat(text: str) -> bytes:
    return json.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    ).encode()


def _read(connection: http.client.HTTPConnection) -> tuple[int, dict[str, str], bytes]:
    response = connection.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def health(connection: http.client.HTTPConnection) -> dict[str, Any]:
    connection.request("GET", "/health")
    status, _, body = _read(connection)
    assert status == 200
    document: dict[str, Any] = json.loads(body)
    return document


def post(connection: http.client.HTTPConnection, text: str) -> tuple[int, dict[str, str], bytes]:
    connection.request("POST", "/v1/chat/completions", chat(text), HEADERS)
    return _read(connection)


def _address(daemon: Daemon) -> tuple[str, int]:
    host, port = daemon.url.removeprefix("http://").split(":")
    return host, int(port)


def connect_to(daemon: Daemon, index: int, deadline: float = 15.0) -> http.client.HTTPConnection:
    """A keep-alive connection that worker ``index`` accepted."""
    end = time.monotonic() + deadline
    while True:
        connection = http.client.HTTPConnection(*_address(daemon), timeout=30)
        if health(connection)["worker"]["index"] == index:
            return connection
        connection.close()
        if time.monotonic() > end:
            raise AssertionError(f"no connection reached worker {index} within {deadline}s")


def worker_pids(daemon: Daemon, deadline: float = 15.0) -> dict[int, int]:
    """Each worker's pid, as ``/health`` names it on fresh connections."""
    seen: dict[int, int] = {}

    def both() -> bool:
        worker = daemon.get_json("/health")["worker"]
        seen[worker["index"]] = worker["pid"]
        return len(seen) == 2

    poll_until(both, deadline)
    return seen


def parent_of(pid: int) -> int:
    # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces, not ")".
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting for an init that never reaps counts)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return bool(re.search(r"^State:\s+Z", status, re.MULTILINE))


@contextmanager
def in_flight(call: Callable[[], Any]) -> Iterator[list[Any]]:
    """Run ``call`` in a thread; the list holds its result once the block is left."""
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(call()))
    thread.start()
    try:
        yield results
    finally:
        thread.join(60)


@pytest.mark.parametrize("via", ["twistd", "stasis"])
def test_both_workers_serve_and_what_one_stores_the_other_hits_at_once(
    start: Callable[..., Daemon], upstream: FakeUpstream, tmp_path: Path, via: str
) -> None:
    daemon = start("--workers", "2", "--ready-file", str(tmp_path / "ready"), via=via)
    daemon.wait_for_log(SERVING)
    assert (tmp_path / "ready").read_text() == daemon.url + "\n"
    pids = worker_pids(daemon)
    assert len(set(pids.values())) == 2
    # The supervisor's own children: it accepts nothing, they serve.
    assert {parent_of(pid) for pid in pids.values()} == {daemon.process.pid}
    assert daemon.process.pid not in pids.values()

    # Stored through one worker, a hit through the other on the very next
    # request (no second of delay), in both directions.
    for first, second in ((0, 1), (1, 0)):
        text = f"stored by worker {first}"
        with closing(connect_to(daemon, first)) as a:
            status, headers, answer = post(a, text)
        assert (status, headers["x-stasis-status"]) == (200, "MISS")
        with closing(connect_to(daemon, second)) as b:
            assert health(b)["worker"]["index"] == second
            status, headers, body = post(b, text)
        assert (status, headers["x-stasis-status"]) == (200, "HIT"), headers
        assert body == answer
    assert len(upstream.calls()) == 2

    assert daemon.stop() == STOPPED
    assert "Server Shut Down." in daemon.log
    poll_until(lambda: all(gone(pid) for pid in pids.values()))


def test_workers_share_a_postgresql_database(
    start: Callable[..., Daemon], upstream: FakeUpstream, postgres_url: str
) -> None:
    pytest.importorskip("psycopg")
    from tests.test_manage_postgres import the_password, with_password

    db = with_password(postgres_url)
    daemon = start("--workers", "2", db=db)
    with closing(connect_to(daemon, 0)) as first:
        assert post(first, "in postgres")[1]["x-stasis-status"] == "MISS"
    with closing(connect_to(daemon, 1)) as second:
        assert post(second, "in postgres")[1]["x-stasis-status"] == "HIT"
    assert len(upstream.calls()) == 1
    stats = daemon.get_json("/stats")
    assert (stats["hits"], stats["misses"], stats["totalEntries"]) == (1, 1, 1)
    # Stopped here: the database goes with the postgres_url fixture, before the daemon would.
    assert daemon.stop() == STOPPED
    assert the_password(db) not in daemon.log


def test_stats_add_up_every_worker(start: Callable[..., Daemon], upstream: FakeUpstream) -> None:
    daemon = start("--workers", "2")
    connections = [connect_to(daemon, 0), connect_to(daemon, 1)]
    # 10 calls spread over both workers: 4 different ones, each first a miss.
    texts = ["a", "b", "a", "c", "a", "d", "b", "b", "c", "a"]
    statuses = []
    for number, text in enumerate(texts):
        _, headers, _ = post(connections[number % 2], text)
        statuses.append(headers["x-stasis-status"])
    assert statuses.count("MISS") == 4
    assert statuses.count("HIT") == 6
    for connection in connections:
        connection.request("GET", "/stats")
        stats = json.loads(_read(connection)[2])
        assert (stats["hits"], stats["misses"]) == (6, 4)
        assert stats["hits"] + stats["misses"] == len(texts)
        assert stats["hitRate"] == 0.6
        assert stats["tokensSavedSinceStart"] == 6 * 18
        assert stats["totalEntries"] == 4
        # /metrics: the engine's counters and the store's figures are the
        # daemon's; the requests, those this worker answered (five each).
        connection.request("GET", "/metrics")
        metrics = metric_samples(_read(connection)[2].decode())
        assert metrics[("stasis_tokens_saved_total", ())] == 6 * 18
        assert metrics[("stasis_cache_entries", ())] == 4
        answered = [v for (name, _), v in metrics.items() if name == "stasis_requests_total"]
        assert sum(answered) == len(texts) / 2
        connection.close()


def test_a_killed_worker_is_replaced_and_nothing_is_lost(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    daemon = start("--workers", "2")
    daemon.wait_for_log(SERVING)  # started: from now on a death is supervised, not a failed start
    with closing(connect_to(daemon, 1)) as doomed:
        victim = health(doomed)["worker"]["pid"]
        for text in ("x", "y", "z"):
            assert post(doomed, text)[1]["x-stasis-status"] == "MISS"
        os.kill(victim, signal.SIGKILL)
    daemon.wait_for_log(rf"worker 1 \(pid {victim}\) was killed by signal 9 \(SIGKILL\)")
    line = daemon.wait_for_log(rf"worker 1 serving \(pid (?!{victim}\b)\d+\)", deadline=15)
    replacement = int(re.findall(r"pid (\d+)", line)[0])
    poll_until(lambda: gone(victim))
    with closing(connect_to(daemon, 1)) as again:
        assert health(again)["worker"]["pid"] == replacement
        for text in ("x", "y", "z"):
            status, headers, _ = post(again, text)
            assert (status, headers["x-stasis-status"]) == (200, "HIT")
    # Every request after the replacement succeeds, whichever worker takes it.
    for _ in range(20):
        status, headers, _ = daemon.request("POST", "/v1/chat/completions", chat("x"), HEADERS)
        assert (status, headers["x-stasis-status"]) == (200, "HIT")
    assert len(upstream.calls()) == 3
    # The dead worker's counts live on in its slot.
    stats = daemon.get_json("/stats")
    assert (stats["misses"], stats["hits"]) == (3, 23)
    assert daemon.stop() == STOPPED


def test_the_first_worker_keeps_the_bound_for_what_the_other_stores(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    """Housekeeping runs in worker 0 only; it learns of worker 1's puts from the database."""
    daemon = start("--workers", "2", "--max-entries", "3")
    with closing(connect_to(daemon, 1)) as other:
        for number in range(8):
            assert post(other, f"call {number}")[1]["x-stasis-status"] == "MISS"
    poll_until(lambda: _count_entries(daemon.db) <= 3, deadline=15)
    stats = daemon.get_json("/stats")
    assert stats["evictions"] >= 5
    assert stats["maxEntries"] == 3


def test_sigterm_lets_a_request_in_flight_finish_then_everything_exits(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    gate = threading.Event()

    def slow(received: Received) -> Reply:
        if "slow" in received.body.decode():
            assert gate.wait(30), "the test never let the upstream answer"
        return upstream.default_reply(received)

    upstream.handler = slow
    daemon = start("--workers", "2")
    pids = worker_pids(daemon)
    call = lambda: daemon.request("POST", "/v1/chat/completions", chat("slow"), HEADERS)  # noqa: E731
    with in_flight(call) as results:
        poll_until(lambda: len(upstream.calls()) == 1)
        daemon.process.send_signal(signal.SIGTERM)
        daemon.wait_for_log("stopping 2 workers")
        daemon.wait_for_log(r"stopping: letting 1 request\(s\) in flight finish")
        assert daemon.process.poll() is None
        gate.set()
    [(status, headers, body)] = results
    assert (status, headers["x-stasis-status"]) == (200, "MISS")
    assert headers["connection"] == "close"  # the daemon is going away
    assert json.loads(body)["object"] == "chat.completion"
    assert daemon.process.wait(30) == STOPPED
    poll_until(lambda: all(gone(pid) for pid in pids.values()))
    # What it answered was stored before it was sent.
    assert _count_entries(daemon.db) == 1


def _count_entries(db: Path) -> int:
    import sqlite3

    with sqlite3.connect(db) as connection:
        (count,) = connection.execute("SELECT count(*) FROM entries").fetchone()
    return int(count)


def test_workers_stop_when_the_supervisor_is_killed(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    daemon = start("--workers", "2")
    pids = worker_pids(daemon)
    daemon.process.kill()
    daemon.process.wait(10)
    poll_until(lambda: all(gone(pid) for pid in pids.values()), deadline=15)
    daemon.wait_for_log("the supervisor is gone: stopping")


@pytest.mark.parametrize("via", ["twistd", "stasis"])
@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("0", "--workers must be greater than 0, not 0"),
        ("abc", "--workers must be a whole number, not 'abc'"),
        ("257", "--workers must be at most 256, not 257"),
    ],
)
def test_a_bad_worker_count_is_one_line_and_exit_status_2(
    tmp_path: Path, via: str, value: str, complaint: str
) -> None:
    result = run(["--workers", value], tmp_path, via=via)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"stasis: error: {complaint} (see --help)"]


def test_workers_that_cannot_open_the_database_fail_the_start_up_once(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    db = tmp_path / "missing" / "cache.db"
    result = run(["-p", "0", "-u", upstream.url, "-d", str(db), "--workers", "2"], tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"stasis: cannot open the cache database '{db}': unable to open database file"
    ]
    assert "Traceback" not in result.stdout


def test_a_taken_port_stops_the_supervisor_before_any_worker_starts(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(["-p", str(port), "-u", upstream.url, "--workers", "2"], tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"stasis: cannot listen on tcp:{port}:interface=127.0.0.1:backlog=511: "
        "address already in use"
    ]
    assert "worker" not in result.stdout
    assert list(tmp_path.iterdir()) == []


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def test_workers_share_a_unix_socket(tmp_path: Path, upstream: FakeUpstream) -> None:
    path = tmp_path / "s.sock"
    ready = tmp_path / "ready"
    argv = [
        *command("twistd"), "--listen", f"unix:{path}", "-u", upstream.url, "--workers", "2",
        "--ready-file", str(ready),
    ]  # fmt: skip
    process = subprocess.Popen(
        argv,
        cwd=tmp_path,
        env=_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        poll_until(ready.exists, deadline=20)
        assert ready.read_text() == f"unix:{path}\n"
        seen: set[int] = set()

        def both() -> bool:
            connection = _UnixConnection(str(path))
            seen.add(health(connection)["worker"]["index"])
            connection.close()
            return seen == {0, 1}

        poll_until(both)
        connection = _UnixConnection(str(path))
        assert post(connection, "over a unix socket")[1]["x-stasis-status"] == "MISS"
        connection.close()
    finally:
        process.terminate()
        assert process.wait(30) == STOPPED


def test_a_daemonized_supervisor_relays_its_workers_log_lines(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """Daemonized, stdout is the null device: the workers' lines reach twistd's log file."""
    ready, pidfile, logfile = tmp_path / "ready", tmp_path / "twistd.pid", tmp_path / "twistd.log"
    argv = [
        *command("twistd")[:1], "--pidfile", str(pidfile), "--logfile", str(logfile), "stasis",
        "--listen", "tcp:0:interface=127.0.0.1", "-u", upstream.url, "--workers", "2",
        "--ready-file", str(ready),
    ]  # fmt: skip
    launched = subprocess.run(
        argv, cwd=tmp_path, env=_environment(), capture_output=True, text=True, timeout=30
    )
    assert launched.returncode == 0, launched.stderr
    poll_until(ready.exists, deadline=20)
    supervisor = int(pidfile.read_text())
    try:
        host, port = ready.read_text().strip().removeprefix("http://").split(":")
        with closing(http.client.HTTPConnection(host, int(port), timeout=30)) as connection:
            status, headers, _ = post(connection, "hi")
        assert (status, headers["x-stasis-status"]) == (200, "MISS")
        poll_until(lambda: "POST /v1/chat/completions 200 MISS" in logfile.read_text())
        log = logfile.read_text()
        # Relayed under the worker's own system, without a second timestamp.
        assert re.search(r"\[stasis\.service#info\] worker 0 serving \(pid \d+\)", log), log
        assert re.search(r"\[stasis\.http#info\] POST /v1/chat/completions 200 MISS", log), log
    finally:
        os.kill(supervisor, signal.SIGTERM)
    poll_until(lambda: gone(supervisor), deadline=40)
    assert "Traceback" not in logfile.read_text()


def test_identical_misses_at_two_workers_make_one_upstream_call(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    gate = threading.Event()
    upstream.hold_until(gate)
    daemon = start("--workers", "2", "-l", "debug")
    daemon.wait_for_log(SERVING)
    connections = [connect_to(daemon, 0), connect_to(daemon, 1)]
    answers: list[tuple[int, dict[str, str], bytes]] = []
    threads = [
        threading.Thread(target=lambda c=c: answers.append(post(c, "once"))) for c in connections
    ]
    try:
        threads[0].start()
        poll_until(lambda: len(upstream.calls()) == 1)
        threads[1].start()
        # The second worker waits for the first's fetch, through the database.
        daemon.wait_for_log("waits for the identical request another process fetches", 15.0)
    finally:
        gate.set()
    for thread in threads:
        thread.join(30)
    for connection in connections:
        connection.close()
    assert sorted(headers["x-stasis-status"] for _, headers, _ in answers) == ["HIT", "MISS"]
    assert len({body for _, _, body in answers}) == 1
    assert len(upstream.calls()) == 1
