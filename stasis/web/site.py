"""
The HTTP server side: a ``Site`` and ``Request`` with the limits twisted.web lacks.

twisted.web answers a request without a Host (or with two) and accepts a body
of any size; stasis rejects both. Its connections have only an idle timeout;
stasis's also time each request's head and body (:mod:`stasis.web.deadlines`:
:class:`~stasis.web.channel.StasisChannel` over HTTP/1.x, the request itself
over HTTP/2). It also logs one line per request itself,
with the cache status and the time taken and without the query string (which
can carry an API key), instead of twisted.web's access log.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote_to_bytes

from attrs import frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import ITCPTransport
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.http import RESPONSES, datetimeToString
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource

from stasis.cache_status import noted_status
from stasis.errors import BadRequest, BodyTooLarge, InternalError, RequestTimeout, StasisError
from stasis.log import enabled, logger, masked_headers, request_line, tracing
from stasis.modes import DIRECTIVE_PREFIX
from stasis.web.channel import StasisChannel, peer_text
from stasis.web.deadlines import Deadline, Deadlines
from stasis.web.traffic import Traffic, note_error

__all__ = [
    "ErrorAnswer",
    "StasisRequest",
    "StasisSite",
    "error_answer",
    "is_admin_path",
    "write_error",
]

log = logger("stasis.http")

#: Reason phrases twisted.web does not know (413 got its RFC 9110 name late).
_REASONS = {413: b"Content Too Large"}


class _HTTPDate:
    """The current time as an HTTP date, formatted once a second rather than once a request."""

    def __init__(self) -> None:
        self._second = -1
        self._text = b""

    def __call__(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second, self._text = second, datetimeToString(second)
        return self._text


_http_date = _HTTPDate()


@frozen
class ErrorAnswer:
    """The whole HTTP answer to a :class:`StasisError`: status line, headers, body."""

    status: int
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def to_bytes(self, *extra: tuple[bytes, bytes]) -> bytes:
        """
        The answer as HTTP/1.1 bytes, with ``extra`` headers after its own.

        Header names are spelled as twisted.web spells them (its ``Headers``
        canonicalises them), so an answer written this way is
        indistinguishable from one written through a ``Request``.
        """
        headers = Headers()
        for name, value in (*self.headers, *extra):
            headers.addRawHeader(name, value)
        lines = [b"HTTP/1.1 %d %s\r\n" % (self.status, self.reason)]
        lines += [
            b"%s: %s\r\n" % (name, value)
            for name, values in headers.getAllRawHeaders()
            for value in values
        ]
        return b"".join([*lines, b"\r\n", self.body])


def error_answer(error: StasisError) -> ErrorAnswer:
    """
    The one description of how stasis answers with an error: every error,
    whichever path writes it, carries exactly these headers.
    """
    body = error.to_json()
    retry = () if error.retryable else ((b"x-should-retry", b"false"),)
    return ErrorAnswer(
        status=error.status,
        reason=_REASONS.get(error.status) or RESPONSES.get(error.status, b"Error"),
        headers=(
            # What twisted.web's Request.process sets, for the errors written
            # before it runs (a bad Host, a body over the limit).
            (b"server", server.version),
            (b"date", _http_date()),
            (b"content-type", b"application/json"),
            # botocore names the error by this header (Bedrock clients).
            (b"x-amzn-errortype", error.type.encode("ascii")),
            *retry,
            *error.headers,
            (b"content-length", b"%d" % len(body)),
        ),
        body=body,
    )


#: The methods stasis's own endpoints answer; a request with any other is for the upstream.
OWN_METHODS = (b"GET", b"HEAD")


#: The directive prefix (``/_stasis/with/mode=replay/v1/…``): under ``/_stasis``
#: but the proxy's, since the API path it carries is the upstream's.
_DIRECTIVES = DIRECTIVE_PREFIX.encode("ascii")


def is_admin_path(path: bytes) -> bool:
    """
    Whether a request path (without its query) is under ``/_stasis``, the web
    UI's and the admin API's, which no method sends to the upstream; the
    directive prefix (``/_stasis/with/``) excepted.
    """
    return (
        path.startswith(b"/_stasis")
        and path[8:9] in (b"", b"/")
        and not path.startswith(_DIRECTIVES)
    )


def head_defaults(request: server.Request, present: frozenset[bytes]) -> bytes:
    """
    The ``Server`` and ``Date`` header lines a head written by hand must carry,
    unless ``present`` (lower-case names) has them: twisted.web has not set
    them on a :class:`StasisRequest` for the upstream (see its ``process``).
    """
    if not getattr(request, "_defaults_pending", False):
        return b""
    request._defaults_pending = False  # type: ignore[attr-defined]
    lines = b"" if b"server" in present else _SERVER_LINE
    if b"date" not in present:
        lines += b"Date: " + _http_date() + b"\r\n"
    return lines


_SERVER_LINE = b"Server: " + server.version + b"\r\n"


def write_error(request: server.Request, error: StasisError) -> None:
    """Answer ``request`` with ``error`` (see :func:`error_answer`) and finish it."""
    answer = error_answer(error)
    # For the access line, written as it finishes: which 504 this is.
    request.stasis_reason = error.log_reason.encode("utf-8", "replace")  # type: ignore[attr-defined]
    note_error(request, error)
    request.setResponseCode(answer.status, answer.reason)
    for name, value in answer.headers:
        request.setHeader(name, value)
    request.write(answer.body)
    request.finish()


#: The status an access line gives a request whose client left before its
#: answer (nginx's): it was never sent.
CLIENT_GONE = 499


class StasisRequest(server.Request):
    """
    A request that enforces a body size limit and a single Host header, and
    over HTTP/2 a deadline for its body (see :meth:`gotLength`).
    """

    #: Set once it is processed: a request lost from then on leaves an access line.
    _processed = False

    # What the proxy notes on a request for its access line and the recent
    # requests (stasis.cache_status, stasis.web.traffic), None until noted:
    # read once per request, and a missing attribute would cost an exception.
    stasis_status = None
    stasis_outcome = None
    stasis_about = None
    stasis_key = None
    stasis_error = None
    stasis_upstream_seconds = None
    stasis_reason: bytes | None = None

    #: The proxy relays the upstream's Content-Type, or none at all.
    defaultContentType = None
    #: Server and Date are still to be added to the head when it is written
    #: (see :meth:`process`): a prepared hit writes them itself, from bytes.
    _defaults_pending = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The base named, not super(): this runs for every request.
        server.Request.__init__(self, *args, **kwargs)
        self.started = time.perf_counter()
        channel = self.channel
        if not getattr(channel, "_stasis_nodelay", False):
            # Streamed events are small writes: Nagle's algorithm would hold each
            # back until the previous one is acknowledged.
            channel._stasis_nodelay = True  # type: ignore[attr-defined]
            transport = channel.transport
            if ITCPTransport.providedBy(transport):
                transport.setTcpNoDelay(True)
        site: StasisSite = channel.site  # type: ignore[attr-defined]
        self._max_body: int = site.max_body_bytes
        #: The site counting this request in flight (see StasisSite.when_idle).
        self._counted_by = site
        site.in_flight.add(self)
        self._received = 0
        self._refused = False
        #: Whether the connection is gone: nothing may be written any more.
        self._lost = False
        #: An HTTP/2 stream's body deadline, while its body arrives.
        self._body_deadline: Deadline | None = None
        #: Whether its access line was written without its finishing (cut short).
        self.logged_unfinished = False

    @property
    def body_received(self) -> int:
        """Bytes of the body received so far (until a 413 refused it)."""
        return self._received

    @property
    def refused(self) -> bool:
        """Whether the request was answered 413 as its body arrived."""
        return self._refused

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(
            f"the request body is larger than the limit of {self._max_body} bytes",
            limit=self._max_body,
        )

    def _refuse_body(self) -> None:
        """
        Answer 413 at once, then discard the rest of the body and close.

        The answer goes straight to the transport because the request never
        reaches a resource. The connection is closed only once the body has
        been read to its end: closing on unread data makes the kernel send a
        reset, which destroys the 413 before the client reads it. An HTTP/2
        stream has no transport of its own: it is answered in :meth:`process`.
        """
        self._refused = True
        transport = self.channel.transport
        if transport is not None:
            transport.write(error_answer(self._too_large()).to_bytes((b"connection", b"close")))
        # The request line is not on the request yet while its body arrives.
        log.info("refused a request body over {limit} bytes: 413", limit=self._max_body)

    def gotLength(self, length: int | None) -> None:
        if length != 0 and self.channel.transport is None and self._body_deadline is None:
            self._time_stream_body()
        if length is not None and length > self._max_body:
            self._refuse_body()
            # twisted.web answers "Expect: 100-continue" right after this call;
            # after a 413 that would invite the body the 413 just refused.
            self.requestHeaders.removeHeader(b"expect")
            length = 0
        server.Request.gotLength(self, length)

    def _time_stream_body(self) -> None:
        """
        Set the body deadline of an HTTP/2 stream, whose headers have all
        arrived: over HTTP/1.x the channel times the head and the body, but
        an HTTP/2 stream exists only once its headers are in. A stream
        refused 413 is timed too: it is answered once its body has arrived.
        """
        site: StasisSite = self.channel.site  # type: ignore[attr-defined]
        deadlines = site.deadlines

        def allowance() -> float:
            return deadlines.body_allowance(self._received)

        self._body_deadline = Deadline(site.reactor, "body", allowance, self._stream_too_slow)

    def _stream_too_slow(self, deadline: Deadline) -> None:
        """
        Reset an HTTP/2 stream whose body is late; its siblings go on.

        Reset rather than answered 408: twisted.web forgets a stream once it
        has answered it, and then fails on the body the client goes on
        sending. Resetting it first would drop the answer still queued.
        """
        self._body_deadline = None
        stream: Any = self.channel
        log.info(
            "reset an HTTP/2 stream of {peer}: its request body did not arrive within "
            "{seconds:.0f}s (--body-timeout)",
            peer=peer_text(stream.getPeer()),
            seconds=deadline.allowed,
        )
        stream.abortConnection()
        # twisted.web's reset tells the stream's request nothing.
        self.connectionLost(Failure(RequestTimeout("the request body did not arrive in time")))

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self._max_body:
            self._refuse_body()
            return
        server.Request.handleContentChunk(self, data)

    def process(self) -> None:
        if self._body_deadline is not None:
            # All of an HTTP/2 stream's body arrived in time.
            self._body_deadline.cancel()
            self._body_deadline = None
        self._processed = True
        if self._refused:
            if self.channel.transport is None:
                # HTTP/2: the stream is answered now, its siblings go on.
                self.site = self.channel.site  # type: ignore[attr-defined]
                write_error(self, self._too_large())
                return
            # Answered 413 as its body arrived; the connection ends here.
            self.code = 413
            self.stasis_reason = BodyTooLarge.reason.encode("ascii")
            self.logged_unfinished = True
            self._counted_by.log(self)
            self.channel.loseConnection()
            return
        hosts = self.requestHeaders.getRawHeaders(b"host", [])
        if len(hosts) > 1 or (not hosts and self.clientproto == b"HTTP/1.1"):
            self.site = self.channel.site  # type: ignore[attr-defined]
            write_error(
                self,
                BadRequest("an HTTP/1.1 request must carry exactly one Host header"),
            )
            return
        site: StasisSite = self.channel.site  # type: ignore[attr-defined]
        if site.draining:
            # The daemon is stopping: this is the connection's last request.
            self.channel.persistent = False
            self.responseHeaders.setRawHeaders(b"connection", [b"close"])
        upstream = site.upstream
        if (
            upstream is None
            or self.method in OWN_METHODS
            or self.path == b"*"
            or is_admin_path(self.path)
        ):
            super().process()  # type: ignore[no-untyped-call]
            return
        # Anything but a GET or HEAD is for the upstream (see Root): what
        # twisted.web's process() does, without walking the resource tree to
        # the proxy, a leaf at its root, and with a Date formatted once a
        # second. Every hit pays for this method; the floor does not.
        self.site = site
        # twisted.web sets Server and Date here; they are added as the head is
        # written instead (write() or head_defaults()), which a hit, writing
        # its head from prepared bytes, does at a fraction of the cost.
        self._defaults_pending = True
        self.sitepath: list[bytes] = []
        self.prepath = []
        self.postpath = list(map(unquote_to_bytes, self.path[1:].split(b"/")))
        try:
            self.render(upstream)  # type: ignore[no-untyped-call]
        except BaseException:
            self.processingFailed(Failure())

    def write(self, data: bytes) -> None:
        if self._defaults_pending and not self.startedWriting:
            self._defaults_pending = False
            headers = self.responseHeaders
            # Unless the answer brought its own (an upstream's Server).
            if not headers.hasHeader(b"server"):
                headers.setRawHeaders(b"Server", [server.version])
            if not headers.hasHeader(b"date"):
                headers.setRawHeaders(b"Date", [_http_date()])
        server.Request.write(self, data)

    def finish(self) -> None:
        try:
            server.Request.finish(self)
        finally:
            self._counted_by.request_done(self)

    def connectionLost(self, reason: Failure) -> None:
        self._lost = True
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None
        self._counted_by.request_done(self)
        if not self.finished and not self.logged_unfinished and self._processed:
            self._log_gone(reason)
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def _log_gone(self, reason: Failure) -> None:
        """
        The access line of a request whose client left before its answer was
        complete (twisted.web logs only the requests it finishes): nginx's
        ``499``, with how long the client waited, so that an operator sees a
        client that gave up on a slow upstream.
        """
        if reason.check(RequestTimeout):
            # An HTTP/2 stream reset for a late body (see _stream_too_slow).
            self.code = 408
            self.stasis_reason = RequestTimeout.reason.encode("ascii")
            why = b""
        else:
            self.code = CLIENT_GONE
            why = b"client gone"
        self.logged_unfinished = True
        site = self._counted_by
        site.log(self, why)

    def processingFailed(self, reason: Failure) -> None:
        log.failure("unexpected error serving {path}", reason, path=self.path.decode("latin-1"))
        if self.finished or self._lost:
            return
        if self.startedWriting:
            # The connection, or on HTTP/2 (no transport of its own) the stream.
            ending: Any = self.channel.transport or self.channel
            ending.abortConnection()
            return
        write_error(self, InternalError("stasis failed to serve this request; see its log"))


class StasisSite(server.Site):
    """
    The ``Site`` stasis serves: no form parsing, a body limit, deadlines for
    each request's head and body, its own log line, and a count of the
    requests in flight, so that a stopping daemon can let them finish
    (:meth:`when_idle`).
    """

    noisy = False
    requestFactory = StasisRequest

    def __init__(
        self,
        resource: IResource,
        max_body_bytes: int,
        upstream: IResource | None = None,
        deadlines: Deadlines | None = None,
        **kwargs: Any,
    ) -> None:
        """
        ``upstream``, when given, is the resource every request whose method
        is not one of :data:`OWN_METHODS` goes to, found without walking the
        tree from ``resource`` (which must route those requests to it too).
        ``deadlines``: how long a client may take to send a request (default:
        ``--header-timeout`` and ``--body-timeout``'s defaults).
        """
        super().__init__(resource, parsePOSTFormSubmission=False, **kwargs)  # type: ignore[no-untyped-call]
        self.max_body_bytes = max_body_bytes
        self.deadlines = deadlines or Deadlines()
        self.upstream = upstream
        #: Headers masked at ``-l trace`` besides the usual ones (``--credential-header``).
        self.credential_headers: tuple[str, ...] = ()
        #: Records every proxied request, for the web UI and the metrics (None: nothing).
        self.traffic: Traffic | None = None
        #: Requests begun and neither finished nor lost.
        self.in_flight: set[StasisRequest] = set()
        #: Set by :meth:`when_idle`: each request from then on is its connection's last.
        self.draining = False
        self._idle: list[Deferred[None]] = []

    def protocol(self) -> Any:
        """
        What ``HTTPFactory.buildProtocol`` makes for each connection: what
        twisted.web makes (a protocol that becomes HTTP/2 if TLS negotiates
        it), around a :class:`StasisChannel` instead of an ``HTTPChannel``.
        """
        return _GenericHTTPChannelProtocol(StasisChannel())  # type: ignore[no-untyped-call]

    def request_done(self, request: StasisRequest) -> None:
        """``request`` was finished or lost (it may say so twice: finished, then lost)."""
        in_flight = self.in_flight
        in_flight.discard(request)
        if not in_flight and self._idle:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def when_idle(self) -> Deferred[None]:
        """
        Fires once no request is in flight; from now on every connection
        closes after its request, so that idle clients do not keep it busy.

        For a stop: the port is closed first, then this is awaited (with a
        deadline), then the reactor may drop the connections that are left,
        which are idle.
        """
        self.draining = True
        for request in self.in_flight:
            # Each connection with a request in flight closes once it is answered.
            request.channel.persistent = False
            if not request.startedWriting:
                request.responseHeaders.setRawHeaders(b"connection", [b"close"])
        if not self.in_flight:
            return succeed(None)
        d: Deferred[None] = Deferred(lambda d: self._idle.remove(d))
        self._idle.append(d)
        return d

    def log(self, request: Any, ending: bytes = b"") -> None:
        """
        One access log line for ``request``; ``ending`` says why it did not
        end properly. An error stasis made names its reason
        (:attr:`stasis.errors.StasisError.log_reason`), set by :func:`write_error`.

        A proxied request is also recorded in :attr:`traffic` (for the web UI
        and the metrics), with the same time and reason: once per request, so
        everything is read once here.
        """
        status = noted_status(request)
        reason: bytes | None = getattr(request, "stasis_reason", None)
        now = time.time()
        seconds = time.perf_counter() - request.started
        traffic = self.traffic
        if traffic is not None and status is not None:
            traffic.note(request, now, seconds, status, reason or ending or None)
        if not enabled("stasis.http", LogLevel.info):
            return
        if reason is not None:
            ending = reason + b"; " + ending if ending else reason
        request_line(
            (
                now,
                request.method,
                request.path,
                request.code,
                b"-" if status is None else status.value,
                seconds * 1000,
                ending,
            )
        )
        if tracing():
            self._trace(request)

    def _trace(self, request: Any) -> None:
        """``-l trace``: the request's and its answer's headers, credentials masked."""
        also = self.credential_headers
        log.debug(
            "{method} {path} request headers: {request_headers}",
            method=request.method.decode("latin-1"),
            path=request.path.decode("latin-1"),
            request_headers=masked_headers(request.requestHeaders.getAllRawHeaders(), also),
        )
        log.debug(
            "{method} {path} response headers: {response_headers}",
            method=request.method.decode("latin-1"),
            path=request.path.decode("latin-1"),
            response_headers=masked_headers(request.responseHeaders.getAllRawHeaders(), also),
        )


#: twisted.web's per-connection protocol, bound at import: twisted.web.http is a
#: deprecation proxy whose every attribute lookup costs a microsecond.
_GenericHTTPChannelProtocol = http._GenericHTTPChannelProtocol


def log_unfinished(request: server.Request, why: str) -> None:
    """
    The access log line of a request whose answer ends without finishing
    (twisted.web logs only those it finishes): every request leaves one.
    """
    site = getattr(request.channel, "site", None)
    if isinstance(site, StasisSite):
        if isinstance(request, StasisRequest):
            request.logged_unfinished = True
        site.log(request, why.encode("ascii"))
