"""
The bounded gzip decoder, driven by hand: the upstream's body as a protocol
fed chunk by chunk, the reader as a protocol that pauses its transport.
"""

from __future__ import annotations

import gzip
from typing import Any

import pytest
from attrs import define, field
from twisted.internet.defer import succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IResponse
from zope.interface import implementer

from stasis.upstream.gunzip import SLICE, CorruptGzip, GunzipAgent
from tests.fake_upstream import gzip_bomb

# The upstream connection as a body protocol's transport sees it.
from tests.test_relay import Upstream

#: 64 MiB of zeros in ~64 KB: what one read of an upstream socket may hold.
BOMB = gzip_bomb(b"[", b"]", 64 << 20)


class Reader(Protocol):
    """Takes the decoded body; pauses its transport after each piece when ``pausing``."""

    def __init__(self, pausing: bool = False) -> None:
        self.pieces: list[bytes] = []
        self.ended: Failure | None = None
        self.pausing = pausing

    def dataReceived(self, data: bytes) -> None:
        self.pieces.append(data)
        if self.pausing:
            IPushProducer(self.transport).pauseProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        assert self.ended is None, "told twice"
        self.ended = reason

    @property
    def body(self) -> bytes:
        return b"".join(self.pieces)

    def resume(self) -> None:
        IPushProducer(self.transport).resumeProducing()

    def stop(self) -> None:
        IPushProducer(self.transport).stopProducing()


@implementer(IResponse)
@define
class Response:
    """An upstream response whose body protocol the test then drives."""

    headers: Headers
    version: tuple[bytes, int, int] = (b"HTTP", 1, 1)
    code: int = 200
    phrase: bytes = b"OK"
    length: Any = 0
    request: Any = None
    previousResponse: Any = None
    protocol: Any = field(default=None)

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol

    def setPreviousResponse(self, response: Any) -> None:
        pass


@implementer(IAgent)
class Agent:
    def __init__(self, response: Response) -> None:
        self.response = response
        self.sent: Headers | None = None

    def request(
        self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None
    ) -> Any:
        self.sent = headers
        return succeed(self.response)


def decoded(coding: bytes | None = b"gzip") -> tuple[IResponse, Response]:
    headers = Headers({b"content-type": [b"application/json"]})
    if coding is not None:
        headers.setRawHeaders(b"content-encoding", [coding])
    original = Response(headers)
    result: list[IResponse] = []
    GunzipAgent(Agent(original)).request(b"GET", b"http://x/").addCallback(result.append)
    return result[0], original


def connect(reader: Reader) -> tuple[Any, Upstream]:
    """Deliver the gzip'd body to ``reader``: the protocol the upstream feeds, and its transport."""
    response, original = decoded()
    response.deliverBody(reader)
    upstream = Upstream()
    original.protocol.makeConnection(upstream)
    return original.protocol, upstream


def test_a_paused_reader_stops_the_inflating_and_the_upstream() -> None:
    reader = Reader(pausing=True)
    body, upstream = connect(reader)
    body.dataReceived(BOMB)
    # One slice, not the 64 MiB the chunk holds; the rest waits compressed.
    assert [len(piece) for piece in reader.pieces] == [SLICE]
    assert upstream.paused
    reader.resume()
    assert [len(piece) for piece in reader.pieces] == [SLICE, SLICE]
    assert upstream.paused
    reader.pausing = False
    reader.resume()
    assert reader.body == b"[" + b"0" * (64 << 20) + b"]"
    assert max(len(piece) for piece in reader.pieces) <= SLICE
    # Everything given was handed on: the upstream may send more.
    assert not upstream.paused and reader.ended is None


def test_the_end_of_the_body_waits_for_what_came_before_it() -> None:
    reader = Reader(pausing=True)
    body, _ = connect(reader)
    body.dataReceived(BOMB[:1000])
    body.dataReceived(BOMB[1000:])
    body.connectionLost(Failure(ResponseDone()))
    assert reader.ended is None
    reader.pausing = False
    reader.resume()
    assert len(reader.body) == (64 << 20) + 2
    assert reader.ended is not None and reader.ended.check(ResponseDone)


def test_an_unframed_end_stays_uncertain() -> None:
    reader = Reader()
    body, _ = connect(reader)
    body.dataReceived(gzip.compress(b"{}"))
    body.connectionLost(Failure(PotentialDataLoss()))
    assert reader.body == b"{}"
    assert reader.ended is not None and reader.ended.check(PotentialDataLoss)


def test_stopped_after_the_upstream_ended_the_reader_is_told_at_once() -> None:
    """The upstream will say nothing more: the reader must not wait for an end forever."""
    reader = Reader(pausing=True)
    body, _ = connect(reader)
    body.dataReceived(BOMB)
    body.connectionLost(Failure(ResponseDone()))
    reader.stop()
    assert reader.ended is not None and reader.ended.check(ResponseFailed)


def test_stopped_before_the_end_the_upstream_is_stopped_and_the_body_is_not_whole() -> None:
    reader = Reader(pausing=True)
    body, upstream = connect(reader)
    body.dataReceived(BOMB)
    reader.stop()
    assert upstream.stopped and reader.ended is None
    body.dataReceived(b"more")
    body.connectionLost(Failure(ResponseDone()))
    assert len(reader.pieces) == 1
    assert reader.ended is not None and reader.ended.check(ResponseFailed)


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param([b"not gzip"], id="not-gzip"),
        pytest.param([gzip.compress(b"{}" * 1000)[:-3]], id="cut-in-the-trailer"),
        pytest.param([gzip.compress(b"{}" * 1000)[:20]], id="cut-in-the-data"),
        pytest.param([gzip.compress(b"{}"), b"trailing garbage"], id="garbage-after-the-end"),
    ],
)
def test_a_body_that_does_not_decode_ends_broken(chunks: list[bytes]) -> None:
    reader = Reader()
    body, _ = connect(reader)
    for chunk in chunks:
        body.dataReceived(chunk)
    body.connectionLost(Failure(ResponseDone()))
    assert reader.ended is not None and reader.ended.check(ResponseFailed)
    assert reader.ended.value.reasons[-1].check(CorruptGzip)


def test_a_corrupt_body_stops_the_upstream_and_is_told_once() -> None:
    reader = Reader()
    body, upstream = connect(reader)
    body.dataReceived(b"not gzip")
    assert upstream.stopped
    body.dataReceived(gzip.compress(b"{}"))
    body.connectionLost(Failure(ResponseDone()))
    assert reader.body == b""
    assert reader.ended is not None and reader.ended.check(ResponseFailed)


def test_members_in_series_are_one_body() -> None:
    reader = Reader()
    body, _ = connect(reader)
    body.dataReceived(gzip.compress(b"one ") + gzip.compress(b"two "))
    body.dataReceived(gzip.compress(b"three"))
    body.connectionLost(Failure(ResponseDone()))
    assert reader.body == b"one two three"
    assert reader.ended is not None and reader.ended.check(ResponseDone)


def test_an_empty_body_is_whole() -> None:
    """A HEAD answer, or a 304, says gzip and has no body."""
    reader = Reader()
    body, _ = connect(reader)
    body.connectionLost(Failure(ResponseDone()))
    assert reader.body == b""
    assert reader.ended is not None and reader.ended.check(ResponseDone)


@pytest.mark.parametrize(
    ("coding", "left", "decodes"),
    [
        (b"gzip", None, True),
        (b"GZip", None, True),
        (b"br, gzip", [b"br"], True),
        (b"gzip, br", [b"gzip, br"], False),
        (b"identity", [b"identity"], False),
        (None, None, False),
    ],
)
def test_the_gzip_coding_is_taken_off_the_headers(
    coding: bytes | None, left: list[bytes] | None, decodes: bool
) -> None:
    response, original = decoded(coding)
    assert response.headers.getRawHeaders(b"content-encoding") == left
    assert (response is not original) == decodes
    if decodes:
        assert response.length is UNKNOWN_LENGTH


def test_gzip_is_asked_for_once() -> None:
    """treq's ContentDecoderAgent, above, has already added the same header."""
    agent = Agent(Response(Headers()))
    given = Headers({b"accept-encoding": [b"gzip"], b"x-other": [b"1"]})
    GunzipAgent(agent).request(b"GET", b"http://x/", given)
    assert agent.sent is not None
    assert agent.sent.getRawHeaders(b"accept-encoding") == [b"gzip"]
    assert agent.sent.getRawHeaders(b"x-other") == [b"1"]
    assert given.getRawHeaders(b"accept-encoding") == [b"gzip"]  # not changed in place
    bare = Agent(Response(Headers()))
    GunzipAgent(bare).request(b"GET", b"http://x/")
    assert bare.sent is not None and bare.sent.getRawHeaders(b"accept-encoding") == [b"gzip"]
