"""
Deadlines for a request's head and body, in memory: a channel on a fake
clock, fed a byte at a time, is answered 408 and closed when its deadline
passes, and not a moment before; a body that keeps a minimum rate is not
cut; an idle keep-alive connection is left to the idle timeout; nothing of
a late request reaches the resource. The same against a real daemon, with
hundreds of slow clients, is in tests/test_slow_clients.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, globalLogPublisher

from stasis.web.channel import StasisChannel
from stasis.web.deadlines import Deadlines
from stasis.web.site import StasisSite
from tests.test_site import Errors

HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"


class Client:
    """One connection to a site on a fake clock."""

    def __init__(self, deadlines: Deadlines, max_body: int = 1_000_000) -> None:
        self.clock = MemoryReactorClock()
        self.resource = Errors()
        self.site = StasisSite(
            self.resource, max_body_bytes=max_body, deadlines=deadlines, reactor=self.clock
        )
        protocol = self.site.buildProtocol(None)
        assert protocol is not None
        self.protocol: Any = protocol
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.7", 50000))
        protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def trickle(self, data: bytes, every: float) -> None:
        """``data`` a byte at a time, ``every`` seconds apart, while the connection is open."""
        for index in range(len(data)):
            if self.closed:
                return
            self.send(data[index : index + 1])
            self.clock.advance(every)

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting)

    def answers(self) -> list[bytes]:
        """The status lines written, in order."""
        return re.findall(rb"HTTP/1\.1 \d{3} [^\r]*", self.transport.value())


def _timeout_body(written: bytes) -> dict[str, Any]:
    head, _, body = written.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 Request Time-out\r\n")
    assert b"\r\nConnection: close" in head
    assert b"\r\nContent-Type: application/json" in head
    error: dict[str, Any] = json.loads(body)["error"]
    return error


@pytest.fixture
def info_lines() -> Iterator[list[str]]:
    from twisted.logger import formatEvent

    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "stasis.http" and event.get("log_level") == LogLevel.info:
            lines.append(formatEvent(event))
        assert not event.get("log_failure"), event

    globalLogPublisher.addObserver(observe)
    try:
        yield lines
    finally:
        globalLogPublisher.removeObserver(observe)


def test_the_channel_is_stasis_own() -> None:
    # twisted.web builds its channel itself; stasis replaces it (StasisSite.protocol).
    client = Client(Deadlines())
    assert isinstance(client.protocol._channel, StasisChannel)


def test_a_head_sent_a_byte_at_a_time_is_answered_408_at_its_deadline(
    info_lines: list[str],
) -> None:
    client = Client(Deadlines(head=15, body=60))
    # A byte a second: twisted.web's idle timeout (60 s) never fires.
    client.trickle(HEAD % 10, every=1.0)
    assert client.clock.seconds() == 15.0  # 15 bytes sent, the last at 14 s
    assert client.closed
    error = _timeout_body(client.transport.value())
    assert error["type"] == "stasis_request_timeout"
    assert error["timeout"] == 15
    assert "--header-timeout" in error["message"]
    assert client.resource.requests == []
    assert info_lines == [
        "closed the connection of 10.0.0.7:50000: its request head did not arrive within 15s "
        "(--header-timeout); answered 408"
    ]


def test_the_head_deadline_is_not_a_moment_early() -> None:
    client = Client(Deadlines(head=15, body=60))
    client.send(b"P")
    client.clock.advance(14.9)
    assert not client.closed and client.transport.value() == b""
    client.clock.advance(0.1)
    assert client.closed


def test_a_body_sent_a_byte_at_a_time_is_answered_408_and_never_served(
    info_lines: list[str],
) -> None:
    client = Client(Deadlines(head=15, body=20))
    client.send(HEAD % 1000)
    client.trickle(b"x" * 1000, every=1.0)
    # 20 s, and 1/500 s more for each of the 21 bytes that arrived by then.
    assert client.closed
    assert client.clock.seconds() == 21.0
    error = _timeout_body(client.transport.value())
    assert error["timeout"] == pytest.approx(20.042)
    assert "--body-timeout" in error["message"]
    assert client.resource.requests == []
    assert len(info_lines) == 1
    assert "its request body did not arrive within 20s (--body-timeout)" in info_lines[0]


def test_a_body_that_keeps_a_minimum_rate_is_not_cut() -> None:
    # 30 KB at 1 KB a second: three times --body-timeout, at twice the minimum rate.
    client = Client(Deadlines(head=15, body=10))
    body = b"y" * 30_000
    client.send(HEAD % len(body))
    for second in range(30):
        client.send(body[second * 1000 : (second + 1) * 1000])
        client.clock.advance(1.0)
    assert client.answers() == [b"HTTP/1.1 504 Gateway Time-out"]  # what Errors answers
    [request] = client.resource.requests
    assert request.body_received == len(body)
    assert not client.closed


def test_a_body_below_the_minimum_rate_is_cut_once_its_allowance_is_spent() -> None:
    client = Client(Deadlines(head=15, body=10))
    client.send(HEAD % 30_000)
    # 100 bytes a second: each second buys a fifth of a second more.
    for _ in range(20):
        if client.closed:
            break
        client.send(b"z" * 100)
        client.clock.advance(1.0)
    assert client.closed
    # 10 s + 1300 bytes / 500 = 12.6 s: cut in the thirteenth second.
    assert client.clock.seconds() == 13.0
    assert _timeout_body(client.transport.value())["timeout"] == pytest.approx(12.6)


def test_a_request_in_one_read_sets_no_timer() -> None:
    client = Client(Deadlines())
    before = len(client.clock.getDelayedCalls())  # the idle timeout
    client.send(HEAD % 2 + b"{}")
    assert client.answers() == [b"HTTP/1.1 504 Gateway Time-out"]
    assert len(client.clock.getDelayedCalls()) == before


def test_an_idle_keep_alive_connection_is_left_to_the_idle_timeout() -> None:
    client = Client(Deadlines(head=15, body=20))
    client.send(HEAD % 2 + b"{}")
    written = client.transport.value()
    # Later than either deadline: an idle connection is not a slow request.
    client.clock.advance(59)
    assert client.transport.value() == written and not client.closed
    client.clock.advance(1)  # twisted.web's idle timeout, which answers nothing
    assert client.closed
    assert client.transport.value() == written


def test_the_next_request_on_a_keep_alive_connection_is_timed_from_its_first_byte() -> None:
    client = Client(Deadlines(head=15, body=20))
    client.send(HEAD % 2 + b"{}")
    client.clock.advance(30)
    client.send(b"PO")
    client.clock.advance(14.5)
    assert not client.closed
    client.clock.advance(0.5)
    assert client.closed
    assert client.answers() == [b"HTTP/1.1 504 Gateway Time-out", b"HTTP/1.1 408 Request Time-out"]


def test_a_lone_crlf_after_a_request_is_not_a_new_request() -> None:
    client = Client(Deadlines(head=15, body=20))
    client.send(HEAD % 2 + b"{}")
    client.send(b"\r\n")
    client.clock.advance(30)
    assert not client.closed


def test_a_body_refused_413_and_then_trickled_is_closed_without_a_second_answer() -> None:
    client = Client(Deadlines(head=15, body=20), max_body=100)
    client.send(HEAD % 500)
    assert client.answers() == [b"HTTP/1.1 413 Content Too Large"]
    client.trickle(b"x" * 500, every=1.0)
    assert client.closed
    assert client.answers() == [b"HTTP/1.1 413 Content Too Large"]
    assert client.resource.requests == []


def test_bytes_after_the_deadline_are_ignored() -> None:
    client = Client(Deadlines(head=1, body=20))
    client.send(b"POST / HTTP/1.1\r\n")
    client.clock.advance(1)
    written = client.transport.value()
    client.send(b"Host: x\r\nContent-Length: 0\r\n\r\n")
    assert client.transport.value() == written
    assert client.resource.requests == []


def test_a_deadline_ends_with_the_connection() -> None:
    from twisted.python.failure import Failure

    client = Client(Deadlines(head=15, body=20))
    client.send(b"POST / HTTP/1.1\r\n")
    client.protocol.connectionLost(Failure(ConnectionError("gone")))
    client.clock.advance(30)
    assert client.transport.value() == b""
    assert client.site.in_flight == set()
