"""
Decoding a gzip-encoded upstream body no faster than the client takes it.

twisted.web's ``GzipDecoder`` (which treq puts in front of every agent)
inflates each chunk the upstream sends whole: a 64 KB piece of a gzip bomb
becomes 64 MB at once, whether or not anyone downstream reads it, and a few
clients that stop reading hold hundreds of megabytes of decoded body in the
proxy. Here the body is inflated in slices of :data:`SLICE` bytes; each is
handed on, and once the reader pauses (the client's socket is full) inflation
stops and what is left of the compressed input waits, compressed, with the
upstream connection paused too. What a stalled reader costs is then a slice
and the socket buffers, not the expansion ratio times a chunk.

:class:`GunzipAgent` sits under treq's own wrapping: it asks for gzip and
takes the coding off the response before treq's ``ContentDecoderAgent``
looks, so that one never finds anything to decode.
"""

from __future__ import annotations

import zlib
from collections import deque
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol, IPushProducer
from twisted.internet.protocol import connectionDone
from twisted.python.components import proxyForInterface
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from stasis.log import logger

__all__ = ["SLICE", "CorruptGzip", "GunzipAgent"]

log = logger("stasis.upstream")

#: The most decoded bytes handed on at once.
SLICE = 64 * 1024

#: zlib's window bits for the gzip container (header and CRC checked).
_GZIP_WBITS = 16 + zlib.MAX_WBITS


class CorruptGzip(Exception):
    """The upstream's gzip body does not decode, or stops before its end."""


@implementer(IProtocol, IPushProducer)
class _Gunzip:
    """
    Stands between the upstream's body and the protocol reading it.

    To the upstream it is the body protocol; to the reader it is the
    transport (the producer the reader pauses, resumes and stops). The
    compressed input not yet inflated is kept in ``_pending`` and in the
    inflater's ``unconsumed_tail``: at most what arrived in one read of the
    upstream socket after the reader paused.
    """

    def __init__(self, protocol: IProtocol, response: IResponse) -> None:
        self._protocol = protocol
        self._response = response
        self._inflate: Any = zlib.decompressobj(_GZIP_WBITS)
        self._pending: deque[bytes] = deque()
        #: The last slice came out full: the inflater may hold more output.
        self._more = False
        self._upstream: IPushProducer | None = None
        self._upstream_paused = False
        #: The reader asked for a pause.
        self._paused = False
        #: How the upstream body ended, held until what came before it is handed on.
        self._ended: Failure | None = None
        #: The reader was told the body ended (or stopped it): nothing more goes to it.
        self._closed = False
        self._stopped = False
        self._draining = False
        self._received = False

    # -- the upstream's side (IProtocol) ---------------------------------------------

    def makeConnection(self, transport: Any) -> None:
        self._upstream = transport
        # A body protocol's transport is a producer, as twisted.web's own
        # (TransportProxyProducer) is; IProtocol just says ITransport.
        producer: Any = self
        self._protocol.makeConnection(producer)

    def connectionMade(self) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        if self._closed or self._stopped or not data:
            return
        self._received = True
        self._pending.append(data)
        self._drain()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._closed:
            return
        if self._stopped:
            # Whatever the upstream says, the reader stopped before the end.
            self._close(Failure(ResponseFailed([reason], self._response)))
            return
        self._ended = reason
        self._drain()

    # -- the reader's side (IPushProducer) --------------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True
        self._pause_upstream()

    def resumeProducing(self) -> None:
        self._paused = False
        self._drain()

    def stopProducing(self) -> None:
        """
        The reader wants no more: drop what waits, and stop the upstream.

        If the upstream already ended, no end will come from it any more, so
        the reader is told now that the body did not arrive whole.
        """
        if self._closed or self._stopped:
            return
        self._stopped = True
        self._pending.clear()
        self._inflate = None
        if self._ended is not None:
            self._close(Failure(ResponseFailed([self._ended], self._response)))
        elif self._upstream is not None:
            self._upstream.stopProducing()

    # -- inflating --------------------------------------------------------------------

    def _pause_upstream(self) -> None:
        if not self._upstream_paused and self._ended is None and self._upstream is not None:
            self._upstream_paused = True
            self._upstream.pauseProducing()

    def _resume_upstream(self) -> None:
        if self._upstream_paused and self._upstream is not None:
            self._upstream_paused = False
            self._upstream.resumeProducing()

    def _drain(self) -> None:
        """
        Hand on slices until the reader pauses or the input runs out; then
        let the upstream send more, or end the body if it has ended.
        """
        if self._draining:
            return  # a pause or resume from inside the reader's dataReceived
        self._draining = True
        try:
            while not (self._paused or self._closed or self._stopped):
                try:
                    piece = self._slice()
                except zlib.error as e:
                    self._corrupt(e)
                    return
                if piece is None:
                    break
                if piece:
                    self._protocol.dataReceived(piece)
        finally:
            self._draining = False
        if self._closed or self._stopped:
            return
        if self._paused:
            self._pause_upstream()
        elif self._ended is not None:
            self._finish(self._ended)
        else:
            self._resume_upstream()

    def _slice(self) -> bytes | None:
        """The next slice of the decoded body; None when all input is inflated."""
        inflate = self._inflate
        if inflate.unconsumed_tail:
            source = inflate.unconsumed_tail
        elif self._more:
            source = b""
        elif self._pending:
            source = self._pending.popleft()
            if inflate.eof:
                # Another gzip member follows the last (RFC 1952 allows a series).
                inflate = self._inflate = zlib.decompressobj(_GZIP_WBITS)
        else:
            return None
        piece: bytes = inflate.decompress(source, SLICE)
        self._more = len(piece) == SLICE
        if inflate.eof and inflate.unused_data:
            self._pending.appendleft(inflate.unused_data)
            self._more = False
        return piece

    def _finish(self, reason: Failure) -> None:
        whole = reason.check(ResponseDone, PotentialDataLoss) is not None
        if self._received and whole and not self._inflate.eof:
            self._corrupt(CorruptGzip("the gzip stream stops before its end"))
            return
        self._close(reason)

    def _corrupt(self, error: Exception) -> None:
        """
        End the body as broken off, so nothing of it is stored and the client
        learns it is incomplete (a 502 if nothing was sent yet).
        """
        log.info(
            "the upstream's gzip-encoded body does not decode ({error}): treated as broken off",
            error=error,
        )
        failure = Failure(ResponseFailed([Failure(CorruptGzip(str(error)))], self._response))
        self._stopped = True
        self._pending.clear()
        if self._ended is None and self._upstream is not None:
            self._upstream.stopProducing()
        self._close(failure)

    def _close(self, reason: Failure) -> None:
        if not self._closed:
            self._closed = True
            self._protocol.connectionLost(reason)


class _Gunzipped(proxyForInterface(IResponse)):  # type: ignore[misc]
    """A response whose body is delivered decoded, and of unknown length."""

    def __init__(self, response: IResponse) -> None:
        self.original = response
        self.length = UNKNOWN_LENGTH

    def deliverBody(self, protocol: IProtocol) -> None:
        self.original.deliverBody(_Gunzip(protocol, self.original))


def _codings(headers: Headers) -> list[bytes]:
    """The content codings applied, in order, as ``ContentDecoderAgent`` reads them."""
    joined = b",".join(headers.getRawHeaders(b"content-encoding", []))
    return [coding.strip() for coding in joined.split(b",") if coding.strip()]


def _decoded(response: IResponse) -> IResponse:
    """
    ``response``, decoded if gzip was the last coding applied; its
    Content-Encoding then says only what is left (nothing, usually).
    """
    codings = _codings(response.headers)
    if not codings or codings[-1].lower() != b"gzip":
        return response
    codings.pop()
    if codings:
        response.headers.setRawHeaders(b"content-encoding", [b",".join(codings)])
    else:
        response.headers.removeHeader(b"content-encoding")
    return _Gunzipped(response)


@implementer(IAgent)
class GunzipAgent:
    """
    An agent that asks for gzip and decodes it as the reader consumes it.

    It replaces ``ContentDecoderAgent``'s work (same header, same coding
    taken off the response), with the decoding bounded.
    """

    def __init__(self, agent: IAgent) -> None:
        self._agent = agent

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        sent = headers.copy() if headers is not None else Headers()
        # Set, not added: treq's ContentDecoderAgent above has added the same.
        sent.setRawHeaders(b"accept-encoding", [b"gzip"])
        d: Deferred[IResponse] = self._agent.request(method, uri, sent, bodyProducer)
        return d.addCallback(_decoded)
