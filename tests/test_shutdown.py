"""
Stopping a real daemon: SIGTERM and Ctrl-C drain what is in flight within
``--shutdown-grace``, refuse new connections, close the store, and exit 0.

A stream is held open by the fake upstream's gate (after its first event), so
the signal arrives while it is in flight; nothing sleeps to make that happen.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from stasis.config import Config, ConfigError, ConfigTypeError
from tests.daemon import Daemon
from tests.fake_upstream import FakeUpstream

CHAT = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Tell me a story"}],
    "stream": True,
}
HEADERS = {"Authorization": "Bearer sk-test-shutdown", "Content-Type": "application/json"}


def _address(daemon: Daemon) -> tuple[str, int]:
    host, port = daemon.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


@contextmanager
def streaming(daemon: Daemon) -> Iterator[dict[str, object]]:
    """A streamed chat call in a thread; on leaving, its outcome (status, body or error)."""
    outcome: dict[str, object] = {}

    def call() -> None:
        connection = http.client.HTTPConnection(*_address(daemon), timeout=30)
        try:
            connection.request("POST", "/v1/chat/completions", json.dumps(CHAT), HEADERS)
            response = connection.getresponse()
            outcome["status"] = response.status
            outcome["cache"] = response.getheader("x-stasis-status")
            outcome["body"] = response.read()
        except (OSError, http.client.HTTPException) as e:
            outcome["error"] = e
        finally:
            connection.close()

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    try:
        yield outcome
    finally:
        thread.join(30)
        assert not thread.is_alive(), "the streamed call never ended"


def _entries(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        (count,) = connection.execute("SELECT count(*) FROM entries").fetchone()
    return int(count)


def _refused(daemon: Daemon) -> bool:
    try:
        socket.create_connection(_address(daemon), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("via", ["twistd", "stasis"])
def test_sigterm_lets_a_stream_in_flight_finish_and_store_then_exits_0(
    start: Callable[..., Daemon], upstream: FakeUpstream, via: str
) -> None:
    upstream.gate = threading.Event()
    daemon = start(via=via)
    with streaming(daemon) as outcome:
        assert upstream.first_event_sent.wait(10)
        daemon.process.send_signal(signal.SIGTERM)
        daemon.wait_for_log(r"stopping: letting 1 request\(s\) in flight finish")
        # The port is closed at once: a new client is refused, not queued.
        assert _refused(daemon)
        assert daemon.process.poll() is None
        upstream.gate.set()
    assert (outcome.get("status"), outcome.get("cache")) == (200, "MISS"), outcome
    body = outcome["body"]
    assert isinstance(body, bytes) and body.endswith(b"data: [DONE]\n\n")
    assert daemon.process.wait(15) == 0
    # Stored before the last byte went out, and the database closed cleanly.
    assert _entries(daemon.db) == 1
    assert "cut off" not in daemon.log


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_stream_longer_than_the_grace_is_cut_at_the_grace_and_the_daemon_exits_0(
    start: Callable[..., Daemon], upstream: FakeUpstream, workers: str
) -> None:
    """With ``--workers`` too: each worker drains within the grace, not a fixed 25 s."""
    upstream.gate = threading.Event()  # never set: the stream would last gate_timeout
    upstream.gate_timeout = 30.0
    daemon = start("--shutdown-grace", "1", "--workers", workers)
    daemon.wait_for_log("stasis listening on")  # with workers, once all serve
    with streaming(daemon) as outcome:
        assert upstream.first_event_sent.wait(10)
        signalled = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(10) == 0
        stopped_after = time.monotonic() - signalled
    upstream.gate.set()
    assert 1.0 <= stopped_after < 5.0, stopped_after
    daemon.wait_for_log(r"1 request\(s\) still in flight after 1s are cut off")
    # The client saw the stream end early (no [DONE]); nothing half-done was stored.
    assert b"[DONE]" not in outcome.get("body", b""), outcome  # type: ignore[operator]
    assert _entries(daemon.db) == 0


@pytest.mark.parametrize("via", ["twistd", "stasis"])
@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_an_idle_daemon_stops_at_once_with_status_0(
    start: Callable[..., Daemon], via: str, signal_number: int
) -> None:
    """Ctrl-C (SIGINT) and SIGTERM are both a clean stop: systemd and launchd see success."""
    daemon = start(via=via)
    assert daemon.get_json("/health")["status"] == "healthy"
    signalled = time.monotonic()
    daemon.process.send_signal(signal_number)
    assert daemon.process.wait(10) == 0
    assert time.monotonic() - signalled < 5.0


def test_a_bad_shutdown_grace_is_one_line_and_exit_status_2(tmp_path: Path) -> None:
    from tests.daemon import run

    result = run(["--shutdown-grace", "-1"], tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "stasis: error: --shutdown-grace must be 0 or more seconds, not -1.0 (see --help)\n"
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_second_ctrl_c_cuts_off_what_is_in_flight_at_once(
    start: Callable[..., Daemon], upstream: FakeUpstream, workers: str
) -> None:
    """Not a ReactorNotRunning traceback, and not the whole grace waited out."""
    upstream.gate = threading.Event()
    upstream.gate_timeout = 30.0
    daemon = start("--shutdown-grace", "60", "--workers", workers)
    daemon.wait_for_log("stasis listening on")  # with workers, once all serve
    with streaming(daemon) as outcome:
        assert upstream.first_event_sent.wait(10)
        daemon.process.send_signal(signal.SIGINT)
        daemon.wait_for_log(r"stopping: letting 1 request\(s\) in flight finish")
        signalled = time.monotonic()
        daemon.process.send_signal(signal.SIGINT)
        assert daemon.process.wait(10) == 0
        assert time.monotonic() - signalled < 5.0
    upstream.gate.set()
    daemon.wait_for_log(r"stopping now: 1 request\(s\) still in flight are cut off")
    assert b"[DONE]" not in outcome.get("body", b""), outcome  # type: ignore[operator]
    assert "ReactorNotRunning" not in daemon.log
    assert _entries(daemon.db) == 0


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (-1, ConfigError, "shutdown_grace must be 0 or more seconds, not -1"),
        (float("inf"), ConfigError, "shutdown_grace must be 0 or more seconds, not inf"),
        (True, ConfigTypeError, "shutdown_grace must be a number of seconds, not True"),
        ("10", ConfigTypeError, "shutdown_grace must be a number of seconds, not '10'"),
    ],
)
def test_a_config_refuses_a_grace_that_cannot_work(
    value: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        Config(shutdown_grace=value)  # type: ignore[arg-type]
    assert str(raised.value) == message


def test_the_grace_defaults_to_10_seconds_and_0_is_allowed() -> None:
    assert Config().shutdown_grace == 10.0
    assert Config(shutdown_grace=0).shutdown_grace == 0


def test_a_worker_ready_only_after_the_stop_began_is_no_traceback() -> None:
    """
    SIGTERM while ``--workers`` start: the supervisor has closed its port
    when a worker's "ready" arrives. It once asserted the port was there (an
    ``Unhandled Error`` traceback); a stopping daemon is not ready.
    """
    from twisted.internet.testing import MemoryReactorClock

    from stasis.workers.supervisor import Supervisor

    supervisor = Supervisor(Config(workers=2), MemoryReactorClock())
    ready = supervisor.when_listening()
    supervisor.stopService()  # nothing was started: no port, no workers
    for slot in supervisor._slots:
        supervisor._reported(slot, "ready\t/tmp/c.db")
    assert not ready.called
