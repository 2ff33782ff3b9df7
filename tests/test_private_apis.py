"""
The Twisted and treq internals stasis relies on, one test each, so that an upgrade
that removes or changes one fails here, naming it and the stasis module that
relies on it, instead of somewhere far away (or nowhere: every one of them is
guarded, so stasis keeps working without it, only slower).

Each failure message says what stasis does without the name and where to look.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from treq.client import HTTPClient
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, globalLogPublisher
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

import stasis
from stasis.model import Entry
from stasis.upstream import client as upstream_client
from stasis.web import prepared

STASIS = Path(stasis.__file__).parent
#: Packages whose underscore names are their own business, not stasis's.
GUARDED_PACKAGES = ("twisted", "treq", "hyperlink", "zope", "attrs")


def private_imports() -> list[str]:
    """``module: imported name`` for every private name stasis imports from those packages."""
    found = []
    for path in sorted(STASIS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [(node.module, alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                modules = [(alias.name, "") for alias in node.names]
            else:
                continue
            for module, name in modules:
                if module.split(".")[0] not in GUARDED_PACKAGES:
                    continue
                parts = [*module.split("."), *([name] if name else [])]
                if any(part.startswith("_") for part in parts):
                    where = path.relative_to(STASIS.parent)
                    found.append(f"{where}: {'.'.join(parts)}")
    return found


def test_stasis_imports_no_private_twisted_or_treq_name() -> None:
    """
    Formerly ``twisted.web.client._HTTP11ClientFactory`` (subclassed and set as
    ``HTTPConnectionPool._factory`` to silence per-connection log lines); now
    ``Factory.noisy`` through stasis's own endpoint. Keep it that way, or add
    a guarded use here with a test of its own.
    """
    assert private_imports() == [], (
        "stasis imports private Twisted/treq names; replace each with a public API "
        "or guard it (stasis must import and work without it) and test it in this file"
    )


# stasis.upstream.client: treq calling to_uri() on the URL object it is given.


class _CountingURL(upstream_client._WireURL):
    calls = 0

    def to_uri(self) -> Any:
        type(self).calls += 1
        return super().to_uri()


def test_treq_calls_to_uri_once_on_the_url_object_it_is_given() -> None:
    agent = upstream_client._ProbeAgent()
    jar: Any = upstream_client._NO_COOKIES
    client = HTTPClient(agent, cookiejar=jar)
    url = _CountingURL.from_text(upstream_client._PROBE_URL)
    client.request("GET", url, allow_redirects=False, cookies=jar, unbuffered=True)
    assert (_CountingURL.calls, agent.uri) == (1, upstream_client._PROBE_URL.encode()), (
        "treq.client.HTTPClient.request no longer calls hyperlink's EncodedURL.to_uri() exactly "
        "once on the URL object it is given and sends its text: stasis.upstream.client._WireURL "
        "relies on that to send request targets as the client sent them (and to skip ~70 µs of "
        "re-encoding per miss). stasis now falls back to text URLs, re-encoded by treq; see "
        "_sends_wire_urls_as_they_are in stasis.upstream.client"
    )
    assert upstream_client._sends_wire_urls_as_they_are(HTTPClient)


def test_treq_takes_the_arguments_the_probe_and_the_client_pass() -> None:
    """HTTPClient(agent, cookiejar=, data_to_body_producer=) and request(..., unbuffered=)."""
    agent = upstream_client._ProbeAgent()
    jar: Any = upstream_client._NO_COOKIES
    client = HTTPClient(agent, cookiejar=jar, data_to_body_producer=upstream_client._Body)
    client.request(
        "POST",
        "http://127.0.0.1/x",
        data=b"body",
        allow_redirects=False,
        cookies=jar,
        unbuffered=True,
    )
    assert agent.uri == b"http://127.0.0.1/x", "treq.client.HTTPClient's signature changed"


# stasis.upstream.client: the pool's per-connection factories, quieted publicly.


def test_a_factory_that_is_not_noisy_logs_nothing_when_started() -> None:
    """stasis.upstream.client._QuietEndpoint sets ``noisy`` on each connection's factory."""
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    try:
        factory = Factory()
        factory.noisy = False
        factory.doStart()
        factory.doStop()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert events == [], (
        "twisted.internet.protocol.Factory.noisy = False no longer silences "
        "'Starting factory' lines: stasis.upstream.client._QuietEndpoint relies on it"
    )


# stasis.web.prepared: writing a hit's head by hand on an HTTP/1.x channel.

USERS = {
    "startedWriting": "stasis.web.prepared (also read by stasis.web.proxy and stasis.web.site)",
    "sentLength": "stasis.web.prepared",
    "clientproto": "stasis.web.prepared (and stasis.web.site)",
    "code_message": "stasis.web.prepared",
    "writeSequence": "stasis.web.prepared",
}


@pytest.mark.parametrize(
    ("owner", "name"), prepared.RELIES_ON, ids=[name for _, name in prepared.RELIES_ON]
)
def test_twisted_web_keeps_what_prepared_hits_rely_on(owner: type, name: str) -> None:
    assert hasattr(owner, name), (
        f"{owner.__module__}.{owner.__qualname__}.{name} is gone from this Twisted: "
        f"{USERS[name]} relies on it to write a hit's head by hand. Hits now take "
        "twisted.web's usual path (slower); adapt stasis.web.prepared to this Twisted"
    )
    assert prepared.MISSING == ()


def test_a_missing_name_turns_prepared_hits_off(monkeypatch: pytest.MonkeyPatch) -> None:
    request = http1_request()
    assert prepared.can_write_prepared(request, ENTRY)
    monkeypatch.delattr(http.Request, "sentLength")
    missing = prepared._missing()
    assert missing == ("twisted.web.http.Request.sentLength",)
    monkeypatch.setattr(prepared, "MISSING", missing)
    assert not prepared.can_write_prepared(request, ENTRY)


ENTRY = Entry(
    key="cd" * 32,
    status=200,
    headers=((b"content-type", b"application/json"), (b"x-request-id", b"req_1")),
    body=b'{"answer": 42}',
    created_at=0.0,
)


class PreparedOnly(Resource):
    """Answers every request with ENTRY, prepared; fails if it cannot."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []

    def render_GET(self, request: Request) -> Any:
        self.requests.append(request)
        assert prepared.can_write_prepared(request, ENTRY)
        prepared.write_prepared(request, ENTRY, prepared.PreparedHead.of(ENTRY), 3)
        request.finish()
        return NOT_DONE_YET


def http1_request() -> Request:
    """A request as an HTTP/1.1 connection's channel makes it, before it is read."""
    channel = http.HTTPChannel()
    channel.site = Site(Resource())
    channel.makeConnection(StringTransport())
    request = Request(channel)
    request.clientproto = b"HTTP/1.1"
    return request


def connect(site: Site) -> tuple[Any, StringTransport]:
    """The HTTP/1.1 channel ``site`` gives a new connection (what request.channel will be)."""
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def responses(wire: bytes) -> list[tuple[bytes, dict[bytes, list[bytes]], bytes]]:
    """Split ``wire`` into (status line, headers, body) by Content-Length; all of it."""
    found = []
    while wire:
        head, separator, rest = wire.partition(b"\r\n\r\n")
        assert separator, f"an incomplete head: {wire!r}"
        status, *lines = head.split(b"\r\n")
        headers: dict[bytes, list[bytes]] = {}
        for line in lines:
            name, _, value = line.partition(b": ")
            headers.setdefault(name.lower(), []).append(value)
        assert b"transfer-encoding" not in headers
        length = int(headers[b"content-length"][0])
        found.append((status, headers, rest[:length]))
        wire = rest[length:]
    return found


def test_a_prepared_hit_is_one_whole_answer_that_finish_leaves_alone() -> None:
    """
    What the private names mean: with ``startedWriting`` set, ``Request.finish()``
    writes no head of its own and no chunk terminator; ``request.channel`` of an
    HTTP/1.1 request is the ``HTTPChannel`` whose ``writeSequence`` reaches the
    socket; the connection stays usable for the next (pipelined) request.
    """
    resource = PreparedOnly()
    protocol, transport = connect(Site(resource))
    ask = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    protocol.dataReceived(ask + ask)
    answers = responses(transport.value())
    assert len(answers) == 2, (
        "a prepared hit did not come out as exactly one HTTP/1.1 answer per request: "
        "twisted.web.http.Request.finish() or HTTPChannel changed how they use "
        "startedWriting/writeSequence, which stasis.web.prepared relies on"
    )
    for status, headers, body in answers:
        assert status == b"HTTP/1.1 200 OK"
        assert body == ENTRY.body
        assert headers[b"age"] == [b"3"]
        assert headers[b"x-request-id"] == [b"req_1"]
        assert all(len(values) == 1 for values in headers.values()), headers
    assert len(resource.requests) == 2
    for request in resource.requests:
        assert request.sentLength == len(ENTRY.body)
        assert request.finished
    assert not transport.disconnecting


def test_a_request_whose_client_left_has_no_channel() -> None:
    """stasis.web.prepared takes a channel-less request for one that cannot be written to."""
    request = http1_request()
    assert prepared.can_write_prepared(request, ENTRY)
    request.connectionLost(Exception("gone"))
    assert request.channel is None
    assert not prepared.can_write_prepared(request, ENTRY)


# stasis.web.site: StasisRequest.processingFailed reads Request._disconnected.


def test_twisted_web_request_keeps_disconnected() -> None:
    request = http1_request()
    assert request._disconnected is False, (
        "twisted.web.http.Request._disconnected is gone: stasis.web.site "
        "(StasisRequest.processingFailed) reads it to know the client left"
    )
    request.connectionLost(Exception("gone"))
    assert request._disconnected is True
