"""
The upstream client: treq over one persistent connection pool.

Responses are requested unbuffered, so the proxy sees the status and headers
as soon as they arrive and then takes the body chunk by chunk, with flow
control. Redirects are returned to the client, never followed, and cookies
are never kept: a proxy shared by many callers must not carry one caller's
cookies into another's requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from http.cookiejar import Cookie, CookieJar
from typing import Any

from attrs import define, field
from hyperlink import EncodedURL
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import (
    ConnectError,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
    TimeoutError,
)
from twisted.internet.interfaces import (
    IConsumer,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.python.failure import Failure
from twisted.web.client import URI, Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import (
    IAgent,
    IAgentEndpointFactory,
    IBodyProducer,
    IPolicyForHTTPS,
    IResponse,
)
from zope.interface import implementer

from stasis.cache.ports import UpstreamResponse
from stasis.errors import UpstreamTimeout, UpstreamUnreachable
from stasis.headers import Pairs
from stasis.log import url_for_log
from stasis.upstream.gunzip import GunzipAgent
from stasis.upstream.response import TreqResponse

__all__ = ["UpstreamClient", "make_client"]


class _NoCookies(CookieJar):
    """
    A cookie jar that never keeps anything (and costs nothing per request).

    It is also passed as each request's ``cookies``: given none, treq builds
    a new, empty jar per request and walks it, under its lock, to merge it.
    """

    def __iter__(self) -> Iterator[Cookie]:
        return iter(())

    def set_cookie(self, cookie: Cookie) -> None:
        pass

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass

    def add_cookie_header(self, request: Any) -> None:
        pass


class _WireURL(EncodedURL):
    """
    A URL already in the form it goes on the wire: ASCII, percent-encoded as
    the client sent it, the host as configured.

    treq turns every URL into its URI form (``to_uri``), which percent-encodes
    anew and IDNA-encodes the host: ~70 µs of every miss spent proving what
    is already so. A proxy should forward the request target as it came
    anyway, not re-encoded.

    That treq calls ``to_uri()`` on the very object it is given is how treq
    works, not what it promises: :func:`_sends_wire_urls_as_they_are` checks it
    once per client class, and without it stasis gives treq plain text URLs.
    """

    def to_uri(self) -> _WireURL:
        return self


_NO_COOKIES = _NoCookies()


@implementer(IBodyProducer)
class _Body:
    """
    A request body written whole, at once.

    treq's default producer for bytes writes through a cooperator on a later
    reactor turn, so the headers and the body leave in separate segments;
    written at once, they go out in one.
    """

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


#: A target treq's URI form would change (``|``, ``{``, ``"`` get percent-encoded).
_PROBE_URL = 'http://probe.invalid/a|b/c%3Ad?q={x}&r="y"'


@implementer(IAgent)
class _ProbeAgent:
    """Records the target treq hands its agent, and never answers."""

    def __init__(self) -> None:
        self.uri: bytes | None = None

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        self.uri = uri
        return Deferred()


#: :func:`_sends_wire_urls_as_they_are`'s answers, by client class.
_WIRE_URLS_SENT: dict[type[HTTPClient], bool] = {}


def _sends_wire_urls_as_they_are(client_class: type[HTTPClient]) -> bool:
    """
    Whether ``client_class`` (treq's HTTPClient) puts a :class:`_WireURL`'s
    text on the wire exactly, checked once against an agent that records it.

    If a treq release stops calling ``to_uri()`` on the URL it is given and
    re-encodes it some other way, stasis falls back to handing treq text, as
    documented: requests still go out, re-encoded by treq, ~70 µs slower.
    """
    known = _WIRE_URLS_SENT.get(client_class)
    if known is None:
        known = _WIRE_URLS_SENT[client_class] = _probe_wire_urls(client_class)
    return known


def _probe_wire_urls(client_class: type[HTTPClient]) -> bool:
    agent = _ProbeAgent()
    jar: Any = _NO_COOKIES
    try:
        client = client_class(agent, cookiejar=jar, data_to_body_producer=_Body)
        client.request(
            "GET",
            _WireURL.from_text(_PROBE_URL),
            allow_redirects=False,
            cookies=_NO_COOKIES,
            unbuffered=True,
        )
    except Exception:
        return False
    return agent.uri == _PROBE_URL.encode("ascii")


@implementer(IStreamClientEndpoint)
class _QuietEndpoint:
    """
    An endpoint whose connections' factories do not log.

    ``HTTPConnectionPool`` makes a factory per connection, and each logs
    "Starting factory" and "Stopping factory" lines: connections come and go
    with every burst of misses, and twistd need not log each one. ``noisy`` is
    the factory's public switch for those lines.
    """

    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        if hasattr(protocolFactory, "noisy"):
            protocolFactory.noisy = False
        return self._endpoint.connect(protocolFactory)


@implementer(IAgentEndpointFactory)
class _Endpoints:
    """
    TCP for ``http``, TLS over TCP for ``https``, as ``Agent``'s own; but one
    endpoint per origin, made once.

    ``Agent`` makes a new endpoint for every request, even when the pool then
    hands it a connection already open, and for HTTPS that means new TLS client
    options each time (~80 µs, on every miss). The few origins stasis talks to
    (the providers, the configured upstreams) keep theirs.
    """

    #: Origins kept; beyond this (many Azure resources?) the map starts over.
    LIMIT = 64

    def __init__(self, reactor: Any, tls: IPolicyForHTTPS | None = None) -> None:
        self._reactor = reactor
        self._tls = tls if tls is not None else BrowserLikePolicyForHTTPS()
        self._made: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        origin = (uri.scheme, uri.host, uri.port)
        endpoint = self._made.get(origin)
        if endpoint is not None:
            return endpoint
        if uri.scheme not in (b"http", b"https"):
            raise SchemeNotSupported(f"Unsupported scheme: {uri.scheme!r}")
        endpoint = HostnameEndpoint(self._reactor, uri.host.decode("ascii"), uri.port)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self._tls.creatorForNetloc(uri.host, uri.port), endpoint)
        endpoint = _QuietEndpoint(endpoint)
        if len(self._made) >= self.LIMIT:
            self._made.clear()
        self._made[origin] = endpoint
        return endpoint


def make_client(
    reactor: Any, persistent_per_host: int = 32
) -> tuple[HTTPClient, HTTPConnectionPool]:
    """
    A treq client on its own pool, sized for concurrent misses.

    treq's default pool keeps two connections per host, which costs a burst of
    parallel misses a new TLS handshake each. Gzip is decoded by
    :class:`~stasis.upstream.gunzip.GunzipAgent`, as the reader takes the
    body, never by treq's decoder (which inflates a whole chunk at once).
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = persistent_per_host
    pool.retryAutomatically = False
    jar: Any = _NO_COOKIES
    agent = GunzipAgent(Agent.usingEndpointFactory(reactor, _Endpoints(reactor), pool=pool))
    return HTTPClient(agent, cookiejar=jar, data_to_body_producer=_Body), pool


@define
class UpstreamClient:
    """Sends one request upstream and fires with the response, body unread."""

    http: HTTPClient
    reactor: Any  # an IReactorTime that treq can also connect with
    timeout: float
    #: Whether this treq sends a :class:`_WireURL` as it is (else URLs go as text).
    _wire_urls: bool = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._wire_urls = _sends_wire_urls_as_they_are(type(self.http))

    def request(
        self, method: str, url: str, headers: Pairs, body: bytes | None
    ) -> Deferred[UpstreamResponse]:
        """
        Fire with the upstream's response once its headers arrived.

        Fails with :class:`UpstreamTimeout` when no response came within the
        timeout, with :class:`UpstreamUnreachable` for any other transport
        failure; cancelling the Deferred aborts the request.
        """
        timed_out = False
        sent = Headers()
        for name, value in headers:
            sent.addRawHeader(name, value)
        d: Deferred[Any] = self.http.request(
            method,
            _WireURL.from_text(url) if self._wire_urls and url.isascii() else url,
            headers=sent,
            data=body if body else None,
            allow_redirects=False,
            cookies=_NO_COOKIES,
            unbuffered=True,
            reactor=self.reactor,
        )

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            d.cancel()

        timer = self.reactor.callLater(self.timeout, expire)

        def settle(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result

        def translate(failure: Failure) -> Failure:
            where = url_for_log(url, path=False)
            if timed_out:
                raise UpstreamTimeout(
                    f"the upstream {where} sent no response within {self.timeout:g}s",
                    log_reason=f"upstream-timeout after {self.timeout:g} s",
                    upstream=where,
                )
            if _cancelled(failure):
                # Called off by stasis (the client left): not the upstream's fault.
                raise CancelledError()
            if failure.check(TimeoutError):
                raise UpstreamTimeout(
                    f"connecting to the upstream {where} timed out",
                    log_reason=f"upstream-timeout connecting to {where}",
                    upstream=where,
                )
            raise UpstreamUnreachable(
                f"cannot reach the upstream {where}: {_describe(failure)}",
                log_reason=f"upstream {_kind(failure)} {where}",
                upstream=where,
            )

        d.addBoth(settle)
        d.addCallbacks(TreqResponse, translate)
        return d


#: How a transport failure is named in the log line, by its innermost cause.
_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (ConnectionRefusedError, "refused"),
    (DNSLookupError, "dns-failure"),
    (ConnectionLost, "reset"),
    (ConnectionDone, "reset"),
    (ConnectError, "connect-failure"),
)


def _kind(failure: Failure) -> str:
    """A word for what went wrong (``refused``, ``reset``, ``tls-failure``), for the log line."""
    reasons: list[Failure] = getattr(failure.value, "reasons", None) or []
    if reasons:
        return _kind(reasons[0])
    for kind, word in _KINDS:
        if failure.check(kind):
            return word
    if type(failure.value).__module__.startswith("OpenSSL"):
        return "tls-failure"
    return "unreachable"


def _cancelled(failure: Failure) -> bool:
    """Whether ``failure`` is a cancellation, however deep the agent wrapped it."""
    if failure.check(CancelledError):
        return True
    reasons: list[Failure] = getattr(failure.value, "reasons", None) or []
    return bool(reasons) and all(_cancelled(reason) for reason in reasons)


def _describe(failure: Failure) -> str:
    """One line for a transport failure; ResponseFailed wraps the real reasons."""
    value = failure.value
    reasons = getattr(value, "reasons", None)
    if reasons:
        return "; ".join(_describe(reason) for reason in reasons)
    text = str(value).strip() or type(value).__name__
    return text.splitlines()[0]
