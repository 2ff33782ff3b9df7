"""
The HTTP server side, in memory: every error stasis writes carries the same
headers, whichever path writes it, and a request whose client is gone is
never written to.
"""

from __future__ import annotations

import json

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from stasis.errors import ReplayMiss
from stasis.web.site import StasisRequest, StasisSite, write_error


class Errors(Resource):
    """Answers every request with a stasis error, as the proxy does; keeps the requests."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []

    def render(self, request: Request) -> object:
        self.requests.append(request)
        if request.path == b"/later":
            return NOT_DONE_YET
        write_error(request, ReplayMiss("no cached answer", key="ab12"))
        return NOT_DONE_YET


def _serve(site: StasisSite, data: bytes) -> tuple[bytes, StringTransport]:
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    assert channel is not None
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(data)
    return transport.value(), transport


def _parse(response: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = [tuple(line.split(b": ", 1)) for line in lines]
    return status, headers, body  # type: ignore[return-value]


def _site() -> tuple[StasisSite, Errors]:
    resource = Errors()
    return StasisSite(resource, max_body_bytes=100, reactor=MemoryReactorClock()), resource


def test_a_413_carries_exactly_the_headers_of_every_other_error() -> None:
    site, _ = _site()
    too_large, transport = _serve(
        site, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n"
    )
    replay_miss, _ = _serve(site, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n")
    no_host, _ = _serve(site, b"GET /health HTTP/1.1\r\n\r\n")

    answers = {name: _parse(raw) for name, raw in [("413", too_large), ("504", replay_miss)]}
    answers["400"] = _parse(no_host)
    assert answers["413"][0] == b"HTTP/1.1 413 Content Too Large"
    assert answers["504"][0] == b"HTTP/1.1 504 Gateway Time-out"
    assert answers["400"][0] == b"HTTP/1.1 400 Bad Request"

    def names(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
        # The 413 also closes the connection, as the body is never read.
        return sorted(name for name, _ in headers if name != b"Connection")

    # None of the three can be fixed by sending the same request again: the
    # openai and anthropic SDKs are told not to retry.
    expected = [
        b"Content-Length",
        b"Content-Type",
        b"Date",
        b"Server",
        b"X-Amzn-Errortype",
        b"X-Should-Retry",
    ]
    for status, headers, body in answers.values():
        assert names(headers) == expected, status
        assert dict(headers)[b"X-Should-Retry"] == b"false"
        values = dict(headers)
        assert values[b"Content-Type"] == b"application/json"
        assert values[b"Content-Length"] == b"%d" % len(body)
        assert values[b"X-Amzn-Errortype"] == json.loads(body)["error"]["type"].encode()
    assert dict(answers["413"][1])[b"Connection"] == b"close"
    assert dict(answers["413"][1])[b"Server"] == dict(answers["504"][1])[b"Server"]
    assert json.loads(answers["413"][2])["error"]["limit"] == 100
    assert not transport.disconnecting  # closed only once the rest of the body is read


def test_a_request_whose_client_is_gone_is_not_written_to() -> None:
    site, resource = _site()
    _, transport = _serve(site, b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n")
    [request] = resource.requests
    assert isinstance(request, StasisRequest)
    request.connectionLost(Failure(ConnectionError("gone")))
    request.processingFailed(Failure(RuntimeError("a fault after the client left")))
    assert transport.value() == b""


def test_a_fault_before_anything_was_written_is_a_500() -> None:
    site, resource = _site()
    _, transport = _serve(site, b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n")
    [request] = resource.requests
    request.processingFailed(Failure(RuntimeError("a fault")))
    status, headers, body = _parse(transport.value())
    assert status == b"HTTP/1.1 500 Internal Server Error"
    assert json.loads(body)["error"]["type"] == "stasis_internal_error"
    assert dict(headers)[b"X-Amzn-Errortype"] == b"stasis_internal_error"


def test_the_date_header_is_formatted_once_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    from twisted.web.http import datetimeToString

    from stasis.web import site as site_module

    now = [1_700_000_000.25]
    monkeypatch.setattr(site_module.time, "time", lambda: now[0])
    date = site_module._HTTPDate()
    first = date()
    assert first == datetimeToString(1_700_000_000)
    now[0] += 0.5
    assert date() is first
    now[0] += 0.5
    assert date() == datetimeToString(1_700_000_001)
