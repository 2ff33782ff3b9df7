"""
The upstream client: one endpoint per origin, one pool of kept-alive connections.

Run against a real twisted.web server on a loopback port, so the connection
reuse the pool promises is counted where connections are accepted.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
import treq
from hyperlink import EncodedURL
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.endpoints import HostnameEndpoint
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.web.client import URI, BrowserLikePolicyForHTTPS
from twisted.web.error import SchemeNotSupported
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from stasis.upstream import UpstreamClient, make_client
from stasis.upstream.client import _Endpoints, _QuietEndpoint, _sends_wire_urls_as_they_are


class RecordingPolicy:
    """An IPolicyForHTTPS that records which netlocs it made TLS options for."""

    def __init__(self) -> None:
        self.netlocs: list[tuple[bytes, int]] = []
        self._real = BrowserLikePolicyForHTTPS()

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        self.netlocs.append((hostname, port))
        return self._real.creatorForNetloc(hostname, port)


def unwrap(endpoint: Any) -> Any:
    """The endpoint inside the one that keeps connection factories quiet."""
    assert isinstance(endpoint, _QuietEndpoint)
    return endpoint._endpoint


def test_one_endpoint_per_origin_tls_for_https() -> None:
    policy = RecordingPolicy()
    endpoints = _Endpoints(reactor, policy)  # type: ignore[arg-type]
    chat = URI.fromBytes(b"https://api.openai.com/v1/chat/completions")
    models = URI.fromBytes(b"https://api.openai.com/v1/models")
    first = endpoints.endpointForURI(chat)
    assert endpoints.endpointForURI(models) is first
    assert policy.netlocs == [(b"api.openai.com", 443)]
    assert not isinstance(unwrap(first), HostnameEndpoint)  # wrapped in TLS
    plain = endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:8080/v1/models"))
    assert isinstance(unwrap(plain), HostnameEndpoint)
    other_port = endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:8081/v1/models"))
    assert other_port is not plain
    with pytest.raises(SchemeNotSupported):
        endpoints.endpointForURI(URI.fromBytes(b"ftp://127.0.0.1/x"))


def test_the_endpoint_map_is_bounded() -> None:
    endpoints = _Endpoints(reactor)
    for port in range(_Endpoints.LIMIT * 2):
        endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:%d/" % (1000 + port)))
    assert len(endpoints._made) <= _Endpoints.LIMIT


class Echo(Resource):
    isLeaf = True

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        return b"echo:" + request.content.read()


class Target(Resource):
    """Answers with the request target exactly as it arrived on the wire."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return request.uri


class Cookies(Resource):
    """Sets a cookie on every answer, and answers with the Cookie header it got."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"set-cookie", b"session=abc; Path=/")
        return request.getHeader(b"cookie") or b"(none)"


class CountingSite(Site):
    connections = 0

    def buildProtocol(self, addr: Any) -> Any:
        self.connections += 1
        return super().buildProtocol(addr)


@pytest_twisted.ensureDeferred
async def test_sequential_requests_share_one_kept_alive_connection() -> None:
    site = CountingSite(Echo())
    port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
    http, pool = make_client(reactor)
    client = UpstreamClient(http, reactor, 10.0)
    url = f"http://127.0.0.1:{port.getHost().port}/v1/echo"
    try:
        for n in range(5):
            response = await client.request("POST", url, [], b"%d" % n)
            assert response.code == 200
            assert await treq.content(response.response) == b"echo:%d" % n
        assert site.connections == 1
    finally:
        await pool.closeCachedConnections()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_the_request_target_goes_upstream_as_the_client_sent_it() -> None:
    """
    Not re-encoded into URI form: ``|``, ``"`` and ``{`` stay, ``%3A`` and
    ``:`` stay. (hyperlink's parse still escapes square brackets in a path.)
    """
    port = reactor.listenTCP(0, Site(Target()), interface="127.0.0.1")  # type: ignore[attr-defined]
    http, pool = make_client(reactor)
    client = UpstreamClient(http, reactor, 10.0)
    target = '/model/a.b-v1%3A0/x|y/gemini:stream?alt=sse&q=a|b&r=%20{x}"'
    try:
        response = await client.request(
            "GET", f"http://127.0.0.1:{port.getHost().port}{target}", [], None
        )
        assert await treq.content(response.response) == target.encode("ascii")
    finally:
        await pool.closeCachedConnections()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_cookies_the_upstream_sets_are_never_sent_back() -> None:
    """One caller's upstream cookies must not reach the upstream on another caller's request."""
    port = reactor.listenTCP(0, Site(Cookies()), interface="127.0.0.1")  # type: ignore[attr-defined]
    http, pool = make_client(reactor)
    client = UpstreamClient(http, reactor, 10.0)
    url = f"http://127.0.0.1:{port.getHost().port}/v1/models"
    try:
        for _ in range(2):
            response = await client.request("GET", url, [], None)
            assert [v for n, v in response.headers if n.lower() == b"set-cookie"] == [
                b"session=abc; Path=/"
            ]
            assert await treq.content(response.response) == b"(none)"
    finally:
        await pool.closeCachedConnections()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_connections_coming_and_going_log_nothing() -> None:
    """The pool's per-connection factories would log "Starting/Stopping factory" each."""
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    site = CountingSite(Echo())
    port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
    http, pool = make_client(reactor)
    client = UpstreamClient(http, reactor, 10.0)
    url = f"http://127.0.0.1:{port.getHost().port}/v1/echo"
    try:
        for n in range(2):
            response = await client.request("POST", url, [], b"%d" % n)
            assert await treq.content(response.response) == b"echo:%d" % n
            await pool.closeCachedConnections()
        assert site.connections == 2
    finally:
        await port.stopListening()
        globalLogPublisher.removeObserver(events.append)
    noise = [
        formatEvent(event)
        for event in events
        if "factory" in str(event.get("log_format", "")).lower()
        and "HTTP11ClientFactory" in repr(event.get("factory"))
    ]
    assert noise == []


class ReencodingClient(HTTPClient):
    """treq as it might become: its own URL form, whatever URL object it is given."""

    def request(self, method: str, url: Any, **kwargs: Any) -> Any:
        text = url if isinstance(url, str) else url.to_text()
        return super().request(method, EncodedURL.from_text(text), **kwargs)


class BrokenClient(HTTPClient):
    """treq as it might become: a client that takes a URL object no more."""

    def request(self, method: str, url: Any, **kwargs: Any) -> Any:
        if not isinstance(url, str):
            raise TypeError("a URL must be text")
        return super().request(method, url, **kwargs)


@pytest.mark.parametrize("client_class", [ReencodingClient, BrokenClient])
@pytest_twisted.ensureDeferred
async def test_without_treq_calling_to_uri_requests_still_go_out(
    client_class: type[HTTPClient],
) -> None:
    """If treq stopped sending a _WireURL as it is, stasis hands it text: treq's own encoding."""
    port = reactor.listenTCP(0, Site(Target()), interface="127.0.0.1")  # type: ignore[attr-defined]
    http, pool = make_client(reactor)
    other = client_class(http._agent, cookiejar=http._cookiejar)
    client = UpstreamClient(other, reactor, 10.0)
    assert not client._wire_urls
    url = f"http://127.0.0.1:{port.getHost().port}/model/a.b-v1%3A0/x|y?alt=sse&q=a|b"
    try:
        response = await client.request("GET", url, [], None)
        assert response.code == 200
        # Re-encoded by treq, as any treq client would send it: the same resource.
        assert await treq.content(response.response) == b"/model/a.b-v1%3A0/x%7Cy?alt=sse&q=a%7Cb"
    finally:
        await pool.closeCachedConnections()
        await port.stopListening()


def test_treq_as_it_is_sends_wire_urls_as_they_are() -> None:
    assert _sends_wire_urls_as_they_are(HTTPClient)
    assert UpstreamClient(make_client(reactor)[0], reactor, 1.0)._wire_urls
