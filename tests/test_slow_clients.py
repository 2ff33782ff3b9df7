"""
Slow clients against a real daemon (issue 15, item 14): hundreds of clients
trickling a request's head or body a byte at a time are answered 408 and
closed when their deadline passes, nothing of theirs reaches the upstream,
and a hit stays fast and whole meanwhile.

The daemon starts under a soft open-file limit of 256, as on the machine
where ~240 such clients made ``/health`` fail with resets: it raises the
limit itself (:mod:`stasis.open_files`). The deadlines, in memory and to
the second, are in tests/test_deadlines.py.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import resource
import selectors
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from attrs import define, field

from tests.daemon import Daemon
from tests.fake_upstream import FakeUpstream

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc; sets rlimits")

KEY = "sk-test-SECRET-0123456789abcdef"
CHAT = json.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "slow clients?"}]}
).encode()
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
#: A head that never ends, and a body that never does.
SLOW_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
SLOW_BODY = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100000\r\n\r\n" + CHAT[:-2]
)
#: The soft open-file limit of the machine in the issue (macOS's default).
REPORTED_LIMIT = 256
#: Deadlines short enough for a test, long enough to serve hits while the clients wait.
HEAD_SECONDS, BODY_SECONDS = 3.0, 4.0
#: How late after its deadline a client may be closed (a busy two-core machine).
SLACK = 4.0


@contextlib.contextmanager
def open_file_limit(soft: int) -> Iterator[None]:
    """This process's soft open-file limit lowered, for the daemon it starts to inherit."""
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (before, hard))


def soft_open_file_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc")


@define
class Trickler:
    """A client sending a request ``first``, then a byte at a time, until it is closed."""

    kind: str
    sock: socket.socket
    started: float
    received: bytes = b""
    ended: float | None = None
    error: str | None = None

    @classmethod
    def connect(cls, port: int, kind: str, first: bytes) -> Trickler:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(first)
        started = time.monotonic()
        sock.setblocking(False)
        return cls(kind, sock, started)

    def read(self) -> None:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as e:
            data, self.error = b"", repr(e)
        self.received += data
        if not data:
            self.ended = time.monotonic()
            self.sock.close()

    def trickle(self) -> None:
        try:
            self.sock.send(b" ")
        except BlockingIOError:
            pass
        except OSError:
            self.read()  # what came before the close, and the close itself

    @property
    def status_and_error(self) -> tuple[int, dict[str, object]]:
        head, _, body = self.received.partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), json.loads(body)["error"]


@define
class Hits:
    """Hits on one keep-alive connection, each timed."""

    port: int
    expected: bytes
    seconds: list[float] = field(factory=list)
    connection: http.client.HTTPConnection = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def one(self) -> None:
        began = time.perf_counter()
        self.connection.request("POST", "/v1/chat/completions", CHAT, HEADERS)
        response = self.connection.getresponse()
        body = response.read()
        self.seconds.append(time.perf_counter() - began)
        assert response.status == 200
        assert response.getheader("x-stasis-status") == "HIT"
        assert body == self.expected


def serve_until_closed(
    tricklers: list[Trickler], every: float, deadline: float, meanwhile: Callable[[], None]
) -> None:
    """
    Read every trickler until the daemon closes it, sending each a byte every
    ``every`` seconds, and call ``meanwhile`` once all are connected; fail at
    ``deadline`` seconds.
    """
    selector = selectors.DefaultSelector()
    for trickler in tricklers:
        selector.register(trickler.sock, selectors.EVENT_READ, trickler)
    meanwhile()
    end = time.monotonic() + deadline
    next_byte = time.monotonic()
    while any(t.ended is None for t in tricklers):
        now = time.monotonic()
        assert now < end, f"{sum(t.ended is None for t in tricklers)} slow clients still open"
        if now >= next_byte:
            for trickler in tricklers:
                if trickler.ended is None:
                    trickler.trickle()
            next_byte = now + every
        for key, _ in selector.select(timeout=max(0.0, min(next_byte, end) - time.monotonic())):
            trickler = key.data
            trickler.read()
            if trickler.ended is not None:
                selector.unregister(trickler.sock)
    selector.close()


def test_a_daemon_started_under_a_low_open_file_limit_raises_it(
    start: Callable[..., Daemon],
) -> None:
    with open_file_limit(REPORTED_LIMIT):
        daemon = start()
    soft, hard = soft_open_file_limit(daemon.process.pid)
    assert soft == hard > REPORTED_LIMIT
    # As many idle connections as the old limit allowed, and more: none is reset.
    port = int(daemon.url.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(300)]
    try:
        status, _, body = daemon.request("GET", "/health")
        assert status == 200, body
        for sock in idle:
            sock.settimeout(0.0)
            with pytest.raises(BlockingIOError):  # open, and nothing said
                sock.recv(1)
    finally:
        for sock in idle:
            sock.close()
    assert "EMFILE" not in daemon.log


def test_slow_clients_are_answered_408_at_their_deadline_while_a_hit_stays_fast(
    start: Callable[..., Daemon], upstream: FakeUpstream
) -> None:
    with open_file_limit(REPORTED_LIMIT):
        daemon = start(
            "--header-timeout",
            str(HEAD_SECONDS),
            "--body-timeout",
            str(BODY_SECONDS),
            # --port's backlog: 500 clients connecting at once overflow Twisted's 50.
            "--listen",
            "tcp:0:interface=127.0.0.1:backlog=511",
        )
    port = int(daemon.url.rsplit(":", 1)[1])
    status, _, stored = daemon.request("POST", "/v1/chat/completions", CHAT, HEADERS)
    assert status == 200
    hits = Hits(port, stored)
    hits.one()  # the connection made, and the entry in memory

    tricklers = [Trickler.connect(port, "head", SLOW_HEAD) for _ in range(300)]
    tricklers += [Trickler.connect(port, "body", SLOW_BODY) for _ in range(200)]
    hits_done: list[float] = []

    def hit_meanwhile() -> None:
        for _ in range(30):
            hits.one()
        hits_done.append(time.monotonic())

    try:
        serve_until_closed(
            tricklers, every=0.5, deadline=BODY_SECONDS + 2 * SLACK, meanwhile=hit_meanwhile
        )
    finally:
        for trickler in tricklers:
            trickler.sock.close()
    first_closed = min(t.ended for t in tricklers if t.ended is not None)
    assert hits_done[0] < first_closed, "the hits were not served while the slow clients waited"

    for trickler in tricklers:
        assert trickler.error is None, (trickler.kind, trickler.error, trickler.received)
        deadline = HEAD_SECONDS if trickler.kind == "head" else BODY_SECONDS
        assert trickler.ended is not None
        took = trickler.ended - trickler.started
        assert deadline <= took < deadline + SLACK, (trickler.kind, took)
        status, error = trickler.status_and_error
        assert status == 408
        assert error["type"] == "stasis_request_timeout"
    median = statistics.median(hits.seconds[1:])
    assert median < 0.1, f"a hit took {median * 1000:.1f} ms (median) beside 500 slow clients"
    # Only the first call, which stored the answer, reached the upstream.
    assert len(upstream.calls()) == 1
    assert daemon.log.count("did not arrive within") == 500
    assert "EMFILE" not in daemon.log
